/**
 * A `builder-client` session's one command, answered as builder-server answers it (reference
 * robur-protocol.md §1.5-1.6): zero or more data messages, then exactly one Success or Failure with
 * builder's texts. Each command is a Kiln job use case (JobService), so what it changes is in the
 * store before Success is sent. The listener (robur-listener.ts) reads the hello and the command
 * and closes the connection after this returns.
 *
 * A platform "has a queue" (builder creates queues lazily and forgets them when dropped) when Kiln
 * knows it and it is not dropped: queued runs, jobs, connected workers or pools of it. Execute's
 * `no such platform`, Drop_platform's `unknown platform` and Info's queues all go by that one rule.
 */
import type { Logger } from 'pino';
import { firstAfter, isValidJobName, isValidPlatform, JOB_NAME_RULE, type Schedule } from '../../core/index.js';
import { coerceError, JobExistsError, JobNotFoundError, PlatformDroppedError, RunAmbiguousError, RunNotFoundError, StoreUnavailableError } from '../../errors.js';
import {
  describeRoburResult, roburResultOf, type RoburCmd, type RoburOrbJob, type RoburPeriod, type RoburQueue, type RoburResult, type RoburScriptJob,
} from '../../protocol/robur/index.js';
import type { Job, JobStore, Run } from '../../store/index.js';
import { MAX_SCRIPT_BYTES, parse, platformParam } from '../api/schemas.js';
import { followConsole, type ConsoleSink } from '../console-follow.js';
import type { ConsoleHub } from '../console-hub.js';
import type { EventBus } from '../events.js';
import type { JobInput, JobService } from '../job-service.js';
import type { RoburConnection } from './connection.js';
import { jobInputOf, ORB_BUILD_TEMPLATE, ROBUR_NO_PLATFORM, roburJobOf, roburScheduleItemOf, scriptJobOf } from './job-mapping.js';

/** What a client session needs of the server. */
export interface RoburClientParts {
  /** The server's store (reads: Info, Observe, the platforms known). */
  store: JobStore;
  /** Every change goes through the job use cases. */
  jobService: JobService;
  /** Observe follows a run's console through it, as `kiln observe` does. */
  hub: ConsoleHub;
  /** Observe of a queued run waits for `run.dispatched` / `run.ended` on it. */
  events: EventBus;
  /** The farm's latent pools (their platforms are known before an instance connects). */
  pools: () => Promise<{ platform: string }[]>;
  /** Platforms of robur workers waiting on this server, if the listener counts them (builder does not: optional). */
  roburWorkerPlatforms?: () => string[];
  log: Logger;
}

/** Undelivered Output messages an observer may have before live lines are re-read from the store instead (builder: 100). */
const MAX_UNDRAINED = 100;

/** A command's answer: undefined for Success, else the Failure text. */
type Answer = string | undefined;

/** Answers one client command on `conn`: its data messages, then Success or Failure. Never throws. */
export async function serveRoburClient(conn: RoburConnection, command: RoburCmd, parts: RoburClientParts): Promise<void> {
  const log = parts.log.child({ peer: conn.peer, command: command.type });
  let answer: Answer;
  try {
    answer = await answerOf(conn, command, parts);
  } catch (raw) {
    const err = coerceError(raw);
    // The detail (a store's address, a database's text) is logged, never told to an unauthenticated peer.
    log.error({ err }, 'robur client command failed');
    answer = err instanceof StoreUnavailableError ? 'server error: the store is unavailable, try again' : 'server error';
  }
  if (conn.isClosed) return;
  if (answer === undefined) {
    log.info('robur client command done');
    conn.send({ type: 'success' });
  } else {
    log.info({ failure: answer }, 'robur client command refused');
    conn.send({ type: 'failure', message: answer });
  }
  await conn.drained();
}

/** Runs one command: its data messages are sent here, its answer returned. */
function answerOf(conn: RoburConnection, command: RoburCmd, parts: RoburClientParts): Promise<Answer> {
  switch (command.type) {
    case 'schedule':
      return schedule(parts, command.period, command.job);
    case 'schedule-orb-build':
      return scheduleOrbBuild(parts, command.period, command.job);
    case 'unschedule':
      return unschedule(parts, command.name);
    case 'execute':
    case 'execute-old':
      return execute(parts, command.name, command.type === 'execute' ? command.platform : undefined);
    case 'reschedule':
      return reschedule(parts, command.name, command.next, command.period);
    case 'info':
      return info(conn, parts);
    case 'observe':
      return observe(conn, parts, command.uuid);
    case 'drop-platform':
      return dropPlatform(parts, command.platform);
    case 'undrop-platform':
      return undropPlatform(parts, command.platform);
    default:
      return Promise.resolve('bad communication');
  }
}

/** The platforms Kiln knows (builder: those with a queue, once the dropped ones are taken out), and the dropped ones. */
async function platforms(parts: RoburClientParts, jobs?: Job[]): Promise<{ queues: Set<string>; dropped: Set<string> }> {
  const [waiting, allJobs, workers, pools, dropped] = await Promise.all([
    parts.store.listWaiting(), jobs ?? parts.store.listJobs(), parts.store.listWorkers(), parts.pools(), parts.store.listDroppedPlatforms(),
  ]);
  const droppedSet = new Set(dropped.map((d) => d.platform));
  const known = [
    ...waiting.map((r) => r.platform),
    ...allJobs.flatMap((job) => parts.jobService.platformsFor(job)),
    ...workers.filter((w) => w.connected).map((w) => w.platform),
    ...pools.map((p) => p.platform),
    ...(parts.roburWorkerPlatforms?.() ?? []),
  ];
  return { queues: new Set(known.filter((p) => !droppedSet.has(p))), dropped: droppedSet };
}

/** Kiln's rules for what a robur client names (the API's own): a Failure text, or undefined. */
function invalidJob(input: JobInput): Answer {
  if (!isValidJobName(input.name)) return `invalid job name '${input.name}': job names use ${JOB_NAME_RULE} characters`;
  if (input.platform !== undefined) {
    try {
      parse(platformParam, { platform: input.platform }, 'platform');
    } catch (raw) {
      return coerceError(raw).message;
    }
  }
  if (input.script !== undefined && input.script.length === 0) return 'invalid job: the script is empty';
  if (input.script !== undefined && Buffer.byteLength(input.script) > MAX_SCRIPT_BYTES) return `invalid job: the script is larger than ${MAX_SCRIPT_BYTES} bytes`;
  return undefined;
}

/** Adds a job and queues it at once on `queueOn`, with builder's texts for a used name and a dropped platform. */
async function addJob(parts: RoburClientParts, input: JobInput, queueOn: string[]): Promise<Answer> {
  try {
    await parts.jobService.schedule({ ...input, queueOn });
    return undefined;
  } catch (raw) {
    const err = coerceError(raw);
    if (err instanceof JobExistsError) return 'job name already used';
    if (err instanceof PlatformDroppedError) return "platform dropped; can't schedule jobs";
    throw err;
  }
}

/** Schedule (5): a script job, queued at once (a `never` one too, as builder does). */
async function schedule(parts: RoburClientParts, period: RoburPeriod, job: RoburScriptJob): Promise<Answer> {
  const input = jobInputOf({ kind: 'script', job }, period);
  const platform = input.platform ?? ROBUR_NO_PLATFORM;
  // builder's order: a dropped platform is refused before the name is looked at.
  if ((await parts.store.listDroppedPlatforms()).some((d) => d.platform === platform)) return "platform dropped; can't schedule jobs";
  if (await parts.store.getJob(job.name)) return 'job name already used';
  return invalidJob(input) ?? addJob(parts, input, [platform]);
}

/**
 * Schedule_orb_build (12): the template job `orb-build`, queued at once on every platform with a
 * variant of the template that is not dropped. With no variant at all it is refused (builder would
 * take it and lose it at dispatch).
 */
async function scheduleOrbBuild(parts: RoburClientParts, period: RoburPeriod, job: RoburOrbJob): Promise<Answer> {
  if (await parts.store.getJob(job.name)) return 'job name already used';
  const input = jobInputOf({ kind: 'orb-build', job }, period);
  const invalid = invalidJob(input);
  if (invalid) return invalid;
  const variants = parts.jobService.platformsFor({ platform: null, template: ORB_BUILD_TEMPLATE });
  if (variants.length === 0) {
    return `no platform has an orb-build template (orb-build.template.PLATFORM in the config dir): job ${job.name} not scheduled`;
  }
  const { dropped } = await platforms(parts);
  return addJob(parts, input, variants.filter((p) => !dropped.has(p)));
}

/** Unschedule (9): the job goes, with its queued runs; running ones go on. */
async function unschedule(parts: RoburClientParts, name: string): Promise<Answer> {
  if (!(await parts.store.getJob(name))) return `unknown job ${name}`;
  try {
    await parts.jobService.unschedule(name);
    return undefined;
  } catch (raw) {
    const err = coerceError(raw);
    if (err instanceof JobNotFoundError) return `unknown job ${name}`;
    throw err;
  }
}

/**
 * Execute (20, and the old 11 without a platform): a run at the front of the platform's queue.
 * A job of one platform runs there (another platform named is refused); an orb-build job runs on
 * the platform named, or on every platform that has a queue and a variant of its template.
 */
async function execute(parts: RoburClientParts, name: string, platform: string | undefined): Promise<Answer> {
  const job = await parts.store.getJob(name);
  if (!job) return 'execute failed: job not found';
  // Not a platform name: no queue can have it (and it must never reach a template file's name).
  if (platform !== undefined && !isValidPlatform(platform)) return 'execute failed: no such platform';
  if (job.platform !== null && platform !== undefined && platform !== job.platform) {
    return `execute failed: job is for a different platform: ${job.platform}`;
  }
  const { queues } = await platforms(parts);
  const target = platform ?? job.platform ?? undefined;
  const targets = target !== undefined ? [target] : parts.jobService.platformsFor(job).filter((p) => queues.has(p));
  if (target !== undefined && !queues.has(target)) return 'execute failed: no such platform';
  if (targets.length === 0) return `execute failed: no platform has a queue and a variant of template '${job.template}'`;
  return queueRuns(parts, name, targets, 'front', 'execute failed: ');
}

/** Queues a run of `name` on each platform; a job or platform gone meanwhile is said with builder's words. */
async function queueRuns(parts: RoburClientParts, name: string, targets: string[], position: 'front' | 'back', prefix: string): Promise<Answer> {
  try {
    for (const p of targets) await parts.jobService.execute(name, p, position);
    return undefined;
  } catch (raw) {
    const err = coerceError(raw);
    if (err instanceof JobNotFoundError) return `${prefix}job not found`;
    if (err instanceof PlatformDroppedError) return `${prefix}no such platform`;
    throw err;
  }
}

/**
 * Reschedule (13): next := NEXT + the period (the new one when given, which replaces the job's
 * schedule), and the job is queued now (at the back, once per queue). An every job steps its
 * interval from NEXT, a cron job takes its first time after NEXT; `never` has no next time.
 */
async function reschedule(parts: RoburClientParts, name: string, next: number, period: RoburPeriod | undefined): Promise<Answer> {
  const job = await parts.store.getJob(name);
  if (!job) return `couldn't find job ${name}`;
  const newSchedule: Schedule | undefined = period === undefined ? undefined : { kind: 'period', period };
  const nextAt = firstAfter(newSchedule ?? job.schedule, next) ?? null;
  try {
    await parts.jobService.reschedule(name, nextAt, newSchedule);
  } catch (raw) {
    const err = coerceError(raw);
    if (err instanceof JobNotFoundError) return `couldn't find job ${name}`;
    throw err;
  }
  const { queues } = await platforms(parts);
  const targets = parts.jobService.platformsFor(job).filter((p) => queues.has(p));
  return queueRuns(parts, name, targets, 'back', `couldn't queue job ${name}: `);
}

/** Info (6): one Info_reply of the schedule, the queues, the running runs and the dropped platforms. */
async function info(conn: RoburConnection, parts: RoburClientParts): Promise<Answer> {
  const [jobs, queued, running] = await Promise.all([parts.store.listJobs(), parts.store.listQueued(), parts.store.listRunning()]);
  const { queues: platformsWithQueue, dropped } = await platforms(parts, jobs);
  const byName = new Map(jobs.map((job) => [job.name, job]));
  /** A run's job as the store has it, or as much of it as the run says (a job unscheduled while it runs). */
  const jobOf = (run: Run) => byName.get(run.job) ?? { name: run.job, platform: run.platform, script: run.script ?? '', template: null, vars: {} };
  const queues = new Map<string, RoburQueue>();
  for (const platform of [...platformsWithQueue].sort()) queues.set(platform, { platform, jobs: [] });
  for (const run of queued) {
    const queue = queues.get(run.platform) ?? queues.set(run.platform, { platform: run.platform, jobs: [] }).get(run.platform)!;
    queue.jobs.push(roburJobOf(jobOf(run)));
  }
  conn.send({
    type: 'info-reply',
    schedule: [...jobs].sort((a, b) => (a.nextAt ?? Infinity) - (b.nextAt ?? Infinity) || a.name.localeCompare(b.name)).map(roburScheduleItemOf),
    queues: [...queues.values()],
    running: running.map((run) => ({
      started: run.startedAt ?? run.queuedAt,
      uuid: run.id,
      // What it runs: the script copied at dispatch (a template job's expanded one), on its platform.
      job: scriptJobOf({ ...jobOf(run), script: run.script ?? jobOf(run).script }, run.platform),
    })),
    dropped: [...dropped].sort(),
  });
  return undefined;
}

/** A run's result as builder says it (a run ended without one: by its status). */
function roburResultOfRun(run: Run): RoburResult {
  return run.result ? roburResultOf(run.result) : { kind: 'msg', message: run.status };
}

/** ns from a run's start to `at` (none before the start: a line the server wrote while it was queued). */
const nsSince = (startedAt: number | null, at: number): number => (startedAt === null ? 0 : Math.max(0, at - startedAt) * 1_000_000);

/**
 * Observe (10): every line of the run so far, then live ones, then its result, each as an Output
 * with ns since the run started. Unlike builder, a finished run is served too (Kiln keeps its
 * console); a queued run is waited for until it starts.
 */
async function observe(conn: RoburConnection, parts: RoburClientParts, uuid: string): Promise<Answer> {
  let run: Run | undefined;
  try {
    run = await parts.store.findRun(uuid);
  } catch (raw) {
    const err = coerceError(raw);
    if (err instanceof RunNotFoundError || err instanceof RunAmbiguousError) return 'uuid not found';
    throw err;
  }
  // findRun takes id prefixes; a uuid names one run exactly.
  if (run.id !== uuid) return 'uuid not found';
  if (run.status === 'queued') run = await untilStarted(conn, parts, run.id);
  if (!run) return undefined;
  const started = run.startedAt;
  let sent = 0;
  let taken = 0;
  let failed: Error | undefined;
  const send = (line: string, at: number) => {
    conn.send({ type: 'output', uuid, line, timestampNs: nsSince(started, at) });
    const mark = ++sent;
    void conn.drained().then(() => {
      taken = Math.max(taken, mark);
    });
  };
  const sink: ConsoleSink = {
    line: (line) => send(line.text, line.ts),
    get blocked() {
      return sent - taken > MAX_UNDRAINED;
    },
    get closed() {
      return conn.isClosed;
    },
    drained: () => conn.drained(),
    end: (ended) => send(describeRoburResult(roburResultOfRun(ended)), ended.finishedAt ?? ended.startedAt ?? 0),
    fail: (err) => {
      failed = err;
    },
    onClose: (listener) => void conn.closed.then(listener),
  };
  await followConsole(parts.store, parts.hub, run, sink, true).done;
  if (failed) throw failed;
  return undefined;
}

/**
 * Waits until a queued run leaves the queue (started, or ended without starting); undefined when
 * the client went away first. Woken by the run's events; each wake reads the run again.
 */
async function untilStarted(conn: RoburConnection, parts: RoburClientParts, runId: string): Promise<Run | undefined> {
  let wake: () => void = () => undefined;
  const woken = () => new Promise<void>((resolve) => (wake = resolve));
  const offs = [
    parts.events.on('run.dispatched', ({ run }) => run.id === runId && wake()),
    parts.events.on('run.ended', (ended) => ended.runId === runId && wake()),
    parts.events.on('feed.resync', () => wake()),
  ];
  try {
    for (;;) {
      const wakeUp = woken();
      const run = await parts.store.findRun(runId);
      if (run.status !== 'queued') return run;
      await Promise.race([wakeUp, conn.closed]);
      if (conn.isClosed) return undefined;
    }
  } finally {
    for (const off of offs) off();
  }
}

/** Drop_platform (17): its queue is emptied and new jobs for it refused (its jobs stay, skipped while it is dropped). */
async function dropPlatform(parts: RoburClientParts, platform: string): Promise<Answer> {
  const { queues } = await platforms(parts);
  if (!queues.has(platform)) return `unknown platform ${platform}`;
  await parts.jobService.dropPlatform(platform);
  return undefined;
}

/** Undrop_platform (21): lifts a drop. */
async function undropPlatform(parts: RoburClientParts, platform: string): Promise<Answer> {
  const { dropped } = await platforms(parts);
  if (!dropped.has(platform)) return `unknown platform ${platform}`;
  return (await parts.jobService.undropPlatform(platform)) ? undefined : `unknown platform ${platform}`;
}
