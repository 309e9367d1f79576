/** The feed bridge's messages: each under a NOTIFY's limit, a long list split without losing or doubling an item. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { feedPayloads } from '../../src/server/cluster/feed-bridge.js';
import { FEED_PAYLOAD_MAX, type FeedMessage } from '../../src/store/feed.js';

test('a message that fits is sent whole; a long list is split into messages that each fit, in order, nothing lost or doubled', () => {
  assert.deepEqual(feedPayloads('s1', 'job.changed', { name: 'build' }).map((p) => JSON.parse(p)), [{ s: 's1', k: 'job.changed', d: { name: 'build' } }]);
  const runs = Array.from({ length: 3000 }, (_, i) => ({ id: `run-${i}-0123456789abcdef`, job: 'build', platform: 'linux' }));
  const payloads = feedPayloads('s1', 'run.queued', { runs }, 'runs');
  assert.ok(payloads.length > 1);
  for (const payload of payloads) assert.ok(Buffer.byteLength(payload) <= FEED_PAYLOAD_MAX, `${Buffer.byteLength(payload)} bytes`);
  const messages = payloads.map((p) => JSON.parse(p) as FeedMessage);
  assert.ok(messages.every((m) => m.s === 's1' && m.k === 'run.queued'));
  assert.deepEqual(messages.flatMap((m) => (m.d as { runs: unknown[] }).runs), runs);
});

test('a message too large that has no list to split is not sent (the resync covers it)', () => {
  assert.deepEqual(feedPayloads('s1', 'worker.cut', { name: 'w', reason: 'x'.repeat(FEED_PAYLOAD_MAX) }), []);
  assert.deepEqual(feedPayloads('s1', 'platform.dropped', { platform: 'p', cancelled: ['x'.repeat(FEED_PAYLOAD_MAX)] }, 'cancelled'), []);
});
