/**
 * The singletons act only while this server holds their lease (notes/issue16-plan.md §2.3): the
 * scheduler, the reaper and the outbox, each on a real SQLite store in a temp dir, under a lease the
 * test holds and takes away (a tiny Lease, the keeper's part being another test's). Each does nothing
 * while the lease is not held, acts on gaining it, and stops on losing it; the outbox's records are
 * fenced by the lease's epoch, so a deposed holder writes nothing and the delivery is sent again by
 * the new one with the same delivery id.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { Lease } from '../../src/server/cluster/types.js';
import { DEFAULT_ARTIFACT_LIMITS, DirBlobStore } from '../../src/server/artifact-store.js';
import { createEventBus } from '../../src/server/events.js';
import { Reaper } from '../../src/server/reaper.js';
import { RunLifecycle } from '../../src/server/run-lifecycle.js';
import { Scheduler } from '../../src/server/scheduler.js';
import { Templates } from '../../src/server/templates.js';
import { adoptFarmTokens, ensureTokens } from '../../src/server/tokens.js';
import { Outbox, DEFAULT_OUTBOX_TIMINGS } from '../../src/server/upload/outbox.js';
import type { DeliveryOutcome, RunDelivery, UploadTarget } from '../../src/server/upload/target.js';
import { WorkerRegistry } from '../../src/server/worker-registry.js';
import type { Job, JobStore } from '../../src/store/index.js';
import { openPostgresStore } from '../../src/store/postgres/postgres-store.js';
import { openSqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { freshSchema, postgresReason } from '../helpers/postgres.js';
import { testLease } from '../helpers/test-lease.js';

const T0 = 1_700_000_000_000;
const log = pino({ level: 'silent' });

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-singletons-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

type Kind = 'sqlite' | 'postgres';

/** The outbox's fencing is the store's: its tests run on both (PostgreSQL where it answers). */
const KINDS: { kind: Kind; skip: string | false }[] = [
  { kind: 'sqlite', skip: false },
  { kind: 'postgres', skip: postgresReason() ?? false },
];

async function openTestStore(t: TestContext, kind: Kind = 'sqlite'): Promise<{ store: JobStore; dir: string }> {
  const dir = tempDir(t);
  const store = kind === 'sqlite' ? openSqliteStore(path.join(dir, 'kiln.db')) : await openPostgresStore((await freshSchema(t)).url);
  t.after(() => store.close());
  return { store, dir };
}

function makeJob(name: string, over: Partial<Job> = {}): Job {
  return {
    name, platform: 'linux', script: `echo ${name}`, env: {}, labels: {}, template: null, vars: {},
    schedule: { kind: 'period', period: 'daily' }, paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null,
    timeoutMs: 3_600_000, idleTimeoutMs: null, retries: 1, failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {},
    nextAt: null, createdAt: T0, updatedAt: T0, ...over,
  };
}

/** A run of a new job `name` claimed by worker `worker` (recorded connected at T0). */
async function runningRun(store: JobStore, name: string, worker: string) {
  await store.recordWorker({ name: worker, platform: 'linux', labels: {}, capacity: 1, hostname: 'h', os: 'linux', arch: 'x64', version: 't', connected: true, connectedAt: T0, lastSeen: T0 });
  await store.createJob(makeJob(name), [{ id: randomUUID(), job: name, platform: 'linux', labels: {}, queuedAt: T0 }]);
  const run = await store.claimNext({ name: worker, platform: 'linux', labels: {} }, T0, 60_000);
  assert.ok(run);
  return run;
}

test('the scheduler fires nothing while its lease is not held, fires what is due on gaining it, and stops on losing it', async (t) => {
  const { store } = await openTestStore(t);
  const events = createEventBus(log);
  const lease = testLease('scheduler');
  const fired: number[] = [];
  let now = T0;
  await store.createJob(makeJob('cron', { nextAt: T0 }), []);
  const scheduler = new Scheduler(log, { store, events, jobs: { fireDue: async (at) => void fired.push(at) }, now: () => now, lease });
  t.after(() => scheduler.stop());
  await scheduler.wake();
  events.publish('job.changed', { name: 'cron', remote: true });
  assert.deepEqual(fired, [], 'not held: no pass');
  lease.set(true, 3);
  // open() ran a pass at once; this kick's pass runs after it.
  await scheduler.wake();
  assert.ok(fired.length >= 1, 'gained: what was due fired');
  const count = fired.length;
  lease.set(false);
  now += 1;
  await scheduler.wake();
  events.publish('job.changed', { name: 'cron', remote: true });
  events.publish('feed.resync', {});
  assert.equal(fired.length, count, 'lost: no pass by a wake, a remote job.changed or a resync');
  lease.set(true, 4);
  await scheduler.wake();
  assert.ok(fired.length > count, 'gained again: it fires');
});

test('the reaper loses nothing while its lease is not held, loses the runs of workers gone past the grace on gaining it, and stops on losing it', async (t) => {
  const { store, dir } = await openTestStore(t);
  const events = createEventBus(log);
  const workers = new WorkerRegistry(events);
  let now = T0;
  const lifecycle = new RunLifecycle(log, {
    store, events, workers, console: { flush: async () => undefined, take: async () => [], restore: () => undefined },
    templates: new Templates(path.join(dir, 'templates')), now: () => now, backstopMs: 1000,
  });
  const lease = testLease('reaper');
  const reaper = new Reaper(log, { store, events, lifecycle, now: () => now, reattachGraceMs: 1000, lease });
  t.after(() => reaper.stop());
  const first = await runningRun(store, 'a', 'w1');
  const second = await runningRun(store, 'b', 'w2');
  await store.workerDisconnected('w1', T0);
  now = T0 + 5000;
  await reaper.kick();
  events.publish('feed.resync', {});
  events.publish('worker.elsewhere', { name: 'w1', platform: 'linux', change: 'left', remote: true });
  await reaper.kick();
  assert.equal((await store.findRun(first.id)).status, 'running', 'not held: nothing lost');
  lease.set(true, 1);
  await reaper.kick();
  const lost = await store.findRun(first.id);
  assert.equal(lost.attempt, 2, 'held: lost, and retried as its next attempt');
  assert.equal(lost.status, 'queued');
  lease.set(false);
  await store.workerDisconnected('w2', T0);
  await reaper.kick();
  events.publish('worker.elsewhere', { name: 'w2', platform: 'linux', change: 'left', remote: true });
  await reaper.kick();
  assert.equal((await store.findRun(second.id)).status, 'running', 'lost the lease: nothing more lost here');
});

/** An upload target that records each delivery and answers when told. */
function recordingTarget() {
  const sent: { deliveryId: string; runId: string; signal?: AbortSignal; answer: (outcome: DeliveryOutcome) => void }[] = [];
  let arrived: (() => void) | undefined;
  const target: UploadTarget = {
    description: 'https://results.example/upload',
    deliver: (delivery: RunDelivery) => new Promise<DeliveryOutcome>((answer) => {
      sent.push({ deliveryId: delivery.deliveryId, runId: delivery.run.id, signal: delivery.signal, answer });
      delivery.signal?.addEventListener('abort', () => answer({ kind: 'retry', reason: 'aborted' }));
      arrived?.();
    }),
  };
  /** Resolves once `count` deliveries were started. */
  const started = (count: number) => new Promise<void>((resolve) => {
    const check = () => {
      if (sent.length >= count) resolve();
    };
    arrived = check;
    check();
  });
  return { target, sent, started };
}

async function outboxWorld(t: TestContext, kind: Kind = 'sqlite') {
  const { store, dir } = await openTestStore(t, kind);
  store.setUploadTarget('https://results.example/upload');
  const run = await runningRun(store, 'built', 'w1');
  await store.endAttempt(run.id, { report: { result: { kind: 'exited', code: 0 } }, finishedAt: T0 + 1 }, { worker: 'w1', attempt: 1 }, {});
  const blobs = new DirBlobStore(path.join(dir, 'artifacts'), { dataDir: dir, limits: DEFAULT_ARTIFACT_LIMITS, store, now: () => T0 + 10 });
  const outbox = (lease: Lease, target: UploadTarget, events = createEventBus(log), on: JobStore = store) => {
    const made = new Outbox(log, { store: on, target, blobs, events, now: () => T0 + 10, timings: DEFAULT_OUTBOX_TIMINGS, lease });
    t.after(() => made.stop());
    return made;
  };
  return { store, run, outbox, dir };
}

for (const { kind, skip } of KINDS) {
  test(`the outbox sends nothing while its lease is not held, and sends on gaining it (${kind})`, { skip, timeout: 15_000 }, async (t) => {
    const { store, run, outbox } = await outboxWorld(t, kind);
    const { target, sent, started } = recordingTarget();
    const lease = testLease('outbox');
    const events = createEventBus(log);
    const box = outbox(lease, target, events);
    box.wake();
    events.publish('delivery.queued', { runId: run.id, remote: true });
    events.publish('feed.resync', {});
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(sent.length, 0, 'not held: nothing sent');
    lease.set(true, 1);
    await started(1);
    sent[0]!.answer({ kind: 'delivered' });
    await box.stop();
    assert.equal((await store.listDeliveries(run.id))[0]?.state, 'delivered');
  });
}

for (const { kind, skip } of KINDS) {
  test(`an outbox that loses its lease mid-send aborts it and records nothing; the next holder sends it again with the same delivery id (${kind})`, { skip, timeout: 15_000 }, async (t) => {
    const { store, run, outbox } = await outboxWorld(t, kind);
    const a = recordingTarget();
    const b = recordingTarget();
    const leaseA = testLease('outbox');
    const leaseB = testLease('outbox');
    outbox(leaseA, a.target);
    const boxB = outbox(leaseB, b.target);
    leaseA.set(true, 1);
    await a.started(1);
    // The lease moves: A is told first (it aborts), then B gains it with a newer epoch.
    leaseA.set(false);
    assert.equal(a.sent[0]!.signal?.aborted, true, 'the send in flight was aborted');
    leaseB.set(true, 2);
    await b.started(1);
    assert.equal(b.sent[0]!.deliveryId, a.sent[0]!.deliveryId, 'sent again with the same delivery id');
    b.sent[0]!.answer({ kind: 'delivered' });
    await boxB.stop();
    const [delivery] = await store.listDeliveries(run.id);
    assert.deepEqual([delivery?.state, delivery?.attempts], ['delivered', 1], 'one attempt recorded: the aborted one was not');
  });
}

for (const { kind, skip } of KINDS) {
  test(`a deposed outbox (a newer epoch claimed the delivery) has its record refused, and stops (${kind})`, { skip, timeout: 15_000 }, async (t) => {
    const { store, run, outbox } = await outboxWorld(t, kind);
    const a = recordingTarget();
    const b = recordingTarget();
    const leaseA = testLease('outbox');
    const leaseB = testLease('outbox');
    const boxA = outbox(leaseA, a.target);
    const boxB = outbox(leaseB, b.target);
    leaseA.set(true, 1);
    await a.started(1);
    // A's lease ran out without A hearing of it yet (a hung connection): B holds it with epoch 2.
    leaseB.set(true, 2);
    await b.started(1);
    b.sent[0]!.answer({ kind: 'delivered' });
    await boxB.stop();
    // A's target finally answers: a failure that would have made the delivery pending again.
    a.sent[0]!.answer({ kind: 'give-up', reason: 'refused' });
    await boxA.stop();
    const [delivery] = await store.listDeliveries(run.id);
    assert.deepEqual([delivery?.state, delivery?.attempts, delivery?.lastError], ['delivered', 1, null], 'A\'s record was refused');
    assert.equal(await store.recordClaimedDeliveryAttempt(delivery!.id, 1, { state: 'failed', nextAt: T0, error: 'x', at: T0 }), false, 'the store fences epoch 1');
  });
}

test('admin.token and worker.token are farm-wide: the first server\'s win, a later server\'s files are overwritten (0600)', async (t) => {
  const { store } = await openTestStore(t);
  const first = tempDir(t);
  const second = tempDir(t);
  const where = (dataDir: string) => ({ dataDir, log, now: () => T0 });
  const farm = await adoptFarmTokens(store, ensureTokens(first), where(first));
  assert.deepEqual(farm, ensureTokens(first), 'the first server keeps its own');
  const local = ensureTokens(second);
  assert.notEqual(local.admin, farm.admin);
  const adopted = await adoptFarmTokens(store, local, where(second));
  assert.deepEqual(adopted, farm);
  assert.equal(readFileSync(path.join(second, 'admin.token'), 'utf8').trim(), farm.admin, 'the local file now holds the farm\'s');
  assert.equal(readFileSync(path.join(second, 'worker.token'), 'utf8').trim(), farm.worker);
  assert.equal(statSync(path.join(second, 'admin.token')).mode & 0o777, 0o600);
  assert.deepEqual(ensureTokens(second), farm, 'a CLI on that host reads the farm\'s');
});

// Alone on SQLite the epoch is 0 for good: its claim takes back every row left sending (one server per file).
test('alone on its store (epoch 0 for good): a delivery left sending by a stop is sent again by the next life, with the same delivery id', { timeout: 10_000 }, async (t) => {
  const { store, run, outbox, dir } = await outboxWorld(t);
  const first = recordingTarget();
  const second = recordingTarget();
  const solo = () => ({ name: 'outbox', held: true, epoch: 0, onChange: () => () => undefined });
  const before = outbox(solo(), first.target);
  before.wake();
  await first.started(1);
  await before.stop();
  assert.equal((await store.listDeliveries(run.id))[0]?.state, 'sending', 'cut by the stop: not recorded');
  // The next life opens the file afresh, as a restarted server does.
  const nextLife = openSqliteStore(path.join(dir, 'kiln.db'));
  t.after(() => nextLife.close());
  nextLife.setUploadTarget('https://results.example/upload');
  const after = outbox(solo(), second.target, undefined, nextLife);
  after.wake();
  // A bound (a timer that keeps the process alive): a delivery never taken back must fail here, not hang.
  let bound: NodeJS.Timeout | undefined;
  await Promise.race([second.started(1), new Promise((_, reject) => (bound = setTimeout(() => reject(new Error('not sent again within 2 s')), 2000)))]);
  clearTimeout(bound);
  assert.equal(second.sent[0]!.deliveryId, first.sent[0]!.deliveryId);
  second.sent[0]!.answer({ kind: 'delivered' });
  await after.stop();
  assert.deepEqual((await store.listDeliveries(run.id)).map((d) => [d.state, d.attempts]), [['delivered', 1]]);
});
