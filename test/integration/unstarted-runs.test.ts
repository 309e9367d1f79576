/** Re-attach after a restart with a fake worker over a real WebSocket: what it holds resumes, what it never got is queued again. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { call, FakeWorker, inProcessServer } from '../helpers/in-process.js';
import { tempDir } from '../helpers/processes.js';

test('a capacity-2 worker back after a restart keeps the run it holds; the one it never got is queued again and sent to it', async (t) => {
  const dataDir = tempDir(t);
  // A long grace: a run left waiting for it would never come back within the test.
  const first = await inProcessServer(t, { dataDir, reattachGraceMs: 3_600_000 });
  const worker = await FakeWorker.connect(t, first);
  // Capacity 1 for now, so the second run stays queued (it says capacity 2 when it comes back).
  await worker.hello({ capacity: 1 });
  for (const name of ['held', 'unsent']) await call(first, 'POST', '/api/jobs', { name, platform: 'testos', script: 'true\n', period: 'never', retries: 0 });
  const held: string = (await call(first, 'POST', '/api/jobs/held/execute', {})).body.run.id;
  const assign = await worker.next<{ type: string; run: { id: string; attempt: number } }>();
  assert.equal(assign.run.id, held);
  // The worker is mid-run when the server goes; the other run is queued, then claimed for it but never sent.
  const unsent: string = (await call(first, 'POST', '/api/jobs/unsent/execute', {})).body.run.id;
  await first.close();
  const store = await openStore(dataDir);
  assert.equal((await store.claimNext({ name: 'fake-1', platform: 'testos', labels: {} }, Date.now(), 60_000))?.id, unsent);
  await store.close();

  const second = await inProcessServer(t, { dataDir, reattachGraceMs: 3_600_000 });
  const back = await FakeWorker.connect(t, second);
  back.send({ v: 1, type: 'hello', name: 'fake-1', platform: 'testos', labels: {}, capacity: 2, once: false, hostname: 'test', os: 'Linux', arch: 'x64', version: '0.0.0-test', runs: [{ runId: held, attempt: 1 }] });
  const welcome = await back.next<{ type: string; resume: { runId: string }[]; release: unknown[] }>();
  assert.equal(welcome.type, 'welcome');
  assert.deepEqual(welcome.resume.map((r) => r.runId), [held], 'the run the worker holds is resumed, not released');
  assert.deepEqual(welcome.release, []);
  const again = await back.next<{ type: string; run: { id: string; attempt: number } }>();
  assert.equal(again.type, 'run.assign');
  assert.deepEqual([again.run.id, again.run.attempt], [unsent, 1], 'the same attempt: it never ran');

  for (const runId of [held, unsent]) back.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  for (const runId of [held, unsent]) {
    assert.equal((await back.next<{ type: string; runId: string }>()).type, 'run.done');
  }
  const runs = await Promise.all([held, unsent].map(async (id) => (await call(second, 'GET', `/api/runs/${id}`)).body.run));
  assert.deepEqual(runs.map((run) => [run.status, run.attempt]), [['succeeded', 1], ['succeeded', 1]]);
  const { events } = (await call(second, 'GET', `/api/runs/${unsent}/events`)).body;
  assert.deepEqual(events.filter((e: { kind: string }) => ['requeued', 'retried', 'ended'].includes(e.kind)).map((e: { kind: string }) => e.kind), ['requeued', 'ended']);
});
