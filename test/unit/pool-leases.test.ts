/**
 * A pool's manager acts only while its server holds the pool's lease (`pool:NAME`), and what the
 * next holder needs is in the store: two managers (two servers) on one real SQLite store, with one
 * backend both reach (a recording provider: the instances it "runs" are listed by their owner id,
 * as a real backend lists them). The leases are the test's to give and take away.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { Dispatcher } from '../../src/server/dispatcher.js';
import { createEventBus } from '../../src/server/events.js';
import { PoolManager, type PoolConfig } from '../../src/server/latent/pool-manager.js';
import type { InstanceHandle, InstanceSpec, OwnInstance, Provider } from '../../src/server/latent/provider.js';
import { hashToken } from '../../src/server/tokens.js';
import { WorkerRegistry } from '../../src/server/worker-registry.js';
import type { Job, JobStore } from '../../src/store/index.js';
import { openSqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { testLease } from '../helpers/test-lease.js';

const T0 = 1_700_000_000_000;
const log = pino({ level: 'silent' });

/** One backend both servers reach: what it runs, by id, and every call made to it. */
function sharedBackend() {
  const running = new Map<string, InstanceSpec>();
  const calls = [] as string[];
  let started: ((spec: InstanceSpec) => void) | undefined;
  let failing = false;
  const handle = (spec: InstanceSpec): InstanceHandle => ({ id: spec.id, ref: spec.name, lastWords: () => '' });
  const provider: Provider = {
    kind: 'test', adoptable: true,
    async start(spec) {
      calls.push(`start ${spec.name}`);
      started?.(spec);
      if (failing) throw new Error('no capacity');
      running.set(spec.id, spec);
      return handle(spec);
    },
    check: async (h) => (running.has(h.id) ? null : 'gone'),
    async stop(h) {
      calls.push(`stop ${h.ref}`);
      running.delete(h.id);
    },
    listOwn: async (owner): Promise<OwnInstance[]> => [...running.values()].filter((s) => s.owner === owner).map((s) => ({ handle: handle(s), pool: s.pool, name: s.name })),
  };
  const nextStart = () => new Promise<InstanceSpec>((resolve) => (started = resolve));
  return { provider, running, calls, nextStart, fail: (on: boolean) => (failing = on) };
}

const config: PoolConfig = {
  name: 'p', provider: 'test', platform: 'lat', labels: {}, max: 2, minIdle: 0, idleTimeoutMs: -1, startTimeoutMs: 600_000, checkIntervalMs: 600_000, perRun: false,
};

function makeJob(name: string): Job {
  return {
    name, platform: 'lat', script: 'true', env: {}, labels: {}, template: null, vars: {},
    schedule: { kind: 'period', period: 'never' }, paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null,
    timeoutMs: 3_600_000, idleTimeoutMs: null, retries: 0, failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {},
    nextAt: null, createdAt: T0, updatedAt: T0,
  };
}

async function farm(t: TestContext) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-pool-leases-'));
  const store: JobStore = openSqliteStore(path.join(dir, 'kiln.db'));
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const backend = sharedBackend();
  const dispatcher = { busyNow: () => false, reservedFor: () => undefined, reserve: () => undefined } as unknown as Dispatcher;
  const secret = Buffer.alloc(32, 7);
  /** A server's pool manager under a lease the test holds. */
  const server = () => {
    const events = createEventBus(log);
    const lease = testLease('pool:p');
    const manager = new PoolManager([{ config, provider: backend.provider }], {
      store, dispatcher, workers: new WorkerRegistry(events), events, log, now: () => Date.now(), server: () => 'http://127.0.0.1:1',
      owner: 'farm-owner', secret, note: async () => undefined, reattachGraceMs: 60_000, leases: () => lease,
    });
    t.after(() => manager.stop());
    manager.start();
    return { manager, lease, events };
  };
  await store.createJob(makeJob('waits'), [{ id: randomUUID(), job: 'waits', platform: 'lat', labels: {}, queuedAt: T0 }]);
  return { store, backend, server };
}

test('a pool starts nothing while its lease is not held; on gaining it, an instance is recorded before it starts and any server knows its token; losing it stops nothing, and the next holder adopts it', async (t) => {
  const { store, backend, server } = await farm(t);
  const a = server();
  const b = server();
  a.manager.evaluate();
  b.events.publish('run.queued', { runs: [], remote: true });
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(backend.calls.length, 0, 'no lease held: nothing started');

  const starting = backend.nextStart();
  a.lease.set(true, 1);
  const spec = await starting;
  const recorded = await store.poolInstanceByToken(hashToken(spec.token));
  assert.equal(recorded?.name, spec.name, 'recorded (by its token\'s hash) before the backend was asked');
  assert.equal(await b.manager.nameForToken(spec.token), spec.name, 'the other server authenticates its worker');
  assert.equal(await b.manager.isInstanceName(spec.name), true);
  assert.equal(await b.manager.nameForToken('not-a-token'), undefined);

  a.lease.set(false);
  const shown = (await b.manager.farmView())[0]!;
  assert.deepEqual(shown.instances.map((i) => i.name), [spec.name], 'a server not holding the pool shows its instances from the store');
  b.lease.set(true, 2);
  // B's first look lists the farm owner's instances and adopts the one A started.
  await new Promise<void>((resolve) => {
    const off = b.events.on('pool.instance.adopted', ({ instance }) => {
      assert.equal(instance, spec.name);
      off();
      resolve();
    });
  });
  assert.ok(!backend.calls.some((c) => c.startsWith('stop')), 'losing the lease stopped no instance');
  assert.equal(backend.calls.filter((c) => c.startsWith('start')).length, 1, 'B started none more: it adopted A\'s');
  const [row] = await store.listPoolInstances('p');
  assert.deepEqual([row?.name, row?.adopted], [spec.name, true]);
});

test('a pool\'s failures are kept in the store, and its next holder counts on from them', async (t) => {
  const { store, backend, server } = await farm(t);
  const a = server();
  backend.fail(true);
  const starting = backend.nextStart();
  a.lease.set(true, 1);
  await starting;
  // The failure is recorded once the start has failed and the instance is stopped.
  for (let i = 0; i < 200 && (await store.poolState('p')).failures === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
  const kept = await store.poolState('p');
  assert.ok(kept.failures >= 1);
  assert.match(kept.lastError ?? '', /no capacity/);
  assert.equal((await store.listPoolInstances('p')).length, 0, 'a failed instance is forgotten (its token revoked)');

  a.lease.set(false);
  await a.manager.stop();
  // As A would have after more failures in a row: the pool rests for an hour.
  await store.savePoolState('p', { ...(await store.poolState('p')), quarantinedUntil: Date.now() + 3_600_000, quarantines: 1 });
  const startsBefore = backend.calls.filter((c) => c.startsWith('start')).length;
  const b = server();
  b.lease.set(true, 2);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(backend.calls.filter((c) => c.startsWith('start')).length, startsBefore, 'quarantined by the last holder: B starts nothing');
  assert.ok(b.manager.view()[0]?.quarantinedUntil, 'B shows the quarantine');
});
