/** Commands that show the farm: info, queues, workers. */
import type { Command } from 'commander';
import type { InfoReply, PresentedWorker, QueuesReply } from '../api-client.js';
import type { PoolView } from '../../server/latent/pool-manager.js';
import { formatDuration } from '../../core/index.js';
import { clientFor, globals } from '../context.js';
import { orDash, printJson, printTable, shortId } from '../output.js';

function workerRows(workers: PresentedWorker[]): string[][] {
  return workers.map((w) => [
    w.name, w.platform, Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-', w.state,
    w.running.map(shortId).join(',') || '-', w.lastSeen ?? '-', w.server ?? '-',
  ]);
}
const WORKER_HEADERS = ['NAME', 'PLATFORM', 'LABELS', 'STATE', 'RUNNING', 'LAST SEEN', 'SERVER'];

/** Registers info, queues and workers. */
export function registerInfoCommands(program: Command): void {
  program
    .command('queues')
    .description('the queue of each platform, with why each waiting run waits')
    .action(async (_flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<QueuesReply>('GET', '/api/queues');
      if (globals(command).json) return printJson(reply);
      const out: string[] = [];
      for (const queue of reply.queues) {
        const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
        out.push(`${queue.platform}${queue.dropped ? ' (dropped)' : ''}: ${queue.runs.length} waiting, ${count(queue.workers, 'worker')}, ${count(queue.freeSlots, 'free slot')}${queue.pools.length ? `, pools ${queue.pools.join(', ')}` : ''}`);
        for (const { run, waiting } of queue.runs) out.push(`  ${shortId(run.id)} ${run.job}: ${waiting.text}`);
      }
      process.stdout.write(out.length ? `${out.join('\n')}\n` : 'no platforms yet\n');
    });
  program
    .command('info')
    .description('the schedule, the queue of each platform, running runs, workers, and the servers with their leases')
    .action(async (_flags: unknown, command: Command) => {
      const info = await clientFor(command).request<InfoReply>('GET', '/api/info');
      if (globals(command).json) return printJson(info);
      const out: string[] = ['schedule:'];
      for (const entry of info.schedule) {
        const skipped = entry.skipped ? `; skipped ${entry.skipped}x, last ${entry.lastSkip?.at}: ${entry.lastSkip?.reason}` : '';
        out.push(`  ${entry.job} on ${entry.platforms.join(', ') || '-'}, ${entry.schedule}${entry.paused ? ' (paused)' : ''}, next ${orDash(entry.nextAt)}${skipped}`);
      }
      out.push('queues:');
      for (const [platform, runs] of Object.entries(info.queues)) out.push(`  ${platform}: ${runs.map((r) => `${r.job} (${shortId(r.id)})`).join('; ')}`);
      out.push('running:');
      for (const run of info.running) out.push(`  ${run.job} on ${run.platform}, ${run.id}, worker ${orDash(run.worker)}, since ${orDash(run.startedAt)}`);
      if (info.dropped.length) out.push(`dropped platforms: ${info.dropped.map((d) => d.platform).join(', ')}`);
      out.push('workers:');
      for (const w of info.workers) out.push(`  ${w.name} (${w.platform}) ${w.state}${w.running.length ? `: ${w.running.map(shortId).join(', ')}` : ''}`);
      const keep = [
        info.artifacts.keepRuns === null ? '' : `newest ${info.artifacts.keepRuns} runs per job`,
        info.artifacts.keepForMs === null ? '' : `${formatDuration(info.artifacts.keepForMs)} after a run ends`,
      ].filter(Boolean);
      out.push(`artifacts: kept ${keep.length ? keep.join(', and ') : 'forever'}`);
      if (info.upload) {
        const { upload } = info;
        out.push(`upload to ${upload.target ?? '(no target configured now)'}: ${upload.pending} pending, ${upload.delivered} delivered, ${upload.failed} failed`
          + (upload.oldestPendingAt ? `, oldest pending since ${upload.oldestPendingAt}` : ''));
        for (const d of upload.troubled) {
          out.push(`  ${d.runId} ${d.state} after ${d.attempts} attempts${d.nextAt ? `, next ${d.nextAt}` : ''}: ${d.lastError}`);
        }
      }
      if (info.robur) out.push(`robur builder protocol on ${info.robur} (no authentication, as builder's)`);
      out.push('servers:');
      for (const server of info.servers) {
        out.push(`  ${server.id} ${server.url}${server.self ? ' (this one)' : ''} ${server.alive ? 'alive' : 'gone'}, since ${server.startedAt}, heartbeat ${server.heartbeatAt}`
          + `, leases: ${server.leases.join(', ') || '-'}`);
      }
      // Every server reads its own config file: one that differs runs another farm's templates, pools or upload target.
      const byDigest = new Map<string, string[]>();
      for (const server of info.servers.filter((s) => s.alive)) byDigest.set(server.configDigest, [...(byDigest.get(server.configDigest) ?? []), server.url]);
      if (byDigest.size > 1) {
        out.push(`warning: the servers' configs differ (templates dir, pools, upload target, artifact store, retention): ${[...byDigest.values()].map((urls) => urls.join(', ')).join(' | ')}`);
      }
      process.stdout.write(out.join('\n') + '\n');
    });

  program
    .command('drop-platform')
    .description("retire a platform: its queued runs end cancelled, new runs for it are refused, its workers stay idle")
    .argument('<platform>')
    .action(async (platform: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ cancelled: string[] }>('POST', `/api/platforms/${encodeURIComponent(platform)}/drop`);
      if (globals(command).json) return printJson(reply);
      process.stdout.write(`dropped ${platform}${reply.cancelled.length ? ` (cancelled ${reply.cancelled.length} queued runs)` : ''}\n`);
    });

  program
    .command('undrop-platform')
    .description('lift a drop-platform')
    .argument('<platform>')
    .action(async (platform: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ lifted: boolean }>('POST', `/api/platforms/${encodeURIComponent(platform)}/undrop`);
      if (globals(command).json) return printJson(reply);
      process.stdout.write(reply.lifted ? `undropped ${platform}\n` : `${platform} was not dropped\n`);
    });

  program
    .command('workers')
    .description('workers: name, platform, labels, state, current runs, last seen')
    .action(async (_flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ workers: PresentedWorker[]; pools: PoolView[] }>('GET', '/api/workers');
      if (globals(command).json) return printJson(reply);
      printTable(WORKER_HEADERS, workerRows(reply.workers));
      for (const pool of reply.pools) {
        const counts = ['starting', 'idle', 'busy', 'stopping'].map((state) => `${pool.instances.filter((i) => i.state === state).length} ${state}`).join(', ');
        process.stdout.write(`\npool ${pool.name} (${pool.provider}, ${pool.platform}, max ${pool.max}): ${counts}`
          + `${pool.quarantinedUntil ? `; quarantined until ${pool.quarantinedUntil}` : ''}${pool.lastError ? `; last error: ${pool.lastError}` : ''}\n`);
        for (const i of pool.instances) {
          const age = formatDuration(Math.max(0, Date.now() - Date.parse(i.startedAt)));
          const notes = [i.runs.length ? `running ${i.runs.map(shortId).join(', ')}` : '', i.forRun ? `made for ${shortId(i.forRun)}` : '', i.adopted ? 'adopted' : ''];
          process.stdout.write(`  ${i.name}  ${i.state}  up ${age}${notes.filter(Boolean).map((n) => `  ${n}`).join('')}\n`);
        }
      }
    });
}
