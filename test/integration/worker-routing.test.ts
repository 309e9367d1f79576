/**
 * What another server sharing the database asks of this one's workers, played on this server's
 * bus as the feed bridge publishes it (`remote: true`): a cut of a worker connected here (its
 * token revoked there, its name given its own token there), a cancel of a run whose worker is
 * here, a resync that finds a run queued elsewhere for an idle worker here. And the other way: a
 * cut decided here goes out as `worker.cut` for the server holding the connection.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CloseCode } from '../../src/protocol/index.js';
import type { KilnEvents } from '../../src/server/events.js';
import type { KilnServer } from '../../src/server/index.js';
import type { JobStore } from '../../src/store/index.js';
import { call, FakeWorker, helloFrame, inProcessServer, runOnFakeWorker } from '../helpers/in-process.js';

const T0 = 1_700_000_000_000;

/** `promise`, or a failure saying `what` did not happen within `ms` (a bound on a wait, not a sleep). */
function within<T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function createToken(server: KilnServer, name: string): Promise<string> {
  const reply = await call(server, 'POST', '/api/worker-tokens', { name });
  assert.equal(reply.status, 201, JSON.stringify(reply.body));
  return reply.body.token;
}

test('a token revoked on another server: its worker connected here is cut (revoked); a revoke here publishes worker.cut for the others', async (t) => {
  const server = await inProcessServer(t);
  const token = await createToken(server, 'w1');
  const worker = await FakeWorker.connect(t, server, token);
  await worker.hello({ name: 'w1' });
  const bystander = await FakeWorker.connect(t, server);
  await bystander.hello({ name: 'w2' });

  server.events.publish('worker.cut', { name: 'w1', identity: 'token:w1', reason: "the token of worker 'w1' was revoked: kiln worker-token revoke", remote: true });
  const refusal = await within(worker.next<{ type: string; code: string; message: string }>(), 'the worker is told');
  assert.equal(refusal.type, 'refused');
  assert.equal(refusal.code, 'KILN_ERR_UNAUTHORIZED');
  assert.match(refusal.message, /was revoked/);
  assert.equal((await within(worker.closed, 'the connection closes')).code, CloseCode.revoked);
  assert.equal(bystander.socket.readyState, bystander.socket.OPEN, 'another identity is not cut');

  // Revoked here: the cut goes out for the server that may hold the connection.
  await createToken(server, 'w3');
  const heard: KilnEvents['worker.cut'][] = [];
  server.events.on('worker.cut', (cut) => heard.push(cut));
  assert.equal((await call(server, 'DELETE', '/api/worker-tokens/w3')).status, 200);
  assert.deepEqual(heard, [{ name: 'w3', identity: 'token:w3', reason: "the token of worker 'w3' was revoked: kiln worker-token revoke" }]);
});

test('a name given its own token on another server: a shared-token worker under it here is cut, the token\'s own is spared', async (t) => {
  const server = await inProcessServer(t);
  const shared = await FakeWorker.connect(t, server);
  await shared.hello({ name: 'wc' });
  const heard: KilnEvents['worker.cut'][] = [];
  server.events.on('worker.cut', (cut) => heard.push(cut));

  server.events.publish('worker.cut', { name: 'wc', keep: 'token:wc', reason: "worker 'wc' now has its own token (kiln worker-token create): only that token may use the name", remote: true });
  const refusal = await within(shared.next<{ type: string; code: string; message: string }>(), 'the shared-token worker is told');
  assert.equal(refusal.code, 'KILN_ERR_WORKER_IDENTITY');
  assert.match(refusal.message, /now has its own token/);
  assert.equal((await within(shared.closed, 'its connection closes')).code, CloseCode.identity);

  // The token's own worker is spared by a cut naming its identity as the one to keep.
  const token = await createToken(server, 'wd');
  assert.deepEqual(heard.at(-1), { name: 'wd', keep: 'token:wd', reason: "worker 'wd' now has its own token (kiln worker-token create): only that token may use the name" },
    'giving a name its own token here publishes the cut for the others');
  const own = await FakeWorker.connect(t, server, token);
  await own.hello({ name: 'wd' });
  server.events.publish('worker.cut', { name: 'wd', keep: 'token:wd', reason: 'again', remote: true });
  // A frame that needs an answer: the worker is still served (a cut would have refused and closed it).
  own.send(helloFrame({ name: 'wd' }));
  const answer = await within(own.next<{ type: string }>(), 'the spared worker still answered');
  assert.equal(answer.type, 'error');
  assert.equal(own.socket.readyState, own.socket.OPEN);
});

test('a cancel requested on another server reaches the run\'s worker connected here', async (t) => {
  const { server, worker, runId } = await runOnFakeWorker(t);
  server.events.publish('run.cancel-requested', { run: { id: runId, worker: 'fake-1' } as never, reason: 'cancelled by admin on server A', remote: true });
  const cancel = await within(worker.next<{ type: string; runId: string; reason: string }>(), 'the worker is asked to cancel');
  assert.deepEqual({ type: cancel.type, runId: cancel.runId, reason: cancel.reason }, { type: 'run.cancel', runId, reason: 'cancelled by admin on server A' });
});

test('a run queued by another server whose event was missed is given to an idle worker here on feed.resync', async (t) => {
  let store!: JobStore;
  const server = await inProcessServer(t, { wrapStore: (opened) => (store = opened) });
  const worker = await FakeWorker.connect(t, server);
  await worker.hello();
  // Queued straight in the store, as another server would: no event here.
  const runId = '00000000-0000-4000-8000-0000000000a1';
  await store.createJob({
    name: 'elsewhere', platform: 'testos', script: 'true', env: {}, labels: {}, template: null, vars: {}, schedule: { kind: 'period', period: 'never' },
    paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null, timeoutMs: 60_000, idleTimeoutMs: null, retries: 0,
    failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {}, nextAt: null, createdAt: T0, updatedAt: T0,
  }, [{ id: runId, job: 'elsewhere', platform: 'testos', labels: {}, queuedAt: T0 }]);
  server.events.publish('feed.resync', {});
  const assign = await within(worker.next<{ type: string; run: { id: string } }>(), 'the run is dispatched');
  assert.equal(assign.type, 'run.assign');
  assert.equal(assign.run.id, runId);
});
