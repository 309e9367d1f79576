/**
 * builder-client's commands against a real in-process server (temp SQLite store, a fake Kiln worker
 * over a real WebSocket): serveRoburClient driven over an in-memory RoburConnection, which records
 * what the listener would frame and send. Every Failure text is builder-server's, byte for byte
 * (robur-protocol.md §1.5), and every change is in the store when Success comes.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { StoreUnavailableError } from '../../src/errors.js';
import { decodeCmd, encodeCmd, type RoburCmd } from '../../src/protocol/robur/index.js';
import type { RoburConnection } from '../../src/server/robur/connection.js';
import { serveRoburClient } from '../../src/server/robur/client-commands.js';
import type { JobStore, Run } from '../../src/store/index.js';
import { FakeWorker, inProcessServer, type InProcessOptions } from '../helpers/in-process.js';

/** builder's Ptime.max, Info's `next` for a job with none. */
const PTIME_MAX = Date.parse('9999-12-31T23:59:59.999Z');
const SCRIPT = '#!/bin/sh\necho hello\n';

/**
 * The listener's side of a connection, in memory: what is sent, kept in order as the peer would
 * read it (encoded to DER with the codec and decoded again, so only what the wire carries is
 * kept); close on demand.
 */
class MemoryConnection implements RoburConnection {
  readonly peer = 'memory:1';
  readonly sent: RoburCmd[] = [];
  /** Each message's DER, as the listener frames it. */
  readonly bytes: Buffer[] = [];
  isClosed = false;
  readonly closed: Promise<void>;
  private markClosed!: () => void;
  private waiters: (() => void)[] = [];

  constructor() {
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
  }

  send(cmd: RoburCmd): void {
    if (this.isClosed) return;
    this.bytes.push(encodeCmd(cmd));
    this.sent.push(decodeCmd(this.bytes.at(-1)!));
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** While held, nothing sent is taken by the peer (a client that stopped reading). */
  private held: (() => void)[] | undefined;

  drained(): Promise<void> {
    if (!this.held || this.isClosed) return Promise.resolve();
    return new Promise((resolve) => this.held!.push(resolve));
  }

  hold(): void {
    this.held ??= [];
  }

  release(): void {
    const waiting = this.held ?? [];
    this.held = undefined;
    for (const resolve of waiting) resolve();
  }

  close(): void {
    this.isClosed = true;
    this.markClosed();
  }

  /** Resolves once `count` messages have been sent. */
  async until(count: number): Promise<RoburCmd[]> {
    while (this.sent.length < count) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.sent;
  }
}

type Server = Awaited<ReturnType<typeof inProcessServer>>;

async function start(t: TestContext, options: InProcessOptions = {}): Promise<Server> {
  return inProcessServer(t, options);
}

/** One client command, answered in full: every message the server sent. */
async function ask(server: Server, command: RoburCmd): Promise<RoburCmd[]> {
  const conn = new MemoryConnection();
  await serveRoburClient(conn, command, server.roburClient);
  return conn.sent;
}

const SUCCESS: RoburCmd[] = [{ type: 'success' }];
const failure = (message: string): RoburCmd[] => [{ type: 'failure', message }];

/** Schedules a script job through the robur command, checking it succeeded. */
async function scheduleScript(server: Server, name: string, platform: string | undefined, period: 'hourly' | 'daily' | 'weekly' | 'never' = 'daily') {
  const job = platform === undefined ? { name, script: SCRIPT } : { name, script: SCRIPT, platform };
  assert.deepEqual(await ask(server, { type: 'schedule', period, job }), SUCCESS, `schedule ${name}`);
}

/** Writes an orb-build template for `platform` where the server's templates are read. */
function orbTemplate(server: Server, platform: string): void {
  const dir = path.join(server.dataDir, 'templates');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, `orb-build.${platform}`), 'orb build %%OPAM_PACKAGE%% on %%PLATFORM%%\n');
}

const store = (server: Server): JobStore => server.roburClient.store;
const queuedJobs = async (server: Server, platform: string) => (await store(server).listQueued()).filter((r) => r.platform === platform).map((r) => r.job);

/** Cancels every queued run (the store's own cancel). */
async function cancelQueued(server: Server): Promise<void> {
  for (const run of await store(server).listQueued()) await store(server).requestCancel(run.id, 'test', Date.now(), Date.now());
}

/** Resolves when the run has ended (its `run.ended`). */
function ended(server: Server, runId: string): Promise<void> {
  return new Promise((resolve) => {
    const off = server.events.on('run.ended', (e) => {
      if (e.runId === runId) {
        off();
        resolve();
      }
    });
  });
}

/** A fake Kiln worker of `platform`, said hello. */
async function worker(t: TestContext, server: Server, platform: string, name = `w-${platform}`): Promise<FakeWorker> {
  const w = await FakeWorker.connect(t, server);
  await w.hello({ platform, name });
  return w;
}

/** The next run the worker is given. */
async function assigned(w: FakeWorker): Promise<string> {
  for (;;) {
    const frame = await w.next<{ type: string; run: { id: string } }>();
    if (frame.type === 'run.assign') return frame.run.id;
  }
}

test('Schedule: a new job is stored with its period and queued at once (never too); a used name and a dropped platform are refused with builder\'s texts', async (t) => {
  const server = await start(t);
  await scheduleScript(server, 'tapjob', 'debian-12', 'never');
  const job = await store(server).getJob('tapjob');
  assert.deepEqual(job?.schedule, { kind: 'period', period: 'never' });
  assert.equal(job?.script, SCRIPT);
  assert.deepEqual(await queuedJobs(server, 'debian-12'), ['tapjob'], 'queued at once, as builder does');

  assert.deepEqual(await ask(server, { type: 'schedule', period: 'daily', job: { name: 'tapjob', script: SCRIPT, platform: 'other' } }), failure('job name already used'));

  // No platform: builder's `no-platform`.
  await scheduleScript(server, 'anywhere', undefined);
  assert.equal((await store(server).getJob('anywhere'))?.platform, 'no-platform');

  assert.deepEqual(await ask(server, { type: 'drop-platform', platform: 'debian-12' }), SUCCESS);
  assert.deepEqual(await ask(server, { type: 'schedule', period: 'daily', job: { name: 'fresh', script: SCRIPT, platform: 'debian-12' } }), failure("platform dropped; can't schedule jobs"));
  // builder looks at the platform before the name.
  assert.deepEqual(await ask(server, { type: 'schedule', period: 'daily', job: { name: 'tapjob', script: SCRIPT, platform: 'debian-12' } }), failure("platform dropped; can't schedule jobs"));
  assert.equal(await store(server).getJob('fresh'), undefined);
});

test('Schedule_orb_build: the template job orb-build with OPAM_PACKAGE, queued on every platform with a template; none at all is refused with Kiln\'s text; a used name with builder\'s', async (t) => {
  const server = await start(t);
  const orb: RoburCmd = { type: 'schedule-orb-build', period: 'weekly', job: { name: 'orbjob', opamPackage: 'my-opam-pkg' } };
  assert.deepEqual(await ask(server, orb), failure('no platform has an orb-build template (orb-build.template.PLATFORM in the config dir): job orbjob not scheduled'));
  assert.equal(await store(server).getJob('orbjob'), undefined);

  orbTemplate(server, 'debian-12');
  orbTemplate(server, 'freebsd-14');
  assert.deepEqual(await ask(server, orb), SUCCESS);
  const job = await store(server).getJob('orbjob');
  assert.equal(job?.template, 'orb-build');
  assert.equal(job?.platform, null);
  assert.deepEqual(job?.vars, { OPAM_PACKAGE: 'my-opam-pkg' });
  assert.deepEqual(job?.schedule, { kind: 'period', period: 'weekly' });
  assert.deepEqual(await queuedJobs(server, 'debian-12'), ['orbjob']);
  assert.deepEqual(await queuedJobs(server, 'freebsd-14'), ['orbjob']);

  assert.deepEqual(await ask(server, { type: 'schedule-orb-build', period: 'daily', job: { name: 'orbjob', opamPackage: 'other' } }), failure('job name already used'));
});

test('Unschedule: the job and its queued runs go; an unknown name is `unknown job NAME`', async (t) => {
  const server = await start(t);
  await scheduleScript(server, 'gone', 'debian-12');
  assert.deepEqual(await ask(server, { type: 'unschedule', name: 'gone' }), SUCCESS);
  assert.equal(await store(server).getJob('gone'), undefined);
  assert.deepEqual(await queuedJobs(server, 'debian-12'), []);
  assert.deepEqual(await ask(server, { type: 'unschedule', name: 'nosuch' }), failure('unknown job nosuch'));
  // The bytes builder-server sent for it (robur-protocol.md §1.8).
  const conn = new MemoryConnection();
  await serveRoburClient(conn, { type: 'unschedule', name: 'nosuch' }, server.roburClient);
  assert.equal(conn.bytes[0]!.toString('hex'), 'b3140c12756e6b6e6f776e206a6f62206e6f73756368');
});

test('Execute (new and old): to the front of the queue; job not found, a different platform and no such platform in builder\'s words', async (t) => {
  const server = await start(t);
  await scheduleScript(server, 'first', 'debian-12');
  await scheduleScript(server, 'second', 'debian-12');
  assert.deepEqual(await queuedJobs(server, 'debian-12'), ['first', 'second']);
  assert.deepEqual(await ask(server, { type: 'execute', name: 'second', platform: 'debian-12' }), SUCCESS);
  assert.deepEqual(await queuedJobs(server, 'debian-12'), ['second', 'first'], 'moved to the front');
  assert.deepEqual(await ask(server, { type: 'execute-old', name: 'first' }), SUCCESS);
  assert.deepEqual(await queuedJobs(server, 'debian-12'), ['first', 'second'], 'the old Execute too');

  assert.deepEqual(await ask(server, { type: 'execute', name: 'nosuch' }), failure('execute failed: job not found'));
  assert.deepEqual(await ask(server, { type: 'execute-old', name: 'nosuch' }), failure('execute failed: job not found'));
  assert.deepEqual(await ask(server, { type: 'execute', name: 'first', platform: 'freebsd-14' }), failure('execute failed: job is for a different platform: debian-12'));

  // An orb-build job names its platform: one nothing knows has no queue.
  orbTemplate(server, 'debian-12');
  assert.deepEqual(await ask(server, { type: 'schedule-orb-build', period: 'daily', job: { name: 'orbjob', opamPackage: 'pkg' } }), SUCCESS);
  assert.deepEqual(await ask(server, { type: 'execute', name: 'orbjob', platform: 'plan9' }), failure('execute failed: no such platform'));
  assert.deepEqual(await ask(server, { type: 'execute', name: 'orbjob', platform: 'debian-12' }), SUCCESS);
  assert.equal((await queuedJobs(server, 'debian-12'))[0], 'orbjob');

  // A dropped platform has no queue any more.
  assert.deepEqual(await ask(server, { type: 'drop-platform', platform: 'debian-12' }), SUCCESS);
  assert.deepEqual(await ask(server, { type: 'execute', name: 'first' }), failure('execute failed: no such platform'));
  assert.deepEqual(await queuedJobs(server, 'debian-12'), []);
});

test('Reschedule: next = NEXT + the period (a new one replaces the schedule), a cron job\'s first time after NEXT, and the job is queued now; an unknown job is `couldn\'t find job NAME`', async (t) => {
  const server = await start(t);
  await scheduleScript(server, 'tapjob', 'debian-12', 'daily');
  // Its first run leaves the queue, so the reschedule's own queueing shows.
  await cancelQueued(server);
  assert.deepEqual(await queuedJobs(server, 'debian-12'), []);

  const next = Date.parse('2030-01-01T00:00:00Z');
  assert.deepEqual(await ask(server, { type: 'reschedule', name: 'tapjob', next, period: 'hourly' }), SUCCESS);
  let job = await store(server).getJob('tapjob');
  assert.equal(job?.nextAt, Date.parse('2030-01-01T01:00:00Z'), 'as builder stored 20300101010000Z');
  assert.deepEqual(job?.schedule, { kind: 'period', period: 'hourly' });
  assert.deepEqual(await queuedJobs(server, 'debian-12'), ['tapjob'], 'queued now, as builder does');
  assert.deepEqual(await ask(server, { type: 'reschedule', name: 'tapjob', next }), SUCCESS);
  job = await store(server).getJob('tapjob');
  assert.equal(job?.nextAt, Date.parse('2030-01-01T01:00:00Z'), 'the job\'s own period when none is given');

  await server.roburClient.jobService.schedule({ name: 'nightly', platform: 'debian-12', script: SCRIPT, schedule: { kind: 'cron', expr: '0 3 * * *', tz: 'UTC' } });
  await server.roburClient.jobService.unschedule('tapjob');
  await cancelQueued(server);
  assert.deepEqual(await queuedJobs(server, 'debian-12'), []);
  assert.deepEqual(await ask(server, { type: 'reschedule', name: 'nightly', next }), SUCCESS);
  job = await store(server).getJob('nightly');
  assert.equal(job?.nextAt, Date.parse('2030-01-01T03:00:00Z'));
  assert.deepEqual(job?.schedule, { kind: 'cron', expr: '0 3 * * *', tz: 'UTC' });
  assert.deepEqual(await queuedJobs(server, 'debian-12'), ['nightly'], 'queued now, as builder does');

  assert.deepEqual(await ask(server, { type: 'reschedule', name: 'nosuch', next }), failure("couldn't find job nosuch"));
});

test('Drop_platform and Undrop_platform: unknown platforms in builder\'s words; a drop empties the queue and refuses new jobs until undropped', async (t) => {
  const server = await start(t);
  assert.deepEqual(await ask(server, { type: 'drop-platform', platform: 'debian-12' }), failure('unknown platform debian-12'));
  assert.deepEqual(await ask(server, { type: 'undrop-platform', platform: 'debian-12' }), failure('unknown platform debian-12'));
  await scheduleScript(server, 'tapjob', 'debian-12');
  assert.deepEqual(await ask(server, { type: 'drop-platform', platform: 'debian-12' }), SUCCESS);
  assert.deepEqual((await store(server).listDroppedPlatforms()).map((d) => d.platform), ['debian-12']);
  assert.deepEqual(await queuedJobs(server, 'debian-12'), []);
  assert.deepEqual(await ask(server, { type: 'drop-platform', platform: 'debian-12' }), failure('unknown platform debian-12'), 'a dropped platform has no queue');
  assert.deepEqual(await ask(server, { type: 'undrop-platform', platform: 'debian-12' }), SUCCESS);
  assert.deepEqual(await store(server).listDroppedPlatforms(), []);
  assert.deepEqual(await ask(server, { type: 'undrop-platform', platform: 'debian-12' }), failure('unknown platform debian-12'));
  // A connected worker makes its platform known.
  await worker(t, server, 'freebsd-14');
  assert.deepEqual(await ask(server, { type: 'drop-platform', platform: 'freebsd-14' }), SUCCESS);
});

test('anything but a client command is `bad communication`', async (t) => {
  const server = await start(t);
  for (const command of [
    { type: 'success' }, { type: 'failure', message: 'x' }, { type: 'job-requested', platform: 'debian-12' }, { type: 'server-hello' },
    { type: 'client-hello', peer: 'client', version: 13 }, { type: 'info-reply', schedule: [], queues: [], running: [], dropped: [] },
    { type: 'output', uuid: '00000000-0000-4000-8000-000000000000', line: 'x' },
  ] satisfies RoburCmd[]) {
    assert.deepEqual(await ask(server, command), failure('bad communication'), command.type);
  }
});

test('Info: the schedule (an orb-build job, a cron job as never with its real next, a never job at Ptime.max), the queues in order, a running run, the dropped platforms', async (t) => {
  const server = await start(t);
  const w = await worker(t, server, 'testos');
  await scheduleScript(server, 'runner', 'testos', 'never');
  const runId = await assigned(w);
  await scheduleScript(server, 'beta', 'debian-12', 'daily');
  await scheduleScript(server, 'gamma', 'debian-12', 'hourly');
  orbTemplate(server, 'debian-12');
  assert.deepEqual(await ask(server, { type: 'schedule-orb-build', period: 'weekly', job: { name: 'orb', opamPackage: 'my-opam-pkg' } }), SUCCESS);
  await server.roburClient.jobService.schedule({ name: 'nightly', platform: 'debian-12', script: SCRIPT, schedule: { kind: 'cron', expr: '0 3 * * *', tz: 'UTC' } });
  await scheduleScript(server, 'legacy', 'old-os');
  assert.deepEqual(await ask(server, { type: 'drop-platform', platform: 'old-os' }), SUCCESS);
  await server.roburClient.jobService.schedule({ name: 'resting', platform: 'testos', script: SCRIPT, schedule: { kind: 'period', period: 'daily' }, paused: true });

  const reply = await ask(server, { type: 'info' });
  assert.equal(reply.length, 2);
  assert.deepEqual(reply[1], { type: 'success' });
  const info = reply[0]!;
  assert.ok(info.type === 'info-reply');
  const item = (name: string) => info.schedule.find((s) => (s.job.kind === 'script' ? s.job.job.name : s.job.job.name) === name);
  const nightly = await store(server).getJob('nightly');
  assert.ok(nightly?.nextAt);
  assert.deepEqual(item('nightly'), { next: nightly.nextAt, period: 'never', job: { kind: 'script', job: { name: 'nightly', script: SCRIPT, platform: 'debian-12' } } });
  assert.deepEqual(item('runner'), { next: PTIME_MAX, period: 'never', job: { kind: 'script', job: { name: 'runner', script: SCRIPT, platform: 'testos' } } });
  assert.deepEqual(item('orb'), { next: (await store(server).getJob('orb'))!.nextAt, period: 'weekly', job: { kind: 'orb-build', job: { name: 'orb', opamPackage: 'my-opam-pkg' } } });
  assert.deepEqual(item('resting'), { next: PTIME_MAX, period: 'daily', job: { kind: 'script', job: { name: 'resting', script: SCRIPT, platform: 'testos' } } }, 'paused: nothing queued by its schedule');
  assert.deepEqual(item('beta')?.period, 'daily');
  assert.deepEqual(item('gamma')?.period, 'hourly');
  assert.equal(info.schedule.length, 7, 'every job, the dropped platform\'s too (Kiln keeps it)');

  const script = (name: string, platform: string) => ({ kind: 'script' as const, job: { name, script: SCRIPT, platform } });
  assert.deepEqual(info.queues, [
    { platform: 'debian-12', jobs: [script('beta', 'debian-12'), script('gamma', 'debian-12'), { kind: 'orb-build', job: { name: 'orb', opamPackage: 'my-opam-pkg' } }, script('nightly', 'debian-12')] },
    { platform: 'testos', jobs: [] },
  ]);
  const run = await store(server).findRun(runId);
  assert.deepEqual(info.running, [{ started: run.startedAt, uuid: runId, job: { name: 'runner', script: SCRIPT, platform: 'testos' } }]);
  assert.deepEqual(info.dropped, ['old-os']);
});

/** What Observe must send for a run that ended: its lines with ns since the start, the result line, Success. */
async function expectedObserve(server: Server, runId: string, result: string): Promise<RoburCmd[]> {
  const run: Run = await store(server).findRun(runId);
  const lines = await store(server).readConsole(runId);
  const ns = (at: number) => (at - run.startedAt!) * 1_000_000;
  return [
    ...lines.map((line): RoburCmd => ({ type: 'output', uuid: runId, line: line.text, timestampNs: ns(line.ts) })),
    { type: 'output', uuid: runId, line: result, timestampNs: ns(run.finishedAt!) },
    { type: 'success' },
  ];
}

test('Observe of a finished run: every line with ns from the start, then the result as builder says it, then Success; an unknown uuid is `uuid not found`', async (t) => {
  const server = await start(t);
  const w = await worker(t, server, 'testos');
  await scheduleScript(server, 'job', 'testos');
  const runId = await assigned(w);
  const started = (await store(server).findRun(runId)).startedAt!;
  const done = ended(server, runId);
  w.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 0, ts: started + 5, text: 'one' }, { seq: 1, ts: started + 1500, text: 'two' }] });
  w.send({ v: 1, type: 'run.finished', runId, result: { kind: 'signalled', signal: 'SIGKILL' } });
  await done;

  const sent = await ask(server, { type: 'observe', uuid: runId });
  assert.deepEqual(sent, await expectedObserve(server, runId, 'signalled 9'));
  assert.deepEqual(sent.slice(0, 2).map((m) => m.type === 'output' && [m.line, m.timestampNs]), [['one', 5_000_000], ['two', 1_500_000_000]]);

  assert.deepEqual(await ask(server, { type: 'observe', uuid: '191e6628-b829-4482-aa59-f4d30da7913b' }), failure('uuid not found'));
  // A uuid is one run exactly, never an id prefix.
  assert.deepEqual(await ask(server, { type: 'observe', uuid: runId.slice(0, 8) }), failure('uuid not found'));
});

/** A run running on a fake worker, one line printed, and an Observe of it that has sent that line. */
async function observing(t: TestContext, firstLine: string) {
  const server = await start(t);
  const w = await worker(t, server, 'testos');
  await scheduleScript(server, 'job', 'testos');
  const runId = await assigned(w);
  w.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 0, ts: Date.now(), text: firstLine }] });
  const conn = new MemoryConnection();
  const serving = serveRoburClient(conn, { type: 'observe', uuid: runId }, server.roburClient);
  await conn.until(1);
  return { server, w, runId, conn, serving };
}

test('Observe of a live run: the lines so far, then lines that come after it started, then `exited 3` and Success', async (t) => {
  const { server, w, runId, conn, serving } = await observing(t, 'early');
  const [first] = conn.sent;
  assert.ok(first?.type === 'output' && first.line === 'early');
  // Sent only now: they reach the observer live.
  w.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 1, ts: Date.now(), text: 'late 1' }, { seq: 2, ts: Date.now(), text: 'late 2' }] });
  await conn.until(3);
  w.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 3 } });
  await serving;
  assert.deepEqual(conn.sent, await expectedObserve(server, runId, 'exited 3'));
});

test('Observe of a client that stops reading: sends are paced by its drain, and once it reads it gets every line in order, then the result', async (t) => {
  const { server, w, runId, conn, serving } = await observing(t, 'line 0');
  conn.hold();
  const total = 1000;
  const done = ended(server, runId);
  for (let from = 1; from < total; from += 100) {
    w.send({ v: 1, type: 'run.output', runId, lines: Array.from({ length: 100 }, (_, i) => ({ seq: from + i, ts: Date.now(), text: `line ${from + i}` })).filter((l) => l.seq < total) });
  }
  w.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  await done;
  assert.ok(conn.sent.length <= 102, `at most about builder's 100 undelivered while it does not read (${conn.sent.length} sent)`);
  conn.release();
  await serving;
  assert.deepEqual(conn.sent, await expectedObserve(server, runId, 'exited 0'));
  assert.equal(conn.sent.length, total + 2);
});

test('Observe of a queued run waits until it starts; a client that goes away stops the observe, leaving no subscription', async (t) => {
  const server = await start(t);
  await scheduleScript(server, 'job', 'testos');
  const [queued] = await store(server).listQueued();
  assert.ok(queued);
  const conn = new MemoryConnection();
  const serving = serveRoburClient(conn, { type: 'observe', uuid: queued.id }, server.roburClient);
  const w = await worker(t, server, 'testos');
  const runId = await assigned(w);
  assert.equal(runId, queued.id);
  const started = (await store(server).findRun(runId)).startedAt!;
  w.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 0, ts: started + 7, text: 'started' }] });
  await conn.until(1);
  conn.close();
  await serving;
  assert.deepEqual(conn.sent, [{ type: 'output', uuid: runId, line: 'started', timestampNs: 7_000_000 }], 'timed from its start; nothing after the close');
  const observers = (server.roburClient.hub as unknown as { observers: Map<string, unknown> }).observers;
  assert.equal(observers.has(runId), false, 'its subscription is gone');
  const done = ended(server, runId);
  w.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } });
  await done;
});

test('a store that cannot be used: each command answers one Failure line, never a crash', async (t) => {
  const broken = { on: false };
  const wrapStore = (inner: JobStore): JobStore => new Proxy(inner, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (broken.on && key !== 'close') return Promise.reject(new StoreUnavailableError('postgres://db/kiln', 'connection refused\nsecond line'));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const server = await start(t, { wrapStore });
  await scheduleScript(server, 'tapjob', 'debian-12');
  broken.on = true;
  // Generic: the store's address and error text are logged, not told to an unauthenticated peer.
  const text = 'server error: the store is unavailable, try again';
  for (const command of [
    { type: 'info' }, { type: 'schedule', period: 'daily', job: { name: 'x', script: SCRIPT, platform: 'p' } },
    { type: 'schedule-orb-build', period: 'daily', job: { name: 'x', opamPackage: 'p' } }, { type: 'unschedule', name: 'tapjob' },
    { type: 'execute', name: 'tapjob' }, { type: 'reschedule', name: 'tapjob', next: Date.now() }, { type: 'observe', uuid: '191e6628-b829-4482-aa59-f4d30da7913b' },
    { type: 'drop-platform', platform: 'debian-12' }, { type: 'undrop-platform', platform: 'debian-12' },
  ] satisfies RoburCmd[]) {
    assert.deepEqual(await ask(server, command), failure(text), command.type);
  }
  broken.on = false;
  assert.ok((await store(server).getJob('tapjob')) !== undefined, 'nothing changed');
});
