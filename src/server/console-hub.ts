/**
 * Console lines on their way from workers to the store and to observers. Lines are fanned out
 * to observers at once and written to the store in batches (one transaction per flush interval),
 * never one transaction per line. Fed by events: `run.line` brings lines, `run.ended` ends the
 * run's observers.
 *
 * With several servers on one database (notes/issue16-plan.md §3.4), a run observed here may have
 * its worker on another server: its lines reach this hub as `console.committed` ranges (sent in
 * the transaction that wrote them). The hub then reads the store from what each observer has
 * (seq > delivered), one read at a time per run, so a range lost, repeated or out of order costs
 * nothing; a remote `run.ended` is told after the reads before it, and `feed.resync` re-reads
 * every observed run.
 */
import type { Logger } from 'pino';
import { isFinal, type BackoffTimings } from '../core/index.js';
import { coerceError } from '../errors.js';
import type { JobStore, StoredLine } from '../store/index.js';
import type { EventBus } from './events.js';
import { createWakeLoop, type WakeLoop } from './wake-loop.js';

/** Lines read per query for observers of a run whose worker is on another server. */
const REMOTE_PAGE = 5000;

/** A store that refused lines is tried again after 1 s, then less often while it lasts. */
const WRITE_RETRY: BackoffTimings = { retryMinMs: 1000, retryMaxMs: 10_000 };

/** What an observer of a live run is told. */
export interface ConsoleObserver {
  line(line: StoredLine): void;
  end(): void;
  /** It threw and is dropped: it must end its stream now (broken: its client may resume), or nothing would. */
  abort(err: Error): void;
}

/** One observer of a run, with the last seq it was told. */
interface Watch {
  readonly observer: ConsoleObserver;
  /** The highest seq told to it (or that it already had): it is told only lines after this. */
  delivered: number;
  /**
   * False while its stream replays from the store (it is told local lines, which it holds): lines
   * committed elsewhere are read for it once it says where its replay ended (`caughtUp`).
   */
  started: boolean;
}

/** A subscription to a run's lines. */
export interface ConsoleSubscription {
  /** Lines received here but not yet written (an observer replaying from the store would otherwise miss them). */
  unwritten: StoredLine[];
  /**
   * The observer replayed the store up to `seq`: from now on it is told every later line, read
   * from the store when it was written on another server. Reads once at once (lines committed
   * elsewhere since the replay's read).
   */
  caughtUp(seq: number): void;
  unsubscribe(): void;
}

/** Options of the console hub. */
export interface ConsoleHubOptions {
  /** How long lines may wait before they are written (ms). */
  flushMs: number;
  /** Write at once when this many lines are waiting. */
  maxPending: number;
}

/** Batches console lines into the store and fans them out to observers. */
export class ConsoleHub {
  private pending = new Map<string, StoredLine[]>();
  private pendingCount = 0;
  private lastSeq = new Map<string, number>();
  private observers = new Map<string, Set<Watch>>();
  /** Per observed run, the reads (and ends) for lines written elsewhere, in order: one at a time. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Runs with a read queued that has not begun: another range for them needs no read of its own. */
  private readonly readWanted = new Set<string>();
  /** Writes what waits: kicked by flush(), woken `flushMs` after the first unwritten line. */
  private readonly writer: WakeLoop;

  constructor(
    private readonly store: JobStore,
    private readonly log: Logger,
    events: EventBus,
    private readonly options: ConsoleHubOptions = { flushMs: 50, maxPending: 2000 },
  ) {
    this.writer = createWakeLoop(log, {
      body: () => this.writePending(),
      retry: WRITE_RETRY,
      failureMessage: 'could not write console lines; will retry',
    });
    events.on('run.line', ({ runId, lines }) => this.append(runId, lines));
    events.on('run.ended', ({ runId, remote }) => {
      this.lastSeq.delete(runId);
      // Elsewhere: its last lines may be on their way (a range, or not yet read), so the end
      // follows a last read. Here: every line was told before the end (chained only behind reads
      // still running for the run, after a worker moved here).
      if (remote) {
        if (this.observers.has(runId)) this.chain(runId, () => this.readRemote(runId).then(() => this.ended(runId)));
      } else if (this.chains.has(runId)) {
        this.chain(runId, () => this.ended(runId));
      } else {
        this.ended(runId);
      }
    });
    events.on('console.committed', ({ ranges }) => {
      for (const runId of new Set(ranges.map((range) => range.r))) this.wantRead(runId);
    });
    events.on('feed.resync', () => this.resync());
  }

  /** Takes lines of a run; a line already seen (same seq) is ignored. */
  private append(runId: string, lines: StoredLine[]): void {
    let last = this.lastSeq.get(runId) ?? -1;
    const fresh = lines.filter((line) => (line.seq > last ? ((last = line.seq), true) : false));
    if (fresh.length === 0) return;
    this.lastSeq.set(runId, last);
    const queue = this.pending.get(runId);
    if (queue) queue.push(...fresh);
    else this.pending.set(runId, fresh);
    this.pendingCount += fresh.length;
    // Behind a read of lines written elsewhere still running (the worker moved here): after it.
    if (this.chains.has(runId)) this.chain(runId, () => this.tellLines(runId, fresh, false));
    else this.tellLines(runId, fresh, false);
    if (this.pendingCount >= this.options.maxPending) void this.flush();
    else this.writer.wakeAt(Date.now() + this.options.flushMs);
  }

  /** Writes every waiting line; resolves once they are committed (or, when the store failed, kept for the retry). */
  flush(): Promise<void> {
    return this.writer.kick();
  }

  /**
   * Takes a run's lines received but not yet written, for a store call that writes them with the
   * run's end (one transaction). A write in flight is waited for first, so no line of the run is
   * committed after the end. Lines the caller could not write go back with `restore`.
   */
  async take(runId: string): Promise<StoredLine[]> {
    await this.writer.settled();
    const lines = this.pending.get(runId) ?? [];
    this.pending.delete(runId);
    this.pendingCount -= lines.length;
    return lines;
  }

  /** Puts back lines `take` gave (their store call failed), in front of what came meanwhile. */
  restore(runId: string, lines: StoredLine[]): void {
    if (lines.length === 0) return;
    this.pending.set(runId, [...lines, ...(this.pending.get(runId) ?? [])]);
    this.pendingCount += lines.length;
    this.writer.wakeAt(Date.now() + this.options.flushMs);
  }

  private async writePending(): Promise<void> {
    if (this.pendingCount === 0) return;
    const batches = [...this.pending].map(([runId, lines]) => ({ runId, lines }));
    this.pending = new Map();
    this.pendingCount = 0;
    try {
      await this.store.appendConsole(batches);
    } catch (raw) {
      // Put back in front of what came meanwhile; the loop logs and retries.
      for (const { runId, lines } of batches) {
        this.pending.set(runId, [...lines, ...(this.pending.get(runId) ?? [])]);
        this.pendingCount += lines.length;
      }
      throw raw;
    }
  }

  /**
   * Starts telling `observer` about new lines of a run: at once those received here, and (once it
   * has `caughtUp`, or from `afterSeq` when given) those written by another server, read from the store.
   */
  subscribe(runId: string, observer: ConsoleObserver, afterSeq?: number): ConsoleSubscription {
    let set = this.observers.get(runId);
    if (!set) this.observers.set(runId, (set = new Set()));
    const watch: Watch = { observer, delivered: afterSeq ?? -1, started: false };
    set.add(watch);
    const caughtUp = (seq: number) => {
      watch.delivered = Math.max(watch.delivered, seq);
      watch.started = true;
      // A run whose lines come here was told in full already; another's may have lines committed
      // elsewhere after the observer's replay read the store.
      if (!this.lastSeq.has(runId)) this.wantRead(runId);
    };
    if (afterSeq !== undefined) caughtUp(afterSeq);
    return {
      unwritten: [...(this.pending.get(runId) ?? [])],
      caughtUp,
      unsubscribe: () => {
        set.delete(watch);
        if (set.size === 0 && this.observers.get(runId) === set) this.observers.delete(runId);
      },
    };
  }

  /** Tells each observer of a run the lines after what it has (only started ones for lines read from the store). */
  private tellLines(runId: string, lines: StoredLine[], read: boolean): void {
    for (const watch of this.observers.get(runId) ?? []) {
      if (read && !watch.started) continue;
      const fresh = lines.filter((line) => line.seq > watch.delivered);
      if (fresh.length === 0) continue;
      watch.delivered = fresh[fresh.length - 1]!.seq;
      this.tell(runId, watch, (o) => fresh.forEach((line) => o.line(line)));
    }
  }

  /** Queues work on a run's chain: after what is queued there, one at a time; a failure is logged and the chain goes on. */
  private chain(runId: string, work: () => void | Promise<void>): void {
    const next: Promise<void> = (this.chains.get(runId) ?? Promise.resolve())
      .then(work)
      .catch((raw) => this.log.error({ err: coerceError(raw), runId }, 'could not read console lines for observers; read again at the next lines or resync'))
      .finally(() => {
        if (this.chains.get(runId) === next) this.chains.delete(runId);
      });
    this.chains.set(runId, next);
  }

  /** Lines of an observed run were committed elsewhere: a read is queued, unless one is queued and not begun. */
  private wantRead(runId: string): void {
    if (!this.observers.has(runId) || this.readWanted.has(runId)) return;
    this.readWanted.add(runId);
    this.chain(runId, () => {
      this.readWanted.delete(runId);
      return this.readRemote(runId);
    });
  }

  /** Reads from the store the lines of a run after what its started observers have, and tells them, until none is left. */
  private async readRemote(runId: string): Promise<void> {
    for (;;) {
      const watches = [...(this.observers.get(runId) ?? [])].filter((watch) => watch.started);
      if (watches.length === 0) return;
      const from = Math.min(...watches.map((watch) => watch.delivered));
      const lines = await this.store.readConsole(runId, from, REMOTE_PAGE);
      this.tellLines(runId, lines, true);
      if (lines.length < REMOTE_PAGE) return;
    }
  }

  /**
   * The feed may have missed ranges or ends: every observed run is read again, and the observers
   * of a run that is final by now are told the end.
   */
  private resync(): void {
    for (const runId of this.observers.keys()) {
      this.chain(runId, async () => {
        await this.readRemote(runId);
        if (this.observers.has(runId) && isFinal((await this.store.findRun(runId)).status)) this.ended(runId);
      });
    }
  }

  /** The run has ended and its lines are written: tell its observers and forget it. */
  private ended(runId: string): void {
    const set = this.observers.get(runId);
    this.observers.delete(runId);
    for (const watch of set ?? []) this.tell(runId, watch, (o) => o.end());
  }

  /**
   * Tells one observer something. One that throws (a bug in a stream, a socket that broke in a way
   * it did not expect) is logged once, dropped and aborted (so its stream ends, not left open): it
   * must not hold up the other observers, nor the store write the batch it was told about
   * schedules after.
   */
  private tell(runId: string, watch: Watch, what: (observer: ConsoleObserver) => void): void {
    const { observer } = watch;
    try {
      what(observer);
    } catch (raw) {
      const set = this.observers.get(runId);
      set?.delete(watch);
      if (set?.size === 0) this.observers.delete(runId);
      const err = coerceError(raw);
      this.log.error({ err, runId }, 'a console observer failed; it is dropped');
      try {
        observer.abort(err);
      } catch (rawAbort) {
        this.log.error({ err: coerceError(rawAbort), runId }, 'a dropped console observer failed to close');
      }
    }
  }

  /** Resolves once the reads queued for observers (lines written elsewhere) are done. @internal For tests. */
  async settled(): Promise<void> {
    while (this.chains.size > 0) await Promise.all(this.chains.values());
  }

  /** Flushes and stops the timer. */
  async close(): Promise<void> {
    await this.flush();
    await this.writer.stop();
    await this.settled();
  }
}
