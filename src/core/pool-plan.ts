/** A latent pool's arithmetic: how many instances to start, which idle ones to stop, how long to rest after failures. */
import { backoffMs, type BackoffTimings } from './backoff.js';

/** What a shared pool (one instance serves many runs) counts in one look. */
export interface SharedPoolCounts {
  /** Runs waiting for this pool's platform and labels, not provided for by an earlier pool. */
  waiting: number;
  /** Free slots of connected workers that could take them. */
  free: number;
  /** Instances starting (each will take a run). */
  starting: number;
  idle: number;
  /** Instances not stopping. */
  live: number;
  max: number;
  minIdle: number;
}

/** Instances to start: enough for the runs no worker takes, or to keep `minIdle` idle, never past `max`. */
export function sharedPoolStarts(c: SharedPoolCounts): number {
  return Math.max(0, Math.min(Math.max(c.waiting - c.free - c.starting, c.minIdle - c.idle - c.starting), c.max - c.live));
}

/** Instances to start for a per-run pool: one per run no instance or free worker provides for, never past `max`. */
export function perRunPoolStarts(c: { unprovided: number; free: number; live: number; max: number }): number {
  return Math.max(0, Math.min(c.unprovided - c.free, c.max - c.live));
}

/** An instance as the idle rule sees it. */
export interface IdleCandidate {
  state: 'starting' | 'idle' | 'busy' | 'stopping';
  idleSince: number;
}

/**
 * Indexes of the instances to stop for idleness: only while nothing waits, only idle ones past the
 * idle timeout (negative: never), in order, keeping `minIdle` idle.
 */
export function idleStops(instances: readonly IdleCandidate[], c: { waiting: number; minIdle: number; idleTimeoutMs: number; now: number }): number[] {
  if (c.waiting > 0 || c.idleTimeoutMs < 0) return [];
  let surplus = instances.filter((i) => i.state === 'idle').length - c.minIdle;
  const stops: number[] = [];
  instances.forEach((instance, index) => {
    if (surplus > 0 && instance.state === 'idle' && c.now - instance.idleSince >= c.idleTimeoutMs) {
      surplus -= 1;
      stops.push(index);
    }
  });
  return stops;
}

/** A quarantine rests the pool 10 s, doubling with each further one up to an hour. */
export const QUARANTINE: BackoffTimings = { retryMinMs: 10_000, retryMaxMs: 3_600_000 };

/**
 * How long the pool rests after a failed start, if it does: from the second failure in a row, once
 * per batch (a batch failing together while it already rests adds no rest).
 */
export function quarantineAfter(failures: number, quarantines: number, now: number, quarantinedUntil: number): number | undefined {
  if (failures < 2 || now < quarantinedUntil) return undefined;
  return backoffMs(quarantines + 1, QUARANTINE);
}
