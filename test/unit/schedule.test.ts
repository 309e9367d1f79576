/** The schedule grid of periods (nextDue), periodMs and isPeriod. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isPeriod, nextDue, periodMs, PERIODS, type Period } from '../../src/core/index.js';

/** The next time of a period schedule that fired for `due` at `now`. */
const nextSlot = (period: Period, due: number, now: number) => nextDue({ kind: 'period', period }, due, now);

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const WEEK = 7 * DAY;
const DUE = Date.UTC(2024, 0, 1, 3, 17, 0);

test('periodMs gives each period its length, and none for never', () => {
  const cases: [Period, number | undefined][] = [['hourly', HOUR], ['daily', DAY], ['weekly', WEEK], ['never', undefined]];
  for (const [period, want] of cases) assert.equal(periodMs(period), want, period);
  assert.deepEqual(cases.map(([p]) => p).sort(), [...PERIODS].sort(), 'every period is covered');
});

test('isPeriod accepts only the known periods', () => {
  for (const text of PERIODS) assert.equal(isPeriod(text), true, text);
  for (const text of ['', 'Daily', 'monthly', 'hourly ', '1h']) assert.equal(isPeriod(text), false, JSON.stringify(text));
});

test('nextSlot stays on the grid of the due time however late the job is processed', () => {
  const cases: { period: Period; now: number; want: number }[] = [
    { period: 'hourly', now: DUE, want: DUE + HOUR },
    { period: 'hourly', now: DUE + 1, want: DUE + HOUR },
    { period: 'hourly', now: DUE + 59 * 60_000, want: DUE + HOUR },
    { period: 'daily', now: DUE + 3 * HOUR + 12_345, want: DUE + DAY },
    { period: 'weekly', now: DUE + 6 * DAY, want: DUE + WEEK },
  ];
  for (const { period, now, want } of cases) {
    assert.equal(nextSlot(period, DUE, now), want, `${period} at due + ${now - DUE}ms`);
  }
});

test('a job that missed several slots runs once, at the first slot after now', () => {
  const cases: { period: Period; now: number; want: number }[] = [
    { period: 'hourly', now: DUE + 5 * HOUR + 1, want: DUE + 6 * HOUR },
    { period: 'hourly', now: DUE + 5 * HOUR, want: DUE + 6 * HOUR },
    { period: 'hourly', now: DUE + 5 * HOUR - 1, want: DUE + 5 * HOUR },
    { period: 'daily', now: DUE + 10 * DAY + HOUR, want: DUE + 11 * DAY },
    { period: 'weekly', now: DUE + 52 * WEEK + 1, want: DUE + 53 * WEEK },
  ];
  for (const { period, now, want } of cases) {
    const next = nextSlot(period, DUE, now)!;
    assert.equal(next, want, `${period} at due + ${now - DUE}ms`);
    assert.ok(next > now, 'the next slot is after now');
    assert.equal((next - DUE) % periodMs(period)!, 0, 'the next slot is on the grid');
  }
});

test('a job processed before its due time is next due one period later', () => {
  assert.equal(nextSlot('daily', DUE, DUE - HOUR), DUE + DAY);
});

test('firing slot after slot walks the grid without drift', () => {
  let due = DUE;
  for (let i = 1; i <= 48; i++) {
    // Each firing is handled a little late; the grid must not move.
    due = nextSlot('hourly', due, due + 1234)!;
    assert.equal(due, DUE + i * HOUR);
  }
});

test('never has no next slot', () => {
  for (const now of [DUE - 1, DUE, DUE + WEEK]) assert.equal(nextSlot('never', DUE, now), undefined);
});
