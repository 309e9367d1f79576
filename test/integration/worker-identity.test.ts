/**
 * A worker is what its credential says: per-worker tokens bind a name, runs remember the identity
 * that took them, and only that identity uploads their artifacts or takes them back. Real server,
 * real SQLite file, fake workers over real WebSockets.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { CloseCode } from '../../src/protocol/index.js';
import type { KilnServer } from '../../src/server/index.js';
import { openStore, type JobStore } from '../../src/store/index.js';
import { call, FakeWorker, helloFrame, inProcessServer } from '../helpers/in-process.js';

const job = { name: 'build', platform: 'testos', script: 'echo hi\n', period: 'never', timeoutMs: 60_000 };
const sha = (text: string) => createHash('sha256').update(text).digest('hex');

/** Creates a per-worker token through the API and returns it. */
async function createToken(server: KilnServer, name: string): Promise<string> {
  const reply = await call(server, 'POST', '/api/worker-tokens', { name });
  assert.equal(reply.status, 201, JSON.stringify(reply.body));
  return reply.body.token;
}

/** Connects with `token`, says hello as `name`, and returns the worker with the server's first answer. */
/**
 * A server whose run was taken by worker w1 (with its own token, or the shared one) and which then
 * closed, leaving the run running for w1 to re-attach.
 */
async function runLeftOnW1(t: TestContext, grace: { reattachGraceMs: number }, credential: 'token' | 'shared') {
  const first = await inProcessServer(t, grace);
  const holder = await FakeWorker.connect(t, first, credential === 'token' ? await createToken(first, 'w1') : undefined);
  await holder.hello({ name: 'w1' });
  await call(first, 'POST', '/api/jobs', job);
  const runId: string = (await call(first, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  await holder.next();
  await first.close();
  return { first, runId };
}

async function helloAs(t: TestContext, server: KilnServer, token: string, name: string, runs: unknown[] = []) {
  const worker = await FakeWorker.connect(t, server, token);
  worker.send(helloFrame({ name, runs }));
  return { worker, answer: await worker.next<{ type: string; code?: string; message?: string; resume?: unknown[]; release?: { runId: string; reason: string }[] }>() };
}

test('worker tokens: created once, listed without the token, stored hashed; the admin alone manages them', async (t) => {
  const server = await inProcessServer(t);
  const token = await createToken(server, 'w1');
  assert.match(token, /^[A-Za-z0-9_-]{43}$/);
  const again = await call(server, 'POST', '/api/worker-tokens', { name: 'w1' });
  assert.equal(again.status, 409);
  assert.equal(again.body.error.code, 'KILN_ERR_WORKER_TOKEN_EXISTS');
  const bad = await call(server, 'POST', '/api/worker-tokens', { name: '../x' });
  assert.equal(bad.body.error.code, 'KILN_ERR_INVALID_REQUEST');
  assert.equal((await call(server, 'POST', '/api/worker-tokens', { name: 'w2' }, server.tokens.worker)).status, 403, 'the worker token cannot make tokens');
  assert.equal((await call(server, 'POST', '/api/worker-tokens', { name: 'w2' }, token)).status, 403, 'nor can a per-worker token');

  const listed = (await call(server, 'GET', '/api/worker-tokens')).body.tokens;
  assert.deepEqual(listed.map((l: Record<string, unknown>) => Object.keys(l).sort()), [['createdAt', 'lastUsedAt', 'name']]);
  assert.equal(listed[0].lastUsedAt, null);
  const { answer } = await helloAs(t, server, token, 'w1');
  assert.equal(answer.type, 'welcome');
  assert.notEqual((await call(server, 'GET', '/api/worker-tokens')).body.tokens[0].lastUsedAt, null, 'last use noted on connect');

  // Only the hash is kept: neither the database nor its log holds the token.
  const stored = ['kiln.db', 'kiln.db-wal'].filter((f) => existsSync(path.join(server.dataDir, f))).map((f) => readFileSync(path.join(server.dataDir, f)));
  assert.ok(stored.length > 0);
  for (const bytes of stored) {
    assert.equal(bytes.includes(token), false, 'the token is not stored');
    assert.ok(stored.some((b) => b.includes(sha(token))), 'its sha256 is');
  }

  const missing = await call(server, 'DELETE', '/api/worker-tokens/nobody');
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'KILN_ERR_WORKER_TOKEN_NOT_FOUND');
});

test('a per-worker token is good for its own name only, and a name with a token is not open to the shared token', async (t) => {
  const server = await inProcessServer(t);
  const tokenA = await createToken(server, 'worker-a');

  const asB = await helloAs(t, server, tokenA, 'worker-b');
  assert.equal(asB.answer.type, 'refused');
  assert.equal(asB.answer.code, 'KILN_ERR_WORKER_IDENTITY');
  assert.match(asB.answer.message!, /the token of worker 'worker-a' may only connect as 'worker-a', not as 'worker-b'/);
  assert.equal((await asB.worker.closed).code, CloseCode.identity);

  const sharedAsA = await helloAs(t, server, server.tokens.worker, 'worker-a');
  assert.equal(sharedAsA.answer.type, 'refused');
  assert.equal(sharedAsA.answer.code, 'KILN_ERR_WORKER_IDENTITY');
  assert.match(sharedAsA.answer.message!, /has its own token/);
  assert.equal((await sharedAsA.worker.closed).code, CloseCode.identity);

  assert.equal((await helloAs(t, server, tokenA, 'worker-a')).answer.type, 'welcome');
  const sharedC = await helloAs(t, server, server.tokens.worker, 'worker-c');
  assert.equal(sharedC.answer.type, 'welcome', 'the shared token still serves free names');

  // Giving a name its own token takes it from a shared-token worker connected under it.
  await createToken(server, 'worker-c');
  const refusal = await sharedC.worker.next<{ type: string; code: string; message: string }>();
  assert.equal(refusal.code, 'KILN_ERR_WORKER_IDENTITY');
  assert.match(refusal.message, /worker 'worker-c' now has its own token/);
  assert.equal((await sharedC.worker.closed).code, CloseCode.identity);
});

test('a revoked token is refused, and the worker connected with it is disconnected', async (t) => {
  const server = await inProcessServer(t);
  const token = await createToken(server, 'w1');
  const { worker, answer } = await helloAs(t, server, token, 'w1');
  assert.equal(answer.type, 'welcome');

  const revoked = await call(server, 'DELETE', '/api/worker-tokens/w1');
  assert.equal(revoked.status, 200);
  assert.equal(revoked.body.disconnected, 1);
  const refusal = await worker.next<{ type: string; code: string; message: string }>();
  assert.equal(refusal.type, 'refused');
  assert.match(refusal.message, /was revoked/);
  assert.equal((await worker.closed).code, CloseCode.revoked);

  await assert.rejects(FakeWorker.connect(t, server, token), /HTTP 401/, 'the socket refuses the revoked token');
  const upload = await fetch(`${server.url}/api/runs/00000000-0000-4000-8000-000000000000/artifacts/f`, { method: 'PUT', headers: { authorization: `Bearer ${token}` } });
  assert.equal(upload.status, 401, 'and so do uploads');
  assert.deepEqual((await call(server, 'GET', '/api/worker-tokens')).body.tokens, []);
});

test('a revoked worker is cut off at once: what it sends after the revoke is not applied, and runs queued after it are not given to it', async (t) => {
  const server = await inProcessServer(t);
  const token = await createToken(server, 'w1');
  const { worker, answer } = await helloAs(t, server, token, 'w1');
  assert.equal(answer.type, 'welcome');
  await call(server, 'POST', '/api/jobs', job);
  const held: string = (await call(server, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  assert.equal((await worker.next<{ run: { id: string } }>()).run.id, held);

  // A peer that does not answer the close (it reads nothing more): left to the close handshake, its
  // connection would stay open, in the dispatcher and listened to, for up to 30 s.
  worker.socket.pause();
  assert.equal((await call(server, 'DELETE', '/api/worker-tokens/w1')).body.disconnected, 1);
  worker.send({ v: 1, type: 'run.output', runId: held, lines: [{ seq: 0, ts: Date.now(), text: 'sent after the revoke' }] });
  worker.send({ v: 1, type: 'run.finished', runId: held, result: { kind: 'exited', code: 0 } });
  await call(server, 'POST', '/api/jobs', { ...job, name: 'later' });
  const later: string = (await call(server, 'POST', '/api/jobs/later/execute', {})).body.run.id;
  worker.socket.resume();
  assert.equal((await worker.closed).code, CloseCode.revoked);
  // Closing the server waits for every frame of every connection to be handled: all of it has been.
  await server.close();

  const store = await openStore(server.dataDir);
  t.after(() => store.close());
  const run = await store.findRun(held);
  assert.deepEqual([run.status, run.worker], ['running', 'w1'], 'the revoked worker\'s result is not applied');
  assert.deepEqual((await store.readConsole(held, -1, 100)).map((line) => line.text), [], 'nor its output');
  const queued = await store.findRun(later);
  assert.equal(queued.status, 'queued', 'a run queued after the revoke is not given to the revoked connection');
  assert.deepEqual((await store.listEvents(later)).map((e) => e.kind), ['queued']);
});

test('a worker revoked while its hello is handled is not welcomed and is given no run', async (t) => {
  // The hello's last store read (the runs the server has on this worker) waits for the test, once armed.
  const gate = { armed: false, entered: undefined as undefined | (() => void), release: Promise.resolve() };
  const reached = new Promise<void>((resolve) => (gate.entered = resolve));
  let open!: () => void;
  gate.release = new Promise((resolve) => (open = resolve));
  const wrap = (store: JobStore): JobStore => new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      if (key !== 'listRunning') return value.bind(target);
      return async (...args: unknown[]) => {
        if (gate.armed) {
          gate.armed = false;
          gate.entered?.();
          await gate.release;
        }
        return value.apply(target, args);
      };
    },
  });
  const server = await inProcessServer(t, { wrapStore: wrap });
  const token = await createToken(server, 'w1');
  await call(server, 'POST', '/api/jobs', job);
  const waiting: string = (await call(server, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  gate.armed = true;
  const worker = await FakeWorker.connect(t, server, token);
  worker.send(helloFrame({ name: 'w1' }));
  await reached;
  assert.equal((await call(server, 'DELETE', '/api/worker-tokens/w1')).body.disconnected, 1);
  open();
  assert.equal((await worker.next<{ type: string }>()).type, 'refused');
  assert.equal((await worker.closed).code, CloseCode.revoked);
  await server.close();

  const store = await openStore(server.dataDir);
  t.after(() => store.close());
  assert.equal((await store.findRun(waiting)).status, 'queued');
  assert.deepEqual((await store.listEvents(waiting)).map((e) => e.kind), ['queued'], 'never dispatched to the revoked worker');
});

test("worker X's credential cannot upload to worker Y's run, whatever it claims; Y's own can", async (t) => {
  const server = await inProcessServer(t);
  const tokenX = await createToken(server, 'x');
  const tokenY = await createToken(server, 'y');
  assert.equal((await helloAs(t, server, tokenX, 'x')).answer.type, 'welcome');
  const y = await FakeWorker.connect(t, server, tokenY);
  await y.hello({ name: 'y', platform: 'yos' });
  await call(server, 'POST', '/api/jobs', { ...job, platform: 'yos' });
  const runId: string = (await call(server, 'POST', '/api/jobs/build/execute', {})).body.run.id;
  assert.equal((await y.next<{ run: { id: string } }>()).run.id, runId, 'y holds the run');

  const put = (token: string, worker: string | undefined, body = 'evil') =>
    fetch(`${server.url}/api/runs/${runId}/artifacts/out.bin`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'x-kiln-sha256': sha(body), 'x-kiln-size': String(body.length),
        ...(worker === undefined ? {} : { 'x-kiln-worker': worker }),
      },
      body,
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error?: { code: string; message: string } } }));

  for (const [what, reply] of [
    ["x's token naming itself", await put(tokenX, 'x')],
    ["x's token naming y", await put(tokenX, 'y')],
    ["x's token naming nobody", await put(tokenX, undefined)],
    ['the shared token naming y', await put(server.tokens.worker, 'y')],
  ] as const) {
    assert.equal(reply.status, 403, `${what}: ${JSON.stringify(reply.body)}`);
    assert.equal(reply.body.error?.code, 'KILN_ERR_WORKER_IDENTITY', what);
  }
  assert.deepEqual((await call(server, 'GET', `/api/runs/${runId}/artifacts`)).body.artifacts, [], 'nothing stored');
  assert.equal((await put(tokenY, 'y', 'good')).status, 201, "y's own token");
  assert.equal((await put(tokenY, undefined, 'good')).status, 201, 'the header is not needed with a bound token');
  assert.deepEqual((await call(server, 'GET', `/api/runs/${runId}/artifacts`)).body.artifacts.map((a: { sha256: string }) => a.sha256), [sha('good')]);
});

test("a disconnected worker's runs are taken back by the same identity only, not by another with the same name", async (t) => {
  const grace = { reattachGraceMs: 60_000 };
  // The server goes away with the run running on w1; its worker is disconnected.
  const { first, runId } = await runLeftOnW1(t, grace, 'token');

  // The name is free of its token now: the shared token may use it, but not take w1's run.
  const second = await inProcessServer(t, { ...grace, dataDir: first.dataDir });
  assert.equal((await call(second, 'DELETE', '/api/worker-tokens/w1')).status, 200);
  const impostor = await helloAs(t, second, second.tokens.worker, 'w1', [{ runId, attempt: 1 }]);
  assert.equal(impostor.answer.type, 'welcome');
  assert.deepEqual(impostor.answer.resume, [], 'not re-attached to another identity');
  assert.deepEqual(impostor.answer.release, [{ runId, reason: "it is held by another credential than this worker's" }]);
  const upload = await fetch(`${second.url}/api/runs/${runId}/artifacts/f`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${second.tokens.worker}`, 'content-type': 'application/octet-stream', 'x-kiln-worker': 'w1', 'x-kiln-sha256': sha('x'), 'x-kiln-size': '1' },
    body: 'x',
  });
  assert.equal(upload.status, 403, 'nor may it upload to it');
  assert.equal((await call(second, 'GET', `/api/runs/${runId}`)).body.run.status, 'running', 'the run still waits for its worker');
  await second.close();

  // A new token for w1 is the same identity (token:w1): its worker takes the run back.
  const third = await inProcessServer(t, { ...grace, dataDir: first.dataDir });
  const renewed = await createToken(third, 'w1');
  const back = await helloAs(t, third, renewed, 'w1', [{ runId, attempt: 1 }]);
  assert.equal(back.answer.type, 'welcome');
  assert.deepEqual(back.answer.resume, [{ runId, afterSeq: -1 }]);
  back.worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  assert.equal((await back.worker.next<{ type: string; applied: boolean }>()).applied, true);
  assert.equal((await call(third, 'GET', `/api/runs/${runId}`)).body.run.status, 'succeeded');
});

test("the shared token's runs go back to the shared token, not to a per-worker token given the name since", async (t) => {
  const grace = { reattachGraceMs: 60_000 };
  const { first, runId } = await runLeftOnW1(t, grace, 'shared');

  const second = await inProcessServer(t, { ...grace, dataDir: first.dataDir });
  const token = await createToken(second, 'w1');
  const other = await helloAs(t, second, token, 'w1', [{ runId, attempt: 1 }]);
  assert.deepEqual(other.answer.resume, [], 'a different identity under the same name');
  await second.close();

  const third = await inProcessServer(t, { ...grace, dataDir: first.dataDir });
  assert.equal((await call(third, 'DELETE', '/api/worker-tokens/w1')).status, 200);
  const same = await helloAs(t, third, third.tokens.worker, 'w1', [{ runId, attempt: 1 }]);
  assert.deepEqual(same.answer.resume, [{ runId, afterSeq: -1 }], 'the shared identity takes its own run back');
});
