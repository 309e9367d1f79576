/** Attempts, cancel, deadlines and re-attach, driven frame by frame by a fake worker over a real WebSocket. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { call, consoleEvents, FakeWorker, helloFrame, inProcessServer, runOnFakeWorker, testJob } from '../helpers/in-process.js';

const lines = (from: number, count: number) => Array.from({ length: count }, (_, i) => ({ seq: from + i, ts: 1_700_000_000_000 + from + i, text: `line ${from + i}` }));
const exited = (code: number) => ({ kind: 'exited', code });

test('after a server restart the worker re-attaches its run, resends what was not stored, and reports once', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  worker.send({ v: 1, type: 'run.output', runId, lines: lines(0, 3) });
  await consoleEvents(server, runId, false); // the three lines are stored before the crash
  await server.close();

  const restarted = await inProcessServer(t, { dataDir: server.dataDir, reattachGraceMs: 60_000 });
  const back = await FakeWorker.connect(t, restarted);
  back.send(helloFrame({ runs: [{ runId, attempt: 1 }] }));
  const welcome = await back.next<{ type: string; resume: unknown[]; release: unknown[] }>();
  assert.equal(welcome.type, 'welcome');
  assert.deepEqual(welcome.resume, [{ runId, afterSeq: 2 }]);
  assert.deepEqual(welcome.release, []);
  // The worker resends from where the server is, overlapping a little: nothing is stored twice.
  back.send({ v: 1, type: 'run.output', runId, lines: lines(2, 4) });
  back.send({ v: 1, type: 'run.finished', runId, result: exited(0) });
  assert.deepEqual(await back.next(), { v: 1, type: 'run.done', runId, applied: true });

  const events = await consoleEvents(restarted, runId);
  assert.deepEqual(events.filter((e) => e.type === 'line').map((e) => e.seq), [0, 1, 2, 3, 4, 5]);
  assert.equal(events.at(-1).run.status, 'succeeded');
});

test('a worker coming back with a run that was lost meanwhile is told to release it', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t, { ...testJob, retries: 0 });
  worker.socket.terminate();
  assert.equal((await consoleEvents(server, runId)).at(-1).run.status, 'lost');
  const back = await FakeWorker.connect(t, server);
  back.send(helloFrame({ runs: [{ runId, attempt: 1 }] }));
  const welcome = await back.next<{ resume: unknown[]; release: { runId: string; reason: string }[] }>();
  assert.deepEqual(welcome.resume, []);
  assert.deepEqual(welcome.release, [{ runId, reason: 'the run has ended (lost)' }]);
});

test('cancel: a queued run ends at once, a running one is stopped by its worker, a finished one is refused', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  await call(server, 'POST', '/api/jobs', { ...testJob, name: 'waiting' });
  const queued = (await call(server, 'POST', '/api/jobs/waiting/execute', {})).body.run.id;
  const cancelledQueued = await call(server, 'POST', `/api/runs/${queued}/cancel`, { by: 'alice' });
  assert.equal(cancelledQueued.body.state, 'cancelled');
  assert.equal(cancelledQueued.body.run.status, 'cancelled');
  assert.equal(cancelledQueued.body.run.resultText, 'aborted: cancelled by admin (as alice)');

  const requested = await call(server, 'POST', `/api/runs/${runId.slice(0, 8)}/cancel`, { by: 'bob' });
  assert.equal(requested.body.state, 'requested');
  assert.deepEqual(await worker.next(), { v: 1, type: 'run.cancel', runId, reason: 'cancelled by admin (as bob)' });
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'aborted', reason: 'cancelled by admin (as bob)' }, stoppedBy: 'cancel' });
  assert.deepEqual(await worker.next(), { v: 1, type: 'run.done', runId, applied: true });
  const end = (await consoleEvents(server, runId)).at(-1);
  assert.equal(end.run.status, 'cancelled');
  assert.equal(end.run.resultText, 'aborted: cancelled by admin (as bob)');

  for (const id of [runId, queued]) {
    const again = await call(server, 'POST', `/api/runs/${id}/cancel`, {});
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'KILN_ERR_RUN_FINISHED');
  }
  assert.equal((await call(server, 'POST', '/api/runs/ffffffff/cancel', {})).status, 404);
  assert.equal((await call(server, 'GET', `/api/runs/${runId}`)).body.run.resultText, 'aborted: cancelled by admin (as bob)', 'nothing changed');
});

test('a second result, or one from a worker that no longer holds the run, is answered and recorded but not applied', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  worker.send({ v: 1, type: 'run.finished', runId, result: exited(0) });
  assert.deepEqual(await worker.next(), { v: 1, type: 'run.done', runId, applied: true });
  worker.send({ v: 1, type: 'run.finished', runId, result: exited(7) });
  assert.deepEqual(await worker.next(), { v: 1, type: 'run.done', runId, applied: false });
  const { run, events } = (await call(server, 'GET', `/api/runs/${runId}/events`)).body;
  assert.equal(run.resultText, 'exited 0');
  const ignored = events.filter((e: { kind: string }) => e.kind === 'ignored');
  assert.equal(ignored.length, 1);
  assert.deepEqual(ignored[0].detail.result, exited(7));
});

test('a worker that never reports: the server ends the run at its deadline and releases it on the worker', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t, { ...testJob, timeoutMs: 1000 }, { backstopMs: 100 });
  assert.deepEqual(await worker.next(), { v: 1, type: 'run.release', runId, reason: 'aborted: timed out after 1s (the worker did not report)' });
  const end = (await consoleEvents(server, runId)).at(-1);
  assert.equal(end.run.status, 'timed-out');
});

test('a cancel the worker never confirms is ended by the server after the backstop', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t, testJob, { backstopMs: 200 });
  await call(server, 'POST', `/api/runs/${runId}/cancel`, { by: 'carol' });
  assert.equal((await worker.next()).type, 'run.cancel');
  assert.equal((await worker.next()).type, 'run.release');
  const end = (await consoleEvents(server, runId)).at(-1);
  assert.equal(end.run.status, 'cancelled');
  assert.equal(end.run.resultText, 'aborted: cancelled by admin (as carol) (the worker did not confirm)');
});

test('a failed run with failure retries left runs again as its next attempt, after the earlier lines', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t, { ...testJob, failureRetries: 1 });
  worker.send({ v: 1, type: 'run.output', runId, lines: lines(0, 2) });
  worker.send({ v: 1, type: 'run.finished', runId, result: exited(1) });
  assert.deepEqual(await worker.next(), { v: 1, type: 'run.done', runId, applied: true });
  const second = await worker.next<{ type: string; run: { id: string; attempt: number; firstSeq: number } }>();
  assert.equal(second.type, 'run.assign');
  assert.deepEqual([second.run.id, second.run.attempt, second.run.firstSeq], [runId, 2, 3]);
  worker.send({ v: 1, type: 'run.output', runId, lines: lines(3, 1) });
  worker.send({ v: 1, type: 'run.finished', runId, result: exited(1) });
  const events = await consoleEvents(server, runId);
  assert.deepEqual(events.filter((e) => e.type === 'line').map((e) => e.text), [
    'line 0', 'line 1', 'kiln: attempt 1 on fake-1 ended (exited 1); retrying as attempt 2', 'line 3',
  ]);
  assert.equal(events.at(-1).run.status, 'failed', 'no retries left after the second failure');
  assert.equal(events.at(-1).run.attempt, 2);
});

test('a draining worker gets no new runs', async (t) => {
  const server = await inProcessServer(t);
  const worker = await FakeWorker.connect(t, server);
  await worker.hello();
  worker.send({ v: 1, type: 'drain' });
  await call(server, 'POST', '/api/jobs', testJob);
  const runId = (await call(server, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  // A second worker connecting afterwards takes it: the draining one was skipped, not just slow.
  const other = await FakeWorker.connect(t, server);
  await other.hello({ name: 'fake-2' });
  const assign = await other.next<{ run: { id: string } }>();
  assert.equal(assign.run.id, runId);
});
