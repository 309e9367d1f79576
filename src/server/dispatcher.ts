/**
 * Matches queued runs to connected workers. Woken by events (a run queued, a worker connected or
 * freed), never by polling. The store decides who gets which run (an atomic claim), so several
 * servers sharing one database can dispatch at once.
 */
import type { Logger } from 'pino';
import { labelsMatch, type BackoffTimings } from '../core/index.js';
import { coerceError } from '../errors.js';
import { traceNow, traceStage } from '../latency-trace.js';
import type { ClaimingWorker, JobStore, NewRun, Run } from '../store/index.js';
import { createWakeLoop, RETRY_PASS, type WakeLoop } from './wake-loop.js';

/** A connected worker, as the dispatcher sees it. */
export interface WorkerSession {
  readonly name: string;
  /** Its credential's identity (see core/worker-identity), recorded on each run it takes. */
  readonly identity: string;
  /** Its process's id from the hello (see Run.workerSession); undefined for workers that send none. */
  readonly session: string | undefined;
  readonly platform: string;
  readonly labels: Record<string, string>;
  readonly capacity: number;
  /** A `--once` worker takes a single run in its life. */
  readonly once: boolean;
  /** Runs it holds now. */
  readonly running: Set<string>;
  /** Runs it has been given in its life. */
  assigned: number;
  /** False once the connection is gone. */
  readonly open: boolean;
  /** True once the worker said it is shutting down: it takes no more runs. */
  readonly draining: boolean;
  /** Sends the run to the worker. */
  assign(run: Run): void;
  /** Asks the worker to stop a run and report it. */
  cancel(runId: string, reason: string): void;
  /** Tells the worker the server ended a run itself: stop it, drop its output. */
  release(runId: string, reason: string): void;
  /** Acknowledges a run's result. */
  done(runId: string, applied: boolean): void;
  /** Tells the worker something it should log (e.g. its platform was dropped). */
  notice(message: string): void;
}

/** Free slots of a session. */
export function freeSlots(session: WorkerSession): number {
  if (!session.open || session.draining) return 0;
  if (session.once) return session.assigned === 0 ? 1 : 0;
  return session.capacity - session.running.size;
}

/**
 * How soon a failed pass is tried again. Nothing else would wake the dispatcher for a run that is
 * already queued next to an idle worker, so a store error (a locked or full disk) is retried by
 * itself, soon at first and then less often while it lasts.
 */
export const DISPATCH_RETRY: BackoffTimings = { retryMinMs: 250, retryMaxMs: 30_000 };

/** Hands queued runs to workers with free slots. */
export class Dispatcher {
  private readonly sessions = new Map<string, WorkerSession>();
  /** Platforms whose workers get no runs. */
  private readonly dropped = new Set<string>();
  /** Workers (pool instances) made for one run: they are given that run only. */
  private readonly reserved = new Map<string, string>();
  /** The dispatch passes: kicked when runs or workers change, retried with DISPATCH_RETRY when one fails. */
  private readonly loop: WakeLoop;
  /** A direct enqueue (queued and claimed for one worker in one commit) holds the dispatcher: passes wait. */
  private directBusy = false;
  private directDone: Promise<void> = Promise.resolve();
  /** A pass was asked for while a direct enqueue held the dispatcher: it kicks one when it ends. */
  private again = false;
  /** Runs claimed but neither sent nor handed back (the store failed): handed back first on the next pass. */
  private readonly unsent = new Map<string, Run>();
  /** Sessions a pass is handing runs to now: a run claimed for one may not have been sent yet. */
  private readonly filling = new Set<WorkerSession>();
  private stopped = false;
  /** When the current pass began (for the latency trace). */
  private passStartedAt = 0;
  /** Told after each dispatch pass and when a worker comes or goes (the pools look then). */
  onChange: () => void = () => {};

  constructor(
    private readonly store: JobStore,
    private readonly log: Logger,
    private readonly now: () => number,
    /** How long past a run's timeout the server waits for its result (ms). */
    private readonly backstopMs: number,
    /** Readies a claimed run (expands its template); undefined when the run ended instead. */
    private readonly prepare: (run: Run) => Promise<Run | undefined>,
    /** Called with each run handed to a worker. */
    private readonly dispatched: (run: Run) => void,
    /** Called with a run claimed for a worker but not sent to it (the worker went away, or the pass failed), and why. */
    private readonly orphaned: (run: Run, why: string) => Promise<void>,
  ) {
    this.loop = createWakeLoop(log, {
      body: () => this.runPass(),
      now,
      retry: DISPATCH_RETRY,
      failureMessage: 'dispatch pass failed; trying again',
      onIdle: () => this.onChange(),
    });
  }

  /** The connected session of that name, if any. */
  session(name: string): WorkerSession | undefined {
    return this.sessions.get(name);
  }

  /**
   * True while a pass may hold a run claimed for a session of that name other than `except` and
   * not yet sent (or handed back): such a run is not the other process's to give up or lose.
   */
  claimingFor(name: string, except: WorkerSession): boolean {
    return [...this.filling].some((session) => session.name === name && session !== except) || [...this.unsent.values()].some((run) => run.worker === name);
  }

  /** Connected sessions. */
  list(): WorkerSession[] {
    return [...this.sessions.values()];
  }

  add(session: WorkerSession): void {
    this.sessions.set(session.name, session);
    this.kick();
  }

  remove(session: WorkerSession): void {
    if (this.sessions.get(session.name) === session) this.sessions.delete(session.name);
    this.onChange();
  }

  /** Gives the worker of that name only `runId` (undefined: lifts it). */
  reserve(name: string, runId: string | undefined): void {
    if (runId === undefined) this.reserved.delete(name);
    else this.reserved.set(name, runId);
  }

  /** The run a worker is reserved for, if any. */
  reservedFor(name: string): string | undefined {
    return this.reserved.get(name);
  }

  /** Marks a platform dropped (its workers get no runs) or lifts that. */
  setDropped(platform: string, dropped: boolean): void {
    if (dropped) this.dropped.add(platform);
    else this.dropped.delete(platform);
  }

  /**
   * Queues a run and dispatches it. With an idle worker that takes it (and no pass running), the
   * run is queued and claimed for that worker in one commit and sent at once, before this
   * resolves; otherwise it is queued and a pass is asked for. Either way the run is committed
   * (queued, or running on the worker) when this resolves. Throws what the store's enqueue throws.
   */
  async enqueue(run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    const session = this.busyNow() || this.stopped ? undefined : this.idleSession(run);
    if (!session) {
      const queued = await this.store.enqueue(run, position);
      traceStage(run.id, 'enqueue-committed');
      this.kick();
      return queued;
    }
    // Held like a pass: no pass may claim for this session between the commit and the send.
    this.directBusy = true;
    const direct = this.enqueueFor(session, run, position);
    // Shutdown waits for it as for a pass (the store must stay open until the run is sent).
    this.directDone = direct.then(() => undefined, () => undefined);
    return direct;
  }

  /** The direct way of `enqueue`: queued and claimed for `session` in one commit, then sent. */
  private async enqueueFor(session: WorkerSession, run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    this.filling.add(session);
    let passNeeded = false;
    try {
      const queued = await this.store.enqueueAndClaim(run, position, this.claimant(session), this.now(), this.backstopMs);
      traceStage(run.id, 'enqueue-committed');
      traceStage(run.id, 'dispatch-woken');
      // The worker took another run (one already queued in front): this one waits for a pass.
      if (queued.claimed?.id !== queued.run.id) passNeeded = true;
      if (queued.claimed) {
        // Committed: the caller's answer no longer depends on the send (a failed one is retried by a pass).
        await this.handOver(session, queued.claimed).catch((raw) => {
          passNeeded = true;
          this.log.error({ err: coerceError(raw), worker: session.name }, 'dispatch to a worker failed');
        });
      }
      return { run: queued.claimed?.id === queued.run.id ? queued.claimed : queued.run, created: queued.created };
    } finally {
      this.filling.delete(session);
      this.directBusy = false;
      // What was asked for meanwhile (or a run left queued, or a send to retry) gets a pass now.
      if (this.again || passNeeded) this.kick();
      else this.onChange();
      this.again = false;
    }
  }

  /** The least-loaded connected worker that would take `run` now, if any. */
  private idleSession(run: NewRun): WorkerSession | undefined {
    if (this.dropped.has(run.platform)) return undefined;
    const idle = [...this.sessions.values()].filter((session) =>
      session.platform === run.platform && !this.reserved.has(session.name) && freeSlots(session) > 0 && labelsMatch(run.labels, session.labels));
    return idle.sort((a, b) => a.running.size - b.running.size)[0];
  }

  /** A session as the store's claim sees it. */
  private claimant(session: WorkerSession): ClaimingWorker {
    return { name: session.name, platform: session.platform, labels: session.labels, onlyRun: this.reserved.get(session.name), identity: session.identity, session: session.session };
  }

  /** Asks for a dispatch pass; passes requested while one runs are merged into one more. */
  kick(): void {
    if (this.stopped) return;
    if (this.directBusy) {
      this.again = true;
      return;
    }
    void this.loop.kick();
  }

  /** True while a dispatch pass runs (runs may be claimed but not yet handed out). */
  busyNow(): boolean {
    return this.directBusy || this.loop.busy;
  }

  /** Stops retrying failed passes and takes no more kicks (at shutdown, before the store closes). */
  stop(): void {
    this.stopped = true;
    void this.loop.stop();
  }

  /** Resolves when no pass is running (for shutdown and tests). */
  async settled(): Promise<void> {
    while (this.busyNow()) {
      await this.directDone;
      await this.loop.settled();
    }
  }

  /** The loop's body: one pass, unless a direct enqueue holds the workers (it asks for the pass when it ends). */
  private async runPass(): Promise<typeof RETRY_PASS | undefined> {
    if (this.directBusy) {
      this.again = true;
      return undefined;
    }
    this.passStartedAt = traceNow();
    return (await this.pass()) ? undefined : RETRY_PASS;
  }

  /** One pass over the workers; false when any of them could not be served (tried again later). */
  private async pass(): Promise<boolean> {
    for (const run of this.unsent.values()) {
      await this.orphaned(run, 'the server could not send it (the store failed)');
      this.unsent.delete(run.id);
    }
    let ok = true;
    // Least-loaded workers first, so runs spread across the farm.
    const candidates = [...this.sessions.values()].sort((a, b) => a.running.size - b.running.size);
    for (const session of candidates) {
      if (this.dropped.has(session.platform)) continue;
      try {
        await this.fill(session);
      } catch (raw) {
        // One worker's trouble (a store error, say) must not keep the others from their runs.
        ok = false;
        this.log.error({ err: coerceError(raw), worker: session.name }, 'dispatch to a worker failed');
      }
    }
    return ok;
  }

  /** Hands runs to one worker until it is full or nothing matches. */
  private async fill(session: WorkerSession): Promise<void> {
    this.filling.add(session);
    try {
      await this.fillSlots(session);
    } finally {
      this.filling.delete(session);
    }
  }

  private async fillSlots(session: WorkerSession): Promise<void> {
    while (freeSlots(session) > 0) {
      const claimed = await this.store.claimNext(this.claimant(session), this.now(), this.backstopMs);
      if (!claimed) break;
      traceStage(claimed.id, 'dispatch-woken', this.passStartedAt);
      if (!(await this.handOver(session, claimed))) break;
    }
  }

  /** Readies a run claimed for `session` and sends it; false when the session went away meanwhile. */
  private async handOver(session: WorkerSession, claimed: Run): Promise<boolean> {
    traceStage(claimed.id, 'claim-committed');
    let run: Run | undefined;
    try {
      run = await this.prepare(claimed);
    } catch (raw) {
      // Claimed but not sent: left so, it would sit `running` on a worker that does not hold it.
      this.unsent.set(claimed.id, claimed);
      throw raw;
    }
    if (!run) return true;
    if (!session.open) {
      await this.orphaned(run, `${session.name} went away before it was sent`).catch((raw) => {
        this.unsent.set(run.id, run);
        throw raw;
      });
      return false;
    }
    session.running.add(run.id);
    session.assigned += 1;
    session.assign(run);
    traceStage(run.id, 'ws-sent');
    // Logged after the send: the line is not on the run's way to its worker.
    this.log.info({ runId: run.id, job: run.job, worker: session.name }, 'run dispatched');
    this.dispatched(run);
    return true;
  }
}
