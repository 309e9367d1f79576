/** Sizes as typed in flags and config files, and the outbox's backoff. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffMs, formatSize, parseSize } from '../../src/core/index.js';

test('parseSize reads bytes and 1024-based units', () => {
  const cases: [string, number][] = [
    ['0', 0], ['1048576', 1_048_576], ['1kb', 1024], ['512mb', 512 * 1024 ** 2], ['4gb', 4 * 1024 ** 3], ['4GB', 4 * 1024 ** 3],
    ['1.5mb', 1.5 * 1024 ** 2], ['2tb', 2 * 1024 ** 4], [' 10 kb ', 10 * 1024], ['7b', 7],
  ];
  for (const [text, want] of cases) assert.equal(parseSize(text), want, JSON.stringify(text));
});

test('parseSize refuses what is not a size', () => {
  for (const text of ['', 'kb', '-1kb', '1x', '1 gib', 'lots', '1e9', '0x10']) assert.equal(parseSize(text), undefined, JSON.stringify(text));
});

test('formatSize is short and readable', () => {
  assert.equal(formatSize(10), '10B');
  assert.equal(formatSize(1536 * 1024), '1.5MB');
  assert.equal(formatSize(2 * 1024 ** 3), '2GB');
});

test('the outbox backs off exponentially up to its bound, and honours a longer Retry-After within it', () => {
  const timings = { retryMinMs: 1000, retryMaxMs: 600_000 };
  assert.deepEqual([1, 2, 3, 4, 10, 11, 50].map((n) => backoffMs(n, timings)), [1000, 2000, 4000, 8000, 512_000, 600_000, 600_000]);
  assert.equal(backoffMs(1, timings, { retryAfterMs: 30_000 }), 30_000, 'Retry-After longer than the backoff wins');
  assert.equal(backoffMs(5, timings, { retryAfterMs: 1000 }), 16_000, 'a shorter Retry-After does not hurry the backoff');
  assert.equal(backoffMs(1, timings, { retryAfterMs: 86_400_000 }), 600_000, 'Retry-After is capped by the bound');
});
