/** The worker's reconnect waits: the shared backoff, short while nobody listens, long after a refusal. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffMs } from '../../src/core/index.js';
import { reconnectDelayMs, RECONNECT_AFTER_ANSWER, RECONNECT_WHILE_DOWN } from '../../src/worker/reconnect.js';

const middle = () => 0.5;

test('while nothing listens (a server restarting), the wait doubles from 100 ms and stays at 0.5 s', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 20].map((n) => Math.round(reconnectDelayMs(n, true, middle))), [100, 200, 400, 500, 500, 500]);
  for (let n = 1; n < 40; n += 1) assert.ok(reconnectDelayMs(n, true, () => 1) <= RECONNECT_WHILE_DOWN.retryMaxMs * 1.2 + 1e-6);
});

test('after the server answered and closed or refused, the wait is the long backoff (up to 10 s)', () => {
  assert.deepEqual([1, 2, 3, 6, 20].map((n) => Math.round(reconnectDelayMs(n, false, middle))), [250, 500, 1000, 8000, 10_000]);
  assert.equal(Math.round(reconnectDelayMs(20, false, middle)), backoffMs(20, RECONNECT_AFTER_ANSWER, { random: middle }));
});

test('the jitter spreads a fleet by 20 % either way', () => {
  assert.equal(reconnectDelayMs(1, false, () => 0), 200);
  assert.ok(Math.abs(reconnectDelayMs(1, false, () => 1) - 300) < 1e-9);
});
