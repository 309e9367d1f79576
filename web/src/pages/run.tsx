/**
 * One run: its result, attempts and history (events), artifacts (size, sha256, download), and its
 * console, replayed from the first line and then followed live until the run ends (as `kiln observe`).
 */
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { ArtifactsReply, RunEventsReply } from '../../../src/cli/api-client.js';
import { backoffMs } from '../../../src/core/backoff.js';
import { get, post, readEvents } from '../api.js';
import { bytes, labels, took, when } from '../format.js';
import { useLive } from '../live.js';
import { href } from '../route.js';
import { download } from '../session.js';
import { Action, Page, Status, Table } from '../ui.js';

interface Line {
  seq: number;
  ts: number;
  text: string;
}

/** Most lines kept on the page; older ones are dropped from view (`kiln logs` has them all). */
const MAX_LINES = 50_000;

/** Follows the run's console: replay, then live; resumes after a break from the last line seen. */
function useConsole(runId: string, onEnd: () => void): { lines: Line[]; following: boolean; dropped: number } {
  const [view, setView] = useState({ lines: [] as Line[], following: true, dropped: 0 });
  const ended = useRef(onEnd);
  ended.current = onEnd;
  useEffect(() => {
    const controller = new AbortController();
    let after = -1;
    let pending: Line[] = [];
    let frame = 0;
    setView({ lines: [], following: true, dropped: 0 });
    // Lines arrive in bursts: added to the page once per frame.
    const flush = () => {
      frame = 0;
      const batch = pending;
      pending = [];
      setView((v) => {
        const all = v.lines.concat(batch);
        const over = Math.max(0, all.length - MAX_LINES);
        return { ...v, lines: over ? all.slice(over) : all, dropped: v.dropped + over };
      });
    };
    void (async () => {
      for (let failures = 0; !controller.signal.aborted;) {
        let done = false;
        try {
          await readEvents(`/api/runs/${encodeURIComponent(runId)}/console?follow=true&after=${after}`, (event) => {
            failures = 0;
            if (event.type === 'line') {
              after = event.seq;
              pending.push({ seq: event.seq, ts: event.ts, text: event.text });
              frame ||= requestAnimationFrame(flush);
            } else if (event.type === 'end') {
              done = true;
            }
          }, controller.signal);
        } catch {
          // The stream broke: resumed from the last line after a rest.
        }
        if (done || controller.signal.aborted) break;
        failures += 1;
        await new Promise((resolve) => setTimeout(resolve, backoffMs(failures, { retryMinMs: 500, retryMaxMs: 10_000 })));
      }
      if (controller.signal.aborted) return;
      if (frame) cancelAnimationFrame(frame);
      flush();
      setView((v) => ({ ...v, following: false }));
      ended.current();
    })();
    return () => {
      controller.abort();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [runId]);
  return view;
}

function Console({ runId, onEnd }: { runId: string; onEnd: () => void }) {
  const { lines, following, dropped } = useConsole(runId, onEnd);
  const box = useRef<HTMLPreElement>(null);
  const stuck = useRef(true);
  // Stays at the bottom while the reader is there; leaves them alone once they scroll up.
  useLayoutEffect(() => {
    if (stuck.current && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines]);
  const onScroll = () => {
    const el = box.current;
    if (el) stuck.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };
  return (
    <div>
      <h2>Console <span class="muted small" data-console-state={following ? 'following' : 'ended'}>{following ? '● following live' : 'ended'} · {lines.length + dropped} line{lines.length + dropped === 1 ? '' : 's'}</span></h2>
      <pre class="console" ref={box} onScroll={onScroll} data-testid="console">
        {dropped > 0 && <div class="muted">… {dropped} earlier lines not shown (kiln logs {runId.slice(0, 8)} has them)</div>}
        {lines.map((line) => <div key={line.seq} class="line"><span class="ts">{new Date(line.ts).toISOString().slice(11, 23)}</span>{line.text}</div>)}
      </pre>
    </div>
  );
}

export function RunPage({ id }: { id: string }) {
  const history = useLive(() => get<RunEventsReply>(`/api/runs/${encodeURIComponent(id)}/events`), [id], (e) => e.runId === id || e.type === 'resync');
  const artifacts = useLive(() => get<ArtifactsReply>(`/api/runs/${encodeURIComponent(id)}/artifacts`), [id], (e) => e.runId === id && e.type === 'run.ended');
  const run = history.data?.run;
  // A running run's duration grows: the page's own clock redraws it each second (the server is not asked).
  const [, tick] = useState(0);
  useEffect(() => {
    if (run?.status !== 'running') return;
    const timer = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(timer);
  }, [run?.status]);
  const onEnd = () => {
    history.reload();
    artifacts.reload();
  };
  return (
    <Page
      title={run ? `Run ${run.id.slice(0, 8)} of ${run.job}` : `Run ${id.slice(0, 8)}`}
      error={history.error}
      loading={!run}
      actions={run && (run.status === 'queued' || run.status === 'running') && (
        <Action label="Cancel run" kind="danger" confirm={`Cancel run ${run.id.slice(0, 8)} of ${run.job}?`} run={() => post(`/api/runs/${encodeURIComponent(run.id)}/cancel`).then(history.reload)} />
      )}
    >
      {run && (
        <>
          <dl class="facts">
            <dt>Status</dt><dd data-testid="run-status"><Status status={run.status} /></dd>
            <dt>Result</dt><dd data-testid="run-result">{run.resultText ?? '–'}{run.cancelRequestedBy && ` (cancel asked by ${run.cancelRequestedBy})`}</dd>
            <dt>Job</dt><dd><a href={href(['runs'], { job: run.job })}>{run.job}</a></dd>
            <dt>Platform</dt><dd>{run.platform} {Object.keys(run.labels).length > 0 && <span class="muted">({labels(run.labels)})</span>}</dd>
            <dt>Worker</dt><dd>{run.worker ? <a href={href(['runs'], { worker: run.worker })}>{run.worker}</a> : '–'}</dd>
            <dt>Attempt</dt><dd>{run.attempt}</dd>
            <dt>Queued</dt><dd>{when(run.queuedAt)}</dd>
            <dt>Started</dt><dd>{when(run.startedAt)}</dd>
            <dt>Finished</dt><dd>{when(run.finishedAt)}</dd>
            <dt>Took</dt><dd>{took(run)}</dd>
            <dt>Id</dt><dd class="mono">{run.id}</dd>
          </dl>
          <Console runId={run.id} onEnd={onEnd} />
          <h2>Artifacts</h2>
          <Table head={['Path', 'Size', 'SHA-256', '']} rows={artifacts.data?.artifacts.length ?? 0} empty={artifacts.error ?? 'No artifacts.'}>
            {artifacts.data?.artifacts.map((a) => (
              <tr key={a.path} data-artifact={a.path}>
                <td class="mono">{a.path}</td>
                <td title={`${a.size} bytes`}>{bytes(a.size)}</td>
                <td class="mono small sha">{a.sha256}</td>
                <td>
                  <button type="button" onClick={() => download(`/api/runs/${encodeURIComponent(run.id)}/artifacts/${a.path.split('/').map(encodeURIComponent).join('/')}`, a.path.split('/').pop()!)}>Download</button>
                </td>
              </tr>
            ))}
          </Table>
          <h2>History</h2>
          <Table head={['At', 'Attempt', 'Event', 'Detail']} rows={history.data?.events.length ?? 0} empty="No events.">
            {history.data?.events.map((e, i) => (
              <tr key={i}>
                <td>{when(e.at)}</td>
                <td>{e.attempt}</td>
                <td>{e.kind}</td>
                <td class="mono small">{e.detail === null || e.detail === undefined ? '' : JSON.stringify(e.detail)}</td>
              </tr>
            ))}
          </Table>
          {(history.data?.deliveries.length ?? 0) > 0 && (
            <>
              <h2>Deliveries</h2>
              <Table head={['Target', 'State', 'Attempts', 'Last error']} rows={history.data!.deliveries.length} empty="">
                {history.data!.deliveries.map((d) => <tr key={d.id}><td>{d.target}</td><td>{d.state}</td><td>{d.attempts}</td><td>{d.lastError ?? ''}</td></tr>)}
              </Table>
            </>
          )}
        </>
      )}
    </Page>
  );
}
