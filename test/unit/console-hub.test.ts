/**
 * The console hub on a real SQLite store: an observer that throws is dropped and aborted (its
 * stream ends), and neither the other observers nor the store write of the batch wait on it.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { ConsoleHub } from '../../src/server/console-hub.js';
import { createEventBus } from '../../src/server/events.js';
import type { StoredLine } from '../../src/store/index.js';
import { openSqliteStore } from '../../src/store/sqlite/sqlite-store.js';

const T0 = 1_700_000_000_000;

test('an observer that throws is dropped: the others see every line and the batch is written at once', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-hub-'));
  const store = openSqliteStore(path.join(dir, 'kiln.db'));
  const log = pino({ level: 'silent' });
  const events = createEventBus(log);
  // maxPending 1: each batch is written as soon as it arrives (a kick, not a timer).
  const hub = new ConsoleHub(store, log, events, { flushMs: 3_600_000, maxPending: 1 });
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

  let thrown = 0;
  const aborted: string[] = [];
  hub.subscribe(runId, {
    line: () => { thrown += 1; throw new Error('observer bug'); },
    end: () => assert.fail('a dropped observer is not told the end'),
    abort: (err) => aborted.push(err.message),
  });
  // One whose abort throws too is still dropped, and holds up nothing.
  hub.subscribe(runId, { line: () => { throw new Error('bug'); }, end: () => assert.fail('dropped'), abort: () => { throw new Error('abort bug'); } });
  const seen: string[] = [];
  let ended = false;
  hub.subscribe(runId, { line: (line) => seen.push(line.text), end: () => { ended = true; }, abort: () => assert.fail('not dropped') });

  const line = (seq: number): StoredLine => ({ seq, ts: T0 + seq, text: `line ${seq}` });
  events.publish('run.line', { runId, lines: [line(0)], source: 'worker' });
  // The write the batch kicked is in flight: take() waits for it.
  await hub.take('another run');
  assert.deepEqual((await store.readConsole(runId)).map((l) => l.text), ['line 0'], 'written without waiting for a later flush');
  events.publish('run.line', { runId, lines: [line(1)], source: 'worker' });
  events.publish('run.ended', { runId, from: 'running', status: 'succeeded' });
  assert.deepEqual(seen, ['line 0', 'line 1']);
  assert.equal(thrown, 1, 'the throwing observer was told once, then dropped');
  assert.deepEqual(aborted, ['observer bug'], 'and aborted once, so its stream ends');
  assert.ok(ended);
});
