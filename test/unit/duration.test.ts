/** Durations as typed on the command line: parseDuration and formatDuration. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { durationRangeProblem, formatDuration, MAX_DURATION_MS, MAX_TIMER_MS, parseDuration } from '../../src/core/index.js';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

test('parseDuration reads every unit and sums of units', () => {
  const cases: [string, number][] = [
    ['0s', 0],
    ['500ms', 500],
    ['90s', 90 * S],
    ['15m', 15 * M],
    ['6h', 6 * H],
    ['2d', 2 * D],
    ['1w', 7 * D],
    ['1h30m', H + 30 * M],
    ['1d2h3m4s5ms', D + 2 * H + 3 * M + 4 * S + 5],
    ['1.5h', H + 30 * M],
    ['0.5s', 500],
    ['1.0005s', 1001],
    ['  10m ', 10 * M],
    ['30m1h', H + 30 * M],
  ];
  for (const [text, want] of cases) assert.equal(parseDuration(text), want, JSON.stringify(text));
});

test('parseDuration returns undefined for text that is not a duration', () => {
  const cases = ['', '   ', '10', '5x', '-1s', '+1s', 's', 'ms', '1h30', '1h 30m', '1H', '1.s', '.5s', '1e3s', '1,5h', 'h1', '1hh', 'ten s', '1s-'];
  for (const text of cases) assert.equal(parseDuration(text), undefined, JSON.stringify(text));
});

test('parseDuration gives the same answer when called again (no state left between calls)', () => {
  assert.equal(parseDuration('5x'), undefined);
  assert.equal(parseDuration('1h30m'), H + 30 * M);
  assert.equal(parseDuration('1h30m'), H + 30 * M);
  assert.equal(parseDuration('10'), undefined);
  assert.equal(parseDuration('10s'), 10 * S);
});

test('formatDuration writes the largest units first', () => {
  const cases: [number, string][] = [
    [0, '0s'],
    [1, '1ms'],
    [999, '999ms'],
    [S, '1s'],
    [1500, '1s500ms'],
    [90 * S, '1m30s'],
    [H + 30 * M, '1h30m'],
    [H + 5, '1h5ms'],
    [2 * D + 3 * H, '2d3h'],
    [7 * D, '7d'],
  ];
  for (const [ms, want] of cases) assert.equal(formatDuration(ms), want, String(ms));
});

test('formatDuration output parses back to the same value', () => {
  for (const ms of [0, 1, 999, 1000, 61_001, H + 30 * M, 3 * D + 4 * H + 5 * M + 6 * S + 7, 10 * 7 * D]) {
    assert.equal(parseDuration(formatDuration(ms)), ms, String(ms));
  }
});

test('parseDuration refuses a number no double holds; durationRangeProblem names the limit', () => {
  assert.equal(parseDuration('9'.repeat(400) + 'd'), undefined);
  assert.equal(parseDuration('100000000d'), 100_000_000 * D, 'a duration, refused by its range check, not the parser');
  assert.equal(durationRangeProblem(100_000_000 * D), 'at most 3660d');
  assert.equal(durationRangeProblem(MAX_DURATION_MS), undefined);
  assert.equal(durationRangeProblem(25 * D, MAX_TIMER_MS), 'at most 24d');
  assert.equal(durationRangeProblem(Number.NaN), 'at most 3660d');
  assert.equal(durationRangeProblem(5, MAX_TIMER_MS, 10), 'at least 10ms');
  assert.ok(MAX_TIMER_MS < 2 ** 31 - 1, 'a timer this long still waits (setTimeout fires at once past 2^31-1 ms)');
});
