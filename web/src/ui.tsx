/** Small pieces every page uses. */
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { mayOperate } from './session.js';

/** A run's status as a coloured badge. */
export function Status({ status }: { status: string }) {
  return <span class={`status status-${status}`}>{status}</span>;
}

/** A button for an action on the farm, shown only to users who may take it; its error shows beside it. */
export function Action({ label, run, confirm, kind = 'normal' }: { label: string; run: () => Promise<unknown>; confirm?: string; kind?: 'normal' | 'danger' }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  if (!mayOperate()) return null;
  const click = async () => {
    if (confirm && !window.confirm(confirm)) return;
    setBusy(true);
    setError(undefined);
    try {
      await run();
    } catch (raw) {
      setError((raw as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button type="button" class={kind} disabled={busy} onClick={click}>{label}</button>
      {error && <span class="error" role="alert">{error}</span>}
    </span>
  );
}

/** A page's title and its state of loading. */
export function Page({ title, error, loading, children, actions }: { title: string; error?: string; loading?: boolean; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="page">
      <header class="page-head">
        <h1>{title}</h1>
        {actions && <div class="page-actions">{actions}</div>}
      </header>
      {error && <p class="error" role="alert">{error}</p>}
      {loading && !error ? <p class="muted">Loading…</p> : children}
    </section>
  );
}

/** A table, or a line saying it is empty. */
export function Table({ head, empty, children, rows }: { head: string[]; empty: string; rows: number; children: ComponentChildren }) {
  if (rows === 0) return <p class="muted">{empty}</p>;
  return (
    <table>
      <thead><tr>{head.map((h) => <th key={h}>{h}</th>)}</tr></thead>
      <tbody>{children}</tbody>
    </table>
  );
}
