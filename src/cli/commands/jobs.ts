/** Commands that change or list jobs: schedule, modify, unschedule, execute, reschedule, jobs. */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import {
  describeSchedule, firstAfter, formatDuration, isoInZone, isPeriod, isValidTemplateName, MAX_JOB_TIMEOUT_MS, OVERLAPS, parseDuration, parsePairs, PERIODS, scheduleZone,
  parseSize, upcoming, validateSchedule, type Schedule,
} from '../../core/index.js';
import { coerceError, UsageError } from '../../errors.js';
import type { JobsReply, PresentedJob, PresentedRun } from '../api-client.js';
import { clientFor, globals } from '../context.js';
import { orDash, printJson, printTable } from '../output.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Job options shared by `schedule` and `modify`. */
function addJobOptions(command: Command): Command {
  return command
    .addOption(new Option('--script <file>', 'shell script to run (with /bin/sh -e)').conflicts(['command', 'template']))
    .addOption(new Option('--command <cmd>', 'a one-line command to run instead of a script file').conflicts('template'))
    .option('--template <name>', 'expand <config dir>/templates/NAME[.PLATFORM] at dispatch instead of a script')
    .option('--var <K=V>', 'a %%K%% value for the template (repeatable)', collect)
    .option('--platform <platform>', "platform whose workers run it (default: the server's own; a template job: every platform with a variant)")
    .addOption(new Option('--period <period>', `${PERIODS.join(' | ')} (default daily)`).conflicts(['every', 'cron']))
    .addOption(new Option('--every <duration>', 'run at this interval, e.g. 90s, 15m, 6h').conflicts('cron'))
    .option('--cron <expr>', "cron expression, 5 fields (or 6 with seconds), e.g. '0 3 * * 1-5'")
    .option('--tz <zone>', 'IANA time zone of --cron (default UTC)')
    .addOption(new Option('--overlap <policy>', 'when due while the previous run is queued or running (default skip)').choices([...OVERLAPS]))
    .option('--catch-up', 'after downtime, run every missed slot instead of once')
    .option('--no-catch-up', 'after downtime, run once (the default)')
    .option('--paused', 'do not run on schedule until `kiln resume` (execute still runs it)')
    .option('--timeout <duration>', 'stop the job after this long, e.g. 90s, 30m, 2h (default 1h)')
    .option('--idle-timeout <duration>', "stop the job when it prints nothing for this long ('off' to clear; default off)")
    .option('--retries <n>', 'times a run lost with its worker is tried again (default 1)')
    .option('--failure-retries <n>', 'times a failed run is tried again (default 0)')
    .option('--artifacts <glob>', 'keep only the files matching this glob as artifacts (repeatable; default: every non-dot file)', collect)
    .option('--artifacts-on-failure', 'keep the files of runs killed by a signal, timed out or cancelled too')
    .option('--env <K=V>', 'environment variable for the job (repeatable)', collect)
    .option('--label <K=V>', 'label a worker must have to take the job (repeatable)', collect)
    .option('--memory <size>', "most memory the job's processes may use together, e.g. 512mb ('off' to clear)")
    .option('--pids <n>', "most processes the job may have at once ('off' to clear)")
    .option('--cpu-time <duration>', "most CPU time each of the job's processes may use, e.g. 10m ('off' to clear)")
    .addOption(new Option('--network <mode>', "none: cut the job off the network (needs a --sandbox bwrap worker); host: the worker's network").choices(['none', 'host']));
}

interface JobFlags {
  script?: string;
  command?: string;
  template?: string;
  var?: string[];
  platform?: string;
  period?: string;
  every?: string;
  cron?: string;
  tz?: string;
  overlap?: string;
  catchUp?: boolean;
  paused?: boolean;
  timeout?: string;
  idleTimeout?: string;
  retries?: string;
  failureRetries?: string;
  env?: string[];
  label?: string[];
  artifacts?: string[];
  artifactsOnFailure?: boolean;
  memory?: string;
  pids?: string;
  cpuTime?: string;
  network?: string;
}

/** The job's sandbox settings from its flags; `off` clears one (null, for modify). */
function sandboxFrom(flags: JobFlags): Record<string, number | string | null> | undefined {
  const out: Record<string, number | string | null> = {};
  const read = (flag: string, text: string | undefined, parse: (t: string) => number | undefined, hint: string) => {
    if (text === undefined) return undefined;
    if (text === 'off') return null;
    const value = parse(text);
    if (value === undefined || value <= 0) throw new UsageError(`bad ${flag} '${text}': ${hint}`);
    return value;
  };
  const memory = read('--memory', flags.memory, parseSize, 'use a size like 512mb or 2gb, or off');
  const pids = read('--pids', flags.pids, (t) => (/^\d{1,7}$/.test(t) ? Number(t) : undefined), 'give a number of processes, or off');
  const cpu = read('--cpu-time', flags.cpuTime, (t) => { const ms = parseDuration(t); return ms === undefined ? undefined : Math.ceil(ms / 1000); }, 'use a duration like 90s or 10m, or off');
  if (memory !== undefined) out.memoryBytes = memory;
  if (pids !== undefined) out.pids = pids;
  if (cpu !== undefined) out.cpuSeconds = cpu;
  if (flags.network !== undefined) out.network = flags.network;
  return Object.keys(out).length > 0 ? out : undefined;
}

/** The schedule the flags describe (checked here, so a bad one is a usage error), if any. */
function scheduleFrom(flags: JobFlags): Schedule | undefined {
  if (flags.tz !== undefined && flags.cron === undefined) throw new UsageError('--tz goes with --cron');
  let schedule: Schedule | undefined;
  if (flags.period !== undefined) {
    if (!isPeriod(flags.period)) throw new UsageError(`unknown period '${flags.period}': use ${PERIODS.join(', ')}`);
    schedule = { kind: 'period', period: flags.period };
  } else if (flags.every !== undefined) {
    const everyMs = parseDuration(flags.every);
    if (everyMs === undefined) throw new UsageError(`bad --every '${flags.every}': use a duration like 90s, 15m or 6h`);
    schedule = { kind: 'every', everyMs };
  } else if (flags.cron !== undefined) {
    schedule = { kind: 'cron', expr: flags.cron.trim(), tz: flags.tz ?? 'UTC' };
  }
  if (schedule) {
    try {
      validateSchedule(schedule);
    } catch (raw) {
      throw new UsageError(coerceError(raw).message);
    }
  }
  return schedule;
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
  if (flags.template !== undefined) {
    if (!isValidTemplateName(flags.template)) throw new UsageError(`bad --template '${flags.template}': a template name has no '/', '..' or dots`);
    body.template = flags.template;
  }
  if (flags.platform !== undefined) body.platform = flags.platform;
  const schedule = scheduleFrom(flags);
  if (schedule) body.schedule = schedule;
  if (flags.overlap !== undefined) body.overlap = flags.overlap;
  if (flags.catchUp !== undefined) body.catchUp = flags.catchUp;
  if (flags.paused) body.paused = true;
  if (flags.artifacts) body.artifacts = flags.artifacts;
  if (flags.artifactsOnFailure) body.artifactsOnFailure = true;
  const sandbox = sandboxFrom(flags);
  if (sandbox) body.sandbox = sandbox;
  if (flags.timeout !== undefined) {
    const ms = parseDuration(flags.timeout);
    if (ms === undefined || ms <= 0) throw new UsageError(`bad --timeout '${flags.timeout}': use a duration like 90s, 30m or 2h`);
    if (ms > MAX_JOB_TIMEOUT_MS) throw new UsageError(`bad --timeout '${flags.timeout}': at most ${formatDuration(MAX_JOB_TIMEOUT_MS)}`);
    body.timeoutMs = ms;
  }
  if (flags.idleTimeout !== undefined) {
    const ms = flags.idleTimeout === 'off' ? null : parseDuration(flags.idleTimeout);
    if (ms === undefined || ms === 0) throw new UsageError(`bad --idle-timeout '${flags.idleTimeout}': use a duration like 5m, or off`);
    if (ms !== null && ms > MAX_JOB_TIMEOUT_MS) throw new UsageError(`bad --idle-timeout '${flags.idleTimeout}': at most ${formatDuration(MAX_JOB_TIMEOUT_MS)}`);
    body.idleTimeoutMs = ms;
  }
  for (const [flag, key, value] of [['--retries', 'retries', flags.retries], ['--failure-retries', 'failureRetries', flags.failureRetries]] as const) {
    if (value === undefined) continue;
    if (!/^\d{1,3}$/.test(value) || Number(value) > 100) throw new UsageError(`bad ${flag} '${value}': give a number from 0 to 100`);
    body[key] = Number(value);
  }
  try {
    if (flags.var) body.vars = parsePairs(flags.var, '--var', true);
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
      .description('add a job; its first run is queued now unless --period never or --paused')
      .argument('<name>', 'unique job name')
      .option('--dry-run', 'print the next times of the schedule and change nothing')
      .option('--next <n>', 'with --dry-run: how many times', '5'),
  ).action(async (name: string, flags: JobFlags & { dryRun?: boolean; next: string }, command: Command) => {
    const body = jobBody(flags);
    if (flags.dryRun) {
      const schedule = (body.schedule as Schedule | undefined) ?? { kind: 'period', period: 'daily' };
      const zone = scheduleZone(schedule);
      const times = upcoming(schedule, firstAfter(schedule, Date.now()) ?? null, countFlag(flags.next)).map((at) => isoInZone(at, zone));
      if (globals(command).json) return printJson({ schedule: describeSchedule(schedule), next: times });
      process.stdout.write(`${describeSchedule(schedule)}: ${times.length ? `next\n${times.map((t) => `  ${t}`).join('\n')}` : 'never runs on its own'}\n`);
      return;
    }
    if (body.script === undefined && body.template === undefined) throw new UsageError('give the job a --script FILE, a --command CMD or a --template NAME');
    const reply = await clientFor(command).request<{ job: PresentedJob; runs: PresentedRun[] }>('POST', '/api/jobs', { name, ...body });
    if (globals(command).json) return printJson(reply);
    const { job, runs } = reply;
    const where = job.platform ?? `every platform of template ${job.template}`;
    process.stdout.write(`scheduled ${job.name} on ${where}, ${job.scheduleText}${job.paused ? ' (paused)' : ''}${job.nextAt ? `, next ${job.nextAt}` : ''}\n`);
    for (const run of runs) process.stdout.write(`queued run ${run.id}${job.platform ? '' : ` on ${run.platform}`}\n`);
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
      const reply = await clientFor(command).request<{ run: PresentedRun; runs: PresentedRun[]; created: boolean }>(
        'POST', `/api/jobs/${encodeURIComponent(name)}/execute`, flags.platform ? { platform: flags.platform } : {},
      );
      if (globals(command).json) return printJson(reply);
      // One id per line: a template job queues a run on each of its platforms.
      process.stdout.write(reply.runs.map((run) => `${run.id}\n`).join(''));
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

  for (const [verb, description] of [['pause', 'stop running a job on its schedule (execute still runs it)'], ['resume', 'run a paused job on its schedule again, from now']] as const) {
    program
      .command(verb)
      .description(description)
      .argument('<name>', 'job name')
      .action(async (name: string, _flags: unknown, command: Command) => {
        const reply = await clientFor(command).request<{ job: PresentedJob }>('POST', `/api/jobs/${encodeURIComponent(name)}/${verb}`);
        if (globals(command).json) return printJson(reply);
        process.stdout.write(`${verb === 'pause' ? 'paused' : 'resumed'} ${name}${reply.job.paused ? '' : `, next ${orDash(reply.job.nextAt)}`}\n`);
      });
  }

  program
    .command('jobs')
    .description('list jobs')
    .option('--next <n>', "also print each job's next N times")
    .action(async (flags: { next?: string }, command: Command) => {
      const client = clientFor(command);
      const reply = await client.request<JobsReply>('GET', '/api/jobs');
      if (flags.next !== undefined) {
        const count = countFlag(flags.next);
        const previews = await Promise.all(
          reply.jobs.map((job) => client.request<{ job: string; schedule: string; next: string[] }>('GET', `/api/jobs/${encodeURIComponent(job.name)}/next?count=${count}`)),
        );
        if (globals(command).json) return printJson({ jobs: previews });
        process.stdout.write(previews.map((p) => `${p.job} (${p.schedule}):${p.next.map((t) => `\n  ${t}`).join('') || ' no next time'}`).join('\n') + '\n');
        return;
      }
      if (globals(command).json) return printJson(reply);
      printTable(
        ['NAME', 'PLATFORM', 'SCHEDULE', 'NEXT', 'TIMEOUT'],
        reply.jobs.map((job) => [
          job.name, job.platform ?? `(${job.template})`, job.scheduleText + (job.paused ? ' (paused)' : ''), orDash(job.nextAt), `${job.timeoutMs / 1000}s`,
        ]),
      );
    });

  program
    .command('templates')
    .description('list the templates in the server\'s config dir (and builder\'s orb-build.template.PLATFORM files there), with their platform variants')
    .action(async (_flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ directory: string; templates: { name: string; generic: boolean; platforms: string[]; builderPlatforms?: string[] }[] }>('GET', '/api/templates');
      if (globals(command).json) return printJson(reply);
      // A platform whose variant is builder's orb-build.template.PLATFORM in the config dir says so.
      const shown = (t: { platforms: string[]; builderPlatforms?: string[] }) => t.platforms.map((p) => (t.builderPlatforms?.includes(p) ? `${p} (builder's file)` : p));
      printTable(
        ['TEMPLATE', 'PLATFORMS', 'GENERIC'],
        reply.templates.map((t) => [t.name, shown(t).join(', ') || '-', t.generic ? 'yes' : 'no']),
      );
    });
}

/** A positive count flag. */
function countFlag(text: string): number {
  if (!/^\d{1,4}$/.test(text) || Number(text) < 1 || Number(text) > 1000) throw new UsageError(`bad --next '${text}': give a number from 1 to 1000`);
  return Number(text);
}
