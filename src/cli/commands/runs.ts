/** Commands about runs: runs, observe, logs. */
import { Command, Option } from 'commander';
import { backoffMs, RUN_STATUSES } from '../../core/index.js';
import { coerceError, ServerUnreachableError, UsageError } from '../../errors.js';
import os from 'node:os';
import type { ApiClient, PresentedDelivery, PresentedEvent, PresentedRun } from '../api-client.js';
import { clientFor, globals } from '../context.js';
import { orDash, printJson, printTable, shortId } from '../output.js';

/** Exit code of `observe` for a run that did not succeed. */
const RUN_FAILED = 1;

/** How long `observe` keeps trying to get back to a server that went away (ms). */
const RECONNECT_FOR_MS = 120_000;

/**
 * Prints a run's console (following it when asked) and returns the process exit code. A followed
 * stream that breaks (the server restarted, say) is picked up again after the last line printed.
 */
async function printConsole(client: ApiClient, runId: string, follow: boolean, json: boolean, timestamps: boolean): Promise<number> {
  let end: PresentedRun | undefined;
  let after = -1;
  let brokenSince: number | undefined;
  let streamed = false;
  for (let attempt = 0; !end; attempt += 1) {
    try {
      for await (const event of client.console(runId, follow, after)) {
        brokenSince = undefined;
        streamed = true;
        if (event.type === 'keepalive') continue;
        if (json) process.stdout.write(JSON.stringify(event) + '\n');
        else if (event.type === 'line') process.stdout.write(timestamps ? `${new Date(event.ts).toISOString()} ${event.text}\n` : `${event.text}\n`);
        if (event.type === 'line') after = event.seq;
        if (event.type === 'end') end = event.run;
      }
      if (!end) throw new ServerUnreachableError(client.baseUrl, 'the console stream ended before the run did');
    } catch (raw) {
      const err = coerceError(raw);
      brokenSince ??= Date.now();
      // Only a stream that worked and then broke is retried: a server never reached is an error now.
      if (!follow || !streamed || err.code !== 'KILN_ERR_SERVER_UNREACHABLE' || Date.now() - brokenSince > RECONNECT_FOR_MS) throw err;
      process.stderr.write(`kiln: ${err.message}; reconnecting\n`);
      await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt + 1, { retryMinMs: 250, retryMaxMs: 5000 })));
    }
  }
  if (!json && follow) process.stdout.write(`kiln: run ${end.id} ${end.status}${end.resultText ? `: ${end.resultText}` : ''}\n`);
  if (!follow) return 0;
  return end.status === 'succeeded' ? 0 : RUN_FAILED;
}

/** Registers the run commands. */
export function registerRunCommands(program: Command): void {
  program
    .command('runs')
    .description('list runs, newest first')
    .option('--job <name>', 'only runs of this job')
    .addOption(new Option('--status <status>', 'only runs in this state').choices([...RUN_STATUSES]))
    .option('--limit <n>', 'at most this many', '20')
    .action(async (flags: { job?: string; status?: string; limit: string }, command: Command) => {
      if (!/^\d+$/.test(flags.limit) || Number(flags.limit) < 1) throw new UsageError(`bad --limit '${flags.limit}': give a positive number`);
      const query = new URLSearchParams({ limit: flags.limit });
      if (flags.job) query.set('job', flags.job);
      if (flags.status) query.set('status', flags.status);
      const reply = await clientFor(command).request<{ runs: PresentedRun[] }>('GET', `/api/runs?${query}`);
      if (globals(command).json) return printJson(reply);
      printTable(
        ['RUN', 'JOB', 'PLATFORM', 'STATUS', 'RESULT', 'ATTEMPT', 'WORKER', 'QUEUED'],
        reply.runs.map((run) => [
          shortId(run.id), run.job, run.platform, run.status, orDash(run.resultText), String(run.attempt), orDash(run.worker), orDash(run.queuedAt),
        ]),
      );
    });

  program
    .command('observe')
    .description("replay a run's console from the start, then follow it live until it ends; exit 0 only if it succeeded")
    .argument('[run]', 'run id or unique prefix')
    .option('--latest', 'the newest run (of --job, on --platform)')
    .option('--job <name>', 'with --latest: of this job')
    .option('--platform <platform>', 'with --latest: on this platform')
    .option('--timestamps', 'prefix each line with its time')
    .action(async (runArg: string | undefined, flags: { latest?: boolean; job?: string; platform?: string; timestamps?: boolean }, command: Command) => {
      const client = clientFor(command);
      if ((runArg === undefined) === (flags.latest === undefined)) throw new UsageError('give a RUN or --latest (not both)');
      if (!flags.latest && (flags.job || flags.platform)) throw new UsageError('--job and --platform go with --latest');
      let runId = runArg;
      if (flags.latest) {
        const query = new URLSearchParams();
        if (flags.job) query.set('job', flags.job);
        if (flags.platform) query.set('platform', flags.platform);
        runId = (await client.request<{ run: PresentedRun }>('GET', `/api/runs/latest?${query}`)).run.id;
      }
      process.exitCode = await printConsole(client, runId!, true, globals(command).json ?? false, flags.timestamps ?? false);
    });

  program
    .command('cancel')
    .description('stop a queued or running run; the worker kills its whole process tree')
    .argument('<run>', 'run id or unique prefix')
    .action(async (runId: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ run: PresentedRun; state: 'cancelled' | 'requested' }>(
        // The server records the token's name; the login name goes along only as a note (`otto (as root)`).
        'POST', `/api/runs/${encodeURIComponent(runId)}/cancel`, loginNote(),
      );
      if (globals(command).json) return printJson(reply);
      process.stdout.write(reply.state === 'cancelled' ? `cancelled ${reply.run.id}\n` : `cancelling ${reply.run.id}: its worker is stopping it\n`);
    });

  program
    .command('show')
    .description('a run and its history: every attempt, dispatch, end, retry and ignored message')
    .argument('<run>', 'run id or unique prefix')
    .action(async (runId: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ run: PresentedRun; events: PresentedEvent[]; deliveries: PresentedDelivery[] }>(
        'GET', `/api/runs/${encodeURIComponent(runId)}/events`,
      );
      if (globals(command).json) return printJson(reply);
      const { run } = reply;
      const out = [
        `run ${run.id}`,
        `  job ${run.job} on ${run.platform}, attempt ${run.attempt}, ${run.status}${run.resultText ? `: ${run.resultText}` : ''}`,
        `  worker ${orDash(run.worker)}, queued ${orDash(run.queuedAt)}, started ${orDash(run.startedAt)}, finished ${orDash(run.finishedAt)}`,
        'history:',
        ...reply.events.map((e) => `  ${e.at}  attempt ${e.attempt}  ${e.kind}  ${JSON.stringify(e.detail)}`),
        ...reply.deliveries.map((d) => `upload to ${d.target}: ${d.state} after ${d.attempts} attempts`
          + `${d.endedAt ? ` at ${d.endedAt}` : d.nextAt ? `, next ${d.nextAt}` : ''}${d.lastError ? `; last error: ${d.lastError}` : ''}`),
      ];
      process.stdout.write(out.join('\n') + '\n');
    });

  program
    .command('redeliver')
    .description('send a run to the upload target again, after it refused it or failed too often')
    .argument('<run>', 'run id or unique prefix')
    .action(async (runId: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ delivery: PresentedDelivery }>('POST', `/api/runs/${encodeURIComponent(runId)}/redeliver`, {});
      if (globals(command).json) return printJson(reply);
      process.stdout.write(`queued ${reply.delivery.runId} for delivery to ${reply.delivery.target}\n`);
    });

  program
    .command('logs')
    .description('print the whole console of a run, without following')
    .argument('<run>', 'run id or unique prefix')
    .option('--timestamps', 'prefix each line with its time')
    .action(async (runId: string, flags: { timestamps?: boolean }, command: Command) => {
      await printConsole(clientFor(command), runId, false, globals(command).json ?? false, flags.timestamps ?? false);
    });
}

/** The cancel's note of who is at the keyboard: the login name, when it is a plain one (else none, rather than a refused cancel). */
function loginNote(): { by?: string } {
  try {
    const name = os.userInfo().username;
    return /^[A-Za-z0-9._@-]{1,64}$/.test(name) ? { by: name } : {};
  } catch {
    return {};
  }
}
