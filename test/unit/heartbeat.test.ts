/** The gateway's shared heartbeat (src/server/gateway/heartbeat.ts): one timer pings every connection once per interval and drops the silent ones. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeartbeatSweep, PROBE_WAIT_MS, type Beat } from '../../src/server/gateway/heartbeat.js';

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

/** A beat that records its pings and why it was dropped (the probe tests answer by hand, through the sweep). */
function probed() {
  const record = { pings: 0, missed: undefined as string | undefined };
  const b: Beat = { alive: true, ping: () => (record.pings += 1), missed: (why) => (record.missed = why) };
  return { b, record };
}

test('a probe pings at once and drops a connection that does not answer within PROBE_WAIT_MS; one that answers keeps going; a pending probe is not restarted', (t) => {
  // Mocked timers: the sweep's interval (10 s, as by default) visits neither beat again within the probe's wait.
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const sweep = new HeartbeatSweep(10_000);
  const silent = probed();
  const answering = probed();
  sweep.add(silent.b);
  sweep.add(answering.b);
  assert.equal(sweep.probe(silent.b), true);
  assert.equal(sweep.probe(answering.b), true);
  assert.deepEqual([silent.record.pings, answering.record.pings], [1, 1], 'pinged at once');
  t.mock.timers.tick(PROBE_WAIT_MS - 10);
  assert.equal(sweep.probe(silent.b), false, 'a probe pending is not started again');
  sweep.answered(answering.b);
  t.mock.timers.tick(9);
  assert.equal(silent.record.missed, undefined, 'not before the wait');
  t.mock.timers.tick(1);
  assert.equal(silent.record.missed, 'probe');
  assert.equal(answering.record.missed, undefined, 'it answered');
  assert.equal(sweep.size, 1, 'the dropped one is no longer pinged');
  assert.equal(sweep.probe(silent.b), false, 'nothing to probe once dropped');
  // The one that answered can be probed again, and its sweep goes on.
  assert.equal(sweep.probe(answering.b), true);
  sweep.answered(answering.b);
  t.mock.timers.tick(PROBE_WAIT_MS);
  assert.equal(answering.record.missed, undefined);
  sweep.delete(answering.b);
});

test('a connection that closes with a probe pending is not dropped later (its timer goes with it)', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const sweep = new HeartbeatSweep(10_000);
  const closing = probed();
  sweep.add(closing.b);
  assert.equal(sweep.probe(closing.b), true);
  sweep.delete(closing.b);
  t.mock.timers.tick(PROBE_WAIT_MS * 2);
  assert.equal(closing.record.missed, undefined);
  assert.equal(sweep.probe(closing.b), false, 'a connection the sweep does not hold is not probed');
});

