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
import { formatDuration, MAX_DURATION_MS } from './duration.js';

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

/** The longest `every` interval: Kiln's longest duration (about ten years). */
export const MAX_EVERY_MS = MAX_DURATION_MS;

/**
 * Scheduled times Kiln takes and keeps: 1970-01-01 to the end of year 9999 (UTC). Every time in
 * this range prints as a four-digit-year RFC 3339 time; a time past it (an interval added to a
 * far time) is no next time at all rather than a value that breaks listings.
 */
export const MIN_TIME_MS = 0;
export const MAX_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/** True when `ms` is a time in Kiln's range (see MAX_TIME_MS). */
export function isTimeInRange(ms: number): boolean {
  return Number.isFinite(ms) && ms >= MIN_TIME_MS && ms <= MAX_TIME_MS;
}

/** `at` when it is in range, else undefined (the schedule has no next time). */
const inRange = (at: number | undefined): number | undefined => (at !== undefined && isTimeInRange(at) ? at : undefined);

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
  if (schedule.kind === 'every' && schedule.everyMs > MAX_EVERY_MS) {
    throw new ScheduleError(`--every must be at most ${formatDuration(MAX_EVERY_MS)} (about 10 years)`);
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
  return inRange(stepAfter(schedule, after));
}

function stepAfter(schedule: Schedule, after: number): number | undefined {
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
  if (schedule.kind === 'cron') return inRange(cronAfter(schedule, catchUp ? due : Math.max(due, now)));
  const step = stepOf(schedule);
  if (step === undefined) return undefined;
  if (catchUp) return inRange(due + step);
  const missed = Math.max(0, Math.floor((now - due) / step));
  return inRange(due + (missed + 1) * step);
}

/** A resumed job's next time: a time missed while it was paused does not run; its grid continues after `now`. */
export function resumedNextAt(schedule: Schedule, nextAt: number | null, now: number): number | null {
  return nextAt !== null && nextAt <= now ? nextDue(schedule, nextAt, now) ?? null : nextAt;
}

/** The interval of a period or `every` schedule (undefined for never, cron, or a bad stored value). */
function stepOf(schedule: Schedule): number | undefined {
  const step = schedule.kind === 'every' ? schedule.everyMs : schedule.kind === 'period' ? periodMs(schedule.period) : undefined;
  return step !== undefined && Number.isFinite(step) && step > 0 ? step : undefined;
}

/**
 * Most missed slots one scheduler pass replays for a `--catch-up` job; later ones are skipped.
 * Small because replayed slots cost without adding runs (a job is queued at most once, so they
 * collapse into one run) and a cron slot is a search: about 2 ms each with a time zone, measured.
 */
export const CATCH_UP_LIMIT = 10;

/** What a scheduler pass does for a job due at `due`: see planFiring. */
export interface FiringPlan {
  /** The slots fired now, oldest first: `due` alone, or up to CATCH_UP_LIMIT missed slots. */
  slots: number[];
  /** Missed slots after those, up to now, that are not replayed. */
  skipped: number;
  /** False when `skipped` is a lower bound (cron slots are not counted past the limit: each costs a search). */
  skippedExact: boolean;
  /** The job's next time after this pass, always after `now` for a catch-up job (undefined: none). */
  next: number | undefined;
}

/**
 * The firing decision for a job due at `due`, seen at `now`. Without `catchUp` the job fires once
 * and continues on its grid after `now`. With it, it replays its missed slots, but at most `limit`
 * of them in this one pass: the rest (e.g. ten years of minutes after a reschedule into the past)
 * are counted as skipped and the job continues after `now`. Replaying slot by slot, one pass each,
 * took one transaction per slot and kept the server busy for hours.
 */
export function planFiring(schedule: Schedule, due: number, now: number, catchUp: boolean, limit = CATCH_UP_LIMIT): FiringPlan {
  if (!catchUp) return { slots: [due], skipped: 0, skippedExact: true, next: nextDue(schedule, due, now) };
  const step = stepOf(schedule);
  if (schedule.kind !== 'cron') {
    if (step === undefined) return { slots: [due], skipped: 0, skippedExact: true, next: undefined };
    const missed = due > now ? 1 : Math.floor((now - due) / step) + 1;
    const take = Math.min(missed, Math.max(1, limit));
    const slots = Array.from({ length: take }, (_, i) => due + i * step);
    return { slots, skipped: missed - take, skippedExact: true, next: inRange(due + missed * step) };
  }
  const slots = [due];
  const cron = new Cron(schedule.expr, { timezone: schedule.tz, paused: true });
  const after = (ms: number) => {
    const found = cron.nextRun(new Date(ms))?.getTime();
    return found !== undefined && found > ms ? found : undefined;
  };
  let at = after(due);
  while (at !== undefined && at <= now && slots.length < limit) {
    slots.push(at);
    at = after(at);
  }
  if (at === undefined || at > now) return { slots, skipped: 0, skippedExact: true, next: inRange(at) };
  // More slots missed than replayed: jump to the first after now; those between are not counted.
  return { slots, skipped: 1, skippedExact: false, next: inRange(cronAfter(schedule, now)) };
}

/**
 * What a catch-up's firing records as missed: the replayed slots after the first (a job waits in a
 * queue at most once, so they find it queued) and the slots not replayed; undefined when none.
 */
export function missedSlots(plan: FiringPlan, limit = CATCH_UP_LIMIT): { count: number; reason: string } | undefined {
  const count = plan.slots.length - 1 + plan.skipped;
  if (count === 0) return undefined;
  return {
    count,
    reason: `catch-up: ${plan.slots.length} missed slots replayed at once (a job is queued at most once)`
      + (plan.skipped > 0 ? `, ${plan.skippedExact ? '' : 'more than '}${plan.skipped} later missed slots not replayed (at most ${limit} per pass)` : ''),
  };
}

/** The next `count` times of a schedule starting with `first` (a preview for people). */
export function upcoming(schedule: Schedule, first: number | null, count: number): number[] {
  const times: number[] = [];
  for (let at = first !== null && isTimeInRange(first) ? first : undefined; at !== undefined && times.length < count; at = nextDue(schedule, at, at)) times.push(at);
  return times;
}

/** An ISO 8601 time with the zone's offset (`2026-11-23T03:00:00+01:00`); UTC gives `Z`. */
export function isoInZone(ms: number, tz = 'UTC'): string {
  if (!isTimeInRange(ms)) throw new RangeError(`time ${ms} is outside 1970..9999`);
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
