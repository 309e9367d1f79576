/**
 * The run lifecycle on a real SQLite store in a temp dir: each transition is recorded in the store
 * and published as its events (a transition whose event is missing fails here), and the worker
 * holding a run lets go of it before the end is published.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { StoreUnavailableError } from '../../src/errors.js';
import { ConsoleHub } from '../../src/server/console-hub.js';
import { createEventBus, type EventBus, type KilnEventName, type KilnEvents } from '../../src/server/events.js';
import { Reaper } from '../../src/server/reaper.js';
import { RunLifecycle } from '../../src/server/run-lifecycle.js';
import { Templates } from '../../src/server/templates.js';
import { WorkerRegistry, type WorkerLink, type WorkerSession } from '../../src/server/worker-registry.js';
import type { Job, JobStore, NewRun, Run } from '../../src/store/index.js';
import { openSqliteStore } from '../../src/store/sqlite/sqlite-store.js';

const T0 = 1_700_000_000_000;

/** Every event the lifecycle publishes. */
const RUN_EVENTS = [
  'run.queued', 'run.dispatched', 'run.attached', 'run.line', 'run.ended', 'run.retried', 'run.lost', 'run.cancel-requested',
  'platform.dropped', 'worker.freed',
] as const satisfies readonly KilnEventName[];

type Heard = { [K in KilnEventName]: { name: K; payload: KilnEvents[K] } }[KilnEventName];

function makeJob(name: string, over: Partial<Job> = {}): Job {
  return {
    name, platform: 'linux', script: `echo ${name}`, env: {}, labels: {}, template: null, vars: {},
    schedule: { kind: 'period', period: 'daily' }, paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null,
    timeoutMs: 60_000, idleTimeoutMs: null, retries: 1, failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {},
    nextAt: T0 + 3_600_000, createdAt: T0, updatedAt: T0, ...over,
  };
}

const newRun = (job: string): NewRun => ({ id: randomUUID(), job, platform: 'linux', labels: {}, queuedAt: T0 });

/** A worker connection that records what the server sent it. */
function fakeLink(name: string, sent: string[]): WorkerLink {
  return {
    name, identity: 'shared', session: 'process-1', platform: 'linux', labels: {}, capacity: 2, once: false,
    assign: (run) => sent.push(`assign ${run.id}`),
    cancel: (runId) => sent.push(`cancel ${runId}`),
    release: (runId) => sent.push(`release ${runId}`),
    done: (runId, applied) => sent.push(`done ${runId} ${applied}`),
    notice: (message) => sent.push(`notice ${message}`),
  };
}

interface World {
  store: JobStore;
  /** The store methods the lifecycle called, in order (the console hub's batch writes left out). */
  calls: string[];
  /** Store methods that fail (once each, the store away) when next called. */
  failing: Set<string>;
  /** Store methods that go through `wrap[name]` (given the real call) while set. */
  wrap: Record<string, (call: () => Promise<unknown>) => Promise<unknown>>;
  /** The console hub (its waiting lines written by flush). */
  hub: ConsoleHub;
  events: EventBus;
  workers: WorkerRegistry;
  lifecycle: RunLifecycle;
  /** Loses the runs of workers gone past the grace, and ends overdue runs. */
  reaper: Reaper;
  /** Events published so far, in order. */
  heard: Heard[];
  /** Names of the events heard since the last call. */
  names(): KilnEventName[];
  clock: { now: number };
  /** Where the lifecycle reads templates. */
  templatesDir: string;
  /** A worker joined with a run of a new job `name` dispatched to it. */
  dispatchedRun(name: string, over?: Partial<Job>): Promise<{ run: Run; session: WorkerSession; sent: string[] }>;
}

async function world(t: TestContext, options: { reattachGraceMs?: number; retryMs?: number } = {}): Promise<World> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-lifecycle-'));
  const real = openSqliteStore(path.join(dir, 'kiln.db'));
  const calls: string[] = [];
  const failing = new Set<string>();
  const wrap: World['wrap'] = {};
  const store = new Proxy(real, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (name !== 'appendConsole') calls.push(String(name));
        if (failing.delete(String(name))) return Promise.reject(new StoreUnavailableError('test', `${String(name)} failed`));
        const call = () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        const wrapper = wrap[String(name)];
        return wrapper ? wrapper(call) : call();
      };
    },
  });
  const log = pino({ level: 'silent' });
  const events = createEventBus(log);
  const heard: Heard[] = [];
  let seen = 0;
  for (const name of RUN_EVENTS) events.on(name, (payload) => heard.push({ name, payload } as Heard));
  const workers = new WorkerRegistry(events);
  const hub = new ConsoleHub(store, log, events);
  const clock = { now: T0 };
  const lifecycle = new RunLifecycle(log, {
    store, events, workers, console: hub, templates: new Templates(path.join(dir, 'templates')), now: () => clock.now, backstopMs: 1000,
  });
  const reaper = new Reaper(log, {
    store, events, lifecycle, now: () => clock.now, reattachGraceMs: options.reattachGraceMs ?? 3_600_000,
    retry: { retryMinMs: options.retryMs ?? 5000, retryMaxMs: options.retryMs ?? 5000 },
  });
  // The lifecycle's and the reaper's timers do not keep a process alive (a server's sockets do): a test
  // awaiting one would see its file end with the promise pending (every later test cancelled), so the world does.
  const alive = setInterval(() => undefined, 60_000);
  t.after(async () => {
    clearInterval(alive);
    await reaper.stop();
    await hub.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const names = () => heard.slice(seen, (seen = heard.length)).map((h) => h.name);
  let workerCount = 0;
  return {
    store, calls, failing, wrap, hub, events, workers, lifecycle, reaper, heard, names, clock, templatesDir: path.join(dir, 'templates'),
    async dispatchedRun(name, over = {}) {
      const sent: string[] = [];
      const session = workers.create(fakeLink(`w${(workerCount += 1)}`, sent));
      workers.join(session);
      await recordConnected(store, session.name, clock.now);
      await lifecycle.createJob(makeJob(name, over), [newRun(name)]);
      const claimed = await lifecycle.claimNext({ name: session.name, platform: 'linux', labels: {}, identity: session.identity, session: session.session });
      assert.ok(claimed, 'a run was claimed');
      const run = (await lifecycle.prepare(claimed))!;
      lifecycle.dispatched(run, session);
      names();
      return { run, session, sent };
    },
  };
}

/** Records a worker connected, as the gateway does at its hello (the reaper reads its last_seen). */
async function recordConnected(store: JobStore, name: string, now: number): Promise<void> {
  await store.recordWorker({
    name, platform: 'linux', labels: {}, capacity: 2, hostname: 'h', os: 'linux', arch: 'x64', version: 'test', connected: true, connectedAt: now, lastSeen: now,
  });
}

/** The payload of the next `name` event. */
function next<K extends KilnEventName>(events: EventBus, name: K): Promise<KilnEvents[K]> {
  return new Promise((resolve) => {
    const off = events.on(name, (payload) => {
      off();
      resolve(payload);
    });
  });
}

test('a job created with its first runs publishes run.queued with them', async (t) => {
  const w = await world(t);
  const run = newRun('nightly');
  const runs = await w.lifecycle.createJob(makeJob('nightly'), [run]);
  assert.deepEqual(w.names(), ['run.queued']);
  const queued = w.heard[0]!;
  assert.equal(queued.name, 'run.queued');
  assert.deepEqual(queued.name === 'run.queued' && queued.payload.runs.map((r) => r.id), [run.id]);
  assert.equal(runs[0]!.status, 'queued');
  await w.lifecycle.createJob(makeJob('paused', { paused: true }), []);
  assert.deepEqual(w.names(), [], 'no runs, no event');
});

test('enqueue publishes run.queued; a dispatch publishes run.dispatched and the worker holds the run', async (t) => {
  const w = await world(t);
  await w.lifecycle.createJob(makeJob('build'), []);
  const { run } = await w.lifecycle.enqueue(newRun('build'), 'back');
  assert.deepEqual(w.names(), ['run.queued']);
  const sent: string[] = [];
  const session = w.workers.create(fakeLink('w1', sent));
  w.workers.join(session);
  const claimed = await w.lifecycle.claimNext({ name: 'w1', platform: 'linux', labels: {}, identity: 'shared', session: 'process-1' });
  assert.equal(claimed?.id, run.id);
  w.lifecycle.dispatched(claimed!, session);
  assert.deepEqual(w.names(), ['run.dispatched']);
  assert.deepEqual(sent, [`assign ${run.id}`]);
  assert.ok(session.running.has(run.id));
  assert.equal((await w.store.findRun(run.id)).status, 'running');
});

test('enqueueAndClaim of a run claimed at once publishes no run.queued (the caller sends it)', async (t) => {
  const w = await world(t);
  await w.lifecycle.createJob(makeJob('fast'), []);
  const queued = await w.lifecycle.enqueueAndClaim(newRun('fast'), 'front', { name: 'w1', platform: 'linux', labels: {} });
  assert.equal(queued.claimed?.id, queued.run.id);
  assert.deepEqual(w.names(), []);
});

test('output of a held run is published as run.line; output of another run is refused and not published', async (t) => {
  const w = await world(t);
  const { run, session } = await w.dispatchedRun('out');
  w.lifecycle.output(session, run.id, [{ seq: 0, ts: T0, text: 'hello' }]);
  assert.deepEqual(w.names(), ['run.line']);
  assert.throws(() => w.lifecycle.output(session, 'not-held', [{ seq: 0, ts: T0, text: 'x' }]), { code: 'KILN_ERR_PROTOCOL' });
  assert.deepEqual(w.names(), []);
});

test('a reported end publishes run.ended with the run as recorded, after the worker let go of it', async (t) => {
  const w = await world(t);
  const { run, session, sent } = await w.dispatchedRun('ok');
  w.lifecycle.output(session, run.id, [{ seq: 0, ts: T0, text: 'last words' }]);
  let heldAtEnd: boolean | undefined;
  w.events.on('run.ended', () => (heldAtEnd = session.running.has(run.id)));
  w.calls.length = 0;
  const skipped = [{ path: 'big.iso', size: 5_000_000_000, reason: 'too large' }];
  await w.lifecycle.workerFinished(session, run.id, { kind: 'exited', code: 0 }, undefined, skipped);
  assert.deepEqual(w.calls, ['endAttempt'], 'the end, its lines and its events: one store call');
  assert.deepEqual(w.names(), ['run.line', 'run.ended']);
  const ended = w.heard.at(-1)!;
  assert.ok(ended.name === 'run.ended');
  assert.equal(ended.payload.from, 'running');
  assert.equal(ended.payload.run?.status, 'succeeded');
  assert.equal(heldAtEnd, false, 'the slot is free when subscribers hear the end');
  assert.deepEqual(sent.slice(1), [`done ${run.id} true`]);
  // Its last lines and the files it skipped were written with the end.
  assert.deepEqual((await w.store.readConsole(run.id)).map((l) => l.text), ['last words']);
  const events = await w.store.listEvents(run.id);
  assert.deepEqual(events.find((e) => e.kind === 'artifacts-skipped')?.detail, { files: skipped });
});

test('a failure with a failure retry left publishes the retry note and run.retried, not run.ended', async (t) => {
  const w = await world(t);
  const { run, session } = await w.dispatchedRun('flaky', { failureRetries: 1 });
  await w.lifecycle.workerFinished(session, run.id, { kind: 'exited', code: 3 }, undefined);
  assert.deepEqual(w.names(), ['run.line', 'run.retried']);
  const [line, retried] = w.heard.slice(-2);
  assert.ok(line!.name === 'run.line' && retried!.name === 'run.retried');
  assert.equal(line.payload.lines.length, 1);
  assert.equal(retried.payload.run.status, 'queued');
  assert.equal(retried.payload.run.attempt, 2);
  assert.equal(retried.payload.unstarted, false);
});

test('a result for a run it no longer holds is answered not applied and frees nothing more (worker.freed)', async (t) => {
  const w = await world(t);
  const { run, session, sent } = await w.dispatchedRun('twice');
  await w.lifecycle.workerFinished(session, run.id, { kind: 'exited', code: 0 }, undefined);
  w.names();
  w.calls.length = 0;
  await w.lifecycle.workerFinished(session, run.id, { kind: 'exited', code: 0 }, undefined);
  assert.deepEqual(w.calls, ['noteRunEvent'], 'recorded in one store call');
  assert.deepEqual(w.names(), ['worker.freed']);
  assert.equal(sent.at(-1), `done ${run.id} false`);
  const ignored = (await w.store.listEvents(run.id)).at(-1);
  assert.deepEqual([ignored?.kind, ignored?.attempt, ignored?.detail.why], ['ignored', 1, 'a result for a run this worker does not hold']);
});

test("a template job's run is claimed with its expanded script in one store call, by a pass and by execute next to an idle worker", async (t) => {
  const w = await world(t);
  mkdirSync(w.templatesDir);
  writeFileSync(path.join(w.templatesDir, 'tpl'), 'echo %%GREETING%% from %%JOB%% on %%PLATFORM%%\n');
  const worker = { name: 'w1', platform: 'linux', labels: {} };
  await w.lifecycle.createJob(makeJob('tj', { script: null, template: 'tpl', vars: { GREETING: 'hi' } }), [newRun('tj')]);
  w.calls.length = 0;
  const claimed = await w.lifecycle.claimNext(worker);
  const ready = await w.lifecycle.prepare(claimed!);
  assert.deepEqual(w.calls, ['claimNext'], 'no getJob, no setRunScript');
  assert.equal(ready?.script, 'echo hi from tj on linux\n');
  assert.equal((await w.store.findRun(claimed!.id)).script, ready?.script, 'saved with the claim');

  await w.store.finishRun(claimed!.id, { status: 'succeeded', result: { kind: 'exited', code: 0 }, finishedAt: T0 + 1 }, { from: ['running'] });
  w.calls.length = 0;
  const queued = await w.lifecycle.enqueueAndClaim(newRun('tj'), 'back', worker);
  assert.equal((await w.lifecycle.prepare(queued.claimed!))?.script, 'echo hi from tj on linux\n');
  assert.deepEqual(w.calls, ['enqueueAndClaim']);
});

test('a result for a run the store had already ended: recorded as ignored in the end\'s one call, the slot freed (worker.freed)', async (t) => {
  const w = await world(t);
  const { run, session, sent } = await w.dispatchedRun('raced');
  // Ended meanwhile by someone else (another server's deadline check, say): the session still holds it.
  await w.store.endAttempt(run.id, { status: 'lost', result: { kind: 'aborted', reason: 'gone' }, finishedAt: T0 + 1 }, {});
  w.calls.length = 0;
  await w.lifecycle.workerFinished(session, run.id, { kind: 'exited', code: 0 }, undefined);
  assert.deepEqual(w.calls, ['endAttempt'], 'the stale end records what it ignored in the same call');
  assert.deepEqual(w.names(), ['worker.freed']);
  assert.equal(sent.at(-1), `done ${run.id} false`);
  assert.equal(session.running.has(run.id), false);
  assert.equal((await w.store.listEvents(run.id)).at(-1)?.kind, 'ignored');
});

test('cancelling a queued run publishes run.ended from queued; a running one publishes run.cancel-requested and its worker is told', async (t) => {
  const w = await world(t);
  await w.lifecycle.createJob(makeJob('waits'), []);
  const { run: queued } = await w.lifecycle.enqueue(newRun('waits'), 'back');
  w.names();
  await w.lifecycle.cancel(queued.id, 'alice');
  assert.deepEqual(w.names(), ['run.ended']);
  assert.deepEqual(w.heard.at(-1)!.payload, { runId: queued.id, from: 'queued', status: 'cancelled', platform: 'linux' });

  const { run, sent } = await w.dispatchedRun('runs');
  const outcome = await w.lifecycle.cancel(run.id, 'bob');
  assert.equal(outcome.state, 'requested');
  assert.deepEqual(w.names(), ['run.cancel-requested']);
  assert.equal(sent.at(-1), `cancel ${run.id}`);
});

test('a run past its deadline is ended by the server: run.ended, and its worker is released from it', async (t) => {
  const w = await world(t);
  const { run, session, sent } = await w.dispatchedRun('slow', { timeoutMs: 1000 });
  w.clock.now = run.deadlineAt! + 1;
  await w.reaper.recover();
  assert.deepEqual(w.names(), ['run.ended']);
  const ended = w.heard.at(-1)!;
  assert.ok(ended.name === 'run.ended');
  assert.equal(ended.payload.run?.status, 'timed-out');
  assert.equal(sent.at(-1), `release ${run.id}`);
  assert.equal(session.running.has(run.id), false);
});

test('a worker that does not come back within the grace: run.lost, then run.retried (its retry budget)', async (t) => {
  const w = await world(t, { reattachGraceMs: 10 });
  const { run, session } = await w.dispatchedRun('gone');
  const retried = next(w.events, 'run.retried');
  await w.lifecycle.workerGone(session);
  // The grace counts from the last_seen the close wrote, on the server's clock.
  w.clock.now += 10;
  assert.equal(w.workers.session(session.name), undefined, 'the session left the registry');
  assert.equal((await retried).run.id, run.id);
  assert.deepEqual(w.names(), ['run.lost', 'run.line', 'run.retried']);
  assert.equal((await w.store.findRun(run.id)).lostRetriesLeft, 0);
});

test('an overdue run whose end the store refuses does not keep the others from ending; it ends on the retry', { timeout: 10_000 }, async (t) => {
  const w = await world(t, { retryMs: 10 });
  const first = await w.dispatchedRun('slow1', { timeoutMs: 1000 });
  const second = await w.dispatchedRun('slow2', { timeoutMs: 1000 });
  w.clock.now = Math.max(first.run.deadlineAt!, second.run.deadlineAt!) + 1;
  w.failing.add('endAttempt');
  const retried = new Promise<void>((resolve) => {
    let ends = 0;
    const off = w.events.on('run.ended', () => (ends += 1) === 2 && (off(), resolve()));
  });
  // recover() resolves once its pass has ended: the refused run is left for the retry, the other ended.
  await w.reaper.recover();
  assert.deepEqual(w.names(), ['run.ended']);
  await retried;
  assert.deepEqual(w.names(), ['run.ended']);
  const statuses = await Promise.all([first.run.id, second.run.id].map(async (id) => (await w.store.findRun(id)).status));
  assert.deepEqual(statuses, ['timed-out', 'timed-out']);
  assert.equal(w.calls.filter((c) => c === 'endAttempt').length, 3, 'two ends and the retry of the refused one');
});

test('a loss the store refuses is written again with the backoff, not left to the run\'s deadline', { timeout: 10_000 }, async (t) => {
  const w = await world(t, { reattachGraceMs: 10, retryMs: 10 });
  const { run, session } = await w.dispatchedRun('gone-while-down');
  w.failing.add('endAttempt');
  const retried = next(w.events, 'run.retried');
  await w.lifecycle.workerGone(session);
  w.clock.now += 10;
  assert.equal((await retried).run.id, run.id);
  assert.deepEqual(w.names(), ['run.lost', 'run.line', 'run.retried']);
  assert.equal(w.calls.filter((c) => c === 'endAttempt').length, 2, 'refused once, then written');
});

test('a worker back with its run re-attaches it: run.attached, and the new session holds it', async (t) => {
  const w = await world(t);
  const { run, session } = await w.dispatchedRun('back');
  await w.lifecycle.workerGone(session);
  const again = w.workers.create(fakeLink(session.name, []));
  const { resume, release } = await w.lifecycle.workerAttached(again, [{ runId: run.id, attempt: run.attempt }]);
  assert.deepEqual(resume, [{ runId: run.id, afterSeq: -1 }]);
  assert.deepEqual(release, []);
  assert.deepEqual(w.names(), ['run.attached']);
  assert.ok(again.running.has(run.id));
});

test('a run claimed but not sent goes back unstarted: run.retried with unstarted', async (t) => {
  const w = await world(t);
  await w.lifecycle.createJob(makeJob('orphan'), [newRun('orphan')]);
  const claimed = await w.lifecycle.claimNext({ name: 'w1', platform: 'linux', labels: {} });
  w.names();
  await w.lifecycle.orphaned(claimed!, 'the worker went away');
  assert.deepEqual(w.names(), ['run.line', 'run.retried']);
  const retried = w.heard.at(-1)!;
  assert.ok(retried.name === 'run.retried' && retried.payload.unstarted);
  assert.equal(retried.payload.run.attempt, 1);
});

test('a template that cannot be expanded ends the claimed run: run.ended (aborted), nothing to send', async (t) => {
  const w = await world(t);
  await w.lifecycle.createJob(makeJob('tpl', { script: null, template: 'missing' }), [newRun('tpl')]);
  const claimed = await w.lifecycle.claimNext({ name: 'w1', platform: 'linux', labels: {} });
  w.names();
  assert.equal(await w.lifecycle.prepare(claimed!), undefined);
  assert.deepEqual(w.names(), ['run.ended']);
});

test('removing a job or dropping a platform ends its queued runs: run.ended from queued (and platform.dropped)', async (t) => {
  const w = await world(t);
  const [a] = await w.lifecycle.createJob(makeJob('a'), [newRun('a')]);
  const [b] = await w.lifecycle.createJob(makeJob('b'), [newRun('b')]);
  w.names();
  assert.deepEqual(await w.lifecycle.deleteJob('a'), [a!.id]);
  assert.deepEqual(w.names(), ['run.ended']);
  assert.deepEqual(await w.lifecycle.dropPlatform('linux'), [b!.id]);
  assert.deepEqual(w.names(), ['run.ended', 'platform.dropped']);
  assert.ok(w.workers.isDropped('linux'), 'the registry heard the drop');
});

test('a schedule firing publishes run.queued; a line about a waiting run publishes run.line', async (t) => {
  const w = await world(t);
  await w.lifecycle.createJob(makeJob('cron', { nextAt: T0 }), []);
  const fired = await w.lifecycle.fire('cron', T0, T0 + 86_400_000, [newRun('cron')], T0);
  assert.equal(fired.outcome, 'queued');
  assert.deepEqual(w.names(), ['run.queued']);
  const queued = (await w.store.listQueued())[0]!;
  await w.lifecycle.noteWaiting(queued.id, 'no worker yet');
  assert.deepEqual(w.names(), ['run.line']);
});

test('an end the store refuses changes nothing and publishes nothing; its last lines stay for the console writer', async (t) => {
  const w = await world(t);
  const { run, session } = await w.dispatchedRun('refused');
  w.lifecycle.output(session, run.id, [{ seq: 0, ts: T0, text: 'kept' }]);
  w.names();
  w.failing.add('endAttempt');
  await assert.rejects(w.lifecycle.workerFinished(session, run.id, { kind: 'exited', code: 0 }, undefined), /endAttempt failed/);
  assert.deepEqual(w.names(), []);
  assert.ok(session.running.has(run.id), 'still held: the worker resends its result');
  await w.hub.flush();
  assert.deepEqual((await w.store.readConsole(run.id)).map((l) => l.text), ['kept']);
});

/** Runs a pass of the reaper now. */
const reapNow = (reaper: Reaper) => reaper.kick();

test('a loss written again after its reply was lost is stale: it does not end the next attempt the same worker took', { timeout: 10_000 }, async (t) => {
  const w = await world(t, { reattachGraceMs: 10, retryMs: 10 });
  const { run, session } = await w.dispatchedRun('lost-reply');
  let again!: WorkerSession;
  let refused!: () => void;
  const lostReply = new Promise<void>((resolve) => (refused = resolve));
  let ends = 0;
  w.wrap.endAttempt = async (call) => {
    ends += 1;
    const got = await call();
    if (ends === 1) {
      // Committed (requeued as attempt 2), but the reply is lost; meanwhile the worker is back and takes attempt 2.
      again = w.workers.create(fakeLink(session.name, []));
      w.workers.join(again);
      await recordConnected(w.store, again.name, w.clock.now);
      const claimed = await w.lifecycle.claimNext({ name: again.name, platform: 'linux', labels: {}, identity: again.identity, session: again.session });
      assert.equal(claimed?.attempt, 2);
      w.lifecycle.dispatched((await w.lifecycle.prepare(claimed!))!, again);
      refused();
      throw new StoreUnavailableError('postgres://db', 'connection lost');
    }
    return got;
  };
  await w.lifecycle.workerGone(session);
  w.clock.now += 10;
  await lostReply;
  // The retry of the refused pass (the backoff, 10 ms), and one more pass for good measure.
  await new Promise((resolve) => setTimeout(resolve, 50));
  await reapNow(w.reaper);
  await w.reaper.stop();
  const now = await w.store.findRun(run.id);
  assert.deepEqual([now.status, now.attempt, now.worker], ['running', 2, session.name], 'attempt 2 still runs');
  assert.ok(again.running.has(run.id));
  assert.equal(ends, 1, 'the loss was not written again over attempt 2');
});

test('a refused end waits the backoff, but no later than a deadline that comes before it', { timeout: 10_000 }, async (t) => {
  const w = await world(t, { retryMs: 60_000 });
  const first = await w.dispatchedRun('due', { timeoutMs: 1000 });
  const second = await w.dispatchedRun('due-soon', { timeoutMs: 1100 });
  // The clock runs from just past the first deadline: the second is due 100 ms later.
  const from = Date.now();
  const base = first.run.deadlineAt! + 1;
  Object.defineProperty(w.clock, 'now', { get: () => base + (Date.now() - from) });
  w.failing.add('endAttempt');
  const ended = new Promise<string>((resolve) => w.events.on('run.ended', ({ runId }) => resolve(runId)));
  await w.reaper.recover();
  assert.equal((await w.store.findRun(first.run.id)).status, 'running', 'refused: left for the retry');
  assert.ok(second.run.deadlineAt! < base + 60_000);
  assert.ok([first.run.id, second.run.id].includes(await ended), 'ended at the second deadline, not after the one-minute backoff');
});

test('a loss refused for another reason than the store being away is logged and dropped, not retried forever', { timeout: 10_000 }, async (t) => {
  const w = await world(t, { reattachGraceMs: 10, retryMs: 10 });
  const { run, session } = await w.dispatchedRun('unwritable');
  let tried!: () => void;
  const refused = new Promise<void>((resolve) => (tried = resolve));
  let ends = 0;
  w.wrap.endAttempt = async () => {
    ends += 1;
    tried();
    throw new Error('constraint violated');
  };
  await w.lifecycle.workerGone(session);
  w.clock.now += 10;
  await refused;
  await reapNow(w.reaper);
  assert.equal(ends, 1, 'not written again');
  assert.equal((await w.store.findRun(run.id)).status, 'running', 'its deadline ends it');
});

test('a worker that left while the store refused is recorded gone once the store answers (unrecorded, the farm would count it connected here: its name taken, its runs never lost)', async (t) => {
  const w = await world(t);
  t.after(() => w.lifecycle.stop());
  const { session } = await w.dispatchedRun('build');
  w.failing.add('workerDisconnected');
  w.workers.leave(session);
  await assert.rejects(w.lifecycle.workerGone(session), StoreUnavailableError);
  const deadline = Date.now() + 5_000;
  let row = (await w.store.listWorkers()).find((x) => x.name === session.name);
  while (row?.connected && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    row = (await w.store.listWorkers()).find((x) => x.name === session.name);
  }
  assert.equal(row?.connected, false, 'recorded gone by the retry');
  assert.equal(row?.lastSeen, T0, 'as of when it left');
});

test('an import whose commit may have gone through unheard (the store went away) has everything read the store again: feed.resync', async (t) => {
  const w = await world(t);
  const resyncs: unknown[] = [];
  w.events.on('feed.resync', (e) => resyncs.push(e));
  const plan = (sha256: string) => ({
    record: { sha256, kind: 'test', importedAt: T0 }, drops: [], jobs: [{ name: 'imported', job: makeJob('imported') }],
    queue: () => [newRun('imported')], report: () => ({}),
  });
  w.wrap.importState = async (call) => {
    await call();
    throw new StoreUnavailableError('postgres://db', 'connection lost at the commit');
  };
  await assert.rejects(w.lifecycle.importState(plan('a'.repeat(64))), /connection lost/);
  assert.equal(resyncs.length, 1);
  assert.deepEqual(w.names(), [], 'nothing published as done: it is not known to be');
  w.wrap.importState = async () => {
    throw new Error('a bug, not the store away');
  };
  await assert.rejects(w.lifecycle.importState(plan('b'.repeat(64))), /a bug/);
  assert.equal(resyncs.length, 1, 'only when the store went away');
});
