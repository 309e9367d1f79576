/** Exponential backoff: the one policy for anything tried again after a failure (loops, the outbox, reconnects, provider calls). */

/** Backoff bounds (ms). */
export interface BackoffTimings {
  /** Wait after the first failure; doubles with each further one. */
  retryMinMs: number;
  /** Longest wait between attempts. */
  retryMaxMs: number;
  /** Spread each wait by up to this fraction either way (0.2: ±20 %), so many retrying parties do not move in step. */
  jitter?: number;
}

/** What one wait also depends on. */
export interface BackoffOptions {
  /** A wait the other side asked for (Retry-After): a longer one, within the bound, wins. */
  retryAfterMs?: number;
  /** Where the jitter comes from (a value in [0, 1)); injected so tests are exact. */
  random?: () => number;
}

/** The wait before attempt `attempts + 1`, when `attempts` (≥ 1) have failed. */
export function backoffMs(attempts: number, timings: BackoffTimings, options: BackoffOptions = {}): number {
  const doubled = timings.retryMinMs * 2 ** Math.min(Math.max(attempts, 1) - 1, 30);
  const base = Math.max(Math.min(doubled, timings.retryMaxMs), Math.min(options.retryAfterMs ?? 0, timings.retryMaxMs));
  const jitter = timings.jitter ?? 0;
  return jitter === 0 ? base : base * (1 - jitter + (options.random ?? Math.random)() * 2 * jitter);
}
