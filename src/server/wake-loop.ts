/**
 * The one wake loop of the server: a body that runs when it is kicked or when a due time comes,
 * whichever is first, never two at once. Every loop of the server (scheduler, dispatcher, outbox,
 * pools, deadlines, artifact sweeps, console flushes) is one of these, so none hand-rolls its timer,
 * its "kicked while running" flag or its retry.
 */
import type { Logger } from 'pino';
import { backoffMs, type BackoffTimings } from '../core/backoff.js';
import { coerceError } from '../errors.js';

/** setTimeout fires at once for a delay past ~24.8 days: longer sleeps are cut to this and the body runs early. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/**
 * What a body returns when its pass did not do all it should without throwing (it logged the
 * parts that failed itself): the loop tries again with the backoff, as after a throw.
 */
export const RETRY_PASS = Symbol('retry the pass');

/** What a loop runs and how it sleeps. */
export interface WakeLoopOptions {
  /**
   * One pass. Resolves with the time (as `now` gives it) the next pass is due, or undefined: only
   * a kick or a wakeAt brings the next one. A throw is logged and the pass retried with `retry`
   * (as is RETRY_PASS, without the error).
   */
  body: () => Promise<number | undefined | void | typeof RETRY_PASS>;
  /** Waits after passes that failed in a row (a kick meanwhile runs sooner). */
  retry: BackoffTimings;
  /** Logged (at error) when a pass fails, with the error and the wait. */
  failureMessage: string;
  /** The clock due times are read on (default Date.now). */
  now?: () => number;
  /** Longest single sleep: a pass then runs even if nothing is due (re-reading the store corrects for clock jumps). */
  maxSleepMs?: number;
  /** False keeps the process alive while the timer waits (default: it does not). */
  unref?: boolean;
  /** Told after each pass (or run of merged passes) ends, when no kick waits. */
  onIdle?: () => void;
  /**
   * A singleton's loop (several servers: the scheduler, the outbox, ...) runs only while its lease
   * is held: while this says false, kicks and due times are remembered but no timer is armed and no
   * pass starts; `open()` (the lease gained) runs a pass at once. A pass in flight when the gate
   * closes runs to its end: its writes are fenced or guarded by the store.
   */
  gate?: () => boolean;
}

/** A running wake loop. */
export interface WakeLoop {
  /**
   * Asks for a pass now; one asked for while a pass runs is run right after it (many kicks, one
   * pass). Resolves once a pass that began after this call has ended, failed or not; never rejects.
   */
  kick(): Promise<void>;
  /** Makes the next pass run no later than `at` (an earlier due time wins). */
  wakeAt(at: number): void;
  /** The gate opened (a lease gained): runs a pass now. */
  open(): Promise<void>;
  /** The gate closed (a lease lost): clears the timer; what was due stays due for the next open. */
  close(): void;
  /** True while a pass runs. */
  readonly busy: boolean;
  /** Passes failed in a row. */
  readonly failures: number;
  /** Resolves once no pass runs (the one in flight, and those merged after it, have ended). */
  settled(): Promise<void>;
  /** No more passes: the timer is cleared; resolves once the pass in flight has ended. */
  stop(): Promise<void>;
}

/** Creates a loop; nothing runs until the first kick or wakeAt. */
export function createWakeLoop(log: Logger, options: WakeLoopOptions): WakeLoop {
  return new Loop(log, options);
}

class Loop implements WakeLoop {
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  /** When the next pass is due: -Infinity once kicked, Infinity when nothing asked. */
  private dueAt = Infinity;
  private running: Promise<void> | undefined;
  /** Kicks waiting for a pass that begins after them. */
  private waiters: (() => void)[] = [];
  private stopped = false;
  failures = 0;

  constructor(private readonly log: Logger, private readonly options: WakeLoopOptions) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  kick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.closed) {
      // Remembered for open(); nothing runs here, so nobody waits for it.
      this.dueAt = -Infinity;
      return Promise.resolve();
    }
    const ran = new Promise<void>((resolve) => this.waiters.push(resolve));
    this.dueAt = -Infinity;
    this.arm();
    return ran;
  }

  wakeAt(at: number): void {
    if (this.stopped || at >= this.dueAt) return;
    this.dueAt = at;
    this.arm();
  }

  open(): Promise<void> {
    return this.kick();
  }

  close(): void {
    this.clearTimer();
    // Kicks waiting for a pass that will not start here now.
    if (!this.running) for (const resolve of this.waiters.splice(0)) resolve();
  }

  private get closed(): boolean {
    return this.options.gate !== undefined && !this.options.gate();
  }

  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await this.settled();
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  /** Starts the pass if it is due, or sets the timer for it; a running pass calls this when it ends. */
  private arm(): void {
    if (this.running || this.stopped) return;
    if (this.dueAt === Infinity || this.closed) return this.clearTimer();
    const delay = this.dueAt - this.now();
    if (delay <= 0) return this.start();
    if (this.timer && this.timerAt === this.dueAt) return;
    this.clearTimer();
    this.timerAt = this.dueAt;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      if (this.closed) return;
      this.start();
    }, Math.min(delay, this.options.maxSleepMs ?? LONGEST_TIMER_MS, LONGEST_TIMER_MS));
    if (this.options.unref !== false) this.timer.unref?.();
  }

  private clearTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private start(): void {
    this.clearTimer();
    const waiters = this.waiters.splice(0);
    this.dueAt = Infinity;
    this.running = this.pass(waiters);
  }

  private async pass(waiters: (() => void)[]): Promise<void> {
    let next: number | undefined;
    let failure: { err?: Error } | undefined;
    try {
      const got = await this.options.body();
      if (got === RETRY_PASS) failure = {};
      else next = got ?? undefined;
    } catch (raw) {
      failure = { err: coerceError(raw) };
    }
    if (failure) {
      this.failures += 1;
      const wait = backoffMs(this.failures, this.options.retry);
      this.log.error({ ...failure, failures: this.failures, retryInMs: wait }, this.options.failureMessage);
      next = this.now() + wait;
    } else {
      this.failures = 0;
    }
    this.running = undefined;
    for (const resolve of waiters) resolve();
    if (next !== undefined && next < this.dueAt) this.dueAt = next;
    // Kicked meanwhile: the next pass starts in this same tick, so no kick falls between two passes.
    this.arm();
    if (!this.running && !this.stopped) this.options.onIdle?.();
  }
}
