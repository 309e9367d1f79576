/**
 * Queues runs of scheduled jobs when they are due. It sleeps until the earliest next time (a
 * timer, not a periodic tick) and is woken early whenever a job changes.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { nextSlot } from '../core/index.js';
import { coerceError } from '../errors.js';
import type { JobStore } from '../store/index.js';

/** Longest single sleep: re-reading the store this often also corrects for clock jumps. */
const MAX_SLEEP_MS = 60 * 60 * 1000;

/** Fires due schedules. */
export class Scheduler {
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly store: JobStore,
    private readonly log: Logger,
    private readonly now: () => number,
    /** Called after runs were queued. */
    private readonly queued: () => void,
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
      let fired = 0;
      const now = this.now();
      for (const job of await this.store.dueJobs(now)) {
        if (job.nextAt === null) continue;
        const next = nextSlot(job.period, job.nextAt, now) ?? null;
        const run = { id: randomUUID(), job: job.name, platform: job.platform, labels: job.labels, queuedAt: now };
        if (await this.store.fireSchedule(job.name, job.nextAt, next, run)) {
          fired += 1;
          this.log.info({ job: job.name, next: next && new Date(next).toISOString() }, 'schedule fired');
        }
      }
      if (fired > 0) this.queued();
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
