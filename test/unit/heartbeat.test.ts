/** The gateway's shared heartbeat (src/server/gateway/heartbeat.ts): one timer pings every connection once per interval and drops the silent ones. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeartbeatSweep, type Beat } from '../../src/server/gateway/heartbeat.js';

const INTERVAL = 50;

function beat(answers: boolean) {
  const record = { pings: 0, missedAt: undefined as number | undefined };
  const b: Beat = {
    alive: true,
    ping: () => {
      record.pings += 1;
      if (answers) b.alive = true;
    },
    missed: () => (record.missedAt = performance.now()),
  };
  return { b, record };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('each connection is pinged about once per interval; one that never answers is dropped after a whole interval, the others are kept', async () => {
  const sweep = new HeartbeatSweep(INTERVAL);
  const answering = Array.from({ length: 25 }, () => beat(true));
  const silent = beat(false);
  const start = performance.now();
  for (const { b } of answering) sweep.add(b);
  sweep.add(silent.b);
  await sleep(INTERVAL * 6.5);
  for (const { record } of answering) {
    assert.equal(record.missedAt, undefined);
    assert.ok(record.pings >= 4 && record.pings <= 8, `pinged ${record.pings} times in 6.5 intervals`);
  }
  assert.ok(silent.record.missedAt !== undefined, 'the silent one is dropped');
  assert.ok(silent.record.missedAt - start >= INTERVAL, 'not before a whole interval without an answer');
  assert.equal(silent.record.pings, 1);
  assert.equal(sweep.size, 25);
  for (const { b } of answering) sweep.delete(b);
  assert.equal(sweep.size, 0);
});

test('the timer stops with the last connection (nothing keeps the process alive), and a throwing ping does not stop the others', async () => {
  const sweep = new HeartbeatSweep(INTERVAL);
  const ok = beat(true);
  const throwing: Beat = { alive: true, ping: () => { throw new Error('closing'); }, missed: () => undefined };
  sweep.add(throwing);
  sweep.add(ok.b);
  await sleep(INTERVAL * 2.5);
  assert.ok(ok.record.pings >= 2);
  sweep.delete(throwing);
  sweep.delete(ok.b);
  // The test runner would wait on a live interval here; the file's deadline (guard.ts) catches one left running.
  assert.equal((sweep as unknown as { timer: unknown }).timer, undefined);
});
