/**
 * Bad input changes nothing: durations and times out of range are refused at the edge with a code,
 * stored values out of range (an older version, a hand-edited database) still list, and names
 * users choose that an Object already has (`constructor`, `toString`) are plain names.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { followRun, kiln, onPostgres, startServer, startWorker, tempDir, type ServerProcess } from '../helpers/processes.js';

/** An API call's status and body, whatever the status. */
async function call(server: ServerProcess, method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> {
  const response = await fetch(server.url + route, {
    method,
    headers: { authorization: `Bearer ${server.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

const jobsJson = async (server: ServerProcess) => {
  const listed = await kiln(server, ['jobs', '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  return JSON.parse(listed.stdout).jobs as { name: string; schedule: unknown; nextAt: string | null; timeoutMs: number }[];
};

test('durations and times out of range are refused by the CLI and the API with a code, and change nothing', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  assert.equal((await kiln(server, ['schedule', 'ok', '--command', 'true', '--platform', 'testos', '--every', '1h', '--paused'])).code, 0);
  const before = await jobsJson(server);

  const refusedByCli: [string[], RegExp][] = [
    [['schedule', 'big', '--command', 'true', '--every', '100000000d'], /^kiln: --every must be at most 3660d \(about 10 years\)\n$/],
    [['schedule', 'huge', '--command', 'true', '--every', '9'.repeat(400) + 'd'], /^kiln: bad --every '9+d': use a duration/],
    [['modify', 'ok', '--every', '100000000d'], /^kiln: --every must be at most 3660d/],
    [['modify', 'ok', '--timeout', '100000000d'], /^kiln: bad --timeout '100000000d': at most 7d\n$/],
    [['modify', 'ok', '--idle-timeout', '8d'], /^kiln: bad --idle-timeout '8d': at most 7d\n$/],
    [['reschedule', 'ok', '1969-12-31T23:59:59Z'], /^kiln: next: '1969-12-31T23:59:59Z' is outside the times Kiln keeps \(1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z\)\n$/],
    [['reschedule', 'ok', '0000-01-01T00:00:00+01:00'], /^kiln: next: '0000-01-01T00:00:00\+01:00' is outside the times Kiln keeps/],
    [['gc', '--keep-for', '100000000d'], /^kiln: bad --keep-for '100000000d': at most 3660d\n$/],
  ];
  for (const [args, message] of refusedByCli) {
    const result = await kiln(server, args);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message, args.join(' '));
  }

  const refusedByApi: [string, string, unknown, RegExp][] = [
    ['POST', '/api/jobs', { name: 'big', script: 'true\n', schedule: { kind: 'every', everyMs: 8.64e15 } }, /^invalid job: schedule\.everyMs: the interval must be at most 3660d/],
    ['POST', '/api/jobs', { name: 'big', script: 'true\n', schedule: { kind: 'every', everyMs: 1e300 } }, /schedule\.everyMs/],
    ['POST', '/api/jobs', { name: 'big', script: 'true\n', timeoutMs: 8 * 86_400_000 }, /^invalid job: timeoutMs: the timeout must be at most 7 days$/],
    ['POST', '/api/jobs', { name: 'big', script: 'true\n', timeoutMs: 1e20 }, /^invalid job: timeoutMs: /],
    ['PATCH', '/api/jobs/ok', { schedule: { kind: 'every', everyMs: 8.64e15 } }, /^invalid job change: schedule\.everyMs: the interval must be at most 3660d/],
    ['PATCH', '/api/jobs/ok', { idleTimeoutMs: 8 * 86_400_000 }, /^invalid job change: idleTimeoutMs: the idle timeout must be at most 7 days$/],
    ['POST', '/api/jobs/ok/reschedule', { next: '9999-12-31T23:59:59-01:00' }, /is outside the times Kiln keeps/],
    ['POST', '/api/artifacts/gc', { dryRun: true, keepForMs: 3661 * 86_400_000 }, /^invalid gc request: keepForMs: at most 3660d/],
    // Console seqs are 32-bit in the stores: a larger `after` is refused here, not failed by PostgreSQL.
    ['GET', '/api/runs/00000000-0000-4000-8000-000000000000/console?after=3000000000', undefined, /^invalid console request: after: /],
  ];
  for (const [method, route, body, message] of refusedByApi) {
    const answer = await call(server, method, route, body);
    assert.equal(answer.status, 400, `${method} ${route} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
    assert.equal(answer.body.error.code, 'KILN_ERR_INVALID_REQUEST');
    assert.match(answer.body.error.message, message);
  }

  // Nothing changed, and everything still lists.
  assert.deepEqual(await jobsJson(server), before);
  assert.equal((await kiln(server, ['info'])).code, 0);
  // The edges of the range are taken.
  assert.equal((await kiln(server, ['modify', 'ok', '--every', '3660d'])).code, 0);
  const edge = await kiln(server, ['reschedule', 'ok', '9999-12-31T23:59:59Z']);
  assert.equal(edge.code, 0, edge.stderr);
  assert.equal((await kiln(server, ['jobs'])).code, 0);
  assert.equal((await call(server, 'GET', '/api/jobs/ok/next?count=3')).status, 200);
});

// The rows are written straight into kiln.db, with a next time (1e20 ms) that SQLite keeps (as a
// REAL) and PostgreSQL's BIGINT refuses: there is no such row to read on PostgreSQL.
const sqliteFileOnly = onPostgres && 'SQLite only: writes out-of-range rows straight into kiln.db (PostgreSQL\'s BIGINT cannot hold them)';

test('a job row whose stored times or interval are out of range still lists, and is logged', { timeout: 120_000, skip: sqliteFileOnly }, async (t) => {
  const dataDir = tempDir(t);
  let server = await startServer(t, { dataDir });
  for (const name of ['far-next', 'far-skip', 'huge-step', 'bad-zone', 'fine']) {
    assert.equal((await kiln(server, ['schedule', name, '--command', 'true', '--platform', 'testos', '--every', '1h', '--paused'])).code, 0);
  }
  await server.kill('SIGTERM');
  // As an older version (or a hand edit) might have left them.
  const db = new Database(path.join(dataDir, 'kiln.db'));
  const set = db.prepare('UPDATE jobs SET next_at = ?, schedule = ?, last_skip = ?, skipped = ?, paused = ? WHERE name = ?');
  set.run(1e20, JSON.stringify({ kind: 'every', everyMs: 3_600_000 }), null, 0, 1, 'far-next');
  set.run(Date.now() + 3_600_000, JSON.stringify({ kind: 'every', everyMs: 3_600_000 }), JSON.stringify({ at: -1e18, reason: 'x' }), 1, 1, 'far-skip');
  // Due now, with a step that leaves every Date: it fires once and has no next time.
  set.run(Date.now() - 1000, JSON.stringify({ kind: 'every', everyMs: 8.64e15 }), null, 0, 0, 'huge-step');
  set.run(Date.now() + 3_600_000, JSON.stringify({ kind: 'cron', expr: '0 * * * *', tz: 'Nowhere/Atlantis' }), null, 0, 1, 'bad-zone');
  db.close();

  server = await startServer(t, { dataDir });
  // The only unpaused job: its pass ends one way or the other.
  const pass = await server.waitFor(/"msg":"(schedule fired|scheduler pass failed)/);
  assert.match(pass, /"job":"huge-step"/, pass);
  const jobs = new Map((await jobsJson(server)).map((job) => [job.name, job]));
  assert.equal(jobs.size, 5);
  assert.equal(jobs.get('far-next')!.nextAt, null);
  assert.equal(jobs.get('huge-step')!.nextAt, null, 'no next time past year 9999');
  assert.equal(jobs.get('bad-zone')!.nextAt, null);
  assert.match(jobs.get('fine')!.nextAt ?? '', /^\d{4}-/);
  const table = await kiln(server, ['jobs']);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /far-next .* - /);
  const info = await kiln(server, ['info']);
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, /far-skip on testos, every 1h \(paused\), next \S+; skipped 1x, last -: x/);
  for (const name of ['far-next', 'far-skip', 'huge-step', 'bad-zone']) {
    assert.equal((await call(server, 'GET', `/api/jobs/${name}`)).status, 200, name);
    // The preview of next times (kiln schedule --dry-run's twin) shows none rather than failing.
    const next = await call(server, 'GET', `/api/jobs/${name}/next?count=3`);
    assert.equal(next.status, 200, `${name}: ${JSON.stringify(next.body)}`);
  }
  assert.deepEqual((await call(server, 'GET', '/api/jobs/bad-zone/next?count=3')).body.next, []);
  assert.match(server.stderr.join('\n'), /"job":"far-next","field":"nextAt","value":100000000000000000000.*"msg":"stored time cannot be shown; listed as none"/);
});

test('platforms, labels and job names like constructor and toString work end to end; __proto__ is refused with a code', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  const names = ['constructor', 'toString', 'hasOwnProperty'];
  const runIds = new Map<string, string>();
  for (const name of names) {
    const scheduled = await kiln(server, ['schedule', name, '--command', `echo ran ${name}`, '--platform', name, '--label', `${name}=yes`, '--period', 'never']);
    assert.equal(scheduled.code, 0, scheduled.stderr);
    runIds.set(name, (await kiln(server, ['execute', name])).stdout.trim());
  }
  // Queued runs on those platforms: info shows each queue under its own name.
  const info = await kiln(server, ['info', '--json']);
  assert.equal(info.code, 0, info.stderr);
  const queues = JSON.parse(info.stdout).queues;
  assert.deepEqual(Object.keys(queues).sort(), [...names].sort());
  for (const name of names) assert.deepEqual(queues[name].map((r: { id: string }) => r.id), [runIds.get(name)]);
  const text = await kiln(server, ['info']);
  assert.equal(text.code, 0, text.stderr);
  for (const name of names) assert.match(text.stdout, new RegExp(`^  ${name}: ${name} \\(`, 'm'));

  for (const name of names) await startWorker(t, server, ['--platform', name, '--label', `${name}=yes`, '--name', `w-${name}`]);
  for (const name of names) {
    const { lines, run } = await followRun(server, runIds.get(name)!);
    assert.equal(run.status, 'succeeded', name);
    assert.ok(lines.includes(`ran ${name}`), name);
  }
  for (const args of [['jobs'], ['runs'], ['info'], ['workers'], ['runs', '--job', 'constructor'], ['runs', '--job', 'toString']]) {
    const listed = await kiln(server, args);
    assert.equal(listed.code, 0, `${args.join(' ')}: ${listed.stderr}`);
    assert.match(listed.stdout, /constructor|toString/, args.join(' '));
  }

  // __proto__ is no job name or platform (they start with a letter or digit) and no label name.
  const refused: [string[], RegExp][] = [
    [['schedule', '__proto__', '--command', 'true'], /^kiln: /],
    [['schedule', 'p', '--command', 'true', '--platform', '__proto__'], /^kiln: .*platform names use letters/],
    [['schedule', 'p', '--command', 'true', '--label', '__proto__=x'], /^kiln: --label name '__proto__' is reserved\n$/],
    [['schedule', 'p', '--command', 'true', '--var', '__proto__=x'], /^kiln: --var name '__proto__' is reserved\n$/],
  ];
  for (const [args, message] of refused) {
    const result = await kiln(server, args);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message);
  }
  const raw = await call(server, 'POST', '/api/jobs', '{"name":"p","script":"true\\n","labels":{"__proto__":"x"}}');
  assert.equal(raw.status, 400, JSON.stringify(raw.body));
  assert.equal(raw.body.error.code, 'KILN_ERR_INVALID_REQUEST');
  assert.equal((await jobsJson(server)).some((job) => job.name === 'p'), false);
});
