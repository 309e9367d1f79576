/** Exponential backoff: the one policy for anything retried after a failure (the outbox, dispatch passes). */

/** Backoff bounds (ms). */
export interface BackoffTimings {
  /** Wait after the first failure; doubles with each further one. */
  retryMinMs: number;
  /** Longest wait between attempts. */
  retryMaxMs: number;
}

/** The wait before attempt `attempts + 1`, when `attempts` have failed (a longer `retryAfterMs`, within the bound, wins). */
export function backoffMs(attempts: number, timings: BackoffTimings, retryAfterMs?: number): number {
  const doubled = timings.retryMinMs * 2 ** Math.min(attempts - 1, 30);
  return Math.max(Math.min(doubled, timings.retryMaxMs), Math.min(retryAfterMs ?? 0, timings.retryMaxMs));
}
