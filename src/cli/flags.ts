/** Flag parsing shared by the daemons' commands (kept free of commander, which the worker's entry does not load). */
import { durationRangeProblem, MAX_TIMER_MS, parseDuration } from '../core/duration.js';
import { UsageError } from '../errors.js';

/**
 * The signals that stop a daemon cleanly. SIGHUP is one of them (it is not a reload: Kiln reads
 * its configuration only at start): a closed terminal or an `ssh` session that ends sends it, and
 * Node's default for it is to die at once, without the shutdown that keeps runs and results.
 */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Parses a duration flag or throws a usage error naming it. */
export function durationFlag(flag: string, text: string, allowZero = false, max = MAX_TIMER_MS): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms < 0 || (!allowZero && ms === 0)) throw new UsageError(`bad ${flag} '${text}': use a duration like 500ms, 10s, 5m`);
  const problem = durationRangeProblem(ms, max);
  if (problem) throw new UsageError(`bad ${flag} '${text}': ${problem}${max === MAX_TIMER_MS ? ' (longer timers fire at once)' : ''}`);
  return ms;
}
