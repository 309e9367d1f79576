/**
 * When a job runs. For now a robur period (hourly, daily, weekly, never); the next time always
 * follows the job's own grid, so processing delays never make it drift.
 */

/** The periods robur's builder knows. */
export const PERIODS = ['hourly', 'daily', 'weekly', 'never'] as const;
export type Period = (typeof PERIODS)[number];

const PERIOD_MS: Record<Exclude<Period, 'never'>, number> = {
  hourly: 3_600_000,
  daily: 86_400_000,
  weekly: 604_800_000,
};

/** True when the text names a period. */
export function isPeriod(text: string): text is Period {
  return (PERIODS as readonly string[]).includes(text);
}

/** Length of one period in ms, or undefined for `never`. */
export function periodMs(period: Period): number | undefined {
  return period === 'never' ? undefined : PERIOD_MS[period];
}

/**
 * The first slot on the grid `due + k * period` (k >= 1) that lies after `now`. A job that missed
 * several slots during downtime therefore runs once, not once per missed slot.
 */
export function nextSlot(period: Period, due: number, now: number): number | undefined {
  const step = periodMs(period);
  if (step === undefined) return undefined;
  const missed = Math.max(0, Math.floor((now - due) / step));
  return due + (missed + 1) * step;
}
