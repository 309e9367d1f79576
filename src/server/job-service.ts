/**
 * The job use cases: what the API asks of jobs and platforms (schedule, modify, pause, resume,
 * unschedule, execute, reschedule, drop and undrop a platform) and the schedule's firing. They
 * change jobs in the store; whatever moves a run goes through the run lifecycle (or the
 * dispatcher's enqueue, which uses it), and what changed is published (`job.changed`,
 * `platform.undropped`) for the scheduler and the dispatcher.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  describeSchedule, firstAfter, isTimeInRange, missedSlots, planFiring, resumedNextAt, validateSchedule,
  type JobSandbox, type Overlap, type Schedule,
} from '../core/index.js';
import type { SandboxChange } from './api/schemas.js';
import { coerceError, InvalidRequestError, JobNotFoundError, TemplateNotFoundError } from '../errors.js';
import type { ImportPlan, ImportResult, Job, JobPatch, JobStore, NewRun, Run } from '../store/index.js';
import type { Dispatcher } from './dispatcher.js';
import type { EventBus } from './events.js';
import { DEFAULT_TIMEOUT_MS, type RunLifecycle } from './run-lifecycle.js';
import type { Templates } from './templates.js';

/** A new job as the API receives it (already validated, one of script or template). */
export interface JobInput {
  name: string;
  platform?: string;
  script?: string;
  template?: string;
  vars?: Record<string, string>;
  env?: Record<string, string>;
  labels?: Record<string, string>;
  schedule?: Schedule;
  paused?: boolean;
  overlap?: Overlap;
  catchUp?: boolean;
  timeoutMs?: number;
  idleTimeoutMs?: number | null;
  retries?: number;
  failureRetries?: number;
  artifacts?: string[];
  artifactsOnFailure?: boolean;
  sandbox?: JobSandbox;
  /**
   * The platforms its first runs are queued on now, whatever its schedule says (robur's Schedule
   * queues every new job at once, `never` ones too, on the queues there are). Default: every
   * platform it runs on, when it is unpaused and its schedule has a next time.
   */
  queueOn?: string[];
}

/** What the job use cases work with. */
export interface JobServiceOptions {
  store: JobStore;
  events: EventBus;
  lifecycle: RunLifecycle;
  /** Queues an execute's runs (straight to an idle worker when there is one). */
  dispatcher: Dispatcher;
  templates: Templates;
  now: () => number;
  /** Platform of jobs scheduled without one: the server's own. */
  defaultPlatform: string;
}

/** A time for a log line; a stored value out of Date's range is logged as the number. */
const isoOrValue = (ms: number): string | number => (isTimeInRange(ms) ? new Date(ms).toISOString() : ms);

/** Checks a schedule at the API's edge. */
function checkSchedule(schedule: Schedule): void {
  try {
    validateSchedule(schedule);
  } catch (raw) {
    throw new InvalidRequestError((raw as Error).message);
  }
}

/** Parses an RFC 3339 time with any offset. */
export function parseTime(text: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(ms)) throw new InvalidRequestError(`'${text}' is not an RFC 3339 time (e.g. 2026-11-22T10:00:00+01:00)`);
  // Stored times stay printable: a year-0000 time with a +01:00 offset would be before 1970, say.
  if (!isTimeInRange(ms)) throw new InvalidRequestError(`next: '${text}' is outside the times Kiln keeps (1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z)`);
  return ms;
}

/** The job use cases. */
export class JobService {
  constructor(private readonly log: Logger, private readonly options: JobServiceOptions) {}

  private get store() {
    return this.options.store;
  }

  /** A new run of `job` on `platform`, queued now. */
  newRun(job: Pick<Job, 'name' | 'labels'>, platform: string): NewRun {
    return { id: randomUUID(), job: job.name, platform, labels: job.labels, queuedAt: this.options.now() };
  }

  private changed(name: string): void {
    this.options.events.publish('job.changed', { name });
  }

  /** The platforms a job's runs go to: its own, or every platform its template has a variant for. */
  platformsFor(job: Pick<Job, 'platform' | 'template'>): string[] {
    if (job.platform !== null) return [job.platform];
    if (!job.template) return [];
    try {
      return this.options.templates.platformsFor(job.template);
    } catch (raw) {
      // An unreadable templates dir must not stop the scheduler: the job is skipped, with the reason logged.
      this.log.error({ err: coerceError(raw), template: job.template }, 'cannot list the templates');
      return [];
    }
  }

  /**
   * Adds a job; its first runs are queued now unless it is paused or its schedule has no next time.
   * A job moved from elsewhere (`kept`: kiln import-robur) keeps its next time and queues nothing
   * now, and a template job needs no platform variant yet (its runs wait for one).
   */
  async schedule(input: JobInput, kept?: { nextAt: number | null }): Promise<{ job: Job; runs: Run[] }> {
    const job = this.newJob(input, kept);
    const schedule = job.schedule;
    const platforms = this.platformsFor(job);
    if (platforms.length === 0 && !kept) {
      throw new InvalidRequestError(`template '${job.template}' has no platform variants (${job.template}.PLATFORM); give --platform`);
    }
    const firstOn = kept ? [] : input.queueOn ?? (job.paused || job.nextAt === null ? [] : platforms);
    const first = firstOn.map((platform) => this.newRun(job, platform));
    const runs = await this.options.lifecycle.createJob(job, first);
    this.log.info({ job: job.name, platforms, schedule: describeSchedule(schedule) }, 'job scheduled');
    this.changed(job.name);
    return { job, runs };
  }

  /**
   * The job `schedule` adds for `input`, created now, with its defaults (nothing stored). Throws
   * InvalidRequestError for a schedule Kiln cannot keep. `kept`: see schedule.
   */
  newJob(input: JobInput, kept?: { nextAt: number | null }): Job {
    const now = this.options.now();
    const schedule = input.schedule ?? { kind: 'period', period: 'daily' };
    checkSchedule(schedule);
    return {
      name: input.name,
      platform: input.platform ?? (input.template ? null : this.options.defaultPlatform),
      script: input.script ?? null,
      template: input.template ?? null,
      vars: input.vars ?? {},
      env: input.env ?? {},
      labels: input.labels ?? {},
      schedule,
      paused: input.paused ?? false,
      overlap: input.overlap ?? 'skip',
      catchUp: input.catchUp ?? false,
      timeoutMs: input.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      idleTimeoutMs: input.idleTimeoutMs ?? null,
      retries: input.retries ?? 1,
      failureRetries: input.failureRetries ?? 0,
      artifacts: input.artifacts ?? [],
      artifactsOnFailure: input.artifactsOnFailure ?? false,
      sandbox: input.sandbox ?? {},
      nextAt: kept ? kept.nextAt : firstAfter(schedule, now) ?? null,
      skipped: 0,
      lastSkip: null,
      createdAt: now,
      updatedAt: now,
    };
  }

  /**
   * Imports a file in one transaction (JobStore.importState, through the lifecycle, which publishes
   * what it did to runs and platforms); after the commit each job it added is published
   * `job.changed` (the scheduler sees its next time), as schedule does.
   */
  async importState(plan: ImportPlan): Promise<ImportResult> {
    const imported = await this.options.lifecycle.importState(plan);
    if (!imported.recorded) return imported;
    for (const { platform, dropped, cancelled } of imported.writes.drops) {
      if (dropped) this.log.info({ platform, cancelled: cancelled.length }, 'platform dropped');
    }
    for (const [name, taken] of imported.writes.jobs) {
      if (taken.outcome !== 'added') continue;
      this.log.info({ job: name, platforms: this.platformsFor(taken.job), schedule: describeSchedule(taken.job.schedule) }, 'job scheduled');
      this.changed(name);
    }
    return imported;
  }

  /** Changes a job; a new schedule restarts from now. */
  async modify(name: string, change: Omit<JobPatch, 'nextAt' | 'sandbox'> & { sandbox?: SandboxChange }): Promise<Job> {
    const { sandbox: sandboxChange, ...patch } = change;
    const full: JobPatch = { ...patch };
    if (sandboxChange) {
      const current = await this.store.getJob(name);
      if (!current) throw new JobNotFoundError(name);
      const merged: Record<string, unknown> = { ...current.sandbox, ...sandboxChange };
      full.sandbox = Object.fromEntries(Object.entries(merged).filter(([, value]) => value !== null && value !== undefined)) as JobSandbox;
    }
    if (patch.schedule) {
      checkSchedule(patch.schedule);
      full.nextAt = firstAfter(patch.schedule, this.options.now()) ?? null;
    }
    // A job has a script or a template, never both; a script job needs a platform of its own.
    if (patch.script !== undefined) {
      full.template = null;
      const current = await this.store.getJob(name);
      if (current?.platform === null && patch.platform === undefined) full.platform = this.options.defaultPlatform;
    }
    if (patch.template !== undefined) full.script = null;
    const job = await this.store.updateJob(name, full, this.options.now());
    this.changed(name);
    return job;
  }

  /** Stops a job's schedule (execute still runs it). */
  async pause(name: string): Promise<Job> {
    return this.store.updateJob(name, { paused: true }, this.options.now());
  }

  /** Restarts a paused job's schedule from now: times missed while paused do not run. */
  async resume(name: string): Promise<Job> {
    const current = await this.store.getJob(name);
    if (!current) throw new JobNotFoundError(name);
    const now = this.options.now();
    const nextAt = resumedNextAt(current.schedule, current.nextAt, now);
    const job = await this.store.updateJob(name, { paused: false, nextAt }, now);
    this.changed(name);
    return job;
  }

  /** Removes a job and its queued runs; its history stays. */
  async unschedule(name: string): Promise<string[]> {
    const cancelled = await this.options.lifecycle.deleteJob(name);
    this.changed(name);
    return cancelled;
  }

  /** Queues a run now (one per platform for a template job), at the front of the queue (or its back: robur's Reschedule). */
  async execute(name: string, platform?: string, position: 'front' | 'back' = 'front'): Promise<{ runs: Run[]; created: boolean }> {
    const job = await this.store.getJob(name);
    if (!job) throw new JobNotFoundError(name);
    const platforms = platform ? [platform] : this.platformsFor(job);
    if (platforms.length === 0) throw new TemplateNotFoundError(`template '${job.template}' has no platform variants; give --platform`);
    const queued = [];
    // Straight to an idle worker when there is one: queued and claimed in one commit, sent at once.
    for (const p of platforms) queued.push(await this.options.dispatcher.enqueue(this.newRun(job, p), position));
    return { runs: queued.map((q) => q.run), created: queued.some((q) => q.created) };
  }

  /** Sets a job's next time (and its schedule, when given: robur's Reschedule with a period); its grid continues from there. */
  async reschedule(name: string, nextAt: number | null, schedule?: Schedule): Promise<Job> {
    if (schedule) checkSchedule(schedule);
    const job = await this.store.updateJob(name, { nextAt, schedule }, this.options.now());
    this.changed(name);
    return job;
  }

  /**
   * Fires every job due at `now`. Its next time is moved first, in the same transaction as the
   * queueing, so a crash never queues a due time twice nor skips it.
   */
  async fireDue(now: number): Promise<void> {
    for (const job of await this.store.dueJobs(now)) {
      if (job.nextAt === null) continue;
      // One pass, one transaction per job, whatever it missed: a catch-up replays a bounded number
      // of slots and counts the rest (see planFiring), and its next time is after now.
      const plan = planFiring(job.schedule, job.nextAt, now, job.catchUp);
      const next = plan.next ?? null;
      const runs = this.platformsFor(job).map((platform) => this.newRun(job, platform));
      // A job waits in a queue at most once: the replayed slots after the first find it queued.
      const missed = missedSlots(plan);
      if (missed) this.log.info({ job: job.name, from: isoOrValue(job.nextAt), replayed: plan.slots.length, skipped: plan.skipped, skippedExact: plan.skippedExact }, 'schedule catching up');
      const fired = await this.options.lifecycle.fire(job.name, job.nextAt, next, runs, now, missed);
      if (fired.outcome === 'queued') {
        this.log.info({ job: job.name, due: isoOrValue(job.nextAt), next: next && isoOrValue(next) }, 'schedule fired');
      } else if (fired.outcome === 'skipped') {
        this.log.info({ job: job.name, due: isoOrValue(job.nextAt), reason: fired.reason }, 'schedule due, nothing queued');
      }
      // Let requests in between jobs: many due jobs (each a cron search, a transaction) must not hold /healthz.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Retires a platform: its queue is emptied, its workers told; new runs for it are refused. */
  async dropPlatform(platform: string): Promise<string[]> {
    const cancelled = await this.options.lifecycle.dropPlatform(platform);
    this.log.info({ platform, cancelled: cancelled.length }, 'platform dropped');
    return cancelled;
  }

  /** Lifts a drop. */
  async undropPlatform(platform: string): Promise<boolean> {
    const lifted = await this.store.undropPlatform(platform);
    this.options.events.publish('platform.undropped', { platform });
    return lifted;
  }
}
