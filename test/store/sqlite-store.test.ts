/** The SQLite store: the JobStore contract on a fresh file per test, plus what only SQLite has. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import type { Job, JobStore } from '../../src/store/index.js';
import { KILN_APPLICATION_ID, migrate } from '../../src/store/sqlite/migrate.js';
import { openSqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { SERVER_TTL_MS } from '../../src/store/cluster-constants.js';
import { runJobStoreSuite, type ClusterHooks } from './job-store.suite.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../src/store/sqlite/migrations/', import.meta.url));

/** A temp dir for one test; what it opens there is closed, then the dir removed, when the test ends. */
interface Scratch {
  /** A database file path in the dir (default `kiln.db`). */
  file(name?: string): string;
  /** Opens the store at `file`, closed when the test ends. */
  open(file: string): JobStore;
  /** Opens `file` directly, for checks the store does not expose; closed when the test ends. */
  raw(file: string, options?: Database.Options): Database.Database;
}

function scratch(t: TestContext): Scratch {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-sqlite-'));
  const closers: (() => unknown)[] = [];
  t.after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    file: (name = 'kiln.db') => path.join(dir, name),
    open(file) {
      const store = openSqliteStore(file);
      closers.push(() => store.close());
      return store;
    },
    raw(file, options) {
      const db = new Database(file, options);
      closers.push(() => db.close());
      return db;
    },
  };
}

/** The migration versions shipped in src/store/sqlite/migrations. */
function shippedVersions(): number[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((f) => /^\d{4}_.*\.sql$/.test(f))
    .map((f) => Number(f.slice(0, 4)))
    .sort((a, b) => a - b);
}

/** Each suite store's file, for the servers a test records there. */
const storeFiles = new WeakMap<JobStore, string>();

/** Servers as rows of the store's table (on SQLite, alive is a recent heartbeat: this process's clock). */
const cluster: ClusterHooks = {
  async addServer(_t, store, server) {
    const db = new Database(storeFiles.get(store)!);
    try {
      const now = Date.now();
      const beat = server.alive ? now : now - 8 * SERVER_TTL_MS;
      db.prepare(`INSERT INTO servers (id, url, hostname, pid, version, config_digest, started_at, heartbeat_at)
        VALUES (?, ?, ?, 42, '0.1.0', 'digest', ?, ?)`).run(server.id, `http://${server.id}.test:7070`, `${server.id}.host`, beat, beat);
      for (const lease of server.leases ?? []) {
        db.prepare('INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, ?, 1, ?)').run(lease.name, server.id, lease.expired ? now - 1 : now + 60_000);
      }
      return beat;
    } finally {
      db.close();
    }
  },
};

runJobStoreSuite('sqlite', async (t) => {
  const dir = scratch(t);
  const file = dir.file();
  const store = dir.open(file);
  storeFiles.set(store, file);
  return store;
}, { cluster });

describe('SQLite store', () => {
  const T0 = 1_700_000_000_000;
  const job: Job = {
    name: 'build', platform: 'linux', script: 'make', env: { CC: 'gcc' }, labels: { arch: 'arm' }, template: null, vars: {},
    schedule: { kind: 'period', period: 'daily' }, paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null,
    timeoutMs: 60_000, idleTimeoutMs: null, retries: 1, failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {}, nextAt: T0 + 1000, createdAt: T0, updatedAt: T0,
  };

  test('jobs, queued runs and console lines survive closing and reopening the file', async (t) => {
    const dir = scratch(t);
    const file = dir.file();
    const runId = randomUUID();
    const lines = [{ seq: 0, ts: T0, text: 'first' }, { seq: 1, ts: T0 + 1, text: 'ünïcode ✓' }];

    const before = dir.open(file);
    const [run] = await before.createJob(job, [{ id: runId, job: 'build', platform: 'linux', labels: job.labels, queuedAt: T0 }]);
    await before.appendConsole([{ runId, lines }]);
    await before.recordWorker({
      name: 'w1', platform: 'linux', labels: {}, capacity: 1, hostname: 'h', os: 'linux', arch: 'x64', version: '0.1.0',
      connected: true, connectedAt: T0, lastSeen: T0,
    });
    await before.close();

    const after = dir.open(file);
    assert.deepEqual(await after.getJob('build'), job);
    assert.deepEqual(await after.listQueued(), [run]);
    assert.deepEqual(await after.readConsole(runId), lines);
    assert.deepEqual((await after.listWorkers()).map((w) => w.name), ['w1']);
    // The reopened queue still works: the run can be claimed.
    assert.equal((await after.claimNext({ name: 'w1', platform: 'linux', labels: { arch: 'arm' } }, T0 + 5))?.id, runId);
  });

  test('every shipped migration is recorded in schema_migrations', async (t) => {
    const dir = scratch(t);
    await dir.open(dir.file()).close();
    const db = dir.raw(dir.file(), { readonly: true, fileMustExist: true });
    const versions = db.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all();
    assert.ok(shippedVersions().length > 0);
    assert.deepEqual(versions, shippedVersions());
  });

  test('reopening the file does not apply migrations again', async (t) => {
    const dir = scratch(t);
    const file = dir.file();
    await dir.open(file).close();
    const recorded = () => {
      const db = new Database(file, { readonly: true, fileMustExist: true });
      try {
        return db.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all();
      } finally {
        db.close();
      }
    };
    const first = recorded();
    // Running 0001 again would fail on CREATE TABLE; the reopen must also leave the record alone.
    const store = dir.open(file);
    assert.deepEqual(await store.listJobs(), []);
    await store.close();
    assert.deepEqual(recorded(), first);
    assert.deepEqual(migrate(dir.raw(file)), [], 'an up-to-date database needs no migration');
  });

  test('migrate applies every shipped version to an empty database, in order, once', (t) => {
    const db = new Database(':memory:');
    t.after(() => db.close());
    assert.deepEqual(migrate(db), shippedVersions());
    assert.deepEqual(migrate(db), []);
  });

  test("a new database carries Kiln's application_id; one from before the marker is adopted and marked, its data kept", async (t) => {
    const dir = scratch(t);
    const file = dir.file();
    const first = dir.open(file);
    await first.createJob(job);
    await first.close();
    const marked = new Database(file);
    assert.equal(marked.pragma('application_id', { simple: true }), KILN_APPLICATION_ID);
    marked.pragma('application_id = 0'); // as a Kiln from before the marker left it
    marked.close();

    const adopted = dir.open(file);
    assert.deepEqual((await adopted.listJobs()).map((j) => j.name), ['build']);
    await adopted.close();
    assert.equal(dir.raw(file, { readonly: true }).pragma('application_id', { simple: true }), KILN_APPLICATION_ID);
  });

  test("a foreign, newer or damaged file is refused with the file's name and a catalogued code, before anything in it changes", async (t) => {
    const dir = scratch(t);
    const foreign = dir.file('foreign.db');
    const other = new Database(foreign);
    other.exec('CREATE TABLE notes (body TEXT)');
    other.close();
    assert.throws(() => openSqliteStore(foreign), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORE_FOREIGN' && err.message.startsWith(`${foreign} is not a Kiln database`));
    assert.deepEqual(dir.raw(foreign, { readonly: true }).prepare("SELECT name FROM sqlite_master").pluck().all(), ['notes']);

    const newer = dir.file('newer.db');
    await openSqliteStore(newer).close();
    const db = new Database(newer);
    db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)').run(Math.max(...shippedVersions()) + 1);
    db.close();
    assert.throws(() => openSqliteStore(newer), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORE_TOO_NEW' && err.message.startsWith(`${newer} has schema version`));
  });

  test('the database is in WAL mode', async (t) => {
    const dir = scratch(t);
    const store = dir.open(dir.file());
    await store.listJobs();
    assert.equal(dir.raw(dir.file(), { readonly: true }).pragma('journal_mode', { simple: true }), 'wal');
  });

  test('the parent directories of the file are created', async (t) => {
    const dir = scratch(t);
    const store = dir.open(dir.file(path.join('nested', 'deeper', 'kiln.db')));
    await store.createJob(job);
    assert.deepEqual((await store.listJobs()).map((j) => j.name), ['build']);
  });

  test('calls after close reject, and closing twice is harmless', async (t) => {
    const dir = scratch(t);
    const store = dir.open(dir.file());
    await store.close();
    // Wrapped in async functions: that a closed store may throw synchronously is a separate issue.
    await assert.rejects(async () => store.getJob('build'));
    await assert.rejects(async () => store.createJob(job));
    await store.close();
  });
});
