/**
 * Wakes the server when jobs are due. It sleeps until the earliest next time (a timer, not a
 * periodic tick) and is woken early whenever a job changes; what to do with due jobs is the
 * service's `fire`.
 */
import type { Logger } from 'pino';
import { coerceError } from '../errors.js';
import type { JobStore } from '../store/index.js';

/** Longest single sleep: re-reading the store this often also corrects for clock jumps. */
const MAX_SLEEP_MS = 60 * 60 * 1000;

/** Sleeps until the next due time, then fires. */
export class Scheduler {
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly store: JobStore,
    private readonly log: Logger,
    private readonly now: () => number,
    /** Fires every job due at `now`. */
    private readonly fire: (now: number) => Promise<void>,
  ) {}

  /** Fires what is due now and sleeps until the next due time. */
  wake(): Promise<void> {
    this.chain = this.chain.then(() => this.tick());
    return this.chain;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    clearTimeout(this.timer);
    try {
      await this.fire(this.now());
      const earliest = await this.store.earliestNextAt();
      if (earliest !== undefined && !this.stopped) {
        const delay = Math.min(Math.max(earliest - this.now(), 0), MAX_SLEEP_MS);
        this.timer = setTimeout(() => void this.wake(), delay);
      }
    } catch (raw) {
      this.log.error({ err: coerceError(raw) }, 'scheduler pass failed; retrying in 5s');
      if (!this.stopped) this.timer = setTimeout(() => void this.wake(), 5000);
    }
  }
}
