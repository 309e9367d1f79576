/** Commands that change or list jobs: schedule, modify, unschedule, execute, reschedule, jobs. */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { isPeriod, parseDuration, parsePairs, PERIODS } from '../../core/index.js';
import { coerceError, UsageError } from '../../errors.js';
import type { PresentedJob, PresentedRun } from '../api-client.js';
import { clientFor, globals } from '../context.js';
import { orDash, printJson, printTable } from '../output.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Job options shared by `schedule` and `modify`. */
function addJobOptions(command: Command): Command {
  return command
    .addOption(new Option('--script <file>', 'shell script to run (with /bin/sh -e)').conflicts('command'))
    .option('--command <cmd>', 'a one-line command to run instead of a script file')
    .option('--platform <platform>', "platform whose workers run it (default: the server's own, e.g. debian-12)")
    .option('--period <period>', `${PERIODS.join(' | ')} (default daily)`)
    .option('--timeout <duration>', 'stop the job after this long, e.g. 90s, 30m, 2h (default 1h)')
    .option('--idle-timeout <duration>', "stop the job when it prints nothing for this long ('off' to clear; default off)")
    .option('--retries <n>', 'times a run lost with its worker is tried again (default 1)')
    .option('--failure-retries <n>', 'times a failed run is tried again (default 0)')
    .option('--env <K=V>', 'environment variable for the job (repeatable)', collect)
    .option('--label <K=V>', 'label a worker must have to take the job (repeatable)', collect);
}

interface JobFlags {
  script?: string;
  command?: string;
  platform?: string;
  period?: string;
  timeout?: string;
  idleTimeout?: string;
  retries?: string;
  failureRetries?: string;
  env?: string[];
  label?: string[];
}

/** Turns job flags into an API body, with a clear usage error for anything wrong. */
function jobBody(flags: JobFlags): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (flags.script !== undefined) {
    try {
      body.script = readFileSync(flags.script, 'utf8');
    } catch (raw) {
      throw new UsageError(`cannot read script file '${flags.script}': ${coerceError(raw).message}`);
    }
  }
  if (flags.command !== undefined) body.script = flags.command + '\n';
  if (flags.platform !== undefined) body.platform = flags.platform;
  if (flags.period !== undefined) {
    if (!isPeriod(flags.period)) throw new UsageError(`unknown period '${flags.period}': use ${PERIODS.join(', ')}`);
    body.period = flags.period;
  }
  if (flags.timeout !== undefined) {
    const ms = parseDuration(flags.timeout);
    if (ms === undefined || ms <= 0) throw new UsageError(`bad --timeout '${flags.timeout}': use a duration like 90s, 30m or 2h`);
    body.timeoutMs = ms;
  }
  if (flags.idleTimeout !== undefined) {
    const ms = flags.idleTimeout === 'off' ? null : parseDuration(flags.idleTimeout);
    if (ms === undefined || ms === 0) throw new UsageError(`bad --idle-timeout '${flags.idleTimeout}': use a duration like 5m, or off`);
    body.idleTimeoutMs = ms;
  }
  for (const [flag, key, value] of [['--retries', 'retries', flags.retries], ['--failure-retries', 'failureRetries', flags.failureRetries]] as const) {
    if (value === undefined) continue;
    if (!/^\d{1,3}$/.test(value) || Number(value) > 100) throw new UsageError(`bad ${flag} '${value}': give a number from 0 to 100`);
    body[key] = Number(value);
  }
  try {
    if (flags.env) body.env = parsePairs(flags.env, '--env', true);
    if (flags.label) body.labels = parsePairs(flags.label, '--label');
  } catch (raw) {
    throw new UsageError(coerceError(raw).message);
  }
  return body;
}

/** Registers the job commands. */
export function registerJobCommands(program: Command): void {
  addJobOptions(
    program
      .command('schedule')
      .description('add a job; its first run is queued now unless --period never')
      .argument('<name>', 'unique job name'),
  ).action(async (name: string, flags: JobFlags, command: Command) => {
    const body = jobBody(flags);
    if (body.script === undefined) throw new UsageError('give the job a --script FILE or a --command CMD');
    const reply = await clientFor(command).request<{ job: PresentedJob; run: PresentedRun | null }>('POST', '/api/jobs', { name, ...body });
    if (globals(command).json) return printJson(reply);
    const { job, run } = reply;
    process.stdout.write(`scheduled ${job.name} on ${job.platform}, ${job.period}${job.nextAt ? `, next ${job.nextAt}` : ''}\n`);
    if (run) process.stdout.write(`queued run ${run.id}\n`);
  });

  addJobOptions(
    program.command('modify').description('change a job; only the options given change').argument('<name>', 'job name'),
  ).action(async (name: string, flags: JobFlags, command: Command) => {
    const body = jobBody(flags);
    if (Object.keys(body).length === 0) throw new UsageError('nothing to change: give at least one option (see kiln modify --help)');
    const reply = await clientFor(command).request<{ job: PresentedJob }>('PATCH', `/api/jobs/${encodeURIComponent(name)}`, body);
    if (globals(command).json) return printJson(reply);
    process.stdout.write(`modified ${reply.job.name}\n`);
  });

  program
    .command('unschedule')
    .description('remove a job from the schedule and the queues (its history stays)')
    .argument('<name>', 'job name')
    .action(async (name: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ cancelled: string[] }>('DELETE', `/api/jobs/${encodeURIComponent(name)}`);
      if (globals(command).json) return printJson(reply);
      process.stdout.write(`unscheduled ${name}${reply.cancelled.length ? ` (cancelled ${reply.cancelled.length} queued run)` : ''}\n`);
    });

  program
    .command('execute')
    .description('queue a run now, at the front of the queue; prints the run id')
    .argument('<name>', 'job name')
    .option('--platform <platform>', "run on this platform instead of the job's")
    .action(async (name: string, flags: { platform?: string }, command: Command) => {
      const reply = await clientFor(command).request<{ run: PresentedRun; created: boolean }>(
        'POST', `/api/jobs/${encodeURIComponent(name)}/execute`, flags.platform ? { platform: flags.platform } : {},
      );
      if (globals(command).json) return printJson(reply);
      process.stdout.write(`${reply.run.id}\n`);
    });

  program
    .command('reschedule')
    .description("set a job's next scheduled time (RFC 3339, any offset)")
    .argument('<name>', 'job name')
    .argument('<next>', 'e.g. 2026-12-01T06:00:00+01:00')
    .action(async (name: string, next: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ job: PresentedJob }>('POST', `/api/jobs/${encodeURIComponent(name)}/reschedule`, { next });
      if (globals(command).json) return printJson(reply);
      process.stdout.write(`${reply.job.name} next ${reply.job.nextAt}\n`);
    });

  program
    .command('jobs')
    .description('list jobs')
    .action(async (_flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ jobs: PresentedJob[] }>('GET', '/api/jobs');
      if (globals(command).json) return printJson(reply);
      printTable(
        ['NAME', 'PLATFORM', 'PERIOD', 'NEXT', 'TIMEOUT'],
        reply.jobs.map((job) => [job.name, job.platform, job.period, orDash(job.nextAt), `${job.timeoutMs / 1000}s`]),
      );
    });
}
