/**
 * Wakes the server when jobs are due. It sleeps until the earliest next time (a timer, not a
 * periodic tick) and is woken early whenever a job changes (`job.changed`); what to do with due
 * jobs is the job service's `fireDue`.
 */
import type { Logger } from 'pino';
import type { JobStore } from '../store/index.js';
import type { EventBus } from './events.js';
import { createWakeLoop, type WakeLoop } from './wake-loop.js';

/** Longest single sleep: re-reading the store this often also corrects for clock jumps. */
const MAX_SLEEP_MS = 60 * 60 * 1000;

/** What a scheduler works with. */
export interface SchedulerOptions {
  /** Read for the earliest next time. */
  store: JobStore;
  /** `job.changed` wakes it. */
  events: EventBus;
  /** Fires what is due (the job service). */
  jobs: { fireDue(now: number): Promise<void> };
  now: () => number;
}

/** Sleeps until the next due time, then fires. */
export class Scheduler {
  private readonly loop: WakeLoop;

  constructor(log: Logger, { store, events, jobs, now }: SchedulerOptions) {
    this.loop = createWakeLoop(log, {
      body: async () => {
        await jobs.fireDue(now());
        return store.earliestNextAt();
      },
      now,
      maxSleepMs: MAX_SLEEP_MS,
      // A failing store is tried again 5 s later at first, then less often while it lasts.
      retry: { retryMinMs: 5000, retryMaxMs: 60_000 },
      failureMessage: 'scheduler pass failed; retrying',
    });
    events.on('job.changed', () => void this.wake());
  }

  /** Fires what is due now and sleeps until the next due time; resolves once that pass has ended. */
  wake(): Promise<void> {
    return this.loop.kick();
  }

  /** Stops; resolves once a pass in flight has ended. */
  stop(): Promise<void> {
    return this.loop.stop();
  }
}
