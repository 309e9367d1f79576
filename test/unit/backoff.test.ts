/** The one backoff: doubling within bounds, Retry-After, and an injected jitter. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffMs } from '../../src/core/backoff.js';

test('backoffMs doubles from the minimum to the maximum, as a table', () => {
  const timings = { retryMinMs: 100, retryMaxMs: 1000 };
  const cases: [number, number][] = [[0, 100], [1, 100], [2, 200], [3, 400], [4, 800], [5, 1000], [40, 1000], [1e9, 1000]];
  for (const [attempts, want] of cases) assert.equal(backoffMs(attempts, timings), want, `after ${attempts} failures`);
});

test('the jitter spreads a wait by its fraction either way, from the injected source', () => {
  const timings = { retryMinMs: 1000, retryMaxMs: 1000, jitter: 0.25 };
  const cases: [number, number][] = [[0, 750], [0.5, 1000], [0.999, 1249.5]];
  for (const [random, want] of cases) assert.ok(Math.abs(backoffMs(1, timings, { random: () => random }) - want) < 1e-9, `random ${random}`);
  assert.equal(backoffMs(1, { retryMinMs: 1000, retryMaxMs: 1000 }, { random: () => 0 }), 1000, 'no jitter unless asked');
});

test('a Retry-After longer than the wait wins within the bound, before the jitter', () => {
  const timings = { retryMinMs: 100, retryMaxMs: 10_000, jitter: 0.1 };
  assert.equal(backoffMs(1, timings, { retryAfterMs: 5000, random: () => 0.5 }), 5000);
  assert.equal(backoffMs(1, timings, { retryAfterMs: 60_000, random: () => 0 }), 9000);
});
