/**
 * Execute next to an idle worker: the run is queued and claimed for that worker in one commit and
 * sent before the answer (bench/execute-latency.ts shows why); without one, it is queued and a
 * dispatch pass hands it out when a worker can take it. Real server, fake worker, real WebSocket.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { JobStore } from '../../src/store/index.js';
import { call, consoleEvents, FakeWorker, inProcessServer, testJob } from '../helpers/in-process.js';

/** The store, counting the calls of the queueing and claiming methods. */
function counting() {
  const calls = { enqueue: 0, enqueueAndClaim: 0, claimNext: 0 };
  const wrap = (store: JobStore): JobStore => new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      if (typeof key === 'string' && key in calls) calls[key as keyof typeof calls] += 1;
      return value.bind(target);
    },
  });
  return { calls, wrap };
}

test('execute next to an idle worker commits the queueing and the claim at once: the answer says the run is running there, no claim follows', async (t) => {
  const store = counting();
  const server = await inProcessServer(t, { wrapStore: store.wrap });
  const worker = await FakeWorker.connect(t, server);
  await worker.hello();
  await call(server, 'POST', '/api/jobs', testJob);
  Object.assign(store.calls, { enqueue: 0, enqueueAndClaim: 0, claimNext: 0 });

  const answer = await call(server, 'POST', `/api/jobs/${testJob.name}/execute`, {});
  assert.equal(answer.status, 201);
  assert.equal(answer.body.run.status, 'running');
  assert.equal(answer.body.run.worker, 'fake-1');
  const assign = await worker.next<{ type: string; run: { id: string; script: string } }>();
  assert.equal(assign.type, 'run.assign');
  assert.equal(assign.run.id, answer.body.run.id);
  assert.equal(assign.run.script, testJob.script);
  assert.deepEqual(store.calls, { enqueue: 0, enqueueAndClaim: 1, claimNext: 0 });

  const { events } = (await call(server, 'GET', `/api/runs/${assign.run.id}/events`)).body as { events: { kind: string }[] };
  assert.deepEqual(events.map((e) => e.kind), ['queued', 'dispatched']);
  worker.send({ v: 1, type: 'run.finished', runId: assign.run.id, result: { kind: 'exited', code: 0 } });
  assert.equal((await consoleEvents(server, assign.run.id)).at(-1).run.status, 'succeeded');
});

test('execute with no worker free to take it only queues the run; it goes out once the worker is free', async (t) => {
  const server = await inProcessServer(t);
  const worker = await FakeWorker.connect(t, server);
  await worker.hello({ capacity: 1 });
  await call(server, 'POST', '/api/jobs', testJob);
  await call(server, 'POST', '/api/jobs', { ...testJob, name: 'second' });
  await call(server, 'POST', '/api/jobs', { ...testJob, name: 'elsewhere', platform: 'otheros' });
  await call(server, 'POST', '/api/jobs', { ...testJob, name: 'gpu', labels: { gpu: 'yes' } });

  const first = (await call(server, 'POST', `/api/jobs/${testJob.name}/execute`, {})).body.run;
  assert.equal(first.status, 'running');
  await worker.next();
  // The worker is full, on another platform, or lacks the label: these wait in the queue.
  for (const name of ['second', 'elsewhere', 'gpu']) {
    const answer = await call(server, 'POST', `/api/jobs/${name}/execute`, {});
    assert.equal(answer.status, 201);
    assert.equal(answer.body.run.status, 'queued', name);
    assert.equal(answer.body.run.worker, null, name);
  }
  worker.send({ v: 1, type: 'run.finished', runId: first.id, result: { kind: 'exited', code: 0 } });
  const next = await worker.next<{ type: string; run?: { job: string } }>();
  const assign = next.type === 'run.done' ? await worker.next<{ type: string; run?: { job: string } }>() : next;
  assert.equal(assign.type, 'run.assign');
  assert.equal(assign.run?.job, 'second');
});

test('two executes at once next to one free slot: one run is sent, the other waits queued (never two on a capacity-1 worker)', async (t) => {
  const server = await inProcessServer(t);
  const worker = await FakeWorker.connect(t, server);
  await worker.hello({ capacity: 1 });
  await call(server, 'POST', '/api/jobs', testJob);
  await call(server, 'POST', '/api/jobs', { ...testJob, name: 'second' });
  const answers = await Promise.all([testJob.name, 'second'].map((name) => call(server, 'POST', `/api/jobs/${name}/execute`, {})));
  const statuses = answers.map((a) => a.body.run.status).sort();
  assert.deepEqual(statuses, ['queued', 'running']);
  const assign = await worker.next<{ type: string; run: { id: string } }>();
  assert.equal(assign.run.id, answers.find((a) => a.body.run.status === 'running')!.body.run.id);
  const running = (await call(server, 'GET', '/api/runs?status=running')).body.runs as unknown[];
  assert.equal(running.length, 1);
});

test('a farm of idle workers of one kind costs a pass one claim, not one per worker (the registry indexes kinds)', async (t) => {
  const store = counting();
  const server = await inProcessServer(t, { wrapStore: store.wrap });
  await call(server, 'POST', '/api/jobs', testJob);
  const workers: FakeWorker[] = [];
  // Each welcome kicks a pass; before the index, each pass asked the store once per connected worker.
  for (let i = 0; i < 40; i += 1) {
    const worker = await FakeWorker.connect(t, server);
    await worker.hello({ name: `idle-${i}` });
    workers.push(worker);
  }
  const answer = await call(server, 'POST', `/api/jobs/${testJob.name}/execute`, {});
  assert.equal(answer.status, 201);
  const runId = answer.body.run.id as string;
  // Sent to one of them, directly or by a pass.
  const [assign, holder] = await Promise.race(workers.map(async (w) => [await w.next<{ type: string; run: { id: string } }>(), w] as const));
  assert.equal(assign.run.id, runId);
  holder.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  assert.equal((await consoleEvents(server, runId)).at(-1).run.status, 'succeeded');
  // 40 joins: about one claim each (the pass they kick asks the one kind once), not 40 x 41 / 2.
  assert.ok(store.calls.claimNext <= 100, `${store.calls.claimNext} claims`);
});
