/**
 * Worker failover with real processes (issue 16, item 2): a worker given several servers
 * (`--server A,B`) connects to the first that answers, and after losing one connects to the next
 * at once. Each server here has its own SQLite store (sharing one needs PostgreSQL and several
 * servers, proven by the cluster fault test): these tests prove the rotation, not re-attach across
 * servers, which is the same re-attach as with one server coming back.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { followRun, freePort, kiln, spawnKiln, startServer, tempDir, type Owned, type ServerProcess } from '../helpers/processes.js';

const never = ['--platform', 'testos', '--period', 'never'];
/** The worker's log line on a welcome (not its 'not connected to the server' line). */
const CONNECTED = /"msg":"connected to the server"/;

/** The worker's JSON log lines with this message. */
function logged(worker: Owned, msg: string): Record<string, unknown>[] {
  return worker.stderr.flatMap((line) => {
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      return entry.msg === msg ? [entry] : [];
    } catch {
      return [];
    }
  });
}

/** A second server that takes the first one's worker token (its data dir seeded with the token file). */
async function serverSharingToken(t: TestContext, first: ServerProcess): Promise<ServerProcess> {
  const dataDir = tempDir(t);
  mkdirSync(dataDir, { recursive: true });
  copyFileSync(path.join(first.dataDir, 'worker.token'), path.join(dataDir, 'worker.token'));
  return startServer(t, { dataDir });
}

function startWorker(t: TestContext, servers: string[], token: string): Owned {
  return spawnKiln(t, ['worker', '--server', servers.join(','), '--platform', 'testos', '--name', 'failover-w'], { KILN_WORKER_TOKEN: token });
}

test('--server DEAD,LIVE: the worker moves past the dead server at once, connects to the live one and runs a job there', async (t) => {
  const live = await startServer(t);
  const dead = `http://127.0.0.1:${await freePort()}`;
  const worker = startWorker(t, [dead, live.url], live.workerToken);
  await worker.waitFor(CONNECTED);
  const [connected] = logged(worker, 'connected to the server');
  assert.equal(connected!.server, live.url);
  const [refused] = logged(worker, 'not connected to the server; retrying (running jobs go on)');
  assert.equal(refused!.server, dead);
  assert.equal(refused!.next, live.url);
  assert.equal(refused!.retryInMs, 0, 'the next server is tried at once, not after the backoff');

  assert.equal((await kiln(live, ['schedule', 'hello', '--command', 'echo hello from B', ...never])).code, 0);
  const run = await followRun(live, (await kiln(live, ['execute', 'hello'])).stdout.trim());
  assert.deepEqual(run.lines, ['hello from B']);
  assert.equal(run.run.status, 'succeeded');
});

test('--server A,B: A killed while the worker is idle on it, the worker ends up connected to B at once', async (t) => {
  const a = await startServer(t);
  const b = await serverSharingToken(t, a);
  const worker = startWorker(t, [a.url, b.url], a.workerToken);
  await worker.waitFor(CONNECTED);
  assert.equal(logged(worker, 'connected to the server')[0]!.server, a.url);
  const since = worker.stderr.length;
  await a.kill('SIGKILL');
  await worker.waitFor(CONNECTED, since);
  const connected = logged(worker, 'connected to the server');
  assert.equal(connected.at(-1)!.server, b.url);
  const [lost] = logged(worker, 'not connected to the server; retrying (running jobs go on)');
  assert.equal(lost!.server, a.url);
  assert.equal(lost!.next, b.url);
  assert.equal(lost!.retryInMs, 0, 'B is tried at once, before any backoff');

  // B serves it: a job executed on B runs on this worker.
  assert.equal((await kiln(b, ['schedule', 'hello', '--command', 'echo on B', ...never])).code, 0);
  const run = await followRun(b, (await kiln(b, ['execute', 'hello'])).stdout.trim());
  assert.deepEqual(run.lines, ['on B']);
});

test('a bad entry in --server is a usage error naming it', async (t) => {
  const worker = spawnKiln(t, ['worker', '--server', 'http://127.0.0.1:1,,'], { KILN_WORKER_TOKEN: 'x' });
  const { code } = await worker.exited;
  assert.equal(code, 2);
  assert.match(worker.stderr.join('\n'), /bad server list/);
});
