/**
 * When a job runs: a robur period (hourly, daily, weekly, never), a fixed interval (`every`), or a
 * cron expression in a time zone (parsed by croner). The next time always follows the schedule's
 * own grid, so processing delays never make it drift.
 *
 * Daylight saving (cron schedules are wall-clock times in their zone): a time that falls in the
 * hour skipped in spring runs once, at the same wall-clock offset after the shift (02:30 becomes
 * 03:30); a time in the hour repeated in autumn runs once, not twice.
 */
import { Cron } from 'croner';
import { formatDuration } from './duration.js';

/** The periods robur's builder knows. */
export const PERIODS = ['hourly', 'daily', 'weekly', 'never'] as const;
export type Period = (typeof PERIODS)[number];

/** A job's schedule. */
export type Schedule =
  | { kind: 'period'; period: Period }
  | { kind: 'every'; everyMs: number }
  | { kind: 'cron'; expr: string; tz: string };

const PERIOD_MS: Record<Exclude<Period, 'never'>, number> = {
  hourly: 3_600_000,
  daily: 86_400_000,
  weekly: 604_800_000,
};

/** The shortest `every` interval. */
export const MIN_EVERY_MS = 1000;

/** True when the text names a period. */
export function isPeriod(text: string): text is Period {
  return (PERIODS as readonly string[]).includes(text);
}

/** Length of one period in ms, or undefined for `never`. */
export function periodMs(period: Period): number | undefined {
  return period === 'never' ? undefined : PERIOD_MS[period];
}

/** Thrown for a schedule that cannot be used, with a message naming the problem. */
export class ScheduleError extends TypeError {}

/** True when `zone` is an IANA time zone this runtime knows. */
export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Checks a schedule, throwing ScheduleError with a one-line reason. */
export function validateSchedule(schedule: Schedule): void {
  if (schedule.kind === 'every' && (!Number.isInteger(schedule.everyMs) || schedule.everyMs < MIN_EVERY_MS)) {
    throw new ScheduleError(`--every must be at least ${formatDuration(MIN_EVERY_MS)}`);
  }
  if (schedule.kind === 'cron') {
    if (!isTimeZone(schedule.tz)) throw new ScheduleError(`unknown time zone '${schedule.tz}' (use an IANA name like Europe/Berlin)`);
    const fields = schedule.expr.trim().split(/\s+/).length;
    if (fields !== 5 && fields !== 6) throw new ScheduleError(`cron expression '${schedule.expr}' has ${fields} fields; use 5 (or 6 with seconds)`);
    try {
      new Cron(schedule.expr, { timezone: schedule.tz, paused: true });
    } catch (raw) {
      throw new ScheduleError(`bad cron expression '${schedule.expr}': ${(raw as Error).message}`);
    }
  }
}

/** How a schedule reads in listings: `daily`, `every 15m`, `cron 0 3 * * * Europe/Berlin`. */
export function describeSchedule(schedule: Schedule): string {
  switch (schedule.kind) {
    case 'period':
      return schedule.period;
    case 'every':
      return `every ${formatDuration(schedule.everyMs)}`;
    case 'cron':
      return `cron ${schedule.expr} ${schedule.tz}`;
  }
}

/** The first time of the schedule strictly after `after`, or undefined for `never`. */
export function firstAfter(schedule: Schedule, after: number): number | undefined {
  switch (schedule.kind) {
    case 'period': {
      const step = periodMs(schedule.period);
      return step === undefined ? undefined : after + step;
    }
    case 'every':
      return after + schedule.everyMs;
    case 'cron':
      return cronAfter(schedule, after);
  }
}

function cronAfter(schedule: { expr: string; tz: string }, after: number): number | undefined {
  const next = new Cron(schedule.expr, { timezone: schedule.tz, paused: true }).nextRun(new Date(after));
  // A time at or before `after` would make the scheduler fire forever; treat it as the end.
  return next && next.getTime() > after ? next.getTime() : undefined;
}

/**
 * The job's next due time after it fired for `due` at `now`. Interval schedules step along their
 * grid `due + k * step`; cron schedules take their next time. Without `catchUp`, the result is
 * after `now`, so a job that missed several slots during downtime runs once, not once per slot;
 * with it, the slot right after `due` (each missed slot then runs, one after the other).
 */
export function nextDue(schedule: Schedule, due: number, now: number, catchUp = false): number | undefined {
  if (schedule.kind === 'cron') return cronAfter(schedule, catchUp ? due : Math.max(due, now));
  const step = schedule.kind === 'every' ? schedule.everyMs : periodMs(schedule.period);
  if (step === undefined) return undefined;
  if (catchUp) return due + step;
  const missed = Math.max(0, Math.floor((now - due) / step));
  return due + (missed + 1) * step;
}

/** The next `count` times of a schedule starting with `first` (a preview for people). */
export function upcoming(schedule: Schedule, first: number | null, count: number): number[] {
  const times: number[] = [];
  for (let at = first ?? undefined; at !== undefined && times.length < count; at = nextDue(schedule, at, at)) times.push(at);
  return times;
}

/** An ISO 8601 time with the zone's offset (`2026-11-23T03:00:00+01:00`); UTC gives `Z`. */
export function isoInZone(ms: number, tz = 'UTC'): string {
  if (tz === 'UTC') return new Date(ms).toISOString().replace('.000Z', 'Z');
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-CA', {
      timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'longOffset',
    }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]),
  );
  const offset = parts.timeZoneName === 'GMT' ? '+00:00' : String(parts.timeZoneName).replace('GMT', '');
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}${offset}`;
}

/** The zone a schedule's times are shown in. */
export function scheduleZone(schedule: Schedule): string {
  return schedule.kind === 'cron' ? schedule.tz : 'UTC';
}
