/** The wake loop on fake time: kicks, due times, merged passes, retries with the backoff, stop. */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { Logger } from 'pino';
import { createWakeLoop, RETRY_PASS, type WakeLoopOptions } from '../../src/server/wake-loop.js';

/** A logger that keeps what was logged at error. */
function recordingLog(): { log: Logger; errors: { fields: Record<string, unknown>; msg: string }[] } {
  const errors: { fields: Record<string, unknown>; msg: string }[] = [];
  const log = { error: (fields: Record<string, unknown>, msg: string) => errors.push({ fields, msg }) } as unknown as Logger;
  return { log, errors };
}

/** A deferred the body can wait on, so a test decides when a pass ends. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

/** Lets the promise callbacks queued so far run (fake time moves no microtasks). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i += 1) await Promise.resolve();
}

function fakeTime(t: TestContext): void {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
}

const RETRY = { retryMinMs: 100, retryMaxMs: 400 };

function loopWith(body: WakeLoopOptions['body'], extra: Partial<WakeLoopOptions> = {}) {
  const { log, errors } = recordingLog();
  const loop = createWakeLoop(log, { body, retry: RETRY, failureMessage: 'pass failed', ...extra });
  return { loop, errors };
}

test('a kick runs one pass and resolves after it; nothing runs before the kick', async (t) => {
  fakeTime(t);
  let passes = 0;
  const { loop } = loopWith(async () => {
    passes += 1;
  });
  t.mock.timers.tick(60_000);
  await settle();
  assert.equal(passes, 0);
  await loop.kick();
  assert.equal(passes, 1);
  await loop.stop();
});

test('kicks during a pass merge into exactly one more pass, never overlapping', async (t) => {
  fakeTime(t);
  let running = 0;
  let most = 0;
  let passes = 0;
  const gates = [gate(), gate()];
  const { loop } = loopWith(async () => {
    running += 1;
    most = Math.max(most, running);
    passes += 1;
    await gates[passes - 1]?.wait;
    running -= 1;
  });
  const first = loop.kick();
  assert.equal(loop.busy, true);
  const kicks = [loop.kick(), loop.kick(), loop.kick()];
  await settle();
  assert.equal(passes, 1, 'the kicks wait for the running pass');
  gates[0]!.open();
  await first;
  await settle();
  assert.equal(passes, 2, 'three kicks, one more pass');
  let resolved = false;
  void Promise.all(kicks).then(() => (resolved = true));
  await settle();
  assert.equal(resolved, false, 'a kick resolves only once a pass that began after it has ended');
  gates[1]!.open();
  await Promise.all(kicks);
  await loop.settled();
  assert.equal(passes, 2);
  assert.equal(most, 1);
  await loop.stop();
});

test('the due time the body returns brings the next pass, not a moment earlier', async (t) => {
  fakeTime(t);
  const times: number[] = [];
  const { loop } = loopWith(async () => {
    times.push(Date.now());
    return times.length === 1 ? Date.now() + 5000 : undefined;
  });
  await loop.kick();
  t.mock.timers.tick(4999);
  await settle();
  assert.deepEqual(times, [1_000_000]);
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(times, [1_000_000, 1_005_000]);
  t.mock.timers.tick(3_600_000);
  await settle();
  assert.equal(times.length, 2, 'undefined: no pass until asked');
  await loop.stop();
});

test('wakeAt: the earliest due time wins, a later one changes nothing', async (t) => {
  fakeTime(t);
  const times: number[] = [];
  const { loop } = loopWith(async () => {
    times.push(Date.now());
  });
  loop.wakeAt(1_000_000 + 3000);
  loop.wakeAt(1_000_000 + 1000);
  loop.wakeAt(1_000_000 + 2000);
  t.mock.timers.tick(999);
  await settle();
  assert.deepEqual(times, []);
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(times, [1_001_000]);
  t.mock.timers.tick(10_000);
  await settle();
  assert.deepEqual(times, [1_001_000], 'the later times were merged into the first pass');
  await loop.stop();
});

test('a wakeAt during a pass is kept over the body\'s later due time', async (t) => {
  fakeTime(t);
  const times: number[] = [];
  let loopRef: ReturnType<typeof loopWith>['loop'] | undefined;
  const { loop } = loopWith(async () => {
    times.push(Date.now());
    if (times.length === 1) loopRef!.wakeAt(Date.now() + 50);
    return Date.now() + 10_000;
  });
  loopRef = loop;
  await loop.kick();
  t.mock.timers.tick(50);
  await settle();
  assert.deepEqual(times, [1_000_000, 1_000_050]);
  await loop.stop();
});

test('a failing pass is logged and retried with the backoff, doubling to its bound; success resets it', async (t) => {
  fakeTime(t);
  let passes = 0;
  let failing = true;
  const { loop, errors } = loopWith(async () => {
    passes += 1;
    if (failing) throw new Error('the store is locked');
  });
  await loop.kick();
  assert.equal(passes, 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.msg, 'pass failed');
  assert.equal(errors[0]!.fields.retryInMs, 100);
  assert.equal((errors[0]!.fields.err as Error).message, 'the store is locked');
  const waits = [100, 200, 400, 400];
  for (const [i, wait] of waits.entries()) {
    t.mock.timers.tick(wait - 1);
    await settle();
    assert.equal(passes, i + 1, `retry ${i + 1} not before ${wait} ms`);
    t.mock.timers.tick(1);
    await settle();
    assert.equal(passes, i + 2, `retry ${i + 1} after ${wait} ms`);
  }
  assert.equal(loop.failures, 5);
  failing = false;
  t.mock.timers.tick(400);
  await settle();
  assert.equal(loop.failures, 0);
  const after = passes;
  t.mock.timers.tick(3_600_000);
  await settle();
  assert.equal(passes, after, 'no retry after a pass that worked');
  await loop.stop();
});

test('a pass that says RETRY_PASS is retried with the backoff, as a throw is', async (t) => {
  fakeTime(t);
  let passes = 0;
  const { loop, errors } = loopWith(async () => {
    passes += 1;
    return passes < 3 ? RETRY_PASS : undefined;
  });
  await loop.kick();
  assert.deepEqual(errors.map((e) => [e.fields.failures, e.fields.retryInMs, e.fields.err]), [[1, 100, undefined]]);
  t.mock.timers.tick(100);
  await settle();
  t.mock.timers.tick(200);
  await settle();
  assert.equal(passes, 3);
  assert.equal(loop.failures, 0);
  await loop.stop();
});

test('a kick during the backoff runs at once', async (t) => {
  fakeTime(t);
  let passes = 0;
  const { loop } = loopWith(async () => {
    passes += 1;
    if (passes === 1) throw new Error('once');
  });
  await loop.kick();
  await loop.kick();
  assert.equal(passes, 2);
  t.mock.timers.tick(1000);
  await settle();
  assert.equal(passes, 2, 'the retry timer went with the kick');
  await loop.stop();
});

test('a due time past maxSleepMs runs a pass at maxSleepMs', async (t) => {
  fakeTime(t);
  const times: number[] = [];
  const { loop } = loopWith(async () => {
    times.push(Date.now());
    return Date.now() + 10 * 3_600_000;
  }, { maxSleepMs: 3_600_000 });
  await loop.kick();
  t.mock.timers.tick(3_600_000);
  await settle();
  assert.deepEqual(times, [1_000_000, 1_000_000 + 3_600_000]);
  await loop.stop();
});

test('stop waits for the pass in flight, then no pass runs: not by the timer, not by a kick', async (t) => {
  fakeTime(t);
  let passes = 0;
  const g = gate();
  const { loop } = loopWith(async () => {
    passes += 1;
    await g.wait;
    return Date.now() + 10;
  });
  void loop.kick();
  const waiting = loop.kick();
  let stopped = false;
  const stopping = loop.stop().then(() => (stopped = true));
  await settle();
  assert.equal(stopped, false, 'stop waits for the running pass');
  g.open();
  await stopping;
  await waiting;
  t.mock.timers.tick(60_000);
  await loop.kick();
  loop.wakeAt(0);
  await settle();
  assert.equal(passes, 1);
});

test('onIdle is told once the merged passes have ended', async (t) => {
  fakeTime(t);
  const said: number[] = [];
  let passes = 0;
  const g = gate();
  const { loop } = loopWith(async () => {
    passes += 1;
    if (passes === 1) await g.wait;
  }, { onIdle: () => said.push(passes) });
  void loop.kick();
  void loop.kick();
  g.open();
  await loop.settled();
  assert.deepEqual(said, [2]);
  await loop.stop();
});

test('the timer does not keep the process alive unless asked', async () => {
  const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const quiet = loopWith(async () => undefined);
  quiet.loop.wakeAt(Date.now() + 60_000);
  assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, before, 'unref\'d by default');
  const held = loopWith(async () => undefined, { unref: false });
  held.loop.wakeAt(Date.now() + 60_000);
  assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, before + 1);
  await quiet.loop.stop();
  await held.loop.stop();
  assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, before, 'stop clears the timer');
});


test('a gated loop runs nothing while its gate is closed, remembers what was due, and open() runs a pass at once', async (t) => {
  fakeTime(t);
  let held = false;
  let passes = 0;
  const { loop } = loopWith(async () => {
    passes += 1;
    return Date.now() + 1_000;
  }, { gate: () => held });
  await loop.kick(); // resolves at once: nothing runs here
  loop.wakeAt(Date.now() + 10);
  t.mock.timers.tick(5_000);
  await settle();
  assert.equal(passes, 0, 'no pass while the lease is not held');
  held = true;
  await loop.open();
  assert.equal(passes, 1, 'open runs a pass at once');
  t.mock.timers.tick(1_000);
  await settle();
  assert.equal(passes, 2, 'the due time the pass returned brings the next while held');
  held = false;
  loop.close();
  t.mock.timers.tick(10_000);
  await settle();
  assert.equal(passes, 2, 'no pass once the gate closed, not by the timer');
  await loop.kick();
  assert.equal(passes, 2, 'nor by a kick');
  await loop.stop();
});
