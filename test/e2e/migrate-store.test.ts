/**
 * `kiln migrate-store` with real processes: a farm on SQLite (jobs, runs with consoles, an artifact,
 * a worker token, a pending upload delivery, a dropped platform) is stopped, copied into a fresh
 * PostgreSQL schema, and a server on that schema and the same data dir carries on with all of it;
 * copied back into a new SQLite file it is whole again. Refused: a store a server holds (SQLite and
 * PostgreSQL), a target that holds data, a store that is neither, the same store twice, a missing file.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { adminQuery, freshSchema } from '../helpers/postgres.js';
import { followRun, freePort, kiln, spawnKiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const skip = needs('postgres');
/** The console of a run of `build` (below). */
const LOG = 'größe\na\0b\ndone\nkiln: kept 1 of 1 artifacts (6 bytes)\n';

/** What a farm shows through the CLI: compared before and after each copy. */
async function farm(server: ServerProcess, runIds: string[]) {
  const json = async (args: string[]) => {
    const done = await kiln(server, [...args, '--json']);
    assert.equal(done.code, 0, `${args.join(' ')}: ${done.stderr}`);
    return JSON.parse(done.stdout);
  };
  const jobs = (await json(['jobs'])).jobs.map((j: { name: string; nextAt: string | null; paused: boolean }) => [j.name, j.nextAt, j.paused]);
  const runs = (await json(['runs'])).runs.map((r: { id: string; job: string; status: string }) => [r.id, r.job, r.status]).sort();
  const logs = await Promise.all(runIds.map(async (id) => (await kiln(server, ['logs', id])).stdout));
  const artifacts = await Promise.all(runIds.map(async (id) => (await json(['artifacts', id])).artifacts));
  const tokens = (await json(['worker-token', 'list'])).tokens.map((w: { name: string }) => w.name);
  const people = (await json(['token', 'list'])).tokens.map((p: { name: string; role: string; expiresAt: string | null }) => [p.name, p.role, p.expiresAt]);
  return { jobs, runs, logs, artifacts, tokens, people };
}

test('an SQLite farm copied into PostgreSQL carries on there: jobs, runs, consoles, artifacts, schedules, worker tokens and people\'s, the outbox; and back into SQLite', { skip, timeout: 240_000 }, async (t) => {
  const dataDir = tempDir(t);
  // Nothing listens there: the delivery of each run stays pending in the outbox.
  const upload = ['--upload', `http://127.0.0.1:${await freePort()}/builds`];
  const first = await startServer(t, { dataDir, args: upload });
  const token = (await kiln(first, ['worker-token', 'create', 'builder-1'])).stdout.trim();
  const viewer = (await kiln(first, ['token', 'create', 'alice', '--role', 'viewer', '--expires', '30d'])).stdout.trim();
  const worker = spawnKiln(t, ['worker', '--server', first.url, '--name', 'builder-1', '--platform', 'testos'], { KILN_WORKER_TOKEN: token });
  await worker.waitFor(/connected to the server/);

  // A console line with NUL and non-ASCII text: PostgreSQL keeps console text as bytes.
  const script = `printf 'built\\n' > out.txt; echo 'größe'; printf 'a\\000b\\n'; echo done`;
  assert.equal((await kiln(first, ['schedule', 'build', '--command', script, '--platform', 'testos', '--period', 'never'])).code, 0);
  assert.equal((await kiln(first, ['schedule', 'nightly', '--command', 'true', '--platform', 'testos', '--period', 'daily', '--paused'])).code, 0);
  assert.equal((await kiln(first, ['schedule', 'elsewhere', '--command', 'echo elsewhere', '--platform', 'testos', '--period', 'never'])).code, 0);
  const built = (await kiln(first, ['execute', 'build'])).stdout.trim();
  assert.equal((await followRun(first, built)).run.status, 'succeeded');
  await worker.kill('SIGTERM');
  // Queued with no worker: it waits in the copied queue.
  const queued = (await kiln(first, ['execute', 'elsewhere'])).stdout.trim();
  assert.equal((await kiln(first, ['drop-platform', 'retiredos'])).code, 0);
  const before = await farm(first, [built]);
  assert.equal(before.artifacts[0][0].path, 'out.txt');
  assert.match((await kiln(first, ['info'])).stdout, /upload to .*: 1 pending/);

  const { schema, url } = await freshSchema(t);
  const sqlite = `sqlite:${path.join(dataDir, 'kiln.db')}`;
  // Refused while the server holds the data dir; nothing is written to the target.
  const busy = await kiln(undefined, ['migrate-store', '--from', sqlite, '--to', url]);
  assert.equal(busy.code, 2, busy.stderr);
  assert.match(busy.stderr, /^kiln: the data dir .* is in use by the server pid \d+ .*\n$/);
  assert.equal(Number((await adminQuery(`SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = '${schema}'`)).rows[0].n), 0);

  await first.kill('SIGTERM');
  const copied = await kiln(undefined, ['migrate-store', '--from', sqlite, '--to', url]);
  assert.equal(copied.code, 0, copied.stderr);
  assert.match(copied.stdout, /^copied sqlite:.*kiln\.db to postgres:.* \(rows: .*jobs 3, .*runs 2.*\)/);
  assert.equal(Number((await adminQuery(`SELECT COUNT(*) AS n FROM ${schema}.runs`)).rows[0].n), 2);
  // What PostgreSQL generates next comes after what was copied: event and delivery ids, queue positions.
  type Next = Record<'event' | 'next_event' | 'delivery' | 'next_delivery' | 'back' | 'next_back' | 'front' | 'next_front', number>;
  const [next] = (await adminQuery(`SELECT
    (SELECT MAX(id) FROM ${schema}.run_events) AS event, nextval(pg_get_serial_sequence('${schema}.run_events', 'id')) AS next_event,
    (SELECT MAX(id) FROM ${schema}.deliveries) AS delivery, nextval(pg_get_serial_sequence('${schema}.deliveries', 'id')) AS next_delivery,
    (SELECT MAX(queue_pos) FROM ${schema}.runs) AS back, nextval('${schema}.queue_back') AS next_back,
    (SELECT MIN(queue_pos) FROM ${schema}.runs) AS front, -nextval('${schema}.queue_front') AS next_front`)).rows.map((row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Number(v)])) as Next);
  assert.ok(next!.event > 1 && next!.next_event > next!.event, JSON.stringify(next));
  assert.ok(next!.delivery >= 1 && next!.next_delivery > next!.delivery, JSON.stringify(next));
  assert.ok(next!.next_back > next!.back && next!.next_front < next!.front, JSON.stringify(next));

  // A second copy into it is refused: it holds a farm now.
  const again = await kiln(undefined, ['migrate-store', '--from', sqlite, '--to', url]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^kiln: the store postgres:\S+ already holds data \(its table \w+ has rows\): kiln migrate-store copies into an empty store only; give it a new database or schema\n$/);
  const bad = await kiln(undefined, ['migrate-store', '--from', 'mysql://db/kiln', '--to', url]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^kiln: bad --from 'mysql:\/\/db\/kiln': use sqlite:PATH .*\n$/);

  const same = await kiln(undefined, ['migrate-store', '--from', url, '--to', url]);
  assert.equal(same.code, 2);
  assert.match(same.stderr, /^kiln: --from and --to name the same store: give --to a new, empty one\n$/);
  const missing = await kiln(undefined, ['migrate-store', '--from', `sqlite:${path.join(dataDir, 'nothing.db')}`, '--to', url]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^kiln: no SQLite store at .*nothing\.db .*\n$/);

  // The same data dir (tokens, artifact blobs) on PostgreSQL.
  const second = await startServer(t, { dataDir, args: ['--store', url, ...upload] });
  // Its schema is held while it runs: copying out of it is refused, naming the server.
  const held = await kiln(undefined, ['migrate-store', '--from', url, '--to', `sqlite:${path.join(tempDir(t), 'kiln.db')}`]);
  assert.equal(held.code, 2, held.stderr);
  assert.match(held.stderr, /^kiln: the store postgres:\S+ is in use by kiln pid \d+ .*\n$/);
  assert.deepEqual(await farm(second, [built]), before);
  assert.deepEqual(before.people, [['alice', 'viewer', before.people[0][2]]]);
  assert.equal((await kiln(second, ['jobs'], { env: { KILN_TOKEN: viewer } })).code, 0, 'a person\'s token still works on the copy');
  assert.equal(before.logs[0], LOG);
  const info = (await kiln(second, ['info'])).stdout;
  assert.match(info, /upload to .*: 1 pending/);
  assert.match(info, /retiredos/);
  const download = tempDir(t);
  assert.equal((await kiln(second, ['artifacts', built, '--download', download])).code, 0);
  const content = readFileSync(path.join(download, 'out.txt'));
  assert.equal(content.toString(), 'built\n');
  assert.equal(createHash('sha256').update(content).digest('hex'), before.artifacts[0][0].sha256);

  // The worker token still admits its worker, which takes the copied queued run and new ones: new
  // events, deliveries and queue positions come after the copied ones (the sequences were moved).
  const worker2 = spawnKiln(t, ['worker', '--server', second.url, '--name', 'builder-1', '--platform', 'testos'], { KILN_WORKER_TOKEN: token });
  await worker2.waitFor(/connected to the server/);
  assert.equal((await followRun(second, queued)).run.status, 'succeeded');
  const rebuilt = (await kiln(second, ['execute', 'build'])).stdout.trim();
  assert.equal((await followRun(second, rebuilt)).run.status, 'succeeded');
  assert.match((await kiln(second, ['info'])).stdout, /upload to .*: 3 pending/);

  // And back into a new SQLite file, which a server then runs on.
  await worker2.kill('SIGTERM');
  await second.kill('SIGTERM');
  const back = `sqlite:${path.join(tempDir(t), 'kiln.db')}`;
  const returned = await kiln(undefined, ['migrate-store', '--from', url, '--to', back]);
  assert.equal(returned.code, 0, returned.stderr);
  const third = await startServer(t, { dataDir, args: ['--store', back] });
  const whole = await farm(third, [built, rebuilt]);
  assert.deepEqual(whole.jobs, before.jobs);
  assert.equal(whole.runs.length, 3);
  assert.equal(whole.logs[0], before.logs[0]);
  assert.equal(whole.logs[1], LOG);
  assert.deepEqual(whole.tokens, ['builder-1']);
  assert.deepEqual(whole.people, before.people);
});

test('a value PostgreSQL cannot hold (a NUL in a job\'s script) fails the copy with the store\'s own code and exit 2, naming the table; the target stays empty', { skip, timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  const server = await startServer(t, { dataDir, args: ['--store', `sqlite:${path.join(dataDir, 'kiln.db')}`] });
  const created = await fetch(`${server.url}/api/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'nul', script: 'echo a\u0000b\n', platform: 'testos', period: 'never' }),
  });
  assert.equal(created.status, 201, await created.text());
  await server.kill('SIGTERM');
  const { schema, url } = await freshSchema(t);
  const copied = await kiln(undefined, ['migrate-store', '--from', `sqlite:${path.join(dataDir, 'kiln.db')}`, '--to', url]);
  assert.equal(copied.code, 2, copied.stderr);
  assert.match(copied.stderr, /^kiln: copying table jobs into postgres:\S+: .*\n$/);
  assert.equal((await adminQuery(`SELECT count(*)::int AS n FROM ${schema}.jobs`)).rows[0].n, 0);
});
