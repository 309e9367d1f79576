/** The scheduler on a real SQLite store with an injected clock: grid times, downtime, no double queueing. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import pino from 'pino';
import { Scheduler } from '../../src/server/scheduler.js';
import { openStore, type Job, type JobStore } from '../../src/store/index.js';

const HOUR = 3_600_000;
const T0 = Date.parse('2026-11-22T10:00:00Z');

async function setup(t: TestContext): Promise<{ store: JobStore; clock: { now: number }; scheduler: Scheduler; queued: { count: number } }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-sched-'));
  const store = await openStore(dir);
  const clock = { now: T0 };
  const queued = { count: 0 };
  const scheduler = new Scheduler(store, pino({ level: 'silent' }), () => clock.now, () => (queued.count += 1));
  t.after(async () => {
    scheduler.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, clock, scheduler, queued };
}

const hourly: Job = {
  name: 'nightly', platform: 'testos', script: 'true\n', env: {}, labels: {}, period: 'hourly',
  timeoutMs: 60_000, idleTimeoutMs: null, retries: 1, failureRetries: 0, nextAt: T0 + HOUR, createdAt: T0, updatedAt: T0,
};

test('a due job is queued and its next time stays on its own grid, whatever the delay', async (t) => {
  const { store, clock, scheduler, queued } = await setup(t);
  await store.createJob(hourly);
  await scheduler.wake();
  assert.equal(queued.count, 0, 'nothing is due yet');

  clock.now = T0 + HOUR + 1234; // woken a little late
  await scheduler.wake();
  assert.equal(queued.count, 1);
  assert.equal((await store.getJob('nightly'))!.nextAt, T0 + 2 * HOUR, 'no drift from the late wake-up');
  assert.equal((await store.listQueued()).length, 1);
});

test('after downtime a job that missed several slots runs once', async (t) => {
  const { store, clock, scheduler } = await setup(t);
  await store.createJob(hourly);
  clock.now = T0 + 5.5 * HOUR;
  await scheduler.wake();
  await scheduler.wake();
  const runs = await store.listRuns({ job: 'nightly', limit: 10 });
  assert.equal(runs.length, 1, 'one run, not one per missed slot');
  assert.equal((await store.getJob('nightly'))!.nextAt, T0 + 6 * HOUR);
});

test('a job still queued when it is due again is not queued twice', async (t) => {
  const { store, clock, scheduler } = await setup(t);
  await store.createJob(hourly);
  clock.now = T0 + HOUR;
  await scheduler.wake();
  clock.now = T0 + 2 * HOUR;
  await scheduler.wake();
  assert.equal((await store.listRuns({ job: 'nightly', limit: 10 })).length, 1);
  assert.equal((await store.getJob('nightly'))!.nextAt, T0 + 3 * HOUR);
});

test('never jobs are never queued by the scheduler', async (t) => {
  const { store, clock, scheduler, queued } = await setup(t);
  await store.createJob({ ...hourly, period: 'never', nextAt: null });
  clock.now = T0 + 100 * HOUR;
  await scheduler.wake();
  assert.equal(queued.count, 0);
  assert.equal((await store.listRuns({ limit: 10 })).length, 0);
});
