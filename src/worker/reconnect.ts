/** How long a worker waits before connecting to its server again. */
import { backoffMs, type BackoffTimings } from '../core/backoff.js';

/**
 * After the server answered and closed or refused the connection: it is up, and a worker that comes
 * straight back must not hammer it (only a welcome resets the count).
 */
export const RECONNECT_AFTER_ANSWER: BackoffTimings = { retryMinMs: 250, retryMaxMs: 10_000, jitter: 0.2 };

/**
 * While nothing listens at the server's address (ECONNREFUSED), or after the server closed the
 * connection saying it shuts down: it is down or restarting, and an attempt costs it nothing. Short and capped low, so a restarted server has its workers back
 * within half a second of listening instead of up to the long backoff's 10 s.
 */
export const RECONNECT_WHILE_DOWN: BackoffTimings = { retryMinMs: 100, retryMaxMs: 500, jitter: 0.2 };

/**
 * The wait after `failures` attempts in a row have failed, the last because the server is down
 * (`serverDown`: nobody listened, or it said it shuts down) or not; ±20 % jitter spreads a fleet's workers.
 */
export function reconnectDelayMs(failures: number, serverDown: boolean, random: () => number = Math.random): number {
  return backoffMs(failures, serverDown ? RECONNECT_WHILE_DOWN : RECONNECT_AFTER_ANSWER, { random });
}
