/**
 * Matches queued runs to connected workers. Woken by events (a run queued, ended or retried, a
 * worker joined or freed, a platform undropped), never by polling. The store decides who gets which
 * run (an atomic claim, through the run lifecycle), so several servers sharing one database can
 * dispatch at once. Workers are the registry's; the dispatcher asks it and never writes a session.
 */
import type { Logger } from 'pino';
import { labelsMatch, type BackoffTimings } from '../core/index.js';
import { coerceError } from '../errors.js';
import { traceNow, traceStage } from '../latency-trace.js';
import type { ClaimingWorker, NewRun, Run } from '../store/index.js';
import type { EventBus } from './events.js';
import type { RunLifecycle } from './run-lifecycle.js';
import { createWakeLoop, RETRY_PASS, type WakeLoop } from './wake-loop.js';
import { freeSlots, kindKey, type WorkerRegistry, type WorkerSession } from './worker-registry.js';

/** What a dispatcher works with. */
export interface DispatcherOptions {
  /** Claims, readies and hands back runs (every state change of a run is its). */
  lifecycle: RunLifecycle;
  /** The connected workers. */
  workers: WorkerRegistry;
  /** Kicks come from here; `dispatch.idle` goes out. */
  events: EventBus;
  /** The clock failed passes are retried on. */
  now: () => number;
}

/**
 * How soon a failed pass is tried again. Nothing else would wake the dispatcher for a run that is
 * already queued next to an idle worker, so a store error (a locked or full disk) is retried by
 * itself, soon at first and then less often while it lasts.
 */
export const DISPATCH_RETRY: BackoffTimings = { retryMinMs: 250, retryMaxMs: 30_000 };

/**
 * How long a kind marked empty is skipped at most. Every way a run becomes claimable is meant to
 * forget the mark (see Dispatcher.emptyKinds); this bounds what a missed one could cost.
 */
export const EMPTY_KIND_TTL_MS = 30_000;

/** Hands queued runs to workers with free slots. */
export class Dispatcher {
  /** Workers (pool instances) made for one run: they are given that run only. */
  private readonly reserved = new Map<string, string>();
  /** The dispatch passes: kicked when runs or workers change, retried with DISPATCH_RETRY when one fails. */
  private readonly loop: WakeLoop;
  /** A direct enqueue (queued and claimed for one worker in one commit) holds the dispatcher: passes wait. */
  private directBusy = false;
  private directDone: Promise<void> = Promise.resolve();
  /** A pass was asked for while a direct enqueue held the dispatcher: it kicks one when it ends. */
  private again = false;
  private stopped = false;
  /** When the current pass began (for the latency trace). */
  private passStartedAt = 0;
  /**
   * Kinds of worker (by kindKey) the store had nothing for, with their platform and when: a pass
   * skips them. Without this, every pass (one after each run ends, say) asks the store once per
   * kind, and a farm of idle platforms costs a claim (a round trip on PostgreSQL) each, which the
   * next execute waits behind. A claim depends only on the queued runs of the kind's platform
   * (their labels; core's canClaim), never on other runs ending, so a mark holds until a run may
   * be queued on its platform: `run.queued` and `run.retried` (of this server or, remote, of
   * another), `platform.undropped` forget that platform's marks; a resync, a failed pass, a run a
   * direct enqueue left queued and an enqueue that failed (it may have committed) forget them all.
   * A mark is only set when nothing was forgotten while its claim ran (`forgets`), and lapses after
   * EMPTY_KIND_TTL_MS in case some path was missed. Reserved sessions (one run each) are not marked.
   */
  private readonly emptyKinds = new Map<string, { platform: string; at: number }>();
  /** Counts forgets: a claim that came back empty marks its kind only if none happened meanwhile. */
  private forgets = 0;
  private readonly now: () => number;
  private readonly lifecycle: RunLifecycle;
  private readonly workers: WorkerRegistry;
  private readonly events: EventBus;

  constructor(private readonly log: Logger, options: DispatcherOptions) {
    ({ lifecycle: this.lifecycle, workers: this.workers, events: this.events, now: this.now } = options);
    this.loop = createWakeLoop(log, {
      body: () => this.runPass(),
      now: options.now,
      retry: DISPATCH_RETRY,
      failureMessage: 'dispatch pass failed; trying again',
      onIdle: () => this.idle(),
    });
    const kick = () => this.kick();
    // Those of another server too (`remote`): a run queued there may suit a worker connected here.
    // A resync (the feed may have missed some) looks again, at every kind.
    this.events.on('run.queued', ({ runs }) => {
      for (const run of runs) this.forget(run.platform);
      kick();
    });
    this.events.on('run.retried', ({ run }) => {
      this.forget(run.platform);
      kick();
    });
    this.events.on('platform.undropped', ({ platform }) => {
      this.forget(platform);
      kick();
    });
    this.events.on('feed.resync', () => {
      this.forget();
      kick();
    });
    for (const name of ['run.ended', 'worker.joined', 'worker.freed'] as const) this.events.on(name, kick);
  }

  /** Forgets the empty marks of a platform's kinds (undefined: of every kind); see emptyKinds. */
  private forget(platform?: string): void {
    this.forgets++;
    if (platform === undefined) this.emptyKinds.clear();
    else for (const [key, mark] of this.emptyKinds) if (mark.platform === platform) this.emptyKinds.delete(key);
  }

  /** Matched as far as runs and workers go: the pools look then. */
  private idle(): void {
    this.events.publish('dispatch.idle', {});
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

  /**
   * Queues a run and dispatches it. With an idle worker that takes it (and no pass running), the
   * run is queued and claimed for that worker in one commit and sent at once, before this
   * resolves; otherwise it is queued and a pass is asked for. Either way the run is committed
   * (queued, or running on the worker) when this resolves. Throws what the store's enqueue throws.
   */
  async enqueue(run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    const session = this.busyNow() || this.stopped ? undefined : this.idleSession(run);
    if (!session) {
      const queued = await this.lifecycle.enqueue(run, position).catch((raw: unknown) => this.enqueueFailed(raw));
      traceStage(run.id, 'enqueue-committed');
      return queued;
    }
    // Held like a pass: no pass may claim for this session between the commit and the send.
    this.directBusy = true;
    const direct = this.enqueueFor(session, run, position).catch((raw: unknown) => this.enqueueFailed(raw));
    // Shutdown waits for it as for a pass (the store must stay open until the run is sent).
    this.directDone = direct.then(() => undefined, () => undefined);
    return direct;
  }

  /**
   * An enqueue threw: it may still have committed (a reply lost on the way back from PostgreSQL),
   * with no `run.queued` said. Every kind is asked again, then the error goes to the caller.
   */
  private enqueueFailed(raw: unknown): never {
    this.forget();
    this.kick();
    throw raw;
  }

  /** The direct way of `enqueue`: queued and claimed for `session` in one commit, then sent. */
  private async enqueueFor(session: WorkerSession, run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    this.workers.filling(session, true);
    let passNeeded = false;
    try {
      const queued = await this.lifecycle.enqueueAndClaim(run, position, this.claimant(session));
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
      this.workers.filling(session, false);
      this.directBusy = false;
      // What was asked for meanwhile (or a run left queued, or a send to retry) gets a pass now,
      // one that asks every kind again (the run left queued is published too; this does not depend on it).
      if (passNeeded) this.forget();
      if (this.again || passNeeded) this.kick();
      else this.idle();
      this.again = false;
    }
  }

  /** The least-loaded connected worker that would take `run` now, if any (only the kinds of worker that match it are looked at). */
  private idleSession(run: NewRun): WorkerSession | undefined {
    if (this.workers.isDropped(run.platform)) return undefined;
    let best: WorkerSession | undefined;
    for (const kind of this.workers.listKinds()) {
      if (kind.platform !== run.platform || !labelsMatch(run.labels, kind.labels)) continue;
      const candidate = this.leastLoaded(kind.sessions);
      if (candidate && (!best || candidate.running.size < best.running.size)) best = candidate;
      if (best?.running.size === 0) break;
    }
    return best;
  }

  /**
   * The least-loaded session of `sessions` with a free slot and not kept for one run. The first one
   * running nothing is taken at once (none is less loaded): a kind of 10,000 idle workers costs one step.
   */
  private leastLoaded(sessions: Iterable<WorkerSession>): WorkerSession | undefined {
    let best: WorkerSession | undefined;
    for (const session of sessions) {
      if (this.reserved.has(session.name) || freeSlots(session) === 0) continue;
      if (session.running.size === 0) return session;
      if (!best || session.running.size < best.running.size) best = session;
    }
    return best;
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
    for (const run of this.workers.unsent()) {
      await this.lifecycle.orphaned(run, 'the server could not send it (the store failed)');
      this.workers.handedBack(run.id);
    }
    let ok = true;
    /** Fills one session; true when the store had nothing more for it (nor, then, for its kind). */
    const tryFill = async (session: WorkerSession): Promise<boolean> => {
      try {
        return await this.fill(session);
      } catch (raw) {
        // One worker's trouble (a store error, say) must not keep the others from their runs.
        ok = false;
        this.log.error({ err: coerceError(raw), worker: session.name }, 'dispatch to a worker failed');
        return false;
      }
    };
    // Workers kept for one run (pool instances) claim only that run: each is asked on its own.
    for (const name of [...this.reserved.keys()]) {
      const session = this.workers.session(name);
      if (session && freeSlots(session) > 0 && !this.workers.isDropped(session.platform)) await tryFill(session);
    }
    // Each kind of worker (platform and labels) is asked through its least-loaded free worker first,
    // so runs spread across the farm; a kind the store has nothing for is not asked again in this
    // pass (a run queued meanwhile asks for another pass), nor in later ones until a run may be
    // queued for it (emptyKinds). Only a kind that got runs is sorted.
    const now = this.now();
    const seen = new Set<string>();
    for (const kind of [...this.workers.listKinds()]) {
      if (this.workers.isDropped(kind.platform)) continue;
      const key = kindKey(kind);
      seen.add(key);
      const mark = this.emptyKinds.get(key);
      if (mark && now - mark.at < EMPTY_KIND_TTL_MS) continue;
      this.emptyKinds.delete(key);
      const forgets = this.forgets;
      /** Fills one session of the kind; on "nothing more" the kind is marked empty, unless a run may have been queued meanwhile. */
      const fillOfKind = async (session: WorkerSession): Promise<boolean> => {
        const empty = await tryFill(session);
        if (empty && this.forgets === forgets) this.emptyKinds.set(key, { platform: kind.platform, at: now });
        return empty;
      };
      const free = (session: WorkerSession) => freeSlots(session) > 0 && !this.reserved.has(session.name);
      const first = this.leastLoaded(kind.sessions);
      if (!first || (await fillOfKind(first))) continue;
      const rest = [...kind.sessions].filter((session) => session !== first && free(session)).sort((a, b) => a.running.size - b.running.size);
      for (const session of rest) if (await fillOfKind(session)) break;
    }
    // Marks of kinds no longer connected go (one with a worker's own labels, say, would pile up).
    for (const key of this.emptyKinds.keys()) if (!seen.has(key)) this.emptyKinds.delete(key);
    // A failed pass may have left runs queued (orphaned ones it could not hand back, say): all are asked again.
    if (!ok) this.forget();
    return ok;
  }

  /** Hands runs to one worker until it is full or nothing matches; true when the store had nothing (more) for it. */
  private async fill(session: WorkerSession): Promise<boolean> {
    this.workers.filling(session, true);
    try {
      return await this.fillSlots(session);
    } finally {
      this.workers.filling(session, false);
    }
  }

  private async fillSlots(session: WorkerSession): Promise<boolean> {
    while (freeSlots(session) > 0) {
      const claimed = await this.lifecycle.claimNext(this.claimant(session));
      if (!claimed) return true;
      traceStage(claimed.id, 'dispatch-woken', this.passStartedAt);
      if (!(await this.handOver(session, claimed))) return false;
    }
    return false;
  }

  /** Readies a run claimed for `session` and sends it; false when the session went away meanwhile. */
  private async handOver(session: WorkerSession, claimed: Run): Promise<boolean> {
    traceStage(claimed.id, 'claim-committed');
    let run: Run | undefined;
    try {
      run = await this.lifecycle.prepare(claimed);
    } catch (raw) {
      // Claimed but not sent: left so, it would sit `running` on a worker that does not hold it.
      this.workers.keepUnsent(claimed);
      throw raw;
    }
    if (!run) return true;
    if (!session.open) {
      await this.lifecycle.orphaned(run, `${session.name} went away before it was sent`).catch((raw) => {
        this.workers.keepUnsent(run);
        throw raw;
      });
      return false;
    }
    this.lifecycle.dispatched(run, session);
    traceStage(run.id, 'ws-sent');
    // Logged after the send: the line is not on the run's way to its worker.
    this.log.info({ runId: run.id, job: run.job, worker: session.name }, 'run dispatched');
    return true;
  }
}
