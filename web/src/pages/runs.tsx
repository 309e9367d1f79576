/** Runs, newest first, filtered by job, status, platform and worker (the filter is in the URL). */
import type { PresentedRun } from '../../../src/cli/api-client.js';
import { RUN_STATUSES } from '../../../src/core/run.js';
import { get } from '../api.js';
import { took, when } from '../format.js';
import { useLive } from '../live.js';
import { href, type Route } from '../route.js';
import { Page, Status, Table } from '../ui.js';

const FILTERS = ['job', 'status', 'platform', 'worker'] as const;

export function RunsPage({ route }: { route: Route }) {
  const filter = Object.fromEntries(FILTERS.map((key) => [key, route.query.get(key) ?? undefined]));
  const search = new URLSearchParams(Object.entries({ ...filter, limit: '100' }).filter((e): e is [string, string] => !!e[1])).toString();
  const live = useLive(() => get<{ runs: PresentedRun[] }>(`/api/runs?${search}`), [search], (e) => e.type.startsWith('run.') || e.type === 'platform.dropped');
  const runs = live.data?.runs ?? [];
  const apply = (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    location.hash = href(['runs'], Object.fromEntries(FILTERS.map((key) => [key, String(form.get(key) ?? '').trim() || undefined])));
  };
  return (
    <Page title="Runs" error={live.error} loading={!live.data}>
      <form class="filters" onSubmit={apply} key={search}>
        <label>Job <input name="job" value={filter.job ?? ''} /></label>
        <label>Status
          <select name="status" value={filter.status ?? ''}>
            <option value="">any</option>
            {RUN_STATUSES.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <label>Platform <input name="platform" value={filter.platform ?? ''} /></label>
        <label>Worker <input name="worker" value={filter.worker ?? ''} /></label>
        <button type="submit">Filter</button>
        {search !== 'limit=100' && <a href={href(['runs'])}>clear</a>}
      </form>
      <Table head={['Run', 'Job', 'Platform', 'Status', 'Worker', 'Attempt', 'Queued', 'Took', 'Result']} rows={runs.length} empty="No runs match.">
        {runs.map((run) => (
          <tr key={run.id} data-run={run.id}>
            <td><a class="mono" href={href(['runs', run.id])}>{run.id.slice(0, 8)}</a></td>
            <td><a href={href(['runs'], { ...filter, job: run.job })}>{run.job}</a></td>
            <td>{run.platform}</td>
            <td><Status status={run.status} /></td>
            <td>{run.worker ?? '–'}</td>
            <td>{run.attempt}</td>
            <td>{when(run.queuedAt)}</td>
            <td>{took(run)}</td>
            <td>{run.resultText ?? ''}</td>
          </tr>
        ))}
      </Table>
    </Page>
  );
}
