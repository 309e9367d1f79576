/** The PostgreSQL store: the JobStore contract on a fresh schema per test, plus what only PostgreSQL has. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import type { Job, JobStore } from '../../src/store/index.js';
import { openPostgresStore } from '../../src/store/postgres/postgres-store.js';
import { holdSchemaExclusive } from '../../src/store/postgres/server-lock.js';
import * as S from '../../src/store/postgres/statements.js';
import { adminQuery, freshSchema, POSTGRES_URL, querySync } from '../helpers/postgres.js';
import { needs } from '../helpers/requirements.js';
import { PRESENCE_LOCK_KEY, SERVER_TTL_MS } from '../../src/store/cluster-constants.js';
import { CONSOLE_FEED_KIND, FEED_CHANNEL_SQL, type ConsoleRange, type FeedMessage } from '../../src/store/feed.js';
import { runJobStoreSuite, type ClusterHooks } from './job-store.suite.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../src/store/postgres/migrations/', import.meta.url));
const skip = needs('postgres');

/** Opens the store at `url`, closed when the test ends. */
async function open(t: TestContext, url: string): Promise<JobStore> {
  const store = await openPostgresStore(url);
  t.after(() => store.close());
  return store;
}

/** The migration versions shipped in src/store/postgres/migrations. */
function shippedVersions(): number[] {
  return readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.sql$/.test(f)).map((f) => Number(f.slice(0, 4))).sort((a, b) => a - b);
}

/** Each suite store's URL, for the servers a test records there. */
const storeUrls = new WeakMap<JobStore, string>();

/** The database's clock, as the store's statements read it. */
const DB_NOW = '(extract(epoch FROM clock_timestamp()) * 1000)::bigint';

/**
 * Records a server as presence.ts does: its row, and (alive) its presence lock held on a connection
 * of its own until the test ends; dead: its heartbeat a minute old and no lock.
 */
const cluster: ClusterHooks = {
  async addServer(t, store, server) {
    const client = new pg.Client({ connectionString: storeUrls.get(store)! });
    await client.connect();
    if (server.alive) {
      t.after(() => client.end());
      await client.query('SELECT pg_advisory_lock($1, hashtext($2))', [PRESENCE_LOCK_KEY, server.id]);
    }
    try {
      const { rows } = await client.query<{ beat: string }>(`INSERT INTO servers (id, url, hostname, pid, version, config_digest, started_at, heartbeat_at)
        VALUES ($1, $2, $3, 42, '0.1.0', 'digest', ${DB_NOW} - $4::bigint, ${DB_NOW} - $4::bigint) RETURNING heartbeat_at AS beat`,
      [server.id, `http://${server.id}.test:7070`, `${server.id}.host`, server.alive ? 0 : 60_000]);
      for (const lease of server.leases ?? []) {
        await client.query(`INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, ${DB_NOW} + $3::bigint)`,
          [lease.name, server.id, lease.expired ? -1 : 60_000]);
      }
      // started_at and heartbeat_at are one clock reading each: make them equal for the test's sake.
      await client.query('UPDATE servers SET started_at = heartbeat_at WHERE id = $1', [server.id]);
      return Number(rows[0]!.beat);
    } finally {
      if (!server.alive) await client.end();
    }
  },
};

runJobStoreSuite('postgres', async (t) => {
  const { url } = await freshSchema(t);
  const store = await open(t, url);
  storeUrls.set(store, url);
  return store;
}, { skip, cluster });

describe('PostgreSQL store', { skip }, () => {
  const T0 = 1_700_000_000_000;
  const job: Job = {
    name: 'build', platform: 'linux', script: 'make', env: { CC: 'gcc' }, labels: { arch: 'arm' }, template: null, vars: {},
    schedule: { kind: 'period', period: 'daily' }, paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null,
    timeoutMs: 60_000, idleTimeoutMs: null, retries: 1, failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {}, nextAt: T0 + 1000, createdAt: T0, updatedAt: T0,
  };

  test('jobs, queued runs and console lines survive closing and reopening the store', async (t) => {
    const { url } = await freshSchema(t);
    const runId = randomUUID();
    const lines = [{ seq: 0, ts: T0, text: 'first' }, { seq: 1, ts: T0 + 1, text: 'ünïcode ✓' }];
    const before = await openPostgresStore(url);
    const [run] = await before.createJob(job, [{ id: runId, job: 'build', platform: 'linux', labels: job.labels, queuedAt: T0 }]);
    await before.appendConsole([{ runId, lines }]);
    await before.close();

    const after = await open(t, url);
    assert.deepEqual(await after.getJob('build'), job);
    assert.deepEqual(await after.listQueued(), [run]);
    assert.deepEqual(await after.readConsole(runId), lines);
    assert.equal((await after.claimNext({ name: 'w1', platform: 'linux', labels: { arch: 'arm' } }, T0 + 5))?.id, runId);
  });

  test('a run that succeeded ends in one statement; one that failed, which may retry, reads the run first in a transaction', async (t) => {
    const store = await open(t, (await freshSchema(t)).url);
    const worker = { name: 'w1', platform: 'linux', labels: { arch: 'arm' } };
    await store.createJob({ ...job, failureRetries: 1 }, [{ id: randomUUID(), job: 'build', platform: 'linux', labels: {}, queuedAt: T0 }]);
    const sent: string[] = [];
    const query = pg.Client.prototype.query;
    t.after(() => void (pg.Client.prototype.query = query));
    const counted = async (work: () => Promise<unknown>): Promise<string[]> => {
      sent.length = 0;
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        const given = args[0] as string | { name?: string; text: string };
        sent.push(typeof given === 'string' ? given : given.name ?? given.text);
        return (query as (...a: unknown[]) => unknown).apply(this, args);
      } as typeof query;
      await work();
      pg.Client.prototype.query = query;
      return [...sent];
    };
    const first = (await store.claimNext(worker, T0 + 1))!;
    const failed = { report: { result: { kind: 'exited' as const, code: 2 } }, finishedAt: T0 + 2 };
    assert.deepEqual(await counted(() => store.endAttempt(first.id, failed, { worker: 'w1' })), ['BEGIN', 'kiln_run_end_read', 'kiln_end_write_requeue', 'COMMIT']);
    const second = (await store.claimNext(worker, T0 + 3))!;
    assert.equal(second.attempt, 2);
    const succeeded = { report: { result: { kind: 'exited' as const, code: 0 } }, finishedAt: T0 + 4 };
    assert.deepEqual(await counted(() => store.endAttempt(second.id, succeeded, { worker: 'w1' }, { lines: [{ seq: 5, ts: T0 + 4, text: 'done' }] })), ['kiln_end_settled']);
    assert.equal((await store.findRun(second.id)).status, 'succeeded');
  });

  test('a claim waits for a run it may take that another transaction holds locked (a schedule firing), rather than leave it queued', async (t) => {
    const { schema, url } = await freshSchema(t);
    const store = await open(t, url);
    const [queued] = await store.createJob(job, [{ id: randomUUID(), job: 'build', platform: 'linux', labels: {}, queuedAt: T0 }]);
    const worker = { name: 'w1', platform: 'linux', labels: { arch: 'arm' } };
    // As fireSchedule reads a job's queued runs: FOR UPDATE, in a transaction still open.
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    t.after(() => other.end());
    await other.query('BEGIN');
    await other.query(`SELECT id FROM ${schema}.runs WHERE job = 'build' AND status = 'queued' FOR UPDATE`);
    // Each CLAIM statement the store sends, answered: the lock is let go once the first came back (held).
    const query = pg.Client.prototype.query;
    t.after(() => void (pg.Client.prototype.query = query));
    let firstAnswered!: () => void;
    const answered = new Promise<void>((resolve) => (firstAnswered = resolve));
    let claims = 0;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const result = (query as (...a: unknown[]) => unknown).apply(this, args);
      if ((args[0] as { name?: string }).name === 'kiln_claim' && ++claims === 1) void (result as Promise<unknown>).then(() => firstAnswered());
      return result;
    } as typeof query;
    const claiming = store.claimNext(worker, T0 + 5);
    await answered;
    await other.query('COMMIT');
    assert.equal((await claiming)?.id, queued!.id, 'claimed once the lock is gone, not left queued');
    pg.Client.prototype.query = query;
    assert.ok(claims >= 2, `the claim was sent again after finding the run held (${claims})`);
    // Held past the bound: a store error, which the dispatcher's pass retries.
    const [second] = await store.createJob({ ...job, name: 'again' }, [{ id: randomUUID(), job: 'again', platform: 'linux', labels: {}, queuedAt: T0 }]);
    await other.query('BEGIN');
    await other.query(`SELECT id FROM ${schema}.runs WHERE id = $1 FOR UPDATE`, [second!.id]);
    await assert.rejects(store.claimNext(worker, T0 + 6), (err: Error & { code?: string }) => err.code === 'KILN_ERR_STORE_UNAVAILABLE' && /stayed locked/.test(err.message));
    await other.query('ROLLBACK');
    assert.equal((await store.claimNext(worker, T0 + 7))?.id, second!.id);
    assert.equal(await store.claimNext(worker, T0 + 8), undefined, 'nothing queued: nothing, at once');
  });

  test("a claim that picks a run whose job is gone (deleted behind the store's back) cancels it, as a queued run ends, in the claim's one statement", async (t) => {
    const { schema, url } = await freshSchema(t);
    const store = await open(t, url);
    store.setUploadTarget('https://uploads.example/kiln');
    const [orphan] = await store.createJob(job, [{ id: randomUUID(), job: 'build', platform: 'linux', labels: {}, queuedAt: T0 }]);
    const [next] = await store.createJob({ ...job, name: 'next' }, [{ id: randomUUID(), job: 'next', platform: 'linux', labels: {}, queuedAt: T0 + 1 }]);
    await adminQuery(`DELETE FROM ${schema}.jobs WHERE name = 'build'`);
    const worker = { name: 'w1', platform: 'linux', labels: { arch: 'arm' } };
    assert.equal(await store.claimNext(worker, T0 + 5), undefined, 'nothing claimed this time');
    const cancelled = await store.findRun(orphan!.id);
    assert.deepEqual([cancelled.status, cancelled.result, cancelled.finishedAt, cancelled.worker], ['cancelled', { kind: 'aborted', reason: 'job unscheduled' }, T0 + 5, null]);
    assert.deepEqual((await store.listEvents(orphan!.id)).at(-1), { at: T0 + 5, attempt: 1, kind: 'ended', detail: { status: 'cancelled', result: { kind: 'aborted', reason: 'job unscheduled' } } });
    assert.deepEqual(await store.listDeliveries(orphan!.id), [], 'a run ended in the queue is not delivered (core forwardsOnEnd)');
    assert.equal((await store.claimNext(worker, T0 + 6))?.id, next!.id);
  });

  test('every shipped migration is recorded once; reopening applies none again', async (t) => {
    const { schema, url } = await freshSchema(t);
    const recorded = async () => (await adminQuery(`SELECT version, applied_at FROM ${schema}.kiln_schema_migrations ORDER BY version`)).rows;
    await (await openPostgresStore(url)).close();
    const first = await recorded();
    assert.ok(shippedVersions().length > 0);
    assert.deepEqual(first.map((row) => row.version), shippedVersions());
    const again = await open(t, url);
    assert.deepEqual(await again.listJobs(), []);
    assert.deepEqual(await recorded(), first);
  });

  test('two servers opening one new schema at once migrate it once', async (t) => {
    const { url } = await freshSchema(t);
    const stores = await Promise.all([openPostgresStore(url), openPostgresStore(url), openPostgresStore(url)]);
    t.after(() => Promise.all(stores.map((s) => s.close())));
    await stores[0]!.createJob(job);
    assert.deepEqual((await stores[2]!.listJobs()).map((j) => j.name), ['build']);
  });

  test("a schema that is another application's, or newer than this Kiln, is refused with a catalogued code, before anything in it changes", async (t) => {
    const foreign = await freshSchema(t);
    await adminQuery(`CREATE TABLE ${foreign.schema}.notes (body TEXT)`);
    await assert.rejects(openPostgresStore(foreign.url), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORE_FOREIGN' && !err.message.includes('\n'));
    assert.deepEqual((await adminQuery(`SELECT tablename FROM pg_tables WHERE schemaname = '${foreign.schema}'`)).rows.map((r) => r.tablename), ['notes']);

    const newer = await freshSchema(t);
    await (await openPostgresStore(newer.url)).close();
    await adminQuery(`INSERT INTO ${newer.schema}.kiln_schema_migrations (version, applied_at) VALUES (${Math.max(...shippedVersions()) + 1}, 0)`);
    await assert.rejects(openPostgresStore(newer.url), { code: 'KILN_ERR_STORE_TOO_NEW' });
  });

  test('a bad URL, a refused connection and a missing database are one-line errors with catalogued codes', async () => {
    const cases: [string, string][] = [
      ['postgres://', 'KILN_ERR_CONFIG'],
      ['postgres://postgres@127.0.0.1:5432/', 'KILN_ERR_CONFIG'],
      ['postgres://postgres:secret@127.0.0.1:1/test', 'KILN_ERR_STORE_UNAVAILABLE'],
      [POSTGRES_URL.replace(/\/[^/?]+(\?|$)/, `/kiln_missing_${process.pid}$1`), 'KILN_ERR_STORE_UNAVAILABLE'],
    ];
    for (const [url, code] of cases) {
      await assert.rejects(openPostgresStore(url), (err: { code?: string; message: string }) => {
        assert.equal(err.code, code, url);
        assert.doesNotMatch(err.message, /\n|secret/, 'one line, without the password');
        return true;
      });
    }
  });

  test('dropped connections never end the process: transactions and idempotent statements take another; other writes fail with KILN_ERR_STORE_UNAVAILABLE', async (t) => {
    const { schema, url } = await freshSchema(t);
    const named = new URL(url);
    named.searchParams.set('application_name', schema);
    const store = await open(t, named.toString());
    await store.createJob(job);
    const terminate = `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = '${schema}'`;
    /**
     * Three connections left idle in the pool, then dropped while this process is blocked: the call
     * right after finds them there as if alive (their 'error' events, which unheard would end the
     * process, come in later). pg_terminate_backend waits until each backend has ended.
     */
    const dropIdle = async () => {
      await Promise.all([store.listJobs(), store.listJobs(), store.listJobs()]);
      const dropped = querySync(POSTGRES_URL, terminate);
      assert.equal(dropped.status, 0, dropped.stderr);
    };
    await dropIdle();
    await store.createJob({ ...job, name: 'after-drop' });
    await dropIdle();
    assert.deepEqual((await store.listJobs()).map((j) => j.name), ['after-drop', 'build'], 'a read is sent again');
    await dropIdle();
    await store.recordWorker({ name: 'w1', platform: 'linux', labels: {}, capacity: 1, hostname: 'h', os: 'linux', arch: 'x64', version: '1', connected: true, connectedAt: T0, lastSeen: T0 });
    await dropIdle();
    await assert.rejects(store.recordSkip('build', T0, 'why'), { code: 'KILN_ERR_STORE_UNAVAILABLE' }, 'it may have been applied: not sent twice');
    assert.deepEqual((await store.listWorkers()).map((w) => w.name), ['w1']);
    assert.equal((await store.getJob('build'))?.skipped, 0);

    // Killed while a transaction runs: acknowledged means stored. (A failure may still have
    // committed: the connection can drop after COMMIT, before its answer.)
    const run = { id: randomUUID(), job: 'build', platform: 'linux', labels: job.labels, queuedAt: T0 };
    const racing = store.enqueue(run, 'back').then(() => 'queued', (raw: { code?: string }) => raw.code);
    await adminQuery(terminate);
    const outcome = await racing;
    assert.ok(outcome === 'queued' || outcome === 'KILN_ERR_STORE_UNAVAILABLE', outcome);
    const queued = await store.listQueued();
    if (outcome === 'queued') assert.deepEqual(queued.map((r) => r.id), [run.id]);
    else assert.ok(queued.length <= 1);
  });

  test('a statement stuck on a lock another session holds fails with KILN_ERR_STORE_UNAVAILABLE at the statement_timeout, and the store serves on', async (t) => {
    const { url } = await freshSchema(t);
    const bounded = new URL(url);
    bounded.searchParams.set('statement_timeout', '300');
    const store = await open(t, bounded.toString());
    await store.createJob(job);
    // Another session (a forgotten psql, say) holds the job's row lock and does not let go.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    // Ended here, not in an after hook: those run after the schema's drop, which its lock would hold up.
    try {
      await holder.query('BEGIN');
      await holder.query("SELECT * FROM jobs WHERE name = 'build' FOR UPDATE");
      await assert.rejects(store.updateJob('build', { retries: 3 }, T0), (err: { code?: string; message: string }) => {
        assert.equal(err.code, 'KILN_ERR_STORE_UNAVAILABLE');
        assert.match(err.message, /^the store \S+ cannot be used: canceling statement due to statement timeout \(a statement waited past the statement_timeout: [^\n]+\)$/);
        return true;
      });
      assert.equal((await store.getJob('build'))?.retries, 1, 'nothing changed; reads go on');
    } finally {
      await holder.end();
    }
    assert.equal((await store.updateJob('build', { retries: 3 }, T0)).retries, 3, 'the same write succeeds once the lock is gone');
  });

  test('a NUL in a text PostgreSQL keeps as TEXT is refused as an invalid request and stores nothing; in console lines it is kept', async (t) => {
    const store = await open(t, (await freshSchema(t)).url);
    await assert.rejects(store.createJob({ ...job, script: 'echo a\u0000b' }), { code: 'KILN_ERR_INVALID_REQUEST' });
    assert.deepEqual(await store.listJobs(), []);
    await store.appendConsole([{ runId: 'r', lines: [{ seq: 0, ts: T0, text: 'a\u0000b' }] }]);
    assert.deepEqual(await store.readConsole('r'), [{ seq: 0, ts: T0, text: 'a\u0000b' }]);
  });

  // Issue 16: two servers on one schema were refused until several servers could share one; now they may,
  // and only `kiln migrate-store` (the schema lock exclusive) refuses servers, and is refused by them.
  test('servers share a schema (the schema lock shared); migrate-store holds it exclusively: refused beside a server, and servers refused beside it', async (t) => {
    const { url, schema } = await freshSchema(t);
    const joining = (id: string) => ({ join: { serverId: id, info: { url: `http://${id}`, hostname: 'h', pid: 1, version: 'test', configDigest: 'd' } } });
    const first = await openPostgresStore(url, joining('aaaa'));
    const second = await openPostgresStore(url, joining('bbbb'));
    assert.deepEqual((await second.listJobs()), [], 'a second server on the schema is not refused');
    await assert.rejects(holdSchemaExclusive(url, schema), (err: { code?: string; message: string }) => {
      assert.equal(err.code, 'KILN_ERR_DATA_DIR_IN_USE');
      assert.match(err.message, new RegExp(`^the store \\S+ is in use by kiln pid ${process.pid} on \\S+ server (aaaa|bbbb) \\(since \\d{4}-`));
      return true;
    });
    const shared = await open(t, url);
    assert.deepEqual(await shared.listJobs(), [], 'a plain open (a tool, a test) is not refused');
    await first.close();
    await second.close();
    const migrating = await holdSchemaExclusive(url, schema);
    await assert.rejects(openPostgresStore(url, joining('cccc')), (err: { code?: string; message: string }) => {
      assert.equal(err.code, 'KILN_ERR_DATA_DIR_IN_USE');
      assert.match(err.message, new RegExp(`^the store \\S+ is in use by kiln pid ${process.pid} on \\S+ \\(since \\d{4}-`));
      return true;
    });
    await migrating.release();
    await (await openPostgresStore(url, joining('dddd'))).close();
  });

  test("migrate-store's lock: a connection seen lost here while its backend lives on (a keepalive timeout): the old backend is ended and the lock taken back", async (t) => {
    const { url, schema } = await freshSchema(t);
    /** Resolved once it is taken back, or lost. */
    let retaken!: () => void;
    const back = new Promise<void>((resolve) => (retaken = resolve));
    const lost: string[] = [];
    const lock = await holdSchemaExclusive(url, schema, {
      log: { warn: () => undefined, info: (_f, message) => /took this server's lock on the store back/.test(message) && retaken() },
      onLost: (err) => {
        lost.push(err.message);
        retaken();
      },
    });
    t.after(() => lock.release());
    const client = (lock as unknown as { client: pg.Client }).client;
    const oldPid = (client as unknown as { processID: number }).processID;
    // The client gives up on its connection; PostgreSQL's backend, and its lock, stay.
    client.emit('error', new Error('read ETIMEDOUT'));
    assert.equal(lock.held, false);
    await back;
    assert.deepEqual(lost, [], 'not reported lost (it would name this server as the other holder)');
    assert.equal(lock.held, true);
    const { rows } = await adminQuery(`SELECT pid FROM pg_stat_activity WHERE pid = ${oldPid}`);
    assert.deepEqual(rows, [], 'the old backend was ended');
    const holders = (await adminQuery(`SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = x'4b535256'::int::oid
      AND l.objid = (hashtext('${schema}')::bigint & 4294967295)::oid`)).rows as { pid: number }[];
    assert.equal(holders.length, 1);
    assert.notEqual(holders[0]!.pid, oldPid, 'held by the new connection');
  });

  test('calls after close reject, and closing twice is harmless', async (t) => {
    const { url } = await freshSchema(t);
    const store = await openPostgresStore(url);
    await store.close();
    await assert.rejects(async () => store.getJob('build'));
    await assert.rejects(async () => store.createJob(job));
    await store.close();
  });

  test('a server is alive while it heartbeats, holds its presence lock and has not stopped: a name it holds is taken only then', async (t) => {
    const { url } = await freshSchema(t);
    const store = await open(t, url);
    const presence = new pg.Client({ connectionString: url });
    await presence.connect();
    t.after(() => presence.end().catch(() => {}));
    await presence.query(`INSERT INTO servers (id, url, hostname, pid, version, config_digest, started_at, heartbeat_at)
      VALUES ('srv-a', 'http://a', 'a', 1, '1', 'd', ${DB_NOW}, ${DB_NOW})`);
    const alive = async () => (await store.listServers()).find((s) => s.id === 'srv-a')!.alive;
    const w1 = { name: 'w1', platform: 'linux', labels: {}, capacity: 1, hostname: 'h', os: 'linux', arch: 'x64', version: '1', connected: true, connectedAt: T0, lastSeen: T0 };
    assert.equal(await alive(), false, 'a fresh heartbeat without the lock: not alive');
    assert.equal(await store.recordWorker(w1, { serverId: 'srv-a', connId: 'c1' }), true);
    assert.equal(await store.recordWorker(w1, { serverId: 'srv-b', connId: 'c2' }), true, 'A is not alive: B takes the name');
    assert.equal(await store.recordWorker(w1, { serverId: 'srv-a', connId: 'c3' }), true);
    await presence.query('SELECT pg_advisory_lock($1, hashtext($2))', [PRESENCE_LOCK_KEY, 'srv-a']);
    assert.equal(await alive(), true);
    assert.equal(await store.recordWorker(w1, { serverId: 'srv-b', connId: 'c4' }), false, 'A lives: the name is taken');
    assert.deepEqual(await store.disconnectWorkersOfDeadServers(), []);
    // Its heartbeat goes stale (a hung connection): dead, though the lock is held.
    await presence.query('UPDATE servers SET heartbeat_at = heartbeat_at - $1::bigint', [SERVER_TTL_MS]);
    assert.equal(await alive(), false);
    await presence.query(`UPDATE servers SET heartbeat_at = ${DB_NOW}`);
    assert.equal(await alive(), true);
    // Its connection ends (SIGKILL, pg_terminate_backend): the lock goes, and it is dead at once.
    await presence.end();
    assert.equal(await alive(), false);
    assert.deepEqual(await store.disconnectWorkersOfDeadServers(), ['w1']);
    assert.equal(await store.recordWorker(w1, { serverId: 'srv-b', connId: 'c5' }), true);
    // A clean stop: dead as well.
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    t.after(() => other.end());
    await other.query('SELECT pg_advisory_lock($1, hashtext($2))', [PRESENCE_LOCK_KEY, 'srv-a']);
    assert.equal(await alive(), true);
    await other.query(`UPDATE servers SET stopped_at = ${DB_NOW}`);
    assert.equal(await alive(), false);
    assert.deepEqual((await store.listServers()).map((s) => [s.id, s.alive]), [['srv-a', false]]);
  });

  test('presence and lease statements: a lease is held by one server, renewed by its tick, free once its holder dies or lets it go', async (t) => {
    const { url } = await freshSchema(t);
    const store = await open(t, url);
    /** A server as presence.ts runs one: its lock and row on a dedicated connection. */
    const join = async (id: string): Promise<pg.Client> => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      t.after(() => client.end().catch(() => {}));
      await client.query('SELECT pg_try_advisory_lock($1, hashtext($2))', [PRESENCE_LOCK_KEY, id]);
      await client.query({ ...S.SERVER_REGISTER, values: [id, `http://${id}`, 'h', 1, '1', 'd'] });
      return client;
    };
    const a = await join('srv-a');
    const b = await join('srv-b');
    const acquire = async (client: pg.Client, id: string) => (await client.query({ ...S.LEASE_ACQUIRE, values: ['scheduler', id, 8000] })).rows[0]?.epoch;
    assert.equal(Number(await acquire(a, 'srv-a')), 1);
    assert.equal(await acquire(b, 'srv-b'), undefined, 'held by a live server');
    // A counts it lost (a tick too late) while the row is still its own: it takes it back at once, fencing the old epoch.
    assert.equal(Number(await acquire(a, 'srv-a')), 2);
    const ticked = (await a.query({ ...S.PRESENCE_TICK, values: ['srv-a', 8000, ['scheduler', 'outbox']] })).rows;
    assert.deepEqual(ticked.map((r) => r.name), ['scheduler'], 'only what it holds is renewed');
    assert.deepEqual((await b.query({ ...S.PRESENCE_TICK, values: ['srv-b', 8000, ['scheduler']] })).rows, [], 'B does not hold it');
    assert.deepEqual((await store.listServers()).map((s) => [s.id, s.alive, s.leases]).sort(), [['srv-a', true, ['scheduler']], ['srv-b', true, []]]);
    // A dies (its connection ends): the lease is free at once, with the next epoch.
    await a.end();
    assert.equal(Number(await acquire(b, 'srv-b')), 3);
    // B lets it go: the farm hears it at once, and A (back) takes it.
    const listener = new pg.Client({ connectionString: url });
    await listener.connect();
    t.after(() => listener.end());
    const chan = (await listener.query<{ chan: string }>(`SELECT ${FEED_CHANNEL_SQL} AS chan`)).rows[0]!.chan;
    const heard = new Promise<string>((resolve) => listener.once('notification', (n) => resolve(n.payload!)));
    await listener.query(`LISTEN ${chan}`);
    assert.deepEqual((await b.query({ ...S.LEASE_RELEASE, values: ['scheduler', 'srv-b'] })).rows.map((r) => r.name), ['scheduler']);
    assert.deepEqual(JSON.parse(await heard), { s: 'srv-b', k: 'lease.released', d: { name: 'scheduler' } });
    const back = await join('srv-a');
    assert.equal(Number(await acquire(back, 'srv-a')), 4);
    await back.query({ ...S.SERVER_STOP, values: ['srv-a'] });
    assert.equal(Number(await acquire(b, 'srv-b')), 5, 'a stopped server\'s lease is free');
    await b.query({ ...S.SERVERS_FORGET_OLD });
    assert.equal((await store.listServers()).length, 2, 'recent rows are kept');
  });

  test('two servers claiming one worker name at once: exactly one gets it', async (t) => {
    const { url } = await freshSchema(t);
    const [a, b] = [await open(t, url), await open(t, url)];
    const holders: pg.Client[] = [];
    for (const id of ['srv-a', 'srv-b']) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      t.after(() => client.end());
      await client.query('SELECT pg_advisory_lock($1, hashtext($2))', [PRESENCE_LOCK_KEY, id]);
      await client.query(`INSERT INTO servers (id, url, hostname, pid, version, config_digest, started_at, heartbeat_at)
        VALUES ($1, 'http://x', 'x', 1, '1', 'd', ${DB_NOW}, ${DB_NOW})`, [id]);
      holders.push(client);
    }
    const w = (name: string) => ({ name, platform: 'linux', labels: {}, capacity: 1, hostname: 'h', os: 'linux', arch: 'x64', version: '1', connected: true, connectedAt: T0, lastSeen: T0 });
    for (let i = 0; i < 20; i++) {
      const got = await Promise.all([a.recordWorker(w(`w${i}`), { serverId: 'srv-a', connId: 'a' }), b.recordWorker(w(`w${i}`), { serverId: 'srv-b', connId: 'b' })]);
      assert.equal(got.filter(Boolean).length, 1, `w${i}: ${got}`);
      const [row] = (await a.listWorkers()).filter((x) => x.name === `w${i}`);
      assert.equal(row!.server, got[0] ? 'srv-a' : 'srv-b');
    }
  });

  describe('console lines on the feed', () => {
    /** A LISTEN on the schema's feed channel, on a connection of its own; `next()` is the next message. */
    async function listen(t: TestContext, url: string): Promise<{ next: () => Promise<FeedMessage>; client: pg.Client; received: FeedMessage[] }> {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      t.after(() => client.end());
      const { rows } = await client.query<{ chan: string }>(`SELECT ${FEED_CHANNEL_SQL} AS chan`);
      const received: FeedMessage[] = [];
      const waiters: ((m: FeedMessage) => void)[] = [];
      client.on('notification', (n) => {
        const message = JSON.parse(n.payload!) as FeedMessage;
        const waiter = waiters.shift();
        if (waiter) waiter(message);
        else received.push(message);
      });
      await client.query(`LISTEN ${rows[0]!.chan}`);
      return {
        client, received,
        next: () => (received.length > 0 ? Promise.resolve(received.shift()!) : new Promise((resolve) => waiters.push(resolve))),
      };
    }

    // A message never sent would leave next() waiting: each test is bounded.
    test('appendConsole announces each run\'s range in its own statement; the lines are stored when it arrives', { timeout: 30_000 }, async (t) => {
      const { url } = await freshSchema(t);
      const store = await openPostgresStore(url, { serverId: 'srv-1' });
      t.after(() => store.close());
      const silent = await open(t, url);
      const feed = await listen(t, url);
      const [r1, r2] = [randomUUID(), randomUUID()];
      await silent.appendConsole([{ runId: r1, lines: [{ seq: 0, ts: T0, text: 'no server id: not announced' }] }]);
      await assert.rejects(store.appendConsole([{ runId: r1, lines: [{ seq: 2 ** 31, ts: T0, text: 'refused' }] }]), 'a failed statement announces nothing');
      await store.appendConsole([
        { runId: r1, lines: [{ seq: 1, ts: T0, text: 'a' }, { seq: 2, ts: T0, text: 'b' }] },
        { runId: r2, lines: [{ seq: 5, ts: T0, text: 'c' }] },
      ]);
      const message = await feed.next();
      assert.deepEqual(message, { s: 'srv-1', k: CONSOLE_FEED_KIND, d: [{ r: r1, a: 1, b: 2 }, { r: r2, a: 5, b: 5 }] }, 'the first message is this one');
      assert.deepEqual((await silent.readConsole(r1, 0)).map((l) => l.text), ['a', 'b']);
      // Many runs in one batch: several messages, each under the limit.
      const many = Array.from({ length: 300 }, () => randomUUID());
      await store.appendConsole(many.map((runId) => ({ runId, lines: [{ seq: 0, ts: T0, text: 'x' }] })));
      const seen: string[] = [];
      while (seen.length < many.length) seen.push(...((await feed.next()).d as ConsoleRange[]).map((r) => r.r));
      assert.deepEqual(seen, many);
    });

    test('endAttempt announces the lines it writes, on every path, only once its transaction commits', { timeout: 30_000 }, async (t) => {
      const { url } = await freshSchema(t);
      const store = await openPostgresStore(url, { serverId: 'srv-1' });
      t.after(() => store.close());
      const feed = await listen(t, url);
      const worker = { name: 'w1', platform: 'linux', labels: { arch: 'arm' } };
      await store.createJob({ ...job, failureRetries: 1 }, [{ id: randomUUID(), job: 'build', platform: 'linux', labels: {}, queuedAt: T0 }]);
      const first = (await store.claimNext(worker, T0 + 1))!;
      // The full way (a failure that retries): held at its COMMIT, nothing is heard; after it, the lines and the note.
      const query = pg.Client.prototype.query;
      t.after(() => void (pg.Client.prototype.query = query));
      let reachCommit!: () => void;
      const atCommit = new Promise<void>((resolve) => (reachCommit = resolve));
      let letCommit!: () => void;
      const commitLet = new Promise<void>((resolve) => (letCommit = resolve));
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        if ((args[0] as { text?: string }).text === 'COMMIT') {
          pg.Client.prototype.query = query;
          reachCommit();
          return commitLet.then(() => (query as (...a: unknown[]) => unknown).apply(this, args));
        }
        return (query as (...a: unknown[]) => unknown).apply(this, args);
      } as typeof query;
      const failed = { report: { result: { kind: 'exited' as const, code: 2 } }, finishedAt: T0 + 2 };
      const ending = store.endAttempt(first.id, failed, { worker: 'w1' }, { lines: [{ seq: 3, ts: T0 + 2, text: 'last words' }] });
      await atCommit;
      await feed.client.query('SELECT 1');
      assert.deepEqual(feed.received, [], 'nothing before the commit');
      letCommit();
      const retried = await ending;
      assert.equal(retried.outcome, 'retried');
      assert.deepEqual(await feed.next(), { s: 'srv-1', k: CONSOLE_FEED_KIND, d: [{ r: first.id, a: 3, b: 4 }] }, 'the lines and the retry note after them');
      // The one-statement way (a success): announced too, with the statement unchanged in count.
      const second = (await store.claimNext(worker, T0 + 3))!;
      await store.endAttempt(second.id, { report: { result: { kind: 'exited', code: 0 } }, finishedAt: T0 + 4 }, { worker: 'w1' },
        { lines: [{ seq: 5, ts: T0 + 4, text: 'x' }, { seq: 7, ts: T0 + 4, text: 'y' }] });
      assert.deepEqual(await feed.next(), { s: 'srv-1', k: CONSOLE_FEED_KIND, d: [{ r: second.id, a: 5, b: 7 }] });
      // A stale end (the run already ended) still stores the lines given: announced.
      await store.endAttempt(second.id, { report: { result: { kind: 'exited', code: 0 } }, finishedAt: T0 + 5 }, { worker: 'w1' },
        { lines: [{ seq: 8, ts: T0 + 5, text: 'late' }] });
      assert.deepEqual(await feed.next(), { s: 'srv-1', k: CONSOLE_FEED_KIND, d: [{ r: second.id, a: 8, b: 8 }] });
      // A server's note on a queued run's console.
      const [queued] = await store.createJob({ ...job, name: 'other' }, [{ id: randomUUID(), job: 'other', platform: 'mac', labels: {}, queuedAt: T0 }]);
      const note = (await store.noteQueuedRun(queued!.id, 'no worker for mac', T0 + 6))!;
      assert.deepEqual(await feed.next(), { s: 'srv-1', k: CONSOLE_FEED_KIND, d: [{ r: queued!.id, a: note.seq, b: note.seq }] });
    });
  });
});
