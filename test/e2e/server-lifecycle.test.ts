/**
 * The server keeps serving and stops cleanly (issue 12, items 10, 11 and 14): a log it cannot
 * write does not end it; one data dir, one server; a port in use ends it at once without touching
 * the store; SIGHUP is a clean stop for the server, the worker and `kiln up`; a client whose
 * reader closed the pipe ends quietly.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test, type TestContext } from 'node:test';
import { api, firstLine, followRun, freePort, KILN_BIN, kiln, killGroup, spawnKiln, startServer, startWorker, tempDir, type Owned } from '../helpers/processes.js';

const never = ['--platform', 'testos', '--period', 'never'];

/** Resolves true once `owned` prints its listening line, false if it exits first. */
function startsServing(owned: Owned): Promise<boolean> {
  return owned.waitFor(/kiln server listening/).then(() => true, () => false);
}

/** A job that runs until `gate` exists, and writes its shell's pid (its process group) to `pidFile`. */
const gatedScript = (gate: string, pidFile: string) => `echo $$ > ${pidFile}; echo started; while [ ! -e ${gate} ]; do sleep 0.05; done; echo done`;

test('a server whose log cannot be written (ENOSPC) keeps serving, and still stops cleanly', async (t) => {
  const dataDir = tempDir(t);
  const port = await freePort();
  const full = openSync('/dev/full', 'w');
  const child = spawn(process.execPath, [KILN_BIN, 'server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], {
    // debug: every request and every step is a log line, each one a failed write.
    env: { ...process.env, KILN_LOG_LEVEL: 'debug' },
    stdio: ['ignore', 'ignore', full],
  });
  closeSync(full);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const url = `http://127.0.0.1:${port}`;
  // Nothing it prints can be read (that is the point), so its port is the only sign it is up.
  let up = false;
  for (let attempt = 0; attempt < 600 && !up; attempt += 1) {
    if (child.exitCode !== null || child.signalCode !== null) assert.fail(`the server exited (${child.exitCode ?? child.signalCode}) before serving`);
    up = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (!up) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(up, 'the server answers /healthz');
  const adminToken = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const server = { url, adminToken };

  // Hundreds of log lines, every one of them refused by the disk.
  for (let i = 0; i < 300; i += 1) {
    const refused = await fetch(`${url}/api/jobs`, { headers: { authorization: 'Bearer wrong' } });
    assert.equal(refused.status, 401);
  }
  for (let i = 0; i < 20; i += 1) await api(server, 'POST', '/api/jobs', { name: `job-${i}`, platform: 'testos', script: 'true', period: 'never' });
  assert.equal((await api<{ jobs: unknown[] }>(server, 'GET', '/api/jobs')).jobs.length, 20);
  assert.equal((await fetch(`${url}/healthz`)).status, 200);
  assert.equal(child.exitCode, null, 'still running');

  child.kill('SIGTERM');
  assert.equal(await exited, 0);
});

test('a second server on the same data dir exits 2 naming the holder; the first keeps its run; after a SIGKILL a new one starts', async (t) => {
  const first = await startServer(t);
  await startWorker(t, first, ['--platform', 'testos']);
  const dir = tempDir(t);
  const gate = path.join(dir, 'go');
  const pidFile = path.join(dir, 'job.pid');
  assert.equal((await kiln(first, ['schedule', 'held', '--command', gatedScript(gate, pidFile), ...never])).code, 0);
  const runId = (await kiln(first, ['execute', 'held'])).stdout.trim();
  await firstLine(first, runId);

  // A short grace: the old second server's re-attach timer ended the first one's run `lost`.
  const second = spawnKiln(t, ['server', '--listen', `127.0.0.1:${await freePort()}`, '--data', first.dataDir, '--reattach-grace', '1s']);
  const serving = startsServing(second);
  if (await Promise.race([second.exited.then(() => false), serving])) assert.fail('the second server started on the same data dir');
  assert.equal((await second.exited).code, 2);
  assert.equal(second.stderr.length, 1, second.stderr.join('\n'));
  assert.match(second.stderr[0]!, new RegExp(`^kiln: the data dir ${first.dataDir} is in use by the server pid ${first.pid} on host \\S+ \\(since \\d{4}-\\d\\d-\\d\\dT[^)]+\\); stop that server first or give it another --data \\(or --store\\)$`));

  // The first server goes on as if nothing happened.
  writeFileSync(gate, '');
  const { run } = await followRun(first, runId);
  assert.equal(run.status, 'succeeded');
  assert.equal((await kiln(first, ['jobs', '--json'])).code, 0);

  // A SIGKILL leaves no lock behind: the kernel released it with the process.
  await first.kill('SIGKILL');
  const next = await startServer(t, { dataDir: first.dataDir });
  assert.equal(JSON.parse((await kiln(next, ['show', runId, '--json'])).stdout).run.status, 'succeeded');
});

test('two servers with their own data dirs cannot share one --store sqlite: file', async (t) => {
  const store = path.join(tempDir(t), 'shared.db');
  const first = await startServer(t, { args: ['--store', `sqlite:${store}`] });
  const second = spawnKiln(t, ['server', '--listen', `127.0.0.1:${await freePort()}`, '--data', tempDir(t), '--store', `sqlite:${store}`]);
  if (await Promise.race([second.exited.then(() => false), startsServing(second)])) assert.fail('the second server started on the same store');
  assert.equal((await second.exited).code, 2);
  assert.match(second.stderr.join('\n'), new RegExp(`^kiln: the store ${store} is in use by the server pid ${first.pid} on host \\S+`));
  assert.equal((await kiln(first, ['jobs', '--json'])).code, 0, 'the first server goes on');
});

test('a server whose port is taken exits non-zero at once, without ending the runs it found running', async (t) => {
  // A run left `running` in the store by a server that died while its worker ran the job.
  const first = await startServer(t);
  const worker = await startWorker(t, first, ['--platform', 'testos']);
  const dir = tempDir(t);
  const pidFile = path.join(dir, 'job.pid');
  assert.equal((await kiln(first, ['schedule', 'orphan', '--command', gatedScript(path.join(dir, 'never'), pidFile), ...never])).code, 0);
  const runId = (await kiln(first, ['execute', 'orphan'])).stdout.trim();
  await firstLine(first, runId);
  await first.kill('SIGKILL');
  await worker.kill('SIGKILL');
  killGroup(Number(readFileSync(pidFile, 'utf8'))); // --sandbox none leaves the job behind a SIGKILLed worker

  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.after(() => taken.close());
  const port = (taken.address() as net.AddressInfo).port;
  // With a 1 s grace, a server that lingered after failing to listen would end the run `lost`.
  const blocked = spawnKiln(t, ['server', '--listen', `127.0.0.1:${port}`, '--data', first.dataDir, '--reattach-grace', '1s']);
  const { code } = await blocked.exited;
  assert.equal(code, 1);
  assert.equal(blocked.stderr.at(-1), `kiln: cannot listen on 127.0.0.1:${port}: the address is already in use (EADDRINUSE): stop what listens there or give --listen another port`);

  const next = await startServer(t, { dataDir: first.dataDir, args: ['--reattach-grace', '10m'] });
  assert.equal(JSON.parse((await kiln(next, ['show', runId, '--json'])).stdout).run.status, 'running', 'still waiting for its worker, not lost');
});

test('SIGHUP stops the server cleanly (exit 0, its data intact), and a worker and kiln up too', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'kept', '--command', 'echo kept', ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'kept'])).stdout.trim();
  assert.equal((await followRun(server, runId)).run.status, 'succeeded');

  worker.child.kill('SIGHUP');
  assert.deepEqual(await worker.exited, { code: 0, signal: null });
  assert.match(worker.stderr.join('\n'), /stopping: no more runs/);

  const since = server.stderr.length;
  server.child.kill('SIGHUP');
  assert.deepEqual(await server.exited, { code: 0, signal: null });
  const said = server.stderr.slice(since).map((line) => JSON.parse(line) as { msg: string; signal?: string });
  assert.deepEqual(said.filter((line) => line.signal === 'SIGHUP').map((line) => line.msg), ['shutting down (a second signal exits at once)', 'kiln server stopped']);

  const restarted = await startServer(t, { dataDir: server.dataDir });
  assert.equal(JSON.parse((await kiln(restarted, ['show', runId, '--json'])).stdout).run.status, 'succeeded');
  assert.deepEqual(JSON.parse((await kiln(restarted, ['jobs', '--json'])).stdout).jobs.map((j: { name: string }) => j.name), ['kept']);
  await restarted.kill('SIGTERM');

  const up = spawnKiln(t, ['up', '--data', tempDir(t), '--listen', `127.0.0.1:${await freePort()}`]);
  await up.waitFor(/^Kiln is up at /);
  up.child.kill('SIGHUP');
  assert.deepEqual(await up.exited, { code: 0, signal: null });
});

/** Runs `kiln ARGS`, reads the first line of its stdout, then closes the pipe; resolves with how it ended. */
function readFirstLineAndClose(server: { url: string; adminToken: string }, args: string[]): Promise<{ first: string; code: number | null; signal: string | null; stderr: string }> {
  const child = spawn(process.execPath, [KILN_BIN, ...args], {
    env: { ...process.env, KILN_SERVER: server.url, KILN_TOKEN: server.adminToken },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  return new Promise((resolve) => {
    let first = '';
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      first = line;
      lines.close();
      child.stdout.destroy(); // what `head -1` does after its line
    });
    child.once('close', (code, signal) => resolve({ first, code, signal, stderr }));
  });
}

test('a client whose stdout reader goes away (| head -1) ends quietly with exit 0', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos']);
  // About 1 MB of console: far more than a pipe holds, so the client is still writing when the pipe closes.
  assert.equal((await kiln(server, ['schedule', 'chatty', '--command', "seq 1 20000 | sed 's/$/ a line of console output, long enough to fill pipes/'", ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'chatty'])).stdout.trim();
  assert.equal((await followRun(server, runId)).run.status, 'succeeded');

  for (const args of [['logs', runId], ['observe', runId], ['logs', runId, '--json']]) {
    const { first, code, signal, stderr } = await readFirstLineAndClose(server, args);
    assert.match(first, /^(\{.*)?1( a line|,)/, `${args.join(' ')}: the first line came`);
    assert.equal(stderr, '', `${args.join(' ')}: nothing on stderr (no EPIPE stack trace)`);
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, args.join(' '));
  }
});
