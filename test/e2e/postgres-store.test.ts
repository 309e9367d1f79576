/**
 * `kiln server --store postgres://...` with real processes: a server on its own fresh schema, a
 * worker and the CLI; the server SIGKILLed mid-run and restarted (from `store:` in a config file)
 * loses nothing it acknowledged; a bad URL, a refused connection and a missing database stop it
 * with one line. The connection holding its schema lock killed: it takes the lock back, or, when
 * another client took it meanwhile or PostgreSQL stays out of reach past --lock-retake, stops with
 * one line.
 */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import pg from 'pg';
import { adminQuery, freshSchema, POSTGRES_URL } from '../helpers/postgres.js';
import { firstLine, followRun, kiln, spawnKiln, startProxy, startServer, startWorker, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const skip = needs('postgres');
const never = ['--platform', 'testos', '--period', 'never'];

test('a server on PostgreSQL schedules, runs and keeps consoles; SIGKILLed mid-run and restarted, it has lost nothing it acknowledged', { skip }, async (t) => {
  const { schema, url } = await freshSchema(t);
  const server = await startServer(t, { args: ['--store', url] });
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  const dir = tempDir(t);

  // A run through: schedule, execute, console, result.
  assert.equal((await kiln(server, ['schedule', 'build', '--command', 'echo first; echo second >&2; exit 3', ...never])).code, 0);
  const built = (await kiln(server, ['execute', 'build'])).stdout.trim();
  const observed = await kiln(server, ['observe', built]);
  assert.equal(observed.code, 1, observed.stderr);
  assert.match(observed.stdout, /^first\nsecond\nkiln: run .* failed: exited 3\n$/);

  // Acknowledged before the kill: a running run (it waits for the test), a queued one (no worker for its platform), a scheduled job.
  const script = `echo before; while [ ! -e ${dir}/go ]; do sleep 0.05; done; echo after`;
  assert.equal((await kiln(server, ['schedule', 'steady', '--command', script, ...never])).code, 0);
  const steady = (await kiln(server, ['execute', 'steady'])).stdout.trim();
  await worker.waitFor(/run started/);
  assert.equal((await kiln(server, ['schedule', 'elsewhere', '--command', 'true', '--platform', 'otheros', '--period', 'daily'])).code, 0);
  const queued = JSON.parse((await kiln(server, ['runs', '--job', 'elsewhere', '--json'])).stdout).runs;
  assert.deepEqual(queued.map((r: { status: string }) => r.status), ['queued']);

  await server.kill('SIGKILL');
  const mark = worker.stderr.length;
  await worker.waitFor(/not connected to the server/, mark);
  writeFileSync(`${dir}/go`, '');
  // Restarted from a config file's `store:`, on the same data dir and port.
  const config = path.join(dir, 'kiln.yaml');
  writeFileSync(config, `store: "${url}"\n`);
  const restarted = await startServer(t, { dataDir: server.dataDir, port: Number(new URL(server.url).port), args: ['--config', config] });
  await worker.waitFor(/"resumed":1.*connected to the server/, mark);

  const { lines, run } = await followRun(restarted, steady);
  assert.equal(run.status, 'succeeded');
  assert.deepEqual(lines, ['before', 'after'], 'the run carried on across the crash, no line lost or doubled');
  const logs = await kiln(restarted, ['logs', built]);
  assert.equal(logs.stdout, 'first\nsecond\n');
  const jobs = JSON.parse((await kiln(restarted, ['jobs', '--json'])).stdout).jobs.map((j: { name: string }) => j.name).sort();
  assert.deepEqual(jobs, ['build', 'elsewhere', 'steady']);
  assert.deepEqual(JSON.parse((await kiln(restarted, ['runs', '--job', 'elsewhere', '--json'])).stdout).runs.map((r: { id: string }) => r.id), queued.map((r: { id: string }) => r.id));

  // It was PostgreSQL that kept it all: the runs are in the schema, and no SQLite file was made.
  assert.equal(Number((await adminQuery(`SELECT COUNT(*) AS n FROM ${schema}.runs`)).rows[0].n), 3);
  assert.equal(existsSync(path.join(server.dataDir, 'kiln.db')), false);
});

test("PostgreSQL dropping the server's connections mid-run ends neither the server nor the run", { skip }, async (t) => {
  const { schema, url } = await freshSchema(t);
  const named = new URL(url);
  named.searchParams.set('application_name', schema);
  const server = await startServer(t, { args: ['--store', named.toString()] });
  await startWorker(t, server, ['--platform', 'testos']);
  const dir = tempDir(t);
  const script = `echo before; while [ ! -e ${dir}/go ]; do sleep 0.05; done; echo after`;
  assert.equal((await kiln(server, ['schedule', 'steady', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'steady'])).stdout.trim();
  await firstLine(server, runId);

  const mark = server.stderr.length;
  const dropped = await adminQuery(`SELECT pg_terminate_backend(pid, 10000) AS gone FROM pg_stat_activity WHERE application_name = '${schema}'`);
  assert.ok(dropped.rows.length > 0 && dropped.rows.every((row) => row.gone === true), 'the server had connections, and each was ended');
  await server.waitFor(/a PostgreSQL connection was lost/, mark);
  writeFileSync(`${dir}/go`, '');

  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded');
  assert.deepEqual(lines, ['before', 'after']);
  assert.equal(server.child.exitCode, null, 'the server is still running');
});

/** The backend holding the schema lock (shared: the server's presence connection) of the servers named `name` (application_name), if one does. */
async function lockBackend(name: string): Promise<number | undefined> {
  const { rows } = await adminQuery(`
    SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = x'4b535256'::int::oid AND a.application_name = '${name}'`);
  assert.ok(rows.length <= 1, JSON.stringify(rows));
  return rows[0]?.pid as number | undefined;
}

/** Asserts the server exited 1 with one `kiln:` line, the last it printed, matching `line`. */
async function stoppedWith(server: ServerProcess, line: RegExp): Promise<void> {
  const { code } = await server.exited;
  assert.equal(code, 1, server.stderr.join('\n'));
  const said = server.stderr.filter((l) => l.startsWith('kiln: '));
  assert.equal(said.length, 1, server.stderr.join('\n'));
  assert.equal(server.stderr.at(-1), said[0]);
  assert.match(said[0]!, line);
}

test("the connection holding the server's schema lock killed: the server takes the lock back and serves on", { skip }, async (t) => {
  const { schema, url } = await freshSchema(t);
  const named = new URL(url);
  named.searchParams.set('application_name', schema);
  const server = await startServer(t, { args: ['--store', named.toString()] });
  const before = await lockBackend(schema);
  assert.ok(before !== undefined, 'the server holds its lock');

  const mark = server.stderr.length;
  await adminQuery(`SELECT pg_terminate_backend(${before}, 10000)`);
  await server.waitFor(/took this server's presence on the store back/, mark);
  const after = await lockBackend(schema);
  assert.ok(after !== undefined && after !== before, 'held again, on a new connection');
  assert.equal((await kiln(server, ['schedule', 'after', '--command', 'true', ...never])).code, 0);
  assert.equal(server.child.exitCode, null, 'the server is still running');
});

test("kiln migrate-store (another client) takes the schema lock exclusively while the server's connection holding it shared is gone: the server stops with one line, exit 1", { skip, timeout: 60_000 }, async (t) => {
  const { schema, url } = await freshSchema(t);
  const named = new URL(url);
  named.searchParams.set('application_name', schema);
  const server = await startServer(t, { args: ['--store', named.toString()] });
  const before = await lockBackend(schema);
  assert.ok(before !== undefined);
  // Frozen, the server cannot take the lock back before the other client has it.
  process.kill(server.pid, 'SIGSTOP');
  t.after(() => server.child.exitCode === null && process.kill(server.pid, 'SIGCONT'));
  await adminQuery(`SELECT pg_terminate_backend(${before}, 10000)`);
  const other = new pg.Client({ connectionString: url, application_name: 'the other holder' });
  await other.connect();
  t.after(() => other.end());
  const taken = await other.query("SELECT pg_try_advisory_lock(x'4b535256'::int, hashtext(current_schema())) AS got");
  assert.equal(taken.rows[0].got, true);
  process.kill(server.pid, 'SIGCONT');
  await stoppedWith(server, /^kiln: this server's hold on the store \S+ was lost: the other holder \(since [^)]+\) holds the store exclusively \(kiln migrate-store\); stopping rather than act on what it may no longer hold$/);
});

test('PostgreSQL out of reach for longer than --lock-retake: the server stops with one line, exit 1', { skip, timeout: 60_000 }, async (t) => {
  const { url } = await freshSchema(t);
  const proxy = await startProxy(t, Number(new URL(POSTGRES_URL).port || 5432));
  const through = new URL(url);
  through.host = `127.0.0.1:${proxy.port}`;
  const server = await startServer(t, { args: ['--store', through.toString(), '--lock-retake', '1s'] });
  const mark = server.stderr.length;
  proxy.cut();
  await server.waitFor(/could not take this server's presence on the store back; trying again/, mark);
  await stoppedWith(server, /^kiln: this server's hold on the store \S+ was lost: it could not be taken back within 1s \(the store \S+ cannot be used: [^)]+\); stopping rather than/);
});

// Issue 16: a second server on the same schema was refused here; several servers now share one
// (test/e2e/cluster.test.ts), and only `kiln migrate-store` is refused beside them (migrate-store.test.ts).

test('a bad store URL, a refused connection and a missing database stop the server with one line and an exit code', { skip }, async (t) => {
  const dir = tempDir(t);
  const missing = new URL(POSTGRES_URL);
  missing.pathname = `/kiln_missing_${process.pid}`;
  const cases: [string, number, RegExp][] = [
    ['postgres://kiln:secret@/kiln', 2, /^kiln: bad store URL postgres:\/\/\*\*\*@\/kiln: not a URL/],
    ['postgres:///kiln', 2, /^kiln: bad store URL postgres:\/\/\/kiln: it names no host/],
    [`${POSTGRES_URL}?options=-c%20search_path%3Dkiln_no_such_schema`, 2, /has no schema to use/],
    ['postgres://kiln:secret@127.0.0.1:1/kiln', 1, /^kiln: the store postgres:\/\/kiln@127\.0\.0\.1:1\/kiln cannot be used: connect ECONNREFUSED/],
    [missing.toString(), 1, /cannot be used: database "kiln_missing_\d+" does not exist/],
    ['mysql://kiln@127.0.0.1/kiln', 2, /^kiln: unknown store/],
  ];
  for (const [url, code, message] of cases) {
    const started = await kiln(undefined, ['server', '--data', dir, '--listen', '127.0.0.1:0', '--store', url]);
    assert.equal(started.code, code, `${url}: ${started.stderr}`);
    assert.match(started.stderr, message);
    assert.equal(started.stderr.trimEnd().split('\n').length, 1, `one line, no stack: ${started.stderr}`);
    assert.doesNotMatch(started.stderr, /secret/);
  }
  // The same from the config file's `store:`.
  const config = path.join(dir, 'kiln.yaml');
  writeFileSync(config, 'store: "postgres://kiln@127.0.0.1:1/kiln"\n');
  const fromFile = await kiln(undefined, ['server', '--data', dir, '--listen', '127.0.0.1:0', '--config', config]);
  assert.equal(fromFile.code, 1);
  assert.match(fromFile.stderr, /^kiln: the store postgres:\/\/kiln@127\.0\.0\.1:1\/kiln cannot be used/);
});

test('a server on SQLite never loads the PostgreSQL driver', async (t) => {
  const server = spawnKiln(t, ['server', '--listen', '127.0.0.1:0', '--data', tempDir(t)], { NODE_DEBUG: 'module' });
  await server.waitFor(/kiln server listening/);
  assert.ok(server.stderr.some((line) => /Module\._load REQUEST .*better_sqlite3\.node/.test(line)), 'NODE_DEBUG=module names what is loaded');
  assert.deepEqual(server.stderr.filter((line) => /Module\._load REQUEST pg |node_modules\/pg\//.test(line)), [], 'no module of pg was loaded');
});
