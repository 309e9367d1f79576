/** Queues per platform, with why each waiting run waits; drop and undrop platforms. */
import type { QueuesReply } from '../../../src/cli/api-client.js';
import { get, post } from '../api.js';
import { when } from '../format.js';
import { useLive } from '../live.js';
import { href } from '../route.js';
import { Action, Page, Table } from '../ui.js';

export function QueuesPage() {
  const live = useLive(() => get<QueuesReply>('/api/queues'), []);
  const queues = live.data?.queues ?? [];
  return (
    <Page title="Queues" error={live.error} loading={!live.data}>
      {queues.length === 0 && <p class="muted">No platform known yet: no run queued, no worker connected, no pool.</p>}
      {queues.map((queue) => (
        <article key={queue.platform} class="card" data-platform={queue.platform}>
          <header class="card-head">
            <h2>{queue.platform}{queue.dropped && <span class="tag danger">dropped</span>}</h2>
            <span class="muted">
              {queue.runs.length} waiting · {queue.workers} worker{queue.workers === 1 ? '' : 's'} connected · {queue.freeSlots} free slot{queue.freeSlots === 1 ? '' : 's'}
              {queue.pools.length > 0 && ` · pools: ${queue.pools.join(', ')}`}
            </span>
            <span class="card-actions">
              {queue.dropped
                ? <Action label="Undrop" run={() => post(`/api/platforms/${encodeURIComponent(queue.platform)}/undrop`).then(live.reload)} />
                : <Action label="Drop" kind="danger" confirm={`Drop platform ${queue.platform}? Its queued runs are cancelled and its workers get no runs until it is undropped.`}
                  run={() => post(`/api/platforms/${encodeURIComponent(queue.platform)}/drop`).then(live.reload)} />}
            </span>
          </header>
          <Table head={['#', 'Run', 'Job', 'Labels', 'Queued', 'Why it waits']} rows={queue.runs.length} empty="Nothing waits.">
            {queue.runs.map(({ run, waiting }, i) => (
              <tr key={run.id} data-run={run.id}>
                <td>{i + 1}</td>
                <td><a class="mono" href={href(['runs', run.id])}>{run.id.slice(0, 8)}</a></td>
                <td>{run.job}</td>
                <td>{Object.entries(run.labels).map(([k, v]) => `${k}=${v}`).join(', ') || '–'}</td>
                <td>{when(run.queuedAt)}</td>
                <td class={`wait wait-${waiting.kind}`}>{waiting.text}</td>
              </tr>
            ))}
          </Table>
        </article>
      ))}
    </Page>
  );
}
