/**
 * Fuzzes the worker socket (/api/worker) of a real server (in-process, SQLite in a temp dir) with
 * the worker token: random bytes, text that is not JSON, every message type of src/protocol with
 * mutated fields (wrong types, out of range, unknown runs, another worker's run, huge arrays within
 * the frame limit), hellos with odd names, labels and platforms (`constructor`, `__proto__`), and
 * frames out of order (output before the hello, a second hello, server-only types).
 *
 * Asserted for every connection: each frame the server sends is a valid server message; each
 * `error` or `refused` frame carries a catalogued code and never KILN_ERR_INTERNAL; a connection the
 * server closes is closed with a documented code; the frames are all handled (no hang); another
 * worker's run is left as it was; and afterwards /healthz and the API's listings still answer 2xx.
 */
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import WebSocket from 'ws';
import { call, FakeWorker, helloFrame, inProcessServer } from '../helpers/in-process.js';
import { CloseCode, serverMessage } from '../../src/protocol/index.js';
import type { KilnServer } from '../../src/server/index.js';
import { catalogueCodes, checkFuzz, fuzzSettings, PROTOTYPE_NAMES } from './fuzz-settings.js';

/** Longest wait for the server to handle a connection's frames: past it the connection counts as hung. */
const CONNECTION_TIMEOUT_MS = 15_000;
const CODES = catalogueCodes();
const PLATFORM = 'fuzzos';
/**
 * The close codes docs/protocol.md lists: the application's, and the WebSocket ones the server's
 * socket library uses for a frame it cannot take (1007 text that is not UTF-8, 1009 over 8 MiB).
 */
const DOCUMENTED_CLOSE_CODES = new Set<number>([...Object.values(CloseCode), 1007, 1009]);


// ---------------------------------------------------------------------------------------------
// Generators

/** Mostly the usual (so that later frames meet a session, and runs their worker), else the odd. */
const often = <T, U>(usual: fc.Arbitrary<T>, odd: fc.Arbitrary<U>) => fc.oneof({ weight: 9, arbitrary: usual }, { weight: 1, arbitrary: odd });

const weirdText = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.constantFrom('', ' ', 'a'.repeat(129), 'x'.repeat(65), '..', '/', '\u0000', '\u202E', ...PROTOTYPE_NAMES),
);
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(1e308, -1e308, 2 ** 53 + 2, -1, 0, 0.5, 257, 1025, 65_537, 'NaN', '1', '', null, true, false, [], {}, [[]], { __proto__: null }),
  fc.jsonValue({ maxDepth: 2 }),
  weirdText,
);

/** Which run a message names, resolved when it is sent (the runs exist only then). */
const runRef = fc.constantFrom('held', 'held', 'ended', 'own', 'unknown', 'garbage', 'upper');
type RunRef = 'held' | 'ended' | 'own' | 'unknown' | 'garbage' | 'upper';

interface Runs {
  /** A run another (connected) worker holds. */
  held: string;
  /** A run that has ended. */
  ended: string;
}

function runId(ref: RunRef, runs: Runs, own: string | undefined): unknown {
  switch (ref) {
    case 'held': return runs.held;
    case 'ended': return runs.ended;
    case 'own': return own ?? runs.held;
    case 'unknown': return randomUUID();
    case 'garbage': return 'not-a-uuid';
    case 'upper': return runs.held.toUpperCase();
  }
}

const lineArb = fc.record({ seq: fc.oneof(fc.nat(), fc.constantFrom(-1, 1.5, 2 ** 53, 'x')), ts: fc.oneof(fc.nat(), fc.constantFrom(-1, 1e308)), text: fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('x'.repeat(65_537))) });
const resultArb = fc.oneof(
  fc.record({ kind: fc.constant('exited'), code: fc.oneof(fc.integer({ min: -5, max: 300 }), anyValue) }),
  fc.record({ kind: fc.constant('signalled'), signal: fc.oneof(fc.constantFrom('SIGKILL', 'SIGTERM', ''), weirdText), note: fc.option(weirdText, { nil: undefined }) }),
  fc.record({ kind: fc.constant('aborted'), reason: fc.oneof(fc.constantFrom('x', ''), weirdText) }),
  fc.record({ kind: fc.oneof(fc.constantFrom('lost', ...PROTOTYPE_NAMES), weirdText) }),
);

/** One frame, as a plan resolved when sent. */
type FramePlan =
  | { kind: 'bytes'; bytes: Uint8Array; binary: boolean }
  | { kind: 'text'; text: string }
  | { kind: 'message'; type: string; run: RunRef; fields: Record<string, unknown>; big: number; mutations: [string, unknown][]; drop: string[]; v: unknown };

const typeArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('run.output', 'run.finished', 'run.finished', 'drain') },
  { weight: 1, arbitrary: fc.constantFrom('hello', 'welcome', 'run.assign', 'refused', 'error', 'run.done', 'nope', ...PROTOTYPE_NAMES) },
);
const messageArb: fc.Arbitrary<FramePlan> = fc.record({
  kind: fc.constant('message' as const),
  type: typeArb,
  run: runRef,
  fields: fc.record({
    lines: often(fc.array(fc.record({ seq: fc.nat(1000), ts: fc.nat(), text: fc.string({ maxLength: 40 }) }), { minLength: 1, maxLength: 4 }), fc.array(lineArb, { maxLength: 4 })),
    result: often(fc.record({ kind: fc.constant('exited'), code: fc.integer({ min: 0, max: 255 }) }), resultArb),
    stoppedBy: often(fc.constant(undefined), fc.oneof(fc.constantFrom('timeout', 'idle-timeout', 'cancel', 'shutdown', 'output'), weirdText)),
    artifactsSkipped: often(fc.constant(undefined), fc.array(fc.record({ path: weirdText, size: fc.oneof(fc.nat(), anyValue), reason: weirdText }), { maxLength: 3 })),
  }),
  // Huge arrays, still under the 8 MiB frame limit: 10,000 lines (the most a message may carry) or one more.
  big: fc.constantFrom(0, 0, 0, 0, 0, 0, 10_000, 10_001),
  mutations: often(fc.constant([] as [string, unknown][]), fc.array(fc.tuple(fc.oneof(fc.constantFrom('runId', 'lines', 'result', 'type', 'stoppedBy', 'artifactsSkipped', 'runs', 'name'), fc.constantFrom(...PROTOTYPE_NAMES)), anyValue), { minLength: 1, maxLength: 2 })),
  drop: often(fc.constant([] as string[]), fc.subarray(['runId', 'lines', 'result', 'v'], { minLength: 1 })),
  v: often(fc.constant(1), fc.constantFrom(0, 2, '1', null, 1.5, -1)),
});
const frameArb: fc.Arbitrary<FramePlan> = fc.oneof(
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 300 }), binary: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('text' as const), text: fc.oneof(weirdText, fc.constantFrom('{', '[]', 'null', '1', '"hello"', '{"v":1}', '{"type":"hello"}')) }) },
  { weight: 5, arbitrary: messageArb },
);

/** A hello, valid or bent: odd names, platforms and labels, capacities out of range, runs it does not hold. */
const helloArb = fc.record({
  name: often(fc.constant('fresh'), fc.oneof(fc.constantFrom('owner-1', 'constructor', '__proto__', 'toString', 'hasOwnProperty', ''), weirdText)),
  platform: often(fc.constant(PLATFORM), fc.oneof(fc.constantFrom('constructor', '__proto__', 'toString', 'valueOf', ''), weirdText)),
  labels: often(fc.constant({}), fc.dictionary(fc.oneof(fc.constantFrom(...PROTOTYPE_NAMES), fc.string({ maxLength: 8 })), fc.oneof(fc.string({ maxLength: 8 }), anyValue), { maxKeys: 3 })),
  capacity: often(fc.constant(1), fc.oneof(fc.integer({ min: -2, max: 300 }), anyValue)),
  runs: often(fc.constant([]), fc.array(fc.record({ run: runRef, attempt: fc.oneof(fc.constant(1), anyValue) }), { maxLength: 3 })),
  bigRuns: fc.constantFrom(0, 0, 0, 0, 0, 0, 1024, 1025),
  mutations: often(fc.constant([]), fc.array(fc.tuple(fc.constantFrom('v', 'once', 'hostname', 'os', 'arch', 'version', 'runs', ...PROTOTYPE_NAMES), anyValue), { maxLength: 2 })),
});

/** One connection: frames before the hello (out of order), maybe a hello, frames after it. */
const connectionArb = fc.record({
  before: often(fc.constant([] as FramePlan[]), fc.array(frameArb, { minLength: 1, maxLength: 2 })),
  hello: fc.option(helloArb, { freq: 5, nil: undefined }),
  after: fc.array(frameArb, { maxLength: 6 }),
});

// ---------------------------------------------------------------------------------------------

/** A JSON object text with `entries` as its own keys (so that `__proto__` is a real key). */
function objectText(entries: [string, unknown][]): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`).join(',')}}`;
}

function applyMutations(base: Record<string, unknown>, mutations: [string, unknown][], drop: string[] = []): string {
  const entries = Object.entries(base).filter(([k]) => !drop.includes(k));
  for (const [key, v] of mutations) {
    const at = entries.findIndex(([k]) => k === key);
    if (at >= 0) entries[at] = [key, v];
    else entries.push([key, v]);
  }
  return objectText(entries);
}

function frameData(plan: FramePlan, runs: Runs, own: string | undefined): { data: Buffer | string; binary: boolean } {
  if (plan.kind === 'bytes') return { data: Buffer.from(plan.bytes), binary: plan.binary };
  if (plan.kind === 'text') return { data: plan.text, binary: false };
  const id = runId(plan.run, runs, own);
  const lines = plan.big ? Array.from({ length: plan.big }, (_, seq) => ({ seq, ts: 1, text: 'x' })) : plan.fields.lines;
  const base: Record<string, unknown> = plan.type === 'hello'
    ? helloFrame({ name: `again-${randomUUID().slice(0, 8)}`, platform: PLATFORM })
    : {
      v: plan.v, type: plan.type, runId: id, lines, result: plan.fields.result,
      ...(plan.fields.stoppedBy === undefined ? {} : { stoppedBy: plan.fields.stoppedBy }),
      ...(plan.fields.artifactsSkipped === undefined ? {} : { artifactsSkipped: plan.big ? Array.from({ length: plan.big }, (_, i) => ({ path: `f${i}`, size: i, reason: 'r' })) : plan.fields.artifactsSkipped }),
    };
  return { data: applyMutations(base, plan.mutations, plan.drop), binary: false };
}

function helloData(plan: HelloPlan, runs: Runs): string {
  const name = plan.name === 'fresh' ? `fz-${randomUUID().slice(0, 8)}` : plan.name;
  const held = plan.runs.map((r) => ({ runId: runId(r.run, runs, undefined), attempt: r.attempt }));
  const many = Array.from({ length: plan.bigRuns }, () => ({ runId: randomUUID(), attempt: 1 }));
  return applyMutations(helloFrame({ name, platform: plan.platform, labels: plan.labels, capacity: plan.capacity, runs: [...held, ...many] }), plan.mutations);
}
type HelloPlan = { name: string; platform: string; labels: Record<string, unknown>; capacity: unknown; runs: { run: RunRef; attempt: unknown }[]; bigRuns: number; mutations: [string, unknown][] };

/** What one connection saw. */
interface Seen {
  frames: unknown[];
  close: { code: number; reason: string } | undefined;
}

/**
 * Opens a connection, sends the frames, then a sentinel whose answer proves every frame before it
 * was handled (the server handles a connection's frames in order): an `error` naming the sentinel's
 * run after a hello, or the refusal and close before one. Resolves with all the server sent.
 */
async function converse(server: KilnServer, frames: { data: Buffer | string; binary: boolean }[]): Promise<Seen> {
  const socket = new WebSocket(server.url.replace('http', 'ws') + '/api/worker', { headers: { authorization: `Bearer ${server.tokens.worker}` } });
  const seen: Seen = { frames: [], close: undefined };
  const sentinel = randomUUID();
  let ended = false;
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('unexpected-response', (_req, res) => reject(new Error(`the worker socket answered HTTP ${res.statusCode}`)));
      socket.once('error', reject);
    });
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not handle the frames within ${CONNECTION_TIMEOUT_MS / 1000}s; it sent ${JSON.stringify(seen.frames).slice(0, 500)}`)), CONNECTION_TIMEOUT_MS);
      socket.on('message', (data: Buffer) => {
        let frame: unknown;
        try {
          frame = JSON.parse(data.toString('utf8'));
        } catch {
          frame = { unparsable: data.toString('utf8') };
        }
        seen.frames.push(frame);
        const { type, message } = frame as { type?: string; message?: string };
        if (type === 'error' && message?.includes(sentinel)) {
          clearTimeout(timer);
          resolve();
        }
      });
      socket.on('close', (code, reason) => {
        // Only the server's close counts: ours (terminate, below) reads as 1006 and may be seen
        // before the caller looks.
        if (!ended) seen.close = { code, reason: reason.toString() };
        clearTimeout(timer);
        resolve();
      });
    });
    // A send to a socket the server has closed fails; that is an answer too (the close is seen).
    const ignore = () => undefined;
    for (const frame of frames) {
      if (socket.readyState !== WebSocket.OPEN) break;
      socket.send(frame.data, { binary: frame.binary }, ignore);
    }
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ v: 1, type: 'run.output', runId: sentinel, lines: [{ seq: 0, ts: 0, text: 'sentinel' }] }), ignore);
    }
    await done;
  } finally {
    ended = true;
    socket.terminate();
  }
  return seen;
}

test('the worker socket survives fuzzed frames: valid answers, catalogued refusals, documented close codes, nobody else\'s run touched', async (t) => {
  const server = await inProcessServer(t);
  // A connected worker holding a run, and a run that has ended: targets for other workers' frames.
  const owner = await FakeWorker.connect(t, server);
  await owner.hello({ name: 'owner-1', platform: PLATFORM });
  assert.equal((await call(server, 'POST', '/api/jobs', { name: 'held', platform: PLATFORM, script: 'sleep 1000', period: 'never' })).status, 201);
  assert.equal((await call(server, 'POST', '/api/jobs/held/execute', {})).status, 201);
  const held = (await owner.next<{ run: { id: string } }>()).run.id;
  assert.equal((await call(server, 'POST', '/api/jobs', { name: 'ends', platform: PLATFORM, script: 'true', period: 'never' })).status, 201);
  // `held` is still running, so the owner's one slot is taken: the next run goes to a second worker.
  const helper = await FakeWorker.connect(t, server);
  await helper.hello({ name: 'helper-1', platform: PLATFORM });
  const ended = (await call(server, 'POST', '/api/jobs/ends/execute', {})).body.run.id as string;
  await helper.next();
  helper.send({ v: 1, type: 'run.finished', runId: ended, result: { kind: 'exited', code: 0 } });
  await helper.next();
  helper.socket.close();
  await helper.closed;
  const runs: Runs = { held, ended };
  // Runs queued on platforms named like Object.prototype's properties: listings must survive them.
  for (const platform of ['constructor', 'toString']) {
    assert.equal((await call(server, 'POST', '/api/jobs', { name: `on-${platform}`, platform, script: 'true', period: 'never' })).status, 201);
    assert.equal((await call(server, 'POST', `/api/jobs/on-${platform}/execute`, {})).status, 201);
  }

  // Runs for the fuzzed workers themselves: a hello on this platform may be given one, and frames
  // then name it ('own'); a worker that goes away leaves it to be re-attached, lost or retried.
  assert.equal((await call(server, 'POST', '/api/jobs', { name: 'work', platform: PLATFORM, script: 'true', period: 'never', retries: 1 })).status, 201);

  let inputs = 0;
  /** What the server answered, by kind: printed so that a reader sees which paths the fuzz reached. */
  const stats = new Map<string, number>();
  const property = fc.asyncProperty(connectionArb, async (plan) => {
    const work = await call(server, 'POST', '/api/jobs/work/execute', {});
    assert.ok(work.status < 300, `execute: ${JSON.stringify(work.body)}`);
    const own = work.body.run.id as string;
    const frames = [
      ...plan.before.map((f) => frameData(f, runs, own)),
      ...(plan.hello ? [{ data: helloData(plan.hello as HelloPlan, runs), binary: false }] : []),
      ...plan.after.map((f) => frameData(f, runs, own)),
    ];
    inputs += frames.length;
    const seen = await converse(server, frames);
    for (const frame of seen.frames) {
      const key = String((frame as { type?: unknown }).type) + ((frame as { code?: unknown }).code ? ` ${String((frame as { code?: unknown }).code)}` : '');
      stats.set(key, (stats.get(key) ?? 0) + 1);
    }
    if (seen.close) stats.set(`close ${seen.close.code}`, (stats.get(`close ${seen.close.code}`) ?? 0) + 1);
    for (const frame of seen.frames) {
      const parsed = serverMessage.safeParse(frame);
      assert.ok(parsed.success, `the server sent a frame that is not a server message: ${JSON.stringify(frame).slice(0, 300)}`);
      if (parsed.data.type === 'error' || parsed.data.type === 'refused') {
        assert.ok(CODES.has(parsed.data.code), `${parsed.data.type} with code ${parsed.data.code}, not in the catalogue`);
        assert.notEqual(parsed.data.code, 'KILN_ERR_INTERNAL', `the server failed on a frame: ${parsed.data.message}`);
      }
    }
    if (seen.close) {
      // The WebSocket layer drops a connection that sent text that is not UTF-8 (1007): frames
      // still on their way then meet a reset, which the client sees as 1006 instead.
      const dropped = frames.some((f) => !f.binary && typeof f.data !== 'string' && !isUtf8(f.data)) && seen.close.code === 1006;
      assert.ok(DOCUMENTED_CLOSE_CODES.has(seen.close.code) || dropped, `closed with undocumented code ${seen.close.code} (${seen.close.reason})`);
    }

    // Nothing another worker said moved the owner's run, and the API still answers.
    const run = await call(server, 'GET', `/api/runs/${held}`);
    assert.equal(run.status, 200);
    assert.deepEqual([run.body.run.status, run.body.run.worker], ['running', 'owner-1'], 'another worker\'s run is left alone');
    assert.equal((await call(server, 'GET', `/api/runs/${ended}`)).body.run.status, 'succeeded');
    for (const path of ['/healthz', '/api/info', '/api/workers', '/api/runs?limit=20']) {
      const reply = await call(server, 'GET', path);
      assert.equal(reply.status, 200, `${path} answered ${reply.status}: ${JSON.stringify(reply.body).slice(0, 300)}`);
    }
  });

  await checkFuzz('worker-protocol', property, fuzzSettings(160), () => inputs);
  process.stderr.write(`fuzz worker-protocol: answers ${JSON.stringify(Object.fromEntries([...stats].sort()))}\n`);
  assert.equal(owner.socket.readyState, WebSocket.OPEN, 'the owner stayed connected throughout');
});

test('a frame over the 8 MiB limit closes the connection with 1009, and the server carries on', async (t) => {
  const server = await inProcessServer(t);
  const worker = await FakeWorker.connect(t, server);
  await worker.hello({ name: 'big-1', platform: PLATFORM });
  worker.send(JSON.stringify({ v: 1, type: 'drain', pad: 'x'.repeat(8 * 1024 * 1024) }));
  assert.equal((await worker.closed).code, 1009);
  assert.equal((await call(server, 'GET', '/healthz')).status, 200);
  const again = await FakeWorker.connect(t, server);
  await again.hello({ name: 'big-2', platform: PLATFORM });
});
