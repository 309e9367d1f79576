/**
 * Wakes the server when jobs are due. It sleeps until the earliest next time (a timer, not a
 * periodic tick) and is woken early whenever a job changes (`job.changed`, here or on another
 * server); what to do with due jobs is the job service's `fireDue`.
 *
 * With several servers it is a singleton: it fires only while this server holds the `scheduler`
 * lease. A handover may let two servers fire the same due time, but fireSchedule is guarded on the
 * next time it read (`expectedNextAt`), so the second firing is `stale` and queues nothing.
 */
import type { Logger } from 'pino';
import type { JobStore } from '../store/index.js';
import { soloLeases, LEASE, type Lease } from './cluster/types.js';
import type { EventBus } from './events.js';
import { createWakeLoop, type WakeLoop } from './wake-loop.js';

/** Longest single sleep: re-reading the store this often also corrects for clock jumps. */
const MAX_SLEEP_MS = 60 * 60 * 1000;

/** What a scheduler works with. */
export interface SchedulerOptions {
  /** Read for the earliest next time. */
  store: JobStore;
  /** `job.changed` (local or remote) and `feed.resync` wake it. */
  events: EventBus;
  /** Fires what is due (the job service). */
  jobs: { fireDue(now: number): Promise<void> };
  now: () => number;
  /** The `scheduler` lease: it fires only while held (default: held for good, as on a server alone on its store). */
  lease?: Lease;
}

/** Sleeps until the next due time, then fires. */
export class Scheduler {
  private readonly loop: WakeLoop;

  constructor(log: Logger, { store, events, jobs, now, lease = soloLeases().want(LEASE.scheduler) }: SchedulerOptions) {
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
      gate: () => lease.held,
    });
    // Gained: fire what came due meanwhile at once; lost: no timer, a pass in flight ends (guarded by the store).
    lease.onChange((held) => (held ? void this.loop.open() : this.loop.close()));
    events.on('job.changed', () => void this.wake());
    events.on('feed.resync', () => void this.wake());
  }

  /** Fires what is due now and sleeps until the next due time; resolves once that pass has ended (at once while the lease is not held). */
  wake(): Promise<void> {
    return this.loop.kick();
  }

  /** Stops; resolves once a pass in flight has ended. */
  stop(): Promise<void> {
    return this.loop.stop();
  }
}
