/**
 * The reaper: ends the runs nobody else will end. A run whose worker went away and did not come
 * back within the re-attach grace ends `lost` (retried if its job allows); a run whose worker never
 * reported by its deadline (timeout, or a cancel's backstop) ends by the server's own hand. It finds
 * both in the store, not in timers of its own, so it works for runs of any server's workers: the
 * grace counts from the worker's `last_seen` (written by the server whose connection closed, or by
 * this pass for the workers of a server found dead).
 *
 * With several servers it is a singleton (lease `reaper`): it acts only while this server holds the
 * lease. Every end it writes is guarded on the run's worker and attempt, so a pass still in flight
 * when the lease moves, or a loss written again, ends nothing twice.
 */
import type { Logger } from 'pino';
import { formatDuration, type BackoffTimings } from '../core/index.js';
import { coerceError, StoreUnavailableError } from '../errors.js';
import type { JobStore } from '../store/index.js';
import { LEASE, soloLeases, type Lease } from './cluster/types.js';
import type { EventBus } from './events.js';
import type { RunLifecycle } from './run-lifecycle.js';
import { createWakeLoop, RETRY_PASS, type WakeLoop } from './wake-loop.js';

/** Default waits before an end the store refused is tried again. */
const END_RETRY: BackoffTimings = { retryMinMs: 5000, retryMaxMs: 60_000 };

/** Longest single sleep (the store is read again after it). */
const MAX_SLEEP_MS = 60 * 60 * 1000;

/** What a reaper works with, and its timings. */
export interface ReaperOptions {
  store: JobStore;
  /** `worker.left`, `worker.elsewhere` (left), `run.dispatched`, `run.cancel-requested` and `feed.resync` wake it. */
  events: EventBus;
  /** Writes the ends (guarded on the worker and attempt). */
  lifecycle: Pick<RunLifecycle, 'loseRun' | 'endOverdue'>;
  now: () => number;
  /** How long a run whose worker went away waits for it to re-attach before it is lost (ms). */
  reattachGraceMs: number;
  /** Waits before an end the store refused (an overdue run, a lost one) is tried again (default 5 s, then up to 1 min). */
  retry?: BackoffTimings;
  /** The `reaper` lease: it acts only while held (default: held for good, as on a server alone on its store). */
  lease?: Lease;
  /**
   * The store is this server's alone (SQLite, one server per data dir): at recover(), every worker
   * still recorded connected is a previous life's, and is marked disconnected now, so its runs get
   * the grace from this start. On a shared store, the workers of dead servers are found by their
   * server's heartbeat instead (disconnectWorkersOfDeadServers).
   */
  alone?: boolean;
}

/** Loses the runs of workers gone for longer than the grace, and ends overdue runs (see the module's comment). */
export class Reaper {
  private readonly loop: WakeLoop;
  private readonly lease: Lease;
  /**
   * Losses the store refused for another reason than being away (`run#attempt`): refused again on
   * each pass, so they are left to the run's deadline rather than tried forever.
   */
  private readonly dropped = new Set<string>();
  /**
   * When this server started: a run whose worker has no record at all (sent by an older build, or
   * claimed by hand) has no last_seen to count the grace from; it counts from here.
   */
  private readonly since: number;

  constructor(private readonly log: Logger, private readonly options: ReaperOptions) {
    this.lease = options.lease ?? soloLeases().want(LEASE.reaper);
    this.since = options.now();
    this.loop = createWakeLoop(log, {
      body: () => this.pass(),
      now: options.now,
      maxSleepMs: MAX_SLEEP_MS,
      retry: options.retry ?? END_RETRY,
      failureMessage: 'deadline check failed; retrying',
      gate: () => this.lease.held,
    });
    this.lease.onChange((held) => (held ? void this.loop.open() : this.loop.close()));
    const { events, now, reattachGraceMs } = options;
    // This server's worker went away: its last_seen is now (written right after this), so its runs are due at now + grace.
    events.on('worker.left', () => this.loop.wakeAt(now() + reattachGraceMs));
    // Another server's worker: that server wrote its last_seen before telling; the pass reads when its runs are due.
    events.on('worker.elsewhere', ({ change }) => change === 'left' && void this.loop.kick());
    events.on('run.dispatched', ({ run }) => this.noteDeadline(run?.deadlineAt));
    events.on('run.cancel-requested', ({ run }) => this.noteDeadline(run.deadlineAt));
    events.on('feed.resync', () => void this.loop.kick());
  }

  /** Runs a pass now (while the lease is held); resolves once a pass that began after this call has ended. */
  kick(): Promise<void> {
    return this.loop.kick();
  }

  /** Makes the next pass run no later than `at` (a run's deadline). */
  wakeAt(at: number): void {
    this.loop.wakeAt(at);
  }

  /**
   * At start: runs left `running` by a previous life wait the grace for their workers to re-attach
   * (from now, when the store is this server's alone), and overdue ones are ended by the pass this
   * runs. Returns how many runs are running.
   */
  async recover(): Promise<number> {
    const running = await this.options.store.listRunning();
    if (this.options.alone) {
      const now = this.options.now();
      const connected = new Set((await this.options.store.listWorkers()).filter((w) => w.connected).map((w) => w.name));
      for (const name of new Set(running.map((run) => run.worker))) {
        if (name !== null && connected.has(name)) await this.options.store.workerDisconnected(name, now);
      }
    }
    await this.loop.kick();
    return running.length;
  }

  /** Stops (the runs it watches stay in the store for the next holder); resolves once a pass in flight has ended. */
  stop(): Promise<void> {
    return this.loop.stop();
  }

  private noteDeadline(at: number | null | undefined): void {
    if (at !== null && at !== undefined) this.loop.wakeAt(at);
  }

  /**
   * Marks the workers of dead servers disconnected, loses the runs of workers away longer than the
   * grace, then ends the runs whose worker never reported by their deadline; resolves with when the
   * next is due. Each run is its own store call, guarded on the attempt: one the store refuses is
   * logged and left for the retry (the whole pass, with the loop's backoff, or sooner when a
   * deadline comes first), and does not keep the others from ending.
   */
  private async pass(): Promise<number | undefined | typeof RETRY_PASS> {
    const { store, lifecycle, reattachGraceMs: grace } = this.options;
    const now = this.options.now();
    let refused = false;
    let unknownDue: number | undefined;
    const dead = await store.disconnectWorkersOfDeadServers();
    if (dead.length > 0) this.log.warn({ workers: dead }, 'workers of servers found dead: their runs wait the grace for them to re-attach');
    for (const lost of await store.runsOfLostWorkers(now, grace)) {
      const key = `${lost.id}#${lost.attempt}`;
      if (this.dropped.has(key)) continue;
      if (lost.lastSeen === null && now < this.since + grace) {
        unknownDue = this.since + grace;
        continue;
      }
      const reason = `worker lost (${lost.worker ?? 'unknown'} did not come back within ${formatDuration(grace)})`;
      try {
        await lifecycle.loseRun(lost.id, lost.worker ?? undefined, lost.attempt, reason);
      } catch (raw) {
        const err = coerceError(raw);
        if (err instanceof StoreUnavailableError) {
          refused = true;
          this.log.error({ err, runId: lost.id }, 'could not record a lost run; retrying');
        } else {
          this.dropped.add(key);
          this.log.error({ err, runId: lost.id }, 'could not record a lost run; dropped (its deadline ends it)');
        }
      }
    }
    for (const run of await store.overdueRuns(now)) {
      try {
        await lifecycle.endOverdue(run, now);
      } catch (raw) {
        refused = true;
        this.log.error({ err: coerceError(raw), runId: run.id }, 'could not end an overdue run; retrying');
      }
    }
    if (!refused) {
      const next = await this.nextDue(now);
      return unknownDue === undefined || (next !== undefined && next < unknownDue) ? next : unknownDue;
    }
    // The retry waits the backoff, but no later than the next deadline still to come.
    const next = await store.earliestDeadline(now).catch(() => undefined);
    if (next !== undefined) this.loop.wakeAt(next);
    return RETRY_PASS;
  }

  /**
   * The earlier of the next deadline and the next loss. A loss due at or before this pass's `now`
   * was this pass's to write (or was dropped): counting it again would spin.
   */
  private async nextDue(now: number): Promise<number | undefined> {
    const deadline = await this.options.store.earliestDeadline();
    let loss = await this.options.store.nextLossAt(this.options.reattachGraceMs);
    if (loss !== undefined && loss <= now) loss = undefined;
    if (deadline === undefined) return loss;
    return loss === undefined ? deadline : Math.min(deadline, loss);
  }
}
