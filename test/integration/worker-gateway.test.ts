/** The worker protocol against a real server, driven by a fake worker over a real WebSocket. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CloseCode } from '../../src/protocol/index.js';
import { call, consoleEvents, FakeWorker, helloFrame, inProcessServer, runOnFakeWorker } from '../helpers/in-process.js';

const job = { name: 'build', platform: 'testos', script: 'echo hi\n', period: 'never', env: { GREETING: 'hello' }, timeoutMs: 5000 };


test('the worker socket needs the worker token', async (t) => {
  const server = await inProcessServer(t);
  await assert.rejects(FakeWorker.connect(t, server, 'wrong'), /HTTP 401/);
  await assert.rejects(FakeWorker.connect(t, server, server.tokens.admin), /HTTP 403/);
});

test('a worker speaking another protocol version is refused with a clear message', async (t) => {
  const server = await inProcessServer(t);
  const worker = await FakeWorker.connect(t, server);
  worker.send(helloFrame({ v: 2 }));
  const refused = await worker.next<{ type: string; code: string; message: string }>();
  assert.equal(refused.type, 'refused');
  assert.equal(refused.code, 'KILN_ERR_PROTOCOL_VERSION');
  assert.match(refused.message, /protocol version 2 is not supported/);
  assert.equal((await worker.closed).code, CloseCode.protocolVersion);
});

test('a bad hello and a second worker with a taken name are refused', async (t) => {
  const server = await inProcessServer(t);
  const garbage = await FakeWorker.connect(t, server);
  garbage.send('not json at all');
  assert.equal((await garbage.next()).code, 'KILN_ERR_PROTOCOL');
  assert.equal((await garbage.closed).code, CloseCode.protocolError);

  const first = await FakeWorker.connect(t, server);
  await first.hello();
  const second = await FakeWorker.connect(t, server);
  second.send(helloFrame());
  assert.equal((await second.next()).code, 'KILN_ERR_WORKER_NAME_TAKEN');
  assert.equal((await second.closed).code, CloseCode.nameTaken);
});

test('a queued run is pushed to an idle worker; output and result are stored once', async (t) => {
  const { server, worker, runId, assign } = await runOnFakeWorker(t, job);
  assert.equal(assign.type, 'run.assign');
  assert.deepEqual(assign.run, { id: runId, job: 'build', platform: 'testos', attempt: 1, script: 'echo hi\n', env: { GREETING: 'hello' }, timeoutMs: 5000, firstSeq: 0, artifacts: [], artifactsOnFailure: false, sandbox: {}, artifactLimits: { fileBytes: 4 * 1024 ** 3, runBytes: 16 * 1024 ** 3 } });

  const lines = [0, 1, 2].map((seq) => ({ seq, ts: 1_700_000_000_000 + seq, text: `line ${seq}` }));
  worker.send({ v: 1, type: 'run.output', runId, lines: lines.slice(0, 2) });
  // A replayed batch overlapping what was sent is not stored twice.
  worker.send({ v: 1, type: 'run.output', runId, lines });
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  // A second result for the same run is not applied twice.
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 9 } });

  const events = await consoleEvents(server, runId);
  assert.deepEqual(events.filter((e) => e.type === 'line').map((e) => e.text), ['line 0', 'line 1', 'line 2']);
  const end = events.at(-1);
  assert.equal(end.type, 'end');
  assert.equal(end.run.status, 'succeeded');
  assert.equal(end.run.resultText, 'exited 0');
  assert.equal(end.run.worker, 'fake-1');
});

test('malformed frames after the hello get a protocol error and the worker keeps working', async (t) => {
  const server = await inProcessServer(t);
  const worker = await FakeWorker.connect(t, server);
  await worker.hello();
  const bad: unknown[] = [
    '{oops',
    { v: 1, type: 'run.output', runId: 'not-a-uuid', lines: [] },
    { v: 1, type: 'run.finished', runId: '00000000-0000-4000-8000-000000000000', result: { kind: 'exploded' } },
    { v: 1, type: 'nonsense' },
    { v: 1, type: 'run.output', runId: '00000000-0000-4000-8000-000000000000', lines: [{ seq: 0, ts: 1, text: 'x' }] },
  ];
  for (const frame of bad) {
    worker.send(frame);
    const reply = await worker.next<{ type: string; code: string }>();
    assert.equal(reply.type, 'error', JSON.stringify(frame));
    assert.equal(reply.code, 'KILN_ERR_PROTOCOL');
  }
  await call(server, 'POST', '/api/jobs', job);
  await call(server, 'POST', '/api/jobs/build/execute', {});
  assert.equal((await worker.next()).type, 'run.assign', 'still served after bad frames');
});

test('runs go only to workers of their platform with the labels they ask for', async (t) => {
  const server = await inProcessServer(t);
  const plain = await FakeWorker.connect(t, server);
  await plain.hello({ name: 'plain' });
  const other = await FakeWorker.connect(t, server);
  await other.hello({ name: 'other', platform: 'otheros', labels: { arch: 'arm64' } });
  const arm = await FakeWorker.connect(t, server);
  await arm.hello({ name: 'arm', labels: { arch: 'arm64' } });

  await call(server, 'POST', '/api/jobs', { ...job, labels: { arch: 'arm64' } });
  const runId = (await call(server, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  const assign = await arm.next<{ run: { id: string } }>();
  assert.equal(assign.run.id, runId);
  const workers = (await call(server, 'GET', '/api/workers')).body.workers;
  const byName = Object.fromEntries(workers.map((w: { name: string; state: string }) => [w.name, w.state]));
  assert.deepEqual(byName, { arm: 'busy', other: 'idle', plain: 'idle' });
});

test('a worker that disconnects mid-run and does not come back: the run ends lost and its observer sees the end', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t, { ...job, retries: 0 });
  worker.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 0, ts: 1, text: 'working' }] });
  const observing = consoleEvents(server, runId);
  worker.socket.terminate();
  const events = await observing;
  assert.deepEqual(events.map((e) => e.type), ['line', 'end']);
  assert.equal(events[1].run.status, 'lost');
  assert.equal(events[1].run.resultText, 'aborted: worker lost (fake-1 did not come back within 300ms)');
  const workers = (await call(server, 'GET', '/api/workers')).body.workers;
  assert.equal(workers[0].state, 'disconnected');
});

test('a worker that stops answering pings is dropped and its run ends lost', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t, { ...job, retries: 0 }, { heartbeatMs: 100 });
  // Stop answering pings: the ws client answers them automatically unless its socket is paused.
  worker.socket.pause();
  const events = await consoleEvents(server, runId);
  assert.equal(events.at(-1).run.status, 'lost');
});

test('a --once worker gets a single run', async (t) => {
  const server = await inProcessServer(t);
  const worker = await FakeWorker.connect(t, server);
  await worker.hello({ once: true });
  await call(server, 'POST', '/api/jobs', job);
  await call(server, 'POST', '/api/jobs', { ...job, name: 'second' });
  const first = (await call(server, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  await worker.next();
  worker.send({ v: 1, type: 'run.finished', runId: first, result: { kind: 'exited', code: 0 } });
  const second = (await call(server, 'POST', '/api/jobs/second/execute', {})).body.run.id;
  await consoleEvents(server, first);
  const run = (await call(server, 'GET', `/api/runs/${second}`)).body.run;
  assert.equal(run.status, 'queued', 'the once worker does not take a second run');
});

test('a server shutting down tells its workers (close 4004) and leaves their runs running for re-attach', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t, job);
  await server.close();
  assert.equal((await worker.closed).code, CloseCode.shutdown);
  const reopened = await inProcessServer(t, { dataDir: server.dataDir, reattachGraceMs: 60_000 });
  const run = (await call(reopened, 'GET', `/api/runs/${runId}`)).body.run;
  assert.equal(run.status, 'running', 'still running: its worker may come back');
});
