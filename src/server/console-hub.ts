/**
 * Console lines on their way from workers to the store and to observers. Lines are fanned out
 * to observers at once and written to the store in batches (one transaction per flush interval),
 * never one transaction per line. Fed by events: `run.line` brings lines, `run.ended` ends the
 * run's observers.
 */
import type { Logger } from 'pino';
import type { BackoffTimings } from '../core/index.js';
import { coerceError } from '../errors.js';
import type { JobStore, StoredLine } from '../store/index.js';
import type { EventBus } from './events.js';
import { createWakeLoop, type WakeLoop } from './wake-loop.js';

/** A store that refused lines is tried again after 1 s, then less often while it lasts. */
const WRITE_RETRY: BackoffTimings = { retryMinMs: 1000, retryMaxMs: 10_000 };

/** What an observer of a live run is told. */
export interface ConsoleObserver {
  line(line: StoredLine): void;
  end(): void;
  /** It threw and is dropped: it must end its stream now (broken: its client may resume), or nothing would. */
  abort(err: Error): void;
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
  private observers = new Map<string, Set<ConsoleObserver>>();
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
    events.on('run.ended', ({ runId }) => this.ended(runId));
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
    for (const observer of this.observers.get(runId) ?? []) this.tell(runId, observer, (o) => fresh.forEach((line) => o.line(line)));
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
   * Starts telling `observer` about new lines of a run. Returns the lines received but not yet
   * written (an observer replaying from the store would otherwise miss them) and how to stop.
   */
  subscribe(runId: string, observer: ConsoleObserver): { unwritten: StoredLine[]; unsubscribe: () => void } {
    let set = this.observers.get(runId);
    if (!set) this.observers.set(runId, (set = new Set()));
    set.add(observer);
    return {
      unwritten: [...(this.pending.get(runId) ?? [])],
      unsubscribe: () => {
        set.delete(observer);
        if (set.size === 0 && this.observers.get(runId) === set) this.observers.delete(runId);
      },
    };
  }

  /** The run has ended and its lines are written: tell its observers and forget it. */
  private ended(runId: string): void {
    this.lastSeq.delete(runId);
    const set = this.observers.get(runId);
    this.observers.delete(runId);
    for (const observer of set ?? []) this.tell(runId, observer, (o) => o.end());
  }

  /**
   * Tells one observer something. One that throws (a bug in a stream, a socket that broke in a way
   * it did not expect) is logged once, dropped and aborted (so its stream ends, not left open): it
   * must not hold up the other observers, nor the store write the batch it was told about
   * schedules after.
   */
  private tell(runId: string, observer: ConsoleObserver, what: (observer: ConsoleObserver) => void): void {
    try {
      what(observer);
    } catch (raw) {
      const set = this.observers.get(runId);
      set?.delete(observer);
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

  /** Flushes and stops the timer. */
  async close(): Promise<void> {
    await this.flush();
    await this.writer.stop();
  }
}
