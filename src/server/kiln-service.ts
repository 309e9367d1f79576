/**
 * What the server does, independent of how it is asked: the API routes and the worker gateway
 * both call these methods, which change the store first and then wake the parts that care.
 *
 * Runs are never silently dropped: a run whose worker goes away waits a grace window for the
 * worker to re-attach, then ends `lost` (and is retried if its job allows); a run whose worker
 * never reports is ended by the server's own deadline (timeout or cancel backstop).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  decideReattach, decideUnheld, describeSchedule, endOfOverdue, endOfReport, expandTemplate, firstAfter, formatDuration, formatResult, isTimeInRange, missedSlots, planFiring, resumedNextAt, validateSchedule,
  type JobSandbox, type Overlap, type RunResult, type Schedule,
} from '../core/index.js';
import type { SandboxChange } from './api/schemas.js';
import { coerceError, InvalidRequestError, JobNotFoundError, TemplateNotFoundError } from '../errors.js';
import type { SkippedArtifact, StopCause } from '../protocol/index.js';
import type { AttemptEnd, Job, JobPatch, JobStore, NewRun, Run } from '../store/index.js';
import type { ConsoleHub } from './console-hub.js';
import type { Dispatcher, WorkerSession } from './dispatcher.js';
import type { Scheduler } from './scheduler.js';
import type { Templates } from './templates.js';
import { createWakeLoop, type WakeLoop } from './wake-loop.js';

/** Default job timeout: one hour, as robur's. */
export const DEFAULT_TIMEOUT_MS = 3_600_000;

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
}

/** The parts the service drives, and its timings. */
export interface KilnServiceParts {
  store: JobStore;
  hub: ConsoleHub;
  dispatcher: Dispatcher;
  scheduler: Scheduler;
  templates: Templates;
  log: Logger;
  now: () => number;
  /** Platform of jobs scheduled without one: the server's own. */
  defaultPlatform: string;
  /** How long a run whose worker went away waits for it to re-attach before it is lost (ms). */
  reattachGraceMs: number;
  /** How long past a run's timeout (or a cancel) the server waits for the worker's result (ms). */
  backstopMs: number;
  /** Told after a run has ended for good (e.g. to send it to the upload target). */
  onRunEnded?: (run: Run) => void;
}

/** Longest single sleep of the deadline check (re-read from the store after it). */
const MAX_SLEEP_MS = 60 * 60 * 1000;

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

/** The server's use cases. */
export class KilnService {
  /** Runs whose worker is away, with the timer that declares them lost. */
  private readonly unattended = new Map<string, NodeJS.Timeout>();
  /** Ends runs whose worker never reported by their deadline; sleeps until the earliest one. */
  private readonly deadlines: WakeLoop;
  private stopped = false;

  constructor(private readonly parts: KilnServiceParts) {
    this.deadlines = createWakeLoop(parts.log, {
      body: () => this.reapOverdue(),
      now: parts.now,
      maxSleepMs: MAX_SLEEP_MS,
      retry: { retryMinMs: 5000, retryMaxMs: 60_000 },
      failureMessage: 'deadline check failed; retrying',
    });
  }

  private get store() {
    return this.parts.store;
  }

  private get log() {
    return this.parts.log;
  }

  private newRun(job: Pick<Job, 'name' | 'labels'>, platform: string): NewRun {
    return { id: randomUUID(), job: job.name, platform, labels: job.labels, queuedAt: this.parts.now() };
  }

  /** The platforms a job's runs go to: its own, or every platform its template has a variant for. */
  platformsFor(job: Pick<Job, 'platform' | 'template'>): string[] {
    if (job.platform !== null) return [job.platform];
    if (!job.template) return [];
    try {
      return this.parts.templates.platformsFor(job.template);
    } catch (raw) {
      // An unreadable templates dir must not stop the scheduler: the job is skipped, with the reason logged.
      this.log.error({ err: coerceError(raw), template: job.template }, 'cannot list the templates');
      return [];
    }
  }

  /** Adds a job; its first runs are queued now unless it is paused or its schedule has no next time. */
  async schedule(input: JobInput): Promise<{ job: Job; runs: Run[] }> {
    const now = this.parts.now();
    const schedule = input.schedule ?? { kind: 'period', period: 'daily' };
    checkSchedule(schedule);
    const job: Job = {
      name: input.name,
      platform: input.platform ?? (input.template ? null : this.parts.defaultPlatform),
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
      nextAt: firstAfter(schedule, now) ?? null,
      skipped: 0,
      lastSkip: null,
      createdAt: now,
      updatedAt: now,
    };
    const platforms = this.platformsFor(job);
    if (platforms.length === 0) {
      throw new InvalidRequestError(`template '${job.template}' has no platform variants (${job.template}.PLATFORM); give --platform`);
    }
    const first = job.paused || job.nextAt === null ? [] : platforms.map((platform) => this.newRun(job, platform));
    const runs = await this.store.createJob(job, first);
    this.log.info({ job: job.name, platforms, schedule: describeSchedule(schedule) }, 'job scheduled');
    if (runs.length > 0) this.parts.dispatcher.kick();
    void this.parts.scheduler.wake();
    return { job, runs };
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
      full.nextAt = firstAfter(patch.schedule, this.parts.now()) ?? null;
    }
    // A job has a script or a template, never both; a script job needs a platform of its own.
    if (patch.script !== undefined) {
      full.template = null;
      const current = await this.store.getJob(name);
      if (current?.platform === null && patch.platform === undefined) full.platform = this.parts.defaultPlatform;
    }
    if (patch.template !== undefined) full.script = null;
    const job = await this.store.updateJob(name, full, this.parts.now());
    void this.parts.scheduler.wake();
    return job;
  }

  /** Stops a job's schedule (execute still runs it). */
  async pause(name: string): Promise<Job> {
    return this.store.updateJob(name, { paused: true }, this.parts.now());
  }

  /** Restarts a paused job's schedule from now: times missed while paused do not run. */
  async resume(name: string): Promise<Job> {
    const current = await this.store.getJob(name);
    if (!current) throw new JobNotFoundError(name);
    const now = this.parts.now();
    const nextAt = resumedNextAt(current.schedule, current.nextAt, now);
    const job = await this.store.updateJob(name, { paused: false, nextAt }, now);
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

  /** Queues a run now (one per platform for a template job), at the front of the queue. */
  async execute(name: string, platform?: string): Promise<{ runs: Run[]; created: boolean }> {
    const job = await this.store.getJob(name);
    if (!job) throw new JobNotFoundError(name);
    const platforms = platform ? [platform] : this.platformsFor(job);
    if (platforms.length === 0) throw new TemplateNotFoundError(`template '${job.template}' has no platform variants; give --platform`);
    const queued = [];
    // Straight to an idle worker when there is one: queued and claimed in one commit, sent at once.
    for (const p of platforms) queued.push(await this.parts.dispatcher.enqueue(this.newRun(job, p), 'front'));
    return { runs: queued.map((q) => q.run), created: queued.some((q) => q.created) };
  }

  /** Sets a job's next time; its grid continues from there. */
  async reschedule(name: string, nextAt: number): Promise<Job> {
    const job = await this.store.updateJob(name, { nextAt }, this.parts.now());
    void this.parts.scheduler.wake();
    return job;
  }

  /**
   * Fires every job due at `now`. Its next time is moved first, in the same transaction as the
   * queueing, so a crash never queues a due time twice nor skips it.
   */
  async fireDue(now: number): Promise<void> {
    let queued = false;
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
      const fired = await this.store.fireSchedule(job.name, job.nextAt, next, runs, now, this.parts.backstopMs, missed);
      if (fired.outcome !== 'stale') for (const runId of fired.cancelled ?? []) this.parts.hub.ended(runId);
      if (fired.outcome === 'queued') {
        queued = true;
        for (const run of fired.cancelRequested) {
          this.holder(run)?.cancel(run.id, 'cancelled by the schedule: superseded by the next scheduled run');
          this.noteDeadline(run.deadlineAt);
        }
        this.log.info({ job: job.name, due: isoOrValue(job.nextAt), next: next && isoOrValue(next) }, 'schedule fired');
      } else if (fired.outcome === 'skipped') {
        this.log.info({ job: job.name, due: isoOrValue(job.nextAt), reason: fired.reason }, 'schedule due, nothing queued');
      }
      // Let requests in between jobs: many due jobs (each a cron search, a transaction) must not hold /healthz.
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (queued) this.parts.dispatcher.kick();
  }

  /**
   * Makes a claimed run ready to send: a template job's script is expanded now, from the template
   * as it is now. A template that is missing or uses an unknown variable ends the run `aborted`
   * with the reason (undefined is returned: nothing to send).
   */
  async prepare(run: Run): Promise<Run | undefined> {
    if (run.script !== null) return run;
    const job = await this.store.getJob(run.job);
    let script: string;
    try {
      if (!job?.template) throw new TemplateNotFoundError(`job ${run.job} has neither a script nor a template`);
      const { text } = this.parts.templates.read(job.template, run.platform);
      script = expandTemplate(text, { ...job.vars, PLATFORM: run.platform, JOB: run.job, RUN: run.id });
    } catch (raw) {
      const reason = (raw as Error).message;
      await this.endAttempt(run.id, { status: 'failed', result: { kind: 'aborted', reason }, finishedAt: this.parts.now() }, run.worker ?? undefined);
      return undefined;
    }
    // Outside the catch: a store failure is the server's trouble, not the run's (the dispatcher hands it back).
    await this.store.setRunScript(run.id, script);
    return { ...run, script };
  }

  /** Retires a platform: its queue is emptied, its workers told; new runs for it are refused. */
  async dropPlatform(platform: string): Promise<string[]> {
    const cancelled = await this.store.dropPlatform(platform, this.parts.now());
    for (const runId of cancelled) this.parts.hub.ended(runId);
    this.parts.dispatcher.setDropped(platform, true);
    for (const session of this.parts.dispatcher.list()) {
      if (session.platform === platform) session.notice(`platform ${platform} was dropped: this worker stays idle until it is undropped`);
    }
    this.log.info({ platform, cancelled: cancelled.length }, 'platform dropped');
    return cancelled;
  }

  /** Lifts a drop. */
  async undropPlatform(platform: string): Promise<boolean> {
    const lifted = await this.store.undropPlatform(platform);
    this.parts.dispatcher.setDropped(platform, false);
    for (const session of this.parts.dispatcher.list()) {
      if (session.platform === platform) session.notice(`platform ${platform} is back: this worker takes runs again`);
    }
    this.parts.dispatcher.kick();
    return lifted;
  }

  /**
   * Cancels a run: a queued one ends at once; a running one is stopped by its worker (which
   * reports it `cancelled`), with the server's backstop in case the worker never answers.
   */
  async cancel(idOrPrefix: string, by: string): Promise<{ run: Run; state: 'cancelled' | 'requested' }> {
    const now = this.parts.now();
    const outcome = await this.store.requestCancel(idOrPrefix, by, now, now + this.parts.backstopMs);
    const { run } = outcome;
    this.log.info({ runId: run.id, by, state: outcome.state }, 'cancel requested');
    if (outcome.state === 'cancelled') this.parts.hub.ended(run.id);
    else {
      this.holder(run)?.cancel(run.id, `cancelled by ${by}`);
      this.noteDeadline(run.deadlineAt);
    }
    return outcome;
  }

  /** The connected session holding a running run, if any. */
  private holder(run: Run): WorkerSession | undefined {
    const session = run.worker ? this.parts.dispatcher.session(run.worker) : undefined;
    return session?.running.has(run.id) ? session : undefined;
  }

  /** A worker reported the end of a run it holds. */
  async workerFinished(session: WorkerSession, runId: string, result: RunResult, stoppedBy: StopCause | undefined, artifactsSkipped: SkippedArtifact[] = []): Promise<void> {
    const now = this.parts.now();
    if (!session.running.has(runId)) {
      await this.ignored(runId, now, session.name, 'a result for a run this worker does not hold', result);
      session.done(runId, false);
      return;
    }
    const run = await this.store.findRun(runId);
    if (artifactsSkipped.length > 0) {
      await this.store.recordEvent(runId, { at: now, attempt: run.attempt, kind: 'artifacts-skipped', detail: { files: artifactsSkipped } });
    }
    const end: AttemptEnd = { ...endOfReport(result, stoppedBy, run.cancelRequestedBy), finishedAt: now };
    const outcome = await this.endAttempt(runId, end, session.name);
    if (outcome === 'stale') await this.ignored(runId, now, session.name, 'a result for a run that had already ended', result);
    session.running.delete(runId);
    session.done(runId, outcome !== 'stale');
    this.parts.dispatcher.kick();
  }

  /**
   * A worker (re)connected holding these runs: the ones still running on it are re-attached
   * (it resends their missing lines and results), the others are released.
   */
  async workerAttached(session: WorkerSession, held: { runId: string; attempt: number }[]): Promise<{
    resume: { runId: string; afterSeq: number }[];
    release: { runId: string; reason: string }[];
  }> {
    const resume: { runId: string; afterSeq: number }[] = [];
    const release: { runId: string; reason: string }[] = [];
    if (held.length > 0) await this.parts.hub.flush();
    for (const { runId, attempt } of held) {
      const run = await this.store.findRun(runId).catch(() => undefined);
      const decision = decideReattach(run, session, attempt);
      if (decision.kind === 'resume') {
        this.attended(runId);
        session.running.add(runId);
        session.assigned += 1;
        resume.push({ runId, afterSeq: await this.store.lastConsoleSeq(runId) });
        this.log.info({ runId, worker: session.name }, 'run re-attached');
      } else {
        release.push({ runId, reason: decision.why });
        this.log.info({ runId, worker: session.name, why: decision.why }, 'released a run the worker still held');
      }
    }
    await this.requeueUnheld(session, new Set(held.map((h) => `${h.runId}#${h.attempt}`)));
    return { resume, release };
  }

  /**
   * Runs the store says are running on this worker (name and credential) that its hello does not
   * list. The hello speaks for the worker PROCESS: when the run was sent to this same process (its
   * hello's id is the one recorded on the run), the assignment never reached it (the server died
   * between committing and sending, or the connection dropped with the frame): the run goes back
   * to the front of its queue at once, no retry used. Under another process id the process that
   * held the run is gone (killed and restarted under its --name, say): the attempt is lost now,
   * with the job's retry budget, as any lost worker's run; waiting the re-attach grace is pointless.
   * A run with no recorded id (dispatched before ids were kept, or to an older worker) or a hello
   * without one cannot tell: such a run keeps the grace window and then ends lost.
   */
  private async requeueUnheld(session: WorkerSession, held: Set<string>): Promise<void> {
    for (const run of await this.store.listRunning(session.name)) {
      // A pass may be between claiming a run for the previous connection and finding it gone: that
      // run never started, and the pass hands it back itself (ending or requeueing it here too could
      // requeue it after it was sent again). Such runs wait the grace window this once.
      const decision = decideUnheld(run, session, held, this.parts.dispatcher.claimingFor(session.name, session));
      if (decision === 'requeue') {
        await this.requeueUnstarted(run, `never started: ${session.name} reconnected without it (the assignment did not reach the worker)`);
      } else if (decision === 'lose') {
        const reason = `worker lost (${session.name} came back as a new process without it: the one that ran it is gone)`;
        await this.endAttempt(run.id, { status: 'lost', result: { kind: 'aborted', reason }, finishedAt: this.parts.now(), retry: 'lost' }, run.worker ?? undefined, run.attempt);
      }
    }
  }

  /**
   * Puts a run that never started back at the front of its queue as the same attempt, using no
   * retry. Guarded on its worker and attempt: the run may have moved on meanwhile (then nothing
   * changes). When it cannot go back (its job is gone, or another run of the job is queued), it
   * ends `cancelled` with the reason.
   */
  private async requeueUnstarted(run: Run, reason: string): Promise<void> {
    await this.endAttempt(
      run.id,
      { status: 'cancelled', result: { kind: 'aborted', reason }, finishedAt: this.parts.now(), retry: 'unstarted' },
      run.worker ?? undefined, run.attempt,
    );
  }

  /** After re-attaching, tells the worker about cancels requested while it was away. */
  async replayCancels(session: WorkerSession, runIds: string[]): Promise<void> {
    for (const runId of runIds) {
      const run = await this.store.findRun(runId);
      if (run.cancelRequestedBy) session.cancel(runId, `cancelled by ${run.cancelRequestedBy}`);
    }
  }

  /** A worker's connection is gone: its runs wait for it to come back, then end `lost`. */
  async workerGone(session: WorkerSession): Promise<void> {
    this.parts.dispatcher.remove(session);
    for (const runId of session.running) this.unattend(runId, session.name);
    session.running.clear();
    // A connection cut off (revoked) is out of the dispatcher before its close: a worker welcomed
    // under the name meanwhile is the one connected now.
    if (this.parts.dispatcher.session(session.name)) return;
    await this.store.workerDisconnected(session.name, this.parts.now());
  }

  /**
   * A run claimed for a worker but never sent to it (the worker went away meanwhile, or the pass
   * failed): nothing of it ran, so it goes back to its queue without using a retry.
   */
  async orphaned(run: Run, why: string): Promise<void> {
    await this.requeueUnstarted(run, `never started: ${why}`);
  }

  /** Notes a dispatched run's deadline. */
  /** Writes a server line on a queued run's console (why it still waits), and tells its observers. */
  async noteWaiting(runId: string, text: string): Promise<void> {
    const line = await this.store.noteQueuedRun(runId, text, this.parts.now());
    if (line) this.parts.hub.append(runId, [line]);
  }

  dispatched(run: Run): void {
    this.noteDeadline(run.deadlineAt);
  }

  /**
   * At start: runs left `running` by the previous server process wait the grace window for their
   * workers to re-attach; overdue ones are ended by the deadline timer.
   */
  async recover(): Promise<number> {
    const running = await this.store.listRunning();
    for (const run of running) this.unattend(run.id, run.worker ?? undefined);
    await this.deadlines.kick();
    return running.length;
  }

  /** Stops the timers (the runs they watch stay in the store for the next start). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.deadlines.stop();
    for (const timer of this.unattended.values()) clearTimeout(timer);
    this.unattended.clear();
  }

  private unattend(runId: string, worker: string | undefined): void {
    if (this.stopped || this.unattended.has(runId)) return;
    const timer = setTimeout(() => {
      this.unattended.delete(runId);
      void this.lose(runId, worker, `worker lost (${worker ?? 'unknown'} did not come back within ${formatDuration(this.parts.reattachGraceMs)})`);
    }, this.parts.reattachGraceMs);
    this.unattended.set(runId, timer);
  }

  private attended(runId: string): void {
    clearTimeout(this.unattended.get(runId));
    this.unattended.delete(runId);
  }

  private async lose(runId: string, worker: string | undefined, reason: string): Promise<void> {
    const result: RunResult = { kind: 'aborted', reason };
    try {
      await this.endAttempt(runId, { status: 'lost', result, finishedAt: this.parts.now(), retry: 'lost' }, worker);
    } catch (raw) {
      this.log.error({ err: coerceError(raw), runId }, 'could not record a lost run');
    }
  }

  /**
   * Ends an attempt: its console is written first, then the guarded transition; observers hear
   * the end, or the retry's note when the run goes back to the queue.
   */
  private async endAttempt(runId: string, end: AttemptEnd, worker: string | undefined, attempt?: number): Promise<'ended' | 'retried' | 'stale'> {
    await this.parts.hub.flush();
    const { outcome, run } = await this.store.endAttempt(runId, end, { worker, attempt });
    this.attended(runId);
    if (outcome === 'stale') return outcome;
    const said = outcome === 'ended' ? 'run ended' : end.retry === 'unstarted' ? 'run requeued' : 'run retried';
    this.log.info({ runId, status: end.status, result: formatResult(end.result), outcome, attempt: run.attempt }, said);
    if (outcome === 'retried') {
      this.parts.hub.append(runId, await this.store.readConsole(runId, run.firstSeq - 2, 1));
      this.parts.dispatcher.kick();
    } else {
      this.parts.hub.ended(runId);
      this.parts.onRunEnded?.(run);
    }
    return outcome;
  }

  private async ignored(runId: string, at: number, worker: string, why: string, result: RunResult): Promise<void> {
    this.log.info({ runId, worker, why }, 'message answered but not applied');
    const run = await this.store.findRun(runId).catch(() => undefined);
    if (run) await this.store.recordEvent(run.id, { at, attempt: run.attempt, kind: 'ignored', detail: { worker, why, result } });
  }

  /** Makes the deadline check run no later than `at`. */
  private noteDeadline(at: number | null): void {
    if (at !== null) this.deadlines.wakeAt(at);
  }

  /** Ends the runs whose worker never reported by their deadline; resolves with the next deadline. */
  private async reapOverdue(): Promise<number | undefined> {
    const now = this.parts.now();
    for (const run of await this.store.overdueRuns(now)) {
      const end: AttemptEnd = { ...endOfOverdue(run), finishedAt: now };
      const holder = this.holder(run);
      if ((await this.endAttempt(run.id, end, run.worker ?? undefined)) !== 'stale' && holder) {
        holder.running.delete(run.id);
        holder.release(run.id, formatResult(end.result));
      }
    }
    return this.store.earliestDeadline();
  }

  /** Parses an RFC 3339 time with any offset. */
  static parseTime(text: string): number {
    const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(text) ? Date.parse(text) : NaN;
    if (Number.isNaN(ms)) throw new InvalidRequestError(`'${text}' is not an RFC 3339 time (e.g. 2026-11-22T10:00:00+01:00)`);
    // Stored times stay printable: a year-0000 time with a +01:00 offset would be before 1970, say.
    if (!isTimeInRange(ms)) throw new InvalidRequestError(`next: '${text}' is outside the times Kiln keeps (1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z)`);
    return ms;
  }
}
