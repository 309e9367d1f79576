/** Durations on the command line: `500ms`, `90s`, `15m`, `6h`, `2d`, or sums like `1h30m`. */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/y;

const DAY_MS = 86_400_000;

/**
 * Longest duration Kiln takes anywhere (an `--every`, a retention time): 3660 days, about ten
 * years. A time this far from now is still far inside what a Date can hold (year 275760) and
 * what listings print, so no stored duration can make a later time unprintable.
 */
export const MAX_DURATION_MS = 3660 * DAY_MS;

/**
 * Longest duration that becomes one timer (timeouts, graces, intervals): 24 days. Node's
 * setTimeout takes at most 2^31-1 ms (24.8 days) and fires at once, with only a warning, when
 * given more: a 30-day grace would end at once.
 */
export const MAX_TIMER_MS = 24 * DAY_MS;

/** Why `ms` is no good as a duration between `min` and `max` (a short phrase), or undefined when it is. */
export function durationRangeProblem(ms: number, max = MAX_DURATION_MS, min = 0): string | undefined {
  if (!Number.isFinite(ms) || ms > max) return `at most ${formatDuration(max)}`;
  if (ms < min) return `at least ${formatDuration(min)}`;
  return undefined;
}

/** Parses a duration into milliseconds; returns undefined when the text is not one (or no finite number). */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < trimmed.length) {
    const match = PART.exec(trimmed);
    if (!match) return undefined;
    total += Number(match[1]) * (UNIT_MS[match[2]!] ?? 0);
  }
  // A number of digits no double holds is no duration (not Infinity, which JSON sends as null).
  return Number.isSafeInteger(Math.round(total)) ? Math.round(total) : undefined;
}

/** Formats milliseconds the way parseDuration reads them, largest units first (`1h30m`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  const parts: string[] = [];
  let rest = ms;
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNIT_MS[unit]!;
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest > 0) parts.push(`${rest}ms`);
  return parts.join('');
}
