/** Schedules beyond periods: intervals, cron in zones with daylight saving, previews and offsets. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeSchedule, firstAfter, isoInZone, nextDue, upcoming, validateSchedule, type Schedule } from '../../src/core/index.js';

const cron = (expr: string, tz: string): Schedule => ({ kind: 'cron', expr, tz });

/** Walks a schedule from `from` the way the scheduler does (next after each due time). */
function walk(schedule: Schedule, from: string, count: number): string[] {
  const tz = schedule.kind === 'cron' ? schedule.tz : 'UTC';
  return upcoming(schedule, firstAfter(schedule, Date.parse(from)) ?? null, count).map((at) => isoInZone(at, tz));
}

test('daily 02:30 across each zone\'s DST changes: the skipped hour runs once at 03:30, the repeated hour once', () => {
  const cases: [string, string, string[]][] = [
    // Spring forward, 2026-03-29 02:00 -> 03:00.
    ['Europe/Berlin', '2026-03-28T00:00:00Z', ['2026-03-28T02:30:00+01:00', '2026-03-29T03:30:00+02:00', '2026-03-30T02:30:00+02:00']],
    // Fall back, 2026-10-25 03:00 -> 02:00: 02:30 happens twice, runs once.
    ['Europe/Berlin', '2026-10-24T00:00:00Z', ['2026-10-24T02:30:00+02:00', '2026-10-25T02:30:00+01:00', '2026-10-26T02:30:00+01:00']],
    // Spring forward, 2026-03-08 02:00 -> 03:00.
    ['America/New_York', '2026-03-07T00:00:00Z', ['2026-03-07T02:30:00-05:00', '2026-03-08T03:30:00-04:00', '2026-03-09T02:30:00-04:00']],
    ['America/New_York', '2026-10-31T12:00:00Z', ['2026-11-01T02:30:00-05:00', '2026-11-02T02:30:00-05:00', '2026-11-03T02:30:00-05:00']],
    // No DST any more (since 2019): plain days at -03:00.
    ['America/Sao_Paulo', '2026-11-01T00:00:00Z', ['2026-11-01T02:30:00-03:00', '2026-11-02T02:30:00-03:00', '2026-11-03T02:30:00-03:00']],
    // Southern hemisphere: back in April, forward in October.
    ['Australia/Melbourne', '2026-04-03T00:00:00Z', ['2026-04-04T02:30:00+11:00', '2026-04-05T02:30:00+10:00', '2026-04-06T02:30:00+10:00']],
    ['Australia/Melbourne', '2026-10-03T00:00:00Z', ['2026-10-04T03:30:00+11:00', '2026-10-05T02:30:00+11:00', '2026-10-06T02:30:00+11:00']],
  ];
  for (const [tz, from, expected] of cases) assert.deepEqual(walk(cron('30 2 * * *', tz), from, 3), expected, `${tz} from ${from}`);
});

test('a half-hourly cron over the repeated hour never runs a wall-clock time twice and never goes back', () => {
  const falls: [string, string][] = [
    ['Europe/Berlin', '2026-10-20T00:00:00Z'], ['America/New_York', '2026-10-28T00:00:00Z'],
    ['America/Sao_Paulo', '2026-11-01T00:00:00Z'], ['Australia/Melbourne', '2026-04-01T00:00:00Z'],
  ];
  for (const [tz, from] of falls) {
    // Ten days of half hours around the autumn change.
    const times = upcoming(cron('*/30 * * * *', tz), Date.parse(from), 48 * 10);
    for (let i = 1; i < times.length; i += 1) assert.ok(times[i]! > times[i - 1]!, `${tz}: strictly increasing at ${i}`);
    const wall = times.map((at) => isoInZone(at, tz).slice(0, 16));
    assert.equal(new Set(wall).size, wall.length, `${tz}: each wall-clock time once`);
  }
});

test('the scheduler never stalls: after a late wake-up the next time is after now', () => {
  const schedules: Schedule[] = [cron('0 3 * * *', 'Europe/Berlin'), { kind: 'every', everyMs: 90_000 }, { kind: 'period', period: 'weekly' }];
  for (const schedule of schedules) {
    const due = Date.parse('2026-03-29T00:30:00Z');
    const now = due + 10 * 86_400_000 + 123;
    const next = nextDue(schedule, due, now)!;
    assert.ok(next > now, describeSchedule(schedule));
    assert.ok(nextDue(schedule, due, now, true)! > due, 'catch-up still moves forward');
  }
});

test('--every keeps its grid and cron previews follow the expression', () => {
  assert.deepEqual(walk({ kind: 'every', everyMs: 15 * 60_000 }, '2026-01-01T00:00:00Z', 3), ['2026-01-01T00:15:00Z', '2026-01-01T00:30:00Z', '2026-01-01T00:45:00Z']);
  assert.equal(nextDue({ kind: 'every', everyMs: 60_000 }, 0, 150_500), 180_000, 'late by 2.5 slots: the next slot on the grid');
  assert.deepEqual(walk(cron('0 9 * * 1-5', 'UTC'), '2026-11-20T10:00:00Z', 3), ['2026-11-23T09:00:00Z', '2026-11-24T09:00:00Z', '2026-11-25T09:00:00Z']);
  assert.deepEqual(walk(cron('*/20 * * * * *', 'UTC'), '2026-01-01T00:00:00Z', 2), ['2026-01-01T00:00:20Z', '2026-01-01T00:00:40Z'], '6 fields: seconds');
  assert.deepEqual(walk({ kind: 'period', period: 'never' }, '2026-01-01T00:00:00Z', 3), []);
});

test('bad schedules are refused with a reason naming the problem', () => {
  const bad: [Schedule, RegExp][] = [
    [cron('61 * * * *', 'UTC'), /bad cron expression '61 \* \* \* \*'/],
    [cron('* * *', 'UTC'), /has 3 fields/],
    [cron('0 3 * * *', 'Mars/Olympus'), /unknown time zone 'Mars\/Olympus'/],
    [{ kind: 'every', everyMs: 0 }, /--every must be at least 1s/],
    [{ kind: 'every', everyMs: 999 }, /--every must be at least 1s/],
  ];
  for (const [schedule, message] of bad) assert.throws(() => validateSchedule(schedule), message);
  assert.doesNotThrow(() => validateSchedule(cron('0 3 * * *', 'Australia/Melbourne')));
});

test('isoInZone writes the zone offset, Z for UTC', () => {
  const at = Date.parse('2026-07-01T12:00:00Z');
  assert.equal(isoInZone(at), '2026-07-01T12:00:00Z');
  assert.equal(isoInZone(at, 'Europe/Berlin'), '2026-07-01T14:00:00+02:00');
  assert.equal(isoInZone(at, 'America/Sao_Paulo'), '2026-07-01T09:00:00-03:00');
  assert.equal(isoInZone(at, 'Asia/Kolkata'), '2026-07-01T17:30:00+05:30');
  assert.equal(Date.parse(isoInZone(at, 'Australia/Melbourne')), at, 'round-trips');
});
