/** Worker failover policy (src/core/failover.ts): the order servers and addresses are tried in, when the backoff applies, name-taken, the list. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NAME_TAKEN_PATIENCE_MS, nameTakenIsFinal, nextAttempt, parseServerList, type FailoverPosition } from '../../src/core/index.js';

/** The attempts made from `start` when every one fails, with the address count of each server. */
function walk(addresses: number[], steps: number, start: FailoverPosition = { server: 0, address: 0, failed: 0 }) {
  const out: string[] = [];
  let at = start;
  for (let i = 0; i < steps; i += 1) {
    const step = nextAttempt(at, addresses[at.server]!, addresses.length);
    out.push(`${step.server}.${step.address}${step.backoffRounds > 0 ? ` wait(${step.backoffRounds})` : ''}`);
    at = step;
  }
  return out;
}

test('three servers: each failure moves to the next at once; only a whole failed round waits, counting rounds', () => {
  assert.deepEqual(walk([1, 1, 1], 7), ['1.0', '2.0', '0.0 wait(1)', '1.0', '2.0', '0.0 wait(2)', '1.0']);
});

test('losing an established connection (a welcome reset the count) moves to the next server before any wait', () => {
  // Connected to server 1 (failed reset to 0 by its welcome), then lost it.
  assert.deepEqual(walk([1, 1, 1], 3, { server: 1, address: 0, failed: 0 }), ['2.0', '0.0', '1.0 wait(1)']);
});

test('one server: every failure waits, with the count as before failover (the existing backoff)', () => {
  assert.deepEqual(walk([1], 3), ['0.0 wait(1)', '0.0 wait(2)', '0.0 wait(3)']);
});

test("a name's addresses are tried in turn, at once; the name counts as one server in the round", () => {
  assert.deepEqual(walk([3, 1], 6), ['0.1', '0.2', '1.0', '0.0 wait(1)', '0.1', '0.2']);
});

test('name taken: final at once with one server and no runs; with several, only after the patience; never while runs are held', () => {
  assert.equal(nameTakenIsFinal(1, 0, 0, 0), true);
  assert.equal(nameTakenIsFinal(1, 2, 0, 0), false);
  assert.equal(nameTakenIsFinal(3, 0, 1000, 1000 + NAME_TAKEN_PATIENCE_MS - 1), false);
  assert.equal(nameTakenIsFinal(3, 0, 1000, 1000 + NAME_TAKEN_PATIENCE_MS), true);
  assert.equal(nameTakenIsFinal(3, 1, 0, 10 * NAME_TAKEN_PATIENCE_MS), false);
});

test('the server list: commas, blanks around them, http and https only', () => {
  assert.deepEqual(parseServerList('http://a:7420'), ['http://a:7420']);
  assert.deepEqual(parseServerList('http://a:1, https://b:2 ,http://10.0.0.3:7420'), ['http://a:1', 'https://b:2', 'http://10.0.0.3:7420']);
  assert.throws(() => parseServerList('http://a:1,,http://b:2'), /bad server list/);
  assert.throws(() => parseServerList(''), /bad server list/);
  assert.throws(() => parseServerList('http://a:1,b:2'), /bad server URL 'b:2'/);
  assert.throws(() => parseServerList('ftp://a'), /use http:\/\/ or https:\/\//);
});
