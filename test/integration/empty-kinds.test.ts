/**
 * The dispatcher remembers the kinds of worker the store had nothing for and asks them no more
 * until a run may be queued for them: a farm of idle platforms costs a pass after a run ends no
 * claim, and a run queued for such a platform (however it comes to be queued) still goes out at
 * once. Real server, fake workers, real WebSockets; the store's claims are counted by platform.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import type { KilnServer } from '../../src/server/server.js';
import type { ClaimingWorker, JobStore } from '../../src/store/index.js';
import { call, consoleEvents, FakeWorker, inProcessServer, testJob } from '../helpers/in-process.js';

const IDLE_PLATFORMS = ['idle-0', 'idle-1', 'idle-2', 'idle-3', 'idle-4', 'idle-5'];

type Frame = { type: string; run?: { id: string; job: string } };

/** The store, recording the platform of every claim; `store` is the real one (another server's view of the database). */
function countingClaims() {
  const claimed: string[] = [];
  let store: JobStore | undefined;
  const wrap = (real: JobStore): JobStore => {
    store = real;
    return new Proxy(real, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (typeof value !== 'function') return value;
        if (key === 'claimNext') {
          return (worker: ClaimingWorker, ...rest: unknown[]) => {
            claimed.push(worker.platform);
            return (value as (...args: unknown[]) => unknown).call(target, worker, ...rest);
          };
        }
        return value.bind(target);
      },
    });
  };
  return { claimed, wrap, store: () => store! };
}

/** Resolves at the dispatcher's next `dispatch.idle` (subscribe before what kicks the pass). */
function nextIdle(server: KilnServer): Promise<void> {
  return new Promise((resolve) => {
    const off = server.events.on('dispatch.idle', () => {
      off();
      resolve();
    });
  });
}

/**
 * A server with one idle worker on each of six platforms nothing is queued for, then `testos`
 * workers (capacity 1) named as given; each join's pass is waited for.
 */
async function farm(t: TestContext, testosWorkers: string[] = ['fake-1'], options: { now?: () => number } = {}) {
  const counting = countingClaims();
  const server = await inProcessServer(t, { wrapStore: counting.wrap, now: options.now });
  await call(server, 'POST', '/api/jobs', { ...testJob, retries: 1 });
  const join = async (name: string, platform: string) => {
    const worker = await FakeWorker.connect(t, server);
    const idle = nextIdle(server);
    await worker.hello({ name, platform });
    await idle;
    return worker;
  };
  for (const platform of IDLE_PLATFORMS) await join(`w-${platform}`, platform);
  const workers: FakeWorker[] = [];
  for (const name of testosWorkers) workers.push(await join(name, 'testos'));
  return { server, workers, claimed: counting.claimed, store: counting.store };
}

/** The next run.assign a worker gets (skipping run.done answers). */
async function nextAssign(worker: FakeWorker): Promise<{ id: string; job: string }> {
  for (;;) {
    const frame = await worker.next<Frame>();
    if (frame.type === 'run.assign') return frame.run!;
  }
}

async function finish(server: KilnServer, worker: FakeWorker, runId: string): Promise<void> {
  worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  assert.equal((await consoleEvents(server, runId)).at(-1).run.status, 'succeeded');
}

test('with idle workers of six other platforms, the pass after a run ends asks the store nothing for them', async (t) => {
  const { server, workers: [worker], claimed } = await farm(t);
  // Each join asked the store once for its own kind: the kinds already found empty were not asked again.
  assert.equal(claimed.length, IDLE_PLATFORMS.length + 1, claimed.join(' '));
  const run = (await call(server, 'POST', `/api/jobs/${testJob.name}/execute`, {})).body.run;
  assert.equal(run.status, 'running');
  assert.equal((await nextAssign(worker!)).id, run.id);
  claimed.length = 0;
  const passed = nextIdle(server);
  await finish(server, worker!, run.id);
  await passed;
  // Before: one empty claim per kind (seven), each a round trip on PostgreSQL, on every such pass.
  assert.deepEqual(claimed, [], 'no claim: nothing was queued for any kind since each was found empty');
});

test('a run executed while its platform\'s worker is busy goes out when the worker frees (run.queued forgets the mark)', async (t) => {
  const { server, workers: [worker] } = await farm(t);
  await call(server, 'POST', '/api/jobs', { ...testJob, name: 'second' });
  const first = (await call(server, 'POST', `/api/jobs/${testJob.name}/execute`, {})).body.run;
  assert.equal((await nextAssign(worker!)).id, first.id);
  const second = (await call(server, 'POST', '/api/jobs/second/execute', {})).body.run;
  assert.equal(second.status, 'queued');
  await finish(server, worker!, first.id);
  assert.equal((await nextAssign(worker!)).id, second.id);
});

test('a run queued by a schedule firing goes to the idle worker of a kind found empty', async (t) => {
  const clock = { now: Date.parse('2026-11-22T10:00:00Z') };
  const { server, workers: [worker] } = await farm(t, ['fake-1'], { now: () => clock.now });
  await call(server, 'POST', '/api/jobs', { ...testJob, name: 'ticking', period: undefined, schedule: { kind: 'every', everyMs: 1000 }, paused: false });
  const first = await nextAssign(worker!);
  assert.equal(first.job, 'ticking');
  const passed = nextIdle(server);
  await finish(server, worker!, first.id);
  await passed; // the pass after the end finds the kind empty again
  clock.now += 1000;
  await server.wakeScheduler();
  const second = await nextAssign(worker!);
  assert.equal(second.job, 'ticking');
  assert.notEqual(second.id, first.id);
});

test('a run retried after its worker was lost goes to another idle worker of its kind (run.retried forgets the mark)', async (t) => {
  const { server, workers } = await farm(t, ['fake-1', 'fake-2']);
  const run = (await call(server, 'POST', `/api/jobs/${testJob.name}/execute`, {})).body.run;
  assert.equal(run.status, 'running');
  const [holder, other] = run.worker === 'fake-1' ? [workers[0]!, workers[1]!] : [workers[1]!, workers[0]!];
  assert.equal((await nextAssign(holder)).id, run.id);
  holder.socket.terminate();
  // Past the re-attach grace the reaper ends the attempt lost and the run is queued again.
  const again = await nextAssign(other);
  assert.equal(again.id, run.id);
});

test('a run queued on another server (a remote run.queued) goes to the idle worker here of a kind found empty', async (t) => {
  const { server, workers: [worker], store } = await farm(t);
  // Queued in the shared database by another server, which publishes it over the feed.
  const run = { id: randomUUID(), job: testJob.name, platform: 'testos', labels: {}, queuedAt: Date.now() };
  await store().enqueue(run, 'back');
  server.events.publish('run.queued', { runs: [{ id: run.id, job: run.job, platform: run.platform }], remote: true });
  assert.equal((await nextAssign(worker!)).id, run.id);
});
