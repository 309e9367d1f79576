/** Re-attach after a restart with a fake worker over a real WebSocket: what it holds resumes, what it never got is queued again. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
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
  // One worker process across the restart: its hello carries the same process id both times.
  const session = randomUUID();
  await worker.hello({ capacity: 1, session });
  for (const name of ['held', 'unsent']) await call(first, 'POST', '/api/jobs', { name, platform: 'testos', script: 'true\n', period: 'never', retries: 0 });
  const held: string = (await call(first, 'POST', '/api/jobs/held/execute', {})).body.run.id;
  const assign = await worker.next<{ type: string; run: { id: string; attempt: number } }>();
  assert.equal(assign.run.id, held);
  // The worker is mid-run when the server goes; the other run is queued, then claimed for it but never sent.
  const unsent: string = (await call(first, 'POST', '/api/jobs/unsent/execute', {})).body.run.id;
  await first.close();
  const store = await openStore(dataDir);
  assert.equal((await store.claimNext({ name: 'fake-1', platform: 'testos', labels: {}, identity: 'shared', session }, Date.now(), 60_000))?.id, unsent);
  await store.close();

  const second = await inProcessServer(t, { dataDir, reattachGraceMs: 3_600_000 });
  const back = await FakeWorker.connect(t, second);
  back.send({ v: 1, type: 'hello', name: 'fake-1', platform: 'testos', labels: {}, capacity: 2, once: false, hostname: 'test', os: 'Linux', arch: 'x64', version: '0.0.0-test', session, runs: [{ runId: held, attempt: 1 }] });
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

test('a worker back under the same name as another process does not give back the runs of the one that died: they end lost, with the retry budget', async (t) => {
  const dataDir = tempDir(t);
  // A long grace: only the hello may end these runs within the test.
  const first = await inProcessServer(t, { dataDir, reattachGraceMs: 3_600_000 });
  const dead = await FakeWorker.connect(t, first);
  await dead.hello({ capacity: 2, session: randomUUID() });
  const ids: Record<string, string> = {};
  for (const [name, retries] of [['zero', 0], ['one', 1]] as const) {
    await call(first, 'POST', '/api/jobs', { name, platform: 'testos', script: 'true\n', period: 'never', retries });
    ids[name] = (await call(first, 'POST', `/api/jobs/${name}/execute`, {})).body.run.id;
    assert.equal((await dead.next<{ run: { id: string } }>()).run.id, ids[name]);
  }
  await first.close();

  // The worker process was killed with the server away (its jobs with it) and started again under its name.
  const second = await inProcessServer(t, { dataDir, reattachGraceMs: 3_600_000 });
  const restarted = await FakeWorker.connect(t, second);
  await restarted.hello({ capacity: 2, session: randomUUID() });
  const zero = (await call(second, 'GET', `/api/runs/${ids.zero}`)).body.run;
  assert.deepEqual([zero.status, zero.attempt], ['lost', 1], '--retries 0: the attempt that ran is lost, not run again');
  assert.match(zero.resultText ?? JSON.stringify(zero.result), /fake-1 came back as a new process without it/);
  const again = await restarted.next<{ type: string; run: { id: string; attempt: number } }>();
  assert.deepEqual([again.type, again.run.id, again.run.attempt], ['run.assign', ids.one, 2], '--retries 1: retried as attempt 2');
  const { events } = (await call(second, 'GET', `/api/runs/${ids.one}/events`)).body;
  assert.ok(!events.some((e: { kind: string }) => e.kind === 'requeued'), JSON.stringify(events));
});

test('a run sent before worker process ids were kept is not given back by a hello that cannot speak for it: it waits the grace', async (t) => {
  const dataDir = tempDir(t);
  const first = await inProcessServer(t, { dataDir, reattachGraceMs: 3_600_000 });
  await call(first, 'POST', '/api/jobs', { name: 'old', platform: 'testos', script: 'true\n', period: 'never', retries: 0 });
  const runId: string = (await call(first, 'POST', '/api/jobs/old/execute', {})).body.run.id;
  await first.close();
  // Claimed with no process id, as a server of the previous build (or for an older worker) did.
  const store = await openStore(dataDir);
  assert.equal((await store.claimNext({ name: 'fake-1', platform: 'testos', labels: {} }, Date.now(), 60_000))?.id, runId);
  await store.close();

  const second = await inProcessServer(t, { dataDir, reattachGraceMs: 3_600_000 });
  const worker = await FakeWorker.connect(t, second);
  await worker.hello({ session: randomUUID() });
  const run = (await call(second, 'GET', `/api/runs/${runId}`)).body.run;
  assert.deepEqual([run.status, run.attempt, run.worker], ['running', 1, 'fake-1'], 'neither requeued nor lost: the grace decides');
  const { events } = (await call(second, 'GET', `/api/runs/${runId}/events`)).body;
  assert.deepEqual(events.map((e: { kind: string }) => e.kind), ['queued', 'dispatched'], 'neither requeued nor lost: the grace decides');
});
