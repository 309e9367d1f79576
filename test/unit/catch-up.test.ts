/** The firing decision (planFiring): a catch-up replays a bounded number of missed slots, never all of them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CATCH_UP_LIMIT, MAX_TIME_MS, missedSlots, planFiring, resumedNextAt, type Schedule } from '../../src/core/index.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T = Date.UTC(2026, 10, 22, 10, 0, 0);
const every = (ms: number): Schedule => ({ kind: 'every', everyMs: ms });

test('planFiring: without catch-up a job fires once and continues after now', () => {
  const plan = planFiring(every(HOUR), T, T + 5.5 * HOUR, false);
  assert.deepEqual(plan, { slots: [T], skipped: 0, skippedExact: true, next: T + 6 * HOUR });
});

test('planFiring: with catch-up, a table of due/now cases gives bounded slots, exact skips and a next time after now', () => {
  const cases: { name: string; schedule: Schedule; due: number; now: number; slots: number; skipped: number; next: number | undefined }[] = [
    { name: 'on time', schedule: every(HOUR), due: T, now: T, slots: 1, skipped: 0, next: T + HOUR },
    { name: 'woken early (not yet due)', schedule: every(HOUR), due: T, now: T - 1, slots: 1, skipped: 0, next: T + HOUR },
    { name: 'three missed hours', schedule: every(HOUR), due: T, now: T + 2.5 * HOUR, slots: 3, skipped: 0, next: T + 3 * HOUR },
    { name: 'five missed hours', schedule: every(HOUR), due: T, now: T + 4.5 * HOUR, slots: 5, skipped: 0, next: T + 5 * HOUR },
    { name: 'exactly the limit', schedule: every(MIN), due: T, now: T + (CATCH_UP_LIMIT - 1) * MIN, slots: CATCH_UP_LIMIT, skipped: 0, next: T + CATCH_UP_LIMIT * MIN },
    { name: 'one past the limit', schedule: every(MIN), due: T, now: T + CATCH_UP_LIMIT * MIN, slots: CATCH_UP_LIMIT, skipped: 1, next: T + (CATCH_UP_LIMIT + 1) * MIN },
    {
      name: 'ten years of minutes', schedule: every(MIN), due: T - 3652 * DAY, now: T,
      slots: CATCH_UP_LIMIT, skipped: 3652 * 24 * 60 + 1 - CATCH_UP_LIMIT, next: T + MIN,
    },
    { name: 'weekly period, a year late', schedule: { kind: 'period', period: 'weekly' }, due: T - 364 * DAY, now: T, slots: CATCH_UP_LIMIT, skipped: 53 - CATCH_UP_LIMIT, next: T + 7 * DAY },
    { name: 'never', schedule: { kind: 'period', period: 'never' }, due: T, now: T + DAY, slots: 1, skipped: 0, next: undefined },
    { name: 'a grid that leaves year 9999', schedule: every(3660 * DAY), due: MAX_TIME_MS - DAY, now: MAX_TIME_MS - DAY, slots: 1, skipped: 0, next: undefined },
  ];
  for (const c of cases) {
    const plan = planFiring(c.schedule, c.due, c.now, true);
    assert.equal(plan.slots.length, c.slots, `${c.name}: slots`);
    assert.equal(plan.skipped, c.skipped, `${c.name}: skipped`);
    assert.equal(plan.skippedExact, true, `${c.name}: exact`);
    assert.equal(plan.next, c.next, `${c.name}: next`);
    assert.equal(plan.slots[0], c.due, `${c.name}: replay starts at the missed slot`);
    assert.ok(plan.slots.every((at, i) => i === 0 || at > plan.slots[i - 1]!), `${c.name}: in order`);
  }
});

test('planFiring: a cron catch-up replays at most the limit and jumps past now; the rest is a lower bound', () => {
  const cron: Schedule = { kind: 'cron', expr: '* * * * *', tz: 'Europe/Berlin' };
  const far = planFiring(cron, T - 3652 * DAY, T, true);
  assert.equal(far.slots.length, CATCH_UP_LIMIT);
  assert.equal(far.slots[1]! - far.slots[0]!, MIN);
  assert.equal(far.skippedExact, false);
  assert.ok(far.skipped >= 1);
  assert.equal(far.next, T + MIN, 'the next minute after now');
  const near = planFiring({ kind: 'cron', expr: '0 * * * *', tz: 'UTC' }, T, T + 2.5 * HOUR, true);
  assert.deepEqual(near, { slots: [T, T + HOUR, T + 2 * HOUR], skipped: 0, skippedExact: true, next: T + 3 * HOUR });
  assert.equal(planFiring(cron, T, T, true, 1).slots.length, 1, 'a limit of one');
});

test('missedSlots: what a catch-up records as missed, as a table', () => {
  const cases: [string, { slots: number[]; skipped: number; skippedExact: boolean }, { count: number; reason: string } | undefined][] = [
    ['on time', { slots: [T], skipped: 0, skippedExact: true }, undefined],
    ['three replayed', { slots: [T, T + HOUR, T + 2 * HOUR], skipped: 0, skippedExact: true }, {
      count: 2, reason: 'catch-up: 3 missed slots replayed at once (a job is queued at most once)',
    }],
    ['limit reached, exact', { slots: Array.from({ length: CATCH_UP_LIMIT }, (_, i) => T + i * MIN), skipped: 5, skippedExact: true }, {
      count: CATCH_UP_LIMIT - 1 + 5,
      reason: `catch-up: ${CATCH_UP_LIMIT} missed slots replayed at once (a job is queued at most once), 5 later missed slots not replayed (at most ${CATCH_UP_LIMIT} per pass)`,
    }],
    ['cron past the limit: a lower bound', { slots: [T], skipped: 7, skippedExact: false }, {
      count: 7, reason: `catch-up: 1 missed slots replayed at once (a job is queued at most once), more than 7 later missed slots not replayed (at most ${CATCH_UP_LIMIT} per pass)`,
    }],
  ];
  for (const [name, plan, want] of cases) assert.deepEqual(missedSlots({ ...plan, next: undefined }), want, name);
});

test('resumedNextAt: times missed while paused do not run; a future or absent time stays', () => {
  const cases: [string, number | null, number, number | null][] = [
    ['missed while paused: the next slot after now', T, T + 2.5 * HOUR, T + 3 * HOUR],
    ['due exactly now: the next slot', T, T, T + HOUR],
    ['still ahead: unchanged', T + HOUR, T, T + HOUR],
    ['no next time', null, T, null],
  ];
  for (const [name, nextAt, now, want] of cases) assert.equal(resumedNextAt(every(HOUR), nextAt, now), want, name);
});
