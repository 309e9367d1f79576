/**
 * The console hub's remote path (notes/issue16-plan.md §3.4) on a real SQLite store: lines of a run
 * observed here are written by "another server" (straight into the store) and announced as
 * `console.committed` ranges, out of order, repeated, or lost and made good by `feed.resync`. The
 * observer sees every line once, in seq order, and then the end.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { ConsoleHub } from '../../src/server/console-hub.js';
import { createEventBus, type EventBus } from '../../src/server/events.js';
import type { JobStore, StoredLine } from '../../src/store/index.js';
import { openSqliteStore } from '../../src/store/sqlite/sqlite-store.js';

const T0 = 1_700_000_000_000;
const line = (seq: number): StoredLine => ({ seq, ts: T0 + seq, text: `line ${seq}` });
const range = (r: string, a: number, b: number) => ({ r, a, b });
const seqs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function setUp(t: TestContext): Promise<{ store: JobStore; events: EventBus; hub: ConsoleHub; runId: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-hub-remote-'));
  const store = openSqliteStore(path.join(dir, 'kiln.db'));
  const log = pino({ level: 'silent' });
  const events = createEventBus(log);
  const hub = new ConsoleHub(store, log, events, { flushMs: 3_600_000, maxPending: 10_000 });
  t.after(async () => {
    await hub.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const runId = randomUUID();
  await store.createJob({
    name: 'j', platform: 'linux', script: 'true', env: {}, labels: {}, template: null, vars: {}, schedule: { kind: 'period', period: 'never' },
    paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null, timeoutMs: 60_000, idleTimeoutMs: null, retries: 0,
    failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {}, nextAt: null, createdAt: T0, updatedAt: T0,
  }, [{ id: runId, job: 'j', platform: 'linux', labels: {}, queuedAt: T0 }]);
  return { store, events, hub, runId };
}

/** An observer that records what it is told, and fails on a line twice or out of order. */
function recorder() {
  const seen: number[] = [];
  const state = { ended: false };
  return {
    seen,
    state,
    observer: {
      line: (l: StoredLine) => {
        assert.ok(!state.ended, `line ${l.seq} after the end`);
        assert.ok(seen.length === 0 || l.seq > seen[seen.length - 1]!, `line ${l.seq} after ${seen[seen.length - 1]}: twice or out of order`);
        seen.push(l.seq);
      },
      end: () => {
        state.ended = true;
      },
      abort: (err: Error) => assert.fail(err),
    },
  };
}

test('ranges out of order and repeated: every line once, in order; a remote end comes after the last lines, even when it overtakes their range', async (t) => {
  const { store, events, hub, runId } = await setUp(t);
  const { seen, state, observer } = recorder();
  // Replayed the (empty) store, then caught up: from here on lines written elsewhere are read for it.
  hub.subscribe(runId, observer).caughtUp(-1);
  await hub.settled();

  await store.appendConsole([{ runId, lines: seqs(0, 4).map(line) }]);
  await store.appendConsole([{ runId, lines: seqs(5, 9).map(line) }]);
  // The second range is heard first, and the first twice.
  events.publish('console.committed', { ranges: [range(runId, 5, 9)], remote: true });
  events.publish('console.committed', { ranges: [range(runId, 0, 4), range(runId, 0, 4)], remote: true });
  events.publish('console.committed', { ranges: [range(runId, 0, 4)], remote: true });
  await hub.settled();
  assert.deepEqual(seen, seqs(0, 9));

  // The end overtakes the range of the last lines (both were committed before it was published).
  await store.appendConsole([{ runId, lines: seqs(10, 12).map(line) }]);
  events.publish('run.ended', { runId, from: 'running', status: 'succeeded', remote: true });
  events.publish('console.committed', { ranges: [range(runId, 10, 12)], remote: true });
  await hub.settled();
  assert.deepEqual(seen, seqs(0, 12));
  assert.ok(state.ended, 'told the end after the last line');
});

test('a range lost: the next range reads it too; lost with the end: feed.resync reads it and ends a final run', async (t) => {
  const { store, events, hub, runId } = await setUp(t);
  const { seen, state, observer } = recorder();
  // An observer whose replay got lines 0..2 already.
  await store.appendConsole([{ runId, lines: seqs(0, 2).map(line) }]);
  hub.subscribe(runId, observer, 2);
  await hub.settled();
  assert.deepEqual(seen, [], 'lines its replay had are not told again');

  await store.appendConsole([{ runId, lines: seqs(3, 5).map(line) }]); // its range is lost
  await store.appendConsole([{ runId, lines: seqs(6, 7).map(line) }]);
  events.publish('console.committed', { ranges: [range(runId, 6, 7)], remote: true });
  await hub.settled();
  assert.deepEqual(seen, seqs(3, 7), 'read from what it has, not from the range');

  // Lines and the end, both lost: the resync reads the lines and finds the run final.
  await store.appendConsole([{ runId, lines: seqs(8, 9).map(line) }]);
  await store.requestCancel(runId, 'test', T0, T0 + 1000);
  assert.equal(state.ended, false);
  events.publish('feed.resync', {});
  await hub.settled();
  assert.deepEqual(seen, seqs(3, 9));
  assert.ok(state.ended, 'a resync ends the observers of a final run');
});

test('a resync of a run still running reads its lines and does not end it; an observer still replaying is not read for', async (t) => {
  const { store, events, hub, runId } = await setUp(t);
  const first = recorder();
  const replaying = recorder();
  hub.subscribe(runId, first.observer, -1);
  const later = hub.subscribe(runId, replaying.observer);
  await store.appendConsole([{ runId, lines: seqs(0, 3).map(line) }]);
  events.publish('feed.resync', {});
  await hub.settled();
  assert.deepEqual(first.seen, seqs(0, 3));
  assert.equal(first.state.ended, false, 'a queued run is not final: not ended');
  assert.deepEqual(replaying.seen, [], 'still replaying the store itself: nothing read for it');
  // Its replay got 0..1; lines after are read for it at once.
  later.caughtUp(1);
  await hub.settled();
  assert.deepEqual(replaying.seen, [2, 3]);
});
