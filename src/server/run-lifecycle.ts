/**
 * The run lifecycle: the one module that moves runs through their states (queue, dispatch,
 * attach and re-attach, output, end, retry, lose, cancel). Each move is a store call, then the
 * events that say what it did (events.ts); the console hub, the dispatcher, the outbox and the
 * pools hear of it there, never from here by hand.
 *
 * Runs are never silently dropped: a run whose worker goes away waits a grace window for the
 * worker to re-attach, then ends `lost` (and is retried if its job allows); a run whose worker
 * never reports is ended by the server's own deadline (timeout or cancel backstop). Both are the
 * reaper's to find (reaper.ts, one server of the farm at a time); it ends them through here.
 */
import type { Logger } from 'pino';
import {
  decideReattach, decideUnheld, endOfOverdue, expandTemplate, formatResult, type BackoffTimings, type RunResult,
} from '../core/index.js';
import { ProtocolError, StoreUnavailableError, TemplateNotFoundError } from '../errors.js';
import type { SkippedArtifact, StopCause } from '../protocol/index.js';
import type { AttemptEnd, ClaimingWorker, EndWrites, FireOutcome, ImportPlan, ImportResult, Job, JobStore, NewRun, ReportedEnd, Run, ScriptFor, StoredLine } from '../store/index.js';
import type { EventBus } from './events.js';
import type { Templates } from './templates.js';
import type { WorkerRegistry, WorkerSession } from './worker-registry.js';
import { createWakeLoop, type WakeLoop } from './wake-loop.js';

/** Default job timeout: one hour, as robur's. */
export const DEFAULT_TIMEOUT_MS = 3_600_000;

/** Where lines received but not yet written wait (the console hub): a run's last ones are written with its end. */
export interface ConsoleWrites {
  /** Resolves once every waiting line is committed (or kept for a retry when the store failed). */
  flush(): Promise<void>;
  /** Takes a run's waiting lines, for the store call that ends it. */
  take(runId: string): Promise<StoredLine[]>;
  /** Puts back lines `take` gave when that store call failed. */
  restore(runId: string, lines: StoredLine[]): void;
}

/** What the lifecycle works with, and its timings. */
export interface RunLifecycleOptions {
  store: JobStore;
  events: EventBus;
  workers: WorkerRegistry;
  console: ConsoleWrites;
  templates: Templates;
  now: () => number;
  /** How long past a run's timeout (or a cancel) the server waits for the worker's result (ms). */
  backstopMs: number;
}

/** Waits between tries to record workers that left while the store refused (a lost presence being taken back, say). */
const DISCONNECT_RETRY: BackoffTimings = { retryMinMs: 250, retryMaxMs: 10_000 };

/** Moves runs through their states and publishes what it did. */
export class RunLifecycle {
  /** Workers that left while the store could not record it, by name: until it is, the farm counts them connected here. */
  private readonly unrecorded = new Map<string, { connId?: string; at: number }>();
  private readonly disconnects: WakeLoop;

  constructor(private readonly log: Logger, private readonly options: RunLifecycleOptions) {
    this.disconnects = createWakeLoop(log, {
      body: () => this.recordDisconnects(),
      retry: DISCONNECT_RETRY,
      now: options.now,
      failureMessage: 'could not record that workers left; trying again',
    });
  }

  /** Stops retrying what could not be recorded (at shutdown). */
  async stop(): Promise<void> {
    await this.disconnects.stop();
  }

  private get store() {
    return this.options.store;
  }

  private get events() {
    return this.options.events;
  }

  private get workers() {
    return this.options.workers;
  }

  /** How long past a run's timeout the server waits for its result (ms). */
  get backstopMs(): number {
    return this.options.backstopMs;
  }

  // ---- queue ----

  /** Adds a job with its first runs (none when paused or never due), in one transaction. */
  async createJob(job: Job, firstRuns: NewRun[]): Promise<Run[]> {
    const runs = await this.store.createJob(job, firstRuns);
    if (runs.length > 0) this.events.publish('run.queued', { runs });
    return runs;
  }

  /** Removes a job; its queued runs end cancelled. Returns them. */
  async deleteJob(name: string): Promise<string[]> {
    const cancelled = await this.store.deleteJob(name, this.options.now());
    this.endedInQueue(cancelled);
    return cancelled;
  }

  /** Retires a platform: its queued runs end cancelled (returned); its workers are told. */
  async dropPlatform(platform: string): Promise<string[]> {
    const cancelled = await this.store.dropPlatform(platform, this.options.now());
    this.endedInQueue(cancelled, platform);
    this.events.publish('platform.dropped', { platform, cancelled });
    return cancelled;
  }

  /**
   * Imports a file in one transaction (JobStore.importState); after the commit, what it did to runs
   * and platforms is published as dropPlatform and enqueue publish it: the cancelled runs and the
   * drops, then the queued runs (one `run.queued`, for a dispatch pass). A repeat publishes nothing.
   */
  async importState(plan: ImportPlan): Promise<ImportResult> {
    let imported: ImportResult;
    try {
      imported = await this.store.importState(plan);
    } catch (raw) {
      // The store went away: its commit may have gone through unheard. What reads the store (the
      // dispatcher, the scheduler) reads it again rather than sleep past what it may hold.
      if (raw instanceof StoreUnavailableError) this.events.publish('feed.resync', {});
      throw raw;
    }
    if (!imported.recorded) return imported;
    for (const { platform, dropped, cancelled } of imported.writes.drops) {
      if (!dropped) continue;
      this.endedInQueue(cancelled, platform);
      this.events.publish('platform.dropped', { platform, cancelled });
    }
    const runs = imported.writes.runs.flatMap((r) => (r.outcome === 'queued' ? [r.run] : []));
    if (runs.length > 0) this.events.publish('run.queued', { runs });
    return imported;
  }

  /** Queues a run (it waits for a dispatch pass). */
  async enqueue(run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    const queued = await this.store.enqueue(run, position);
    this.events.publish('run.queued', { runs: [queued.run] });
    return queued;
  }

  /**
   * Queues a run and claims the first run `worker` takes, in one commit. A run left waiting (the
   * worker took an older one) is published `run.queued`; the claimed one is the caller's to send.
   */
  async enqueueAndClaim(run: NewRun, position: 'back' | 'front', worker: ClaimingWorker): Promise<{ run: Run; created: boolean; claimed: Run | undefined }> {
    const queued = await this.store.enqueueAndClaim(run, position, worker, this.options.now(), this.options.backstopMs, this.scriptFor);
    if (queued.claimed?.id !== queued.run.id) this.events.publish('run.queued', { runs: [queued.run] });
    return queued;
  }

  /**
   * Fires a due job's schedule (see JobStore.fireSchedule): what it queued, cancelled in the
   * queue or asked to stop is published.
   */
  async fire(
    name: string, expectedNextAt: number, nextAt: number | null, runs: NewRun[], now: number, missed?: { count: number; reason: string },
  ): Promise<FireOutcome> {
    const fired = await this.store.fireSchedule(name, expectedNextAt, nextAt, runs, now, this.options.backstopMs, missed);
    if (fired.outcome === 'stale') return fired;
    this.endedInQueue(fired.cancelled ?? []);
    if (fired.outcome === 'queued') {
      for (const run of fired.cancelRequested) {
        this.events.publish('run.cancel-requested', { run, reason: 'cancelled by the schedule: superseded by the next scheduled run' });
      }
      if (fired.runs.length > 0) this.events.publish('run.queued', { runs: fired.runs });
    }
    return fired;
  }

  /** Writes a server line on a queued run's console (why it still waits). */
  async noteWaiting(runId: string, text: string): Promise<void> {
    const line = await this.store.noteQueuedRun(runId, text, this.options.now());
    if (line) this.events.publish('run.line', { runId, lines: [line], source: 'server' });
  }

  // ---- dispatch ----

  /** Claims the next run `worker` takes, if any (it is `running` on it, not yet sent), a template job's with its script. */
  claimNext(worker: ClaimingWorker): Promise<Run | undefined> {
    return this.store.claimNext(worker, this.options.now(), this.options.backstopMs, this.scriptFor);
  }

  /** A template job's script for a run, from the template as it is now; throws TemplateNotFoundError or the expansion's error. */
  private expand(run: Run, job: { template: string | null; vars: Record<string, string> } | undefined): string {
    if (!job?.template) throw new TemplateNotFoundError(`job ${run.job} has neither a script nor a template`);
    const { text } = this.options.templates.read(job.template, run.platform);
    return expandTemplate(text, { ...job.vars, PLATFORM: run.platform, JOB: run.job, RUN: run.id });
  }

  /** The claim's expansion (the store saves the script in the claim's transaction); undefined when it fails, for prepare to end the run with the reason. */
  private readonly scriptFor: ScriptFor = (run, job) => {
    try {
      return this.expand(run, job);
    } catch {
      return undefined;
    }
  };

  /**
   * Makes a claimed run ready to send. A template job's script is expanded when it is claimed (see
   * scriptFor); one that could not be (a template that is missing or uses an unknown variable) is
   * tried again here and ends the run `aborted` with the reason (undefined is returned: nothing to send).
   */
  async prepare(run: Run): Promise<Run | undefined> {
    if (run.script !== null) return run;
    const job = await this.store.getJob(run.job);
    let script: string;
    try {
      script = this.expand(run, job ?? undefined);
    } catch (raw) {
      const reason = (raw as Error).message;
      await this.endAttempt(run.id, { status: 'failed', result: { kind: 'aborted', reason }, finishedAt: this.options.now() }, run.worker ?? undefined);
      return undefined;
    }
    // Outside the catch: a store failure is the server's trouble, not the run's (the dispatcher hands it back).
    await this.store.setRunScript(run.id, script);
    return { ...run, script };
  }

  /** A claimed run was sent to `session`: it holds it now (the reaper watches its deadline, told by `run.dispatched`). */
  dispatched(run: Run, session: WorkerSession): void {
    this.workers.hold(session, run.id);
    session.assign(run);
    this.events.publish('run.dispatched', { run, worker: session.name });
  }

  /**
   * A run claimed for a worker but never sent to it (the worker went away meanwhile, or the pass
   * failed): nothing of it ran, so it goes back to its queue without using a retry.
   */
  async orphaned(run: Run, why: string): Promise<void> {
    await this.requeueUnstarted(run, `never started: ${why}`);
  }

  // ---- output ----

  /** Console lines a worker sent for a run it holds. */
  output(session: WorkerSession, runId: string, lines: StoredLine[]): void {
    if (!session.running.has(runId)) throw new ProtocolError(`output for run ${runId}, which this worker does not hold`);
    this.events.publish('run.line', { runId, lines, source: 'worker' });
  }

  // ---- end ----

  /** A worker reported the end of a run it holds. */
  async workerFinished(session: WorkerSession, runId: string, result: RunResult, stoppedBy: StopCause | undefined, artifactsSkipped: SkippedArtifact[] = []): Promise<void> {
    const now = this.options.now();
    if (!session.running.has(runId)) {
      await this.ignored(runId, now, session.name, 'a result for a run this worker does not hold', result);
      session.done(runId, false);
      this.events.publish('worker.freed', { session });
      return;
    }
    // One store call: the end (made from the report with the run's cancel request), its last lines,
    // the files it skipped, or the `ignored` record when the run had already ended.
    const outcome = await this.endAttempt(runId, { report: { result, stoppedBy }, finishedAt: now }, session.name, undefined, session, {
      events: artifactsSkipped.length > 0 ? [{ at: now, kind: 'artifacts-skipped', detail: { files: artifactsSkipped } }] : [],
      ifStale: { at: now, kind: 'ignored', detail: { worker: session.name, why: 'a result for a run that had already ended', result } },
    });
    if (outcome === 'stale') {
      this.log.info({ runId, worker: session.name, why: 'a result for a run that had already ended' }, 'message answered but not applied');
      this.workers.letGo(session, runId);
      session.done(runId, false);
      this.events.publish('worker.freed', { session });
    }
  }

  /**
   * Ends an attempt in one store call: the guarded transition with its last console lines and the
   * events that come with it. The worker holding it lets go of it (told it was applied when it
   * reported the end, told to drop it otherwise) before the end or the retry is published, so
   * subscribers see its slot free.
   */
  private async endAttempt(
    runId: string, given: AttemptEnd | ReportedEnd, worker: string | undefined, attempt?: number, reporter?: WorkerSession, writes: EndWrites = {},
  ): Promise<'ended' | 'retried' | 'stale'> {
    const lines = await this.options.console.take(runId);
    let ended;
    try {
      ended = await this.store.endAttempt(runId, given, { worker, attempt }, { ...writes, lines });
    } catch (raw) {
      this.options.console.restore(runId, lines);
      throw raw;
    }
    const { outcome, run, end, note } = ended;
    if (outcome === 'stale' || !end) return 'stale';
    const said = outcome === 'ended' ? 'run ended' : end.retry === 'unstarted' ? 'run requeued' : 'run retried';
    this.log.info({ runId, status: end.status, result: formatResult(end.result), outcome, attempt: run.attempt }, said);
    if (reporter) {
      this.workers.letGo(reporter, runId);
      reporter.done(runId, true);
    } else {
      const holder = this.workers.holding(runId, worker);
      if (holder) {
        this.workers.letGo(holder, runId);
        holder.release(runId, formatResult(end.result));
      }
    }
    if (end.status === 'lost') this.events.publish('run.lost', { runId, worker, reason: formatResult(end.result) });
    if (outcome === 'retried') {
      if (note) this.events.publish('run.line', { runId, lines: [note], source: 'server' });
      this.events.publish('run.retried', { run, unstarted: end.retry === 'unstarted' });
    } else {
      this.events.publish('run.ended', { runId, from: 'running', status: end.status, platform: run.platform, run });
    }
    return outcome;
  }

  /** Runs that ended in the queue (cancelled with their job or platform, or superseded); their platform when known. */
  private endedInQueue(runIds: string[], platform?: string): void {
    for (const runId of runIds) this.events.publish('run.ended', { runId, from: 'queued', status: 'cancelled', ...(platform === undefined ? {} : { platform }) });
  }

  /** Records a message answered but not applied (a result for a run the worker does not hold). */
  private async ignored(runId: string, at: number, worker: string, why: string, result: RunResult): Promise<void> {
    this.log.info({ runId, worker, why }, 'message answered but not applied');
    await this.store.noteRunEvent(runId, { at, kind: 'ignored', detail: { worker, why, result } });
  }

  // ---- cancel ----

  /**
   * Cancels a run: a queued one ends at once; a running one is stopped by its worker (which
   * reports it `cancelled`), with the server's backstop in case the worker never answers.
   */
  async cancel(idOrPrefix: string, by: string): Promise<{ run: Run; state: 'cancelled' | 'requested' }> {
    const now = this.options.now();
    const outcome = await this.store.requestCancel(idOrPrefix, by, now, now + this.options.backstopMs);
    const { run } = outcome;
    this.log.info({ runId: run.id, by, state: outcome.state }, 'cancel requested');
    if (outcome.state === 'cancelled') this.endedInQueue([run.id], run.platform);
    else {
      this.events.publish('run.cancel-requested', { run, reason: `cancelled by ${by}` });
    }
    return outcome;
  }

  // ---- attach, re-attach, lose ----

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
    if (held.length > 0) await this.options.console.flush();
    for (const { runId, attempt } of held) {
      const run = await this.store.findRun(runId).catch(() => undefined);
      const decision = decideReattach(run, session, attempt);
      if (decision.kind === 'resume') {
        this.workers.hold(session, runId);
        resume.push({ runId, afterSeq: await this.store.lastConsoleSeq(runId) });
        this.log.info({ runId, worker: session.name }, 'run re-attached');
        this.events.publish('run.attached', { runId, worker: session.name });
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
      const decision = decideUnheld(run, session, held, this.workers.claimingFor(session.name, session));
      if (decision === 'requeue') {
        await this.requeueUnstarted(run, `never started: ${session.name} reconnected without it (the assignment did not reach the worker)`);
      } else if (decision === 'lose') {
        const reason = `worker lost (${session.name} came back as a new process without it: the one that ran it is gone)`;
        await this.endAttempt(run.id, { status: 'lost', result: { kind: 'aborted', reason }, finishedAt: this.options.now(), retry: 'lost' }, run.worker ?? undefined, run.attempt);
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
      { status: 'cancelled', result: { kind: 'aborted', reason }, finishedAt: this.options.now(), retry: 'unstarted' },
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

  /**
   * A worker's connection is gone: its runs wait for it to come back, then the reaper ends them
   * `lost` (the grace counts from the last_seen written here).
   */
  async workerGone(session: WorkerSession): Promise<void> {
    this.workers.leave(session);
    // A connection cut off (revoked) is unlisted before its close: a worker welcomed under the
    // name meanwhile is the one connected now.
    if (this.workers.session(session.name)) return;
    const at = this.options.now();
    try {
      await this.store.workerDisconnected(session.name, at, session.connId);
    } catch (raw) {
      // Unrecorded, the worker stays connected here for the farm: its name taken, its runs never lost.
      this.unrecorded.set(session.name, { connId: session.connId, at });
      void this.disconnects.kick();
      throw raw;
    }
  }

  /** Records the workers that left while the store refused; a throw retries with the backoff. */
  private async recordDisconnects(): Promise<void> {
    for (const [name, { connId, at }] of [...this.unrecorded]) {
      // Back on this server meanwhile: its new connection is the one recorded (and connId guards the rest).
      if (!this.workers.session(name)) await this.store.workerDisconnected(name, at, connId);
      this.unrecorded.delete(name);
    }
  }

  /**
   * Ends a run whose worker did not come back within the grace (found by the reaper): `lost`, with
   * its job's lost-retry budget. Guarded on the worker and the attempt the reaper read, so a loss
   * written again after its reply was lost, or a run that moved on meanwhile, is `stale`.
   */
  loseRun(runId: string, worker: string | undefined, attempt: number, reason: string): Promise<'ended' | 'retried' | 'stale'> {
    return this.endAttempt(runId, { status: 'lost', result: { kind: 'aborted', reason }, finishedAt: this.options.now(), retry: 'lost' }, worker, attempt);
  }

  /** Ends a run whose worker never reported by its deadline (timeout or cancel backstop, found by the reaper), guarded on its attempt. */
  endOverdue(run: Run, now: number): Promise<'ended' | 'retried' | 'stale'> {
    return this.endAttempt(run.id, { ...endOfOverdue(run), finishedAt: now }, run.worker ?? undefined, run.attempt);
  }
}
