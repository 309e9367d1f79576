/** The feed's console messages (src/store/feed.ts): one range per run, split under the NOTIFY payload's limit. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { CONSOLE_FEED_KIND, consoleFeedPayloads, FEED_PAYLOAD_MAX, type ConsoleRange, type FeedMessage } from '../../src/store/feed.js';

test('one range per run, from its smallest seq to its largest, under the server id', () => {
  const [only, ...more] = consoleFeedPayloads('srv-1', [
    { runId: 'r1', seq: 4 }, { runId: 'r2', seq: 9 }, { runId: 'r1', seq: 2 }, { runId: 'r1', seq: 7 },
  ]);
  assert.deepEqual(more, []);
  assert.deepEqual(JSON.parse(only!), { s: 'srv-1', k: CONSOLE_FEED_KIND, d: [{ r: 'r1', a: 2, b: 7 }, { r: 'r2', a: 9, b: 9 }] });
  assert.deepEqual(consoleFeedPayloads('srv-1', []), [], 'no lines: nothing to send');
});

test('many runs are split into payloads each under FEED_PAYLOAD_MAX bytes, covering every run once', () => {
  const runs = Array.from({ length: 500 }, (_, i) => `${randomUUID()}-ünï-${i}`);
  const payloads = consoleFeedPayloads('srv-ß', runs.flatMap((runId, i) => [{ runId, seq: i }, { runId, seq: i + 3 }]));
  assert.ok(payloads.length > 1, `split: ${payloads.length}`);
  const ranges: ConsoleRange[] = [];
  for (const payload of payloads) {
    assert.ok(Buffer.byteLength(payload) <= FEED_PAYLOAD_MAX, `${Buffer.byteLength(payload)} bytes`);
    const message = JSON.parse(payload) as FeedMessage;
    assert.equal(message.s, 'srv-ß');
    ranges.push(...(message.d as ConsoleRange[]));
  }
  assert.deepEqual(ranges, runs.map((r, i) => ({ r, a: i, b: i + 3 })));
});
