/**
 * What the server does, independent of how it is asked: the API routes and the worker gateway
 * both call these methods, which change the store first and then wake the parts that care.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { formatResult, periodMs, statusFor, type Period, type RunResult, type RunStatus } from '../core/index.js';
import { InvalidRequestError, JobNotFoundError } from '../errors.js';
import type { Job, JobPatch, JobStore, NewRun, Run } from '../store/index.js';
import type { ConsoleHub } from './console-hub.js';
import type { Dispatcher, WorkerSession } from './dispatcher.js';
import type { Scheduler } from './scheduler.js';

/** Default job timeout: one hour, as robur's. */
export const DEFAULT_TIMEOUT_MS = 3_600_000;

/** A new job as the API receives it (already validated). */
export interface JobInput {
  name: string;
  platform?: string;
  script: string;
  env?: Record<string, string>;
  labels?: Record<string, string>;
  period?: Period;
  timeoutMs?: number;
}

/** The parts the service drives. */
export interface KilnServiceParts {
  store: JobStore;
  hub: ConsoleHub;
  dispatcher: Dispatcher;
  scheduler: Scheduler;
  log: Logger;
  now: () => number;
  /** Platform of jobs scheduled without one: the server's own. */
  defaultPlatform: string;
}

/** The server's use cases. */
export class KilnService {
  constructor(private readonly parts: KilnServiceParts) {}

  private get store() {
    return this.parts.store;
  }

  private newRun(job: Pick<Job, 'name' | 'platform' | 'labels'>, platform = job.platform): NewRun {
    return { id: randomUUID(), job: job.name, platform, labels: job.labels, queuedAt: this.parts.now() };
  }

  /** Adds a job; its first run is queued now unless its period is `never`. */
  async schedule(input: JobInput): Promise<{ job: Job; run?: Run }> {
    const now = this.parts.now();
    const period = input.period ?? 'daily';
    const step = periodMs(period);
    const job: Job = {
      name: input.name,
      platform: input.platform ?? this.parts.defaultPlatform,
      script: input.script,
      env: input.env ?? {},
      labels: input.labels ?? {},
      period,
      timeoutMs: input.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      nextAt: step === undefined ? null : now + step,
      createdAt: now,
      updatedAt: now,
    };
    const run = await this.store.createJob(job, step === undefined ? undefined : this.newRun(job));
    this.parts.log.info({ job: job.name, platform: job.platform, period }, 'job scheduled');
    if (run) this.parts.dispatcher.kick();
    void this.parts.scheduler.wake();
    return { job, run };
  }

  /** Changes a job; a new period restarts its grid from now. */
  async modify(name: string, patch: Omit<JobPatch, 'nextAt'>): Promise<Job> {
    const current = await this.store.getJob(name);
    const full: JobPatch = { ...patch };
    if (current && patch.period !== undefined && patch.period !== current.period) {
      const step = periodMs(patch.period);
      full.nextAt = step === undefined ? null : this.parts.now() + step;
    }
    const job = await this.store.updateJob(name, full, this.parts.now());
    void this.parts.scheduler.wake();
    return job;
  }

  /** Removes a job and its queued runs; its history stays. */
  async unschedule(name: string): Promise<string[]> {
    const cancelled = await this.store.deleteJob(name, this.parts.now());
    for (const runId of cancelled) this.parts.hub.ended(runId);
    void this.parts.scheduler.wake();
    return cancelled;
  }

  /** Queues a run now, at the front of its platform's queue. */
  async execute(name: string, platform?: string): Promise<{ run: Run; created: boolean }> {
    const job = await this.store.getJob(name);
    if (!job) throw new JobNotFoundError(name);
    const queued = await this.store.enqueue(this.newRun(job, platform), 'front');
    this.parts.dispatcher.kick();
    return queued;
  }

  /** Sets a job's next time; its grid continues from there. */
  async reschedule(name: string, nextAt: number): Promise<Job> {
    const job = await this.store.updateJob(name, { nextAt }, this.parts.now());
    void this.parts.scheduler.wake();
    return job;
  }

  /** A worker reported the end of a run it holds. */
  async workerFinished(session: WorkerSession, runId: string, result: RunResult, timedOut: boolean): Promise<void> {
    if (!session.running.has(runId)) {
      this.parts.log.info({ runId, worker: session.name }, 'result for a run this worker does not hold; ignored');
      return;
    }
    const status = statusFor(result, timedOut ? 'timeout' : undefined);
    await this.end(runId, status, result, { from: ['running'], worker: session.name });
    session.running.delete(runId);
    this.parts.dispatcher.kick();
  }

  /** A worker's connection is gone: the runs it held end `lost`. */
  async workerGone(session: WorkerSession): Promise<void> {
    this.parts.dispatcher.remove(session);
    for (const runId of session.running) await this.lose(runId, session.name, 'worker lost');
    session.running.clear();
    await this.store.workerDisconnected(session.name, this.parts.now());
  }

  /** A run claimed for a worker that is already gone. */
  async orphaned(run: Run): Promise<void> {
    await this.lose(run.id, run.worker ?? undefined, 'worker lost before the run started');
  }

  /**
   * At start, runs left `running` by a previous life of the server have no connection to report
   * through; until workers can re-attach they end `lost`, never stay running forever.
   */
  async recover(): Promise<number> {
    const stale = await this.store.listRunning();
    for (const run of stale) await this.lose(run.id, run.worker ?? undefined, 'worker lost (server restarted)');
    return stale.length;
  }

  private lose(runId: string, worker: string | undefined, reason: string): Promise<boolean> {
    return this.end(runId, statusFor({ kind: 'aborted', reason }, 'lost'), { kind: 'aborted', reason }, { from: ['running'], worker });
  }

  /** Ends a run: its console is written first, then the guarded transition, then observers hear. */
  private async end(runId: string, status: RunStatus, result: RunResult, guard: { from: RunStatus[]; worker?: string }): Promise<boolean> {
    await this.parts.hub.flush();
    const applied = await this.store.finishRun(runId, { status, result, finishedAt: this.parts.now() }, guard);
    if (applied) {
      this.parts.log.info({ runId, status, result: formatResult(result) }, 'run ended');
      this.parts.hub.ended(runId);
    }
    return applied;
  }

  /** Parses an RFC 3339 time with any offset. */
  static parseTime(text: string): number {
    const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(text) ? Date.parse(text) : NaN;
    if (Number.isNaN(ms)) throw new InvalidRequestError(`'${text}' is not an RFC 3339 time (e.g. 2026-11-22T10:00:00+01:00)`);
    return ms;
  }
}
