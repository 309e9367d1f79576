/**
 * The server keeps serving when its store fails: a failed dispatch pass is tried again by itself,
 * and a full disk answers 507 KILN_ERR_DISK_FULL (a store wrapper that fails on purpose, and a
 * real full disk on a small tmpfs).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import type { JobStore } from '../../src/store/index.js';
import { call, FakeWorker, inProcessServer, testJob } from '../helpers/in-process.js';
import { kiln, startServer } from '../helpers/processes.js';

/** SQLite's own answer when the disk is full. */
const diskFull = () => new Database.SqliteError('database or disk is full', 'SQLITE_FULL');

/** The store, with `method` failing the next `times` calls once armed. */
function failing(method: keyof JobStore) {
  const state = { left: 0, failed: 0 };
  const wrap = (store: JobStore): JobStore => new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (key !== method || typeof value !== 'function') return typeof value === 'function' ? value.bind(target) : value;
      return async (...args: unknown[]) => {
        if (state.left > 0) {
          state.left -= 1;
          state.failed += 1;
          throw diskFull();
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { state, wrap };
}

test('a dispatch pass that fails (the store cannot claim) is tried again: the run reaches the idle worker with nothing else happening', { timeout: 30_000 }, async (t) => {
  const claims = failing('claimNext');
  const server = await inProcessServer(t, { wrapStore: claims.wrap });
  await call(server, 'POST', '/api/jobs', testJob);
  // Queued with no worker there (next to an idle one, execute would claim it itself).
  const runId: string = (await call(server, 'POST', `/api/jobs/${testJob.name}/execute`, {})).body.run.id;
  const worker = await FakeWorker.connect(t, server);
  claims.state.left = 2;
  await worker.hello();
  // No kick follows the failures: only the dispatcher's own retry can hand the run over.
  const assign = await worker.next<{ type: string; run: { id: string } }>();
  assert.equal(assign.type, 'run.assign');
  assert.equal(assign.run.id, runId);
  assert.equal(claims.state.failed, 2, 'both failures happened before the run went out');
});

test('a run claimed but not sent because the store failed goes back to its queue, unretried, and reaches the worker on the next pass', { timeout: 30_000 }, async (t) => {
  // A template job's script is expanded and saved in the claim; one it could not expand there (its
  // template named an unknown variable) is read again before the send, and that read is the store
  // call that fails.
  const templates = { dir: '' };
  const state = { armed: false, failed: 0 };
  const wrap = (store: JobStore): JobStore => new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      if (key === 'enqueueAndClaim') {
        return async (...args: unknown[]) => {
          const done = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          state.armed = true;
          return done;
        };
      }
      if (key !== 'getJob') return value.bind(target);
      return async (...args: unknown[]) => {
        if (state.armed) {
          state.armed = false;
          state.failed += 1;
          // The template is fixed by the next pass: only the store's failure kept the run from its worker.
          writeFileSync(path.join(templates.dir, 'tpl.testos'), 'echo %%JOB%%\n');
          throw diskFull();
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const server = await inProcessServer(t, { wrapStore: wrap });
  templates.dir = path.join(server.dataDir, 'templates');
  mkdirSync(templates.dir);
  writeFileSync(path.join(templates.dir, 'tpl.testos'), 'echo %%UNKNOWN%%\n');
  const worker = await FakeWorker.connect(t, server);
  await worker.hello();
  await call(server, 'POST', '/api/jobs', { name: 'tj', template: 'tpl', period: 'never', retries: 0 });
  const runId: string = (await call(server, 'POST', '/api/jobs/tj/execute', {})).body.run.id;
  const assign = await worker.next<{ type: string; run: { id: string; attempt: number; script: string } }>();
  assert.deepEqual([assign.type, assign.run.id, assign.run.attempt, assign.run.script], ['run.assign', runId, 1, 'echo tj\n']);
  assert.equal(state.failed, 1);
  const { events } = (await call(server, 'GET', `/api/runs/${runId}/events`)).body;
  const requeued = events.find((e: { kind: string }) => e.kind === 'requeued');
  assert.match(requeued?.detail.why ?? '', /never started: the server could not send it \(the store failed\)/);
  assert.ok(!events.some((e: { kind: string }) => e.kind === 'ended' || e.kind === 'retried'), JSON.stringify(events));
});

test('a write the full disk refuses answers 507 KILN_ERR_DISK_FULL, and the same write succeeds once there is room', { timeout: 30_000 }, async (t) => {
  const creates = failing('createJob');
  const server = await inProcessServer(t, { wrapStore: creates.wrap });
  creates.state.left = 1;
  const refused = await call(server, 'POST', '/api/jobs', testJob);
  assert.equal(refused.status, 507);
  assert.equal(refused.body.error.code, 'KILN_ERR_DISK_FULL');
  assert.match(refused.body.error.message, /disk is full/);
  assert.equal((await call(server, 'POST', '/api/jobs', testJob)).status, 201);
});

/** A tmpfs of `size` mounted on a new temp dir, unmounted when the test ends; undefined when mounting is not permitted. */
function smallDisk(t: TestContext, size: string): string | undefined {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (raw) {
    const why = `cannot mount a tmpfs here (${String((raw as { stderr?: Buffer }).stderr ?? raw).trim() || 'not permitted'})`;
    if (process.env.KILN_TEST_REQUIRE_ALL === '1') throw new Error(`${why}; KILN_TEST_REQUIRE_ALL forbids skipping`);
    rmSync(dir, { recursive: true, force: true });
    t.skip(why);
    return undefined;
  }
  // Lazy: the server (killed after this) may still hold files there.
  t.after(() => {
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Writes a file until the disk has no room left. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (let size = chunk.length; size > 0;) {
      try {
        writeSync(fd, chunk, 0, size);
      } catch (raw) {
        if ((raw as NodeJS.ErrnoException).code !== 'ENOSPC') throw raw;
        size >>= 1;
      }
    }
  } finally {
    closeSync(fd);
  }
}

test('on a really full disk the API answers 507 KILN_ERR_DISK_FULL, the CLI says so in one line, and the server serves on once there is room', { timeout: 60_000 }, async (t) => {
  const disk = smallDisk(t, '8m');
  if (!disk) return;
  const dataDir = path.join(disk, 'data');
  const server = await startServer(t, { dataDir });
  const filler = path.join(disk, 'filler');
  fill(filler);

  const response = await fetch(`${server.url}/api/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(testJob),
  });
  assert.equal(response.status, 507);
  assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'KILN_ERR_DISK_FULL');
  const cli = await kiln(server, ['schedule', 'other', '--command', 'true', '--period', 'never']);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /^kiln: database or disk is full \(the disk is full: free some space, then try again\)\n$/);

  rmSync(filler);
  const again = await kiln(server, ['schedule', 'other', '--command', 'true', '--period', 'never']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(server.child.exitCode, null, 'the server is still running');
});
