/**
 * Connected and known workers (state, current runs, capacity, labels, last seen), latent pools
 * (instances, quarantine), and the farm's servers with the leases (singletons) each holds.
 */
import type { InfoReply, WorkersReply } from '../../../src/cli/api-client.js';
import { get } from '../api.js';
import { labels, when } from '../format.js';
import { useLive } from '../live.js';
import { href } from '../route.js';
import { Page, Table } from '../ui.js';

export function WorkersPage() {
  const live = useLive(() => get<WorkersReply>('/api/workers'), [], (e) => !e.type.startsWith('job.'));
  const workers = live.data?.workers ?? [];
  const pools = live.data?.pools ?? [];
  const farm = useLive(() => get<InfoReply>('/api/info'), [], (e) => !e.type.startsWith('job.'));
  const servers = farm.data?.servers ?? [];
  return (
    <Page title="Workers" error={live.error} loading={!live.data}>
      <Table head={['Worker', 'State', 'Platform', 'Labels', 'Running', 'Capacity', 'Last seen', 'Host']} rows={workers.length} empty="No worker has connected yet.">
        {workers.map((w) => (
          <tr key={w.name} data-worker={w.name}>
            <td><a href={href(['runs'], { worker: w.name })}>{w.name}</a></td>
            <td><span class={`state state-${w.state}`}>{w.state}</span></td>
            <td>{w.platform}</td>
            <td>{labels(w.labels)}</td>
            <td>{w.running.length ? w.running.map((id) => <a key={id} class="mono" href={href(['runs', id])}>{id.slice(0, 8)} </a>) : '–'}</td>
            <td>{w.capacity}</td>
            <td>{w.state === 'disconnected' ? when(w.lastSeen) : 'now'}</td>
            <td class="small">{[w.hostname, w.os, w.arch, w.version && `kiln ${w.version}`].filter(Boolean).join(' · ')}</td>
          </tr>
        ))}
      </Table>
      <h2>Pools</h2>
      <Table head={['Pool', 'Provider', 'Platform', 'Labels', 'Instances', 'Quarantine']} rows={pools.length} empty="No latent pools are configured.">
        {pools.map((p) => (
          <tr key={p.name} data-pool={p.name}>
            <td>{p.name}</td>
            <td>{p.provider}</td>
            <td>{p.platform}</td>
            <td>{labels(p.labels)}</td>
            <td>
              {p.instances.length}/{p.max}
              {p.instances.map((i) => (
                <div key={i.name} class="small">
                  {i.name}: <span class={`state state-${i.state}`}>{i.state}</span>{i.adopted && ' (adopted)'} since {when(i.startedAt)}
                  {i.runs.map((id) => <a key={id} class="mono" href={href(['runs', id])}> {id.slice(0, 8)}</a>)}
                </div>
              ))}
            </td>
            <td>{p.quarantinedUntil ? <span class="error">until {when(p.quarantinedUntil)}{p.lastError && `: ${p.lastError}`}</span> : p.lastError ? <span class="muted">last error: {p.lastError}</span> : '–'}</td>
          </tr>
        ))}
      </Table>
      <h2>Servers</h2>
      <Table head={['Server', 'URL', 'State', 'Leases', 'Started', 'Heartbeat']} rows={servers.length} empty="No server is listed.">
        {servers.map((s) => (
          <tr key={s.id} data-server={s.id}>
            <td class="mono">{s.id}{s.self && ' (this one)'}</td>
            <td>{s.url}</td>
            <td><span class={`state state-${s.alive ? 'idle' : 'gone'}`}>{s.alive ? 'alive' : 'gone'}</span></td>
            <td>{s.leases.join(', ') || '–'}</td>
            <td>{when(s.startedAt)}</td>
            <td>{when(s.heartbeatAt)}</td>
          </tr>
        ))}
      </Table>
    </Page>
  );
}
