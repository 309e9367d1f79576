/**
 * Fuzzes the robur codec (src/protocol/robur): arbitrary messages, exec blobs and state files
 * round-trip encode → decode to an equal value; random bytes and mutated valid encodings only ever
 * make the decoders return a value or throw RoburDecodeError (never another error, never a hang);
 * and a FrameReader fed a stream cut at random points yields the same bodies.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { RoburDecodeError } from '../../src/errors.js';
import {
  decodeCmd, decodeExec, decodeState, encodeCmd, encodeExec, encodeState, frameOf, FrameReader,
  type RoburCmd, type RoburExec, type RoburFile, type RoburJob, type RoburPeriod, type RoburResult, type RoburScheduleItem,
  type RoburScriptJob, type RoburState,
} from '../../src/protocol/robur/index.js';
import { checkFuzz, fuzzSettings, PROTOTYPE_NAMES } from './fuzz-settings.js';

// ---------------------------------------------------------------------------------------------
// Generators of values

/** fc.record without null-prototype objects (the decoders build plain ones). */
function record<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record(model, { noNullPrototype: true }) as fc.Arbitrary<T>;
}

const text = fc.oneof(fc.string({ maxLength: 12 }), fc.string({ unit: 'grapheme', maxLength: 12 }), fc.constantFrom(...PROTOTYPE_NAMES, '', 'x'.repeat(200)));
const uuid = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
});
/** Any whole ms in builder's years 0000-9999. */
const time = fc.integer({ min: Date.parse('0000-01-01T00:00:00Z'), max: Date.UTC(9999, 11, 31, 23, 59, 59, 999) });
const int = fc.oneof(fc.integer({ min: -300, max: 300 }), fc.maxSafeInteger(), fc.constantFrom(Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 127, 128, -128, -129, 255, 256));
const period = fc.constantFrom<RoburPeriod>('hourly', 'daily', 'weekly', 'never');
const scriptJob: fc.Arbitrary<RoburScriptJob> = fc.record({ name: text, script: text, platform: text }, { noNullPrototype: true, requiredKeys: ['name', 'script'] });
const orbJob = record({ name: text, opamPackage: text });
const job: fc.Arbitrary<RoburJob> = fc.oneof(
  scriptJob.map((j) => ({ kind: 'script' as const, job: j })),
  orbJob.map((j) => ({ kind: 'orb-build' as const, job: j })),
);
const result: fc.Arbitrary<RoburResult> = fc.oneof(
  int.map((code) => ({ kind: 'exited' as const, code })),
  int.map((signal) => ({ kind: 'signalled' as const, signal })),
  int.map((signal) => ({ kind: 'stopped' as const, signal })),
  text.map((message) => ({ kind: 'msg' as const, message })),
);
const file: fc.Arbitrary<RoburFile> = record({ path: text, data: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) });
const scheduleItem: fc.Arbitrary<RoburScheduleItem> = record({ next: time, period, job });
const queue = record({ platform: text, jobs: fc.array(job, { maxLength: 3 }) });
const running = record({ started: time, uuid, job: scriptJob });
const info = { schedule: fc.array(scheduleItem, { maxLength: 3 }), queues: fc.array(queue, { maxLength: 3 }), running: fc.array(running, { maxLength: 3 }) };

const cmd: fc.Arbitrary<RoburCmd> = fc.oneof(
  record({ type: fc.constant('job-schedule' as const), uuid, job: scriptJob }),
  record({ type: fc.constant('job-finished' as const), uuid, result, files: fc.array(file, { maxLength: 3 }) }),
  fc.record({ type: fc.constant('output' as const), uuid, line: text, timestampNs: int }, { noNullPrototype: true, requiredKeys: ['type', 'uuid', 'line'] }),
  record({ type: fc.constant('schedule' as const), period, job: scriptJob }),
  fc.constant({ type: 'info' as const }),
  record({ type: fc.constant('info-reply-old' as const), ...info }),
  record({ type: fc.constant('unschedule' as const), name: text }),
  record({ type: fc.constant('observe' as const), uuid }),
  record({ type: fc.constant('execute-old' as const), name: text }),
  record({ type: fc.constant('schedule-orb-build' as const), period, job: orbJob }),
  fc.record({ type: fc.constant('reschedule' as const), name: text, next: time, period }, { noNullPrototype: true, requiredKeys: ['type', 'name', 'next'] }),
  record({ type: fc.constant('client-hello' as const), peer: fc.constantFrom('client' as const, 'worker' as const), version: int }),
  fc.constant({ type: 'server-hello' as const }),
  record({ type: fc.constant('job-requested' as const), platform: text }),
  record({ type: fc.constant('drop-platform' as const), platform: text }),
  fc.constant({ type: 'success' as const }),
  record({ type: fc.constant('failure' as const), message: text }),
  fc.record({ type: fc.constant('execute' as const), name: text, platform: text }, { noNullPrototype: true, requiredKeys: ['type', 'name'] }),
  record({ type: fc.constant('undrop-platform' as const), platform: text }),
  record({ type: fc.constant('info-reply' as const), ...info, dropped: fc.array(text, { maxLength: 3 }) }),
);
const exec: fc.Arbitrary<RoburExec> = record({
  job: scriptJob,
  uuid,
  console: fc.array(record({ deltaNs: int, line: text }), { maxLength: 5 }),
  started: time,
  finished: time,
  result,
  files: fc.array(file, { maxLength: 3 }),
});
const state: fc.Arbitrary<RoburState> = record({
  dropped: fc.array(text, { maxLength: 3 }),
  schedule: fc.array(scheduleItem, { maxLength: 3 }),
  queues: fc.array(queue, { maxLength: 3 }),
  ignoredLegacy: fc.constant(0),
});

// ---------------------------------------------------------------------------------------------
// Generators of bad bytes

/** Edits to a valid encoding: flip, set, insert or delete a byte, or cut it short. */
type Edit = { op: 'set' | 'insert'; at: number; byte: number } | { op: 'delete' | 'truncate'; at: number };
const edit: fc.Arbitrary<Edit> = fc.oneof(
  record({ op: fc.constantFrom('set' as const, 'insert' as const), at: fc.nat(), byte: fc.oneof(fc.nat(255), fc.constantFrom(0x00, 0x80, 0x81, 0xff, 0xa0, 0xa1, 0xa8, 0xb7, 0x2c, 0x30)) }),
  record({ op: fc.constantFrom('delete' as const, 'truncate' as const), at: fc.nat() }),
);

function mutate(bytes: Buffer, edits: Edit[]): Buffer {
  let out = Buffer.from(bytes);
  for (const e of edits) {
    const at = out.length === 0 ? 0 : e.at % (out.length + (e.op === 'insert' ? 1 : 0));
    if (e.op === 'set' && out.length > 0) out[at % out.length] = e.byte;
    else if (e.op === 'insert') out = Buffer.concat([out.subarray(0, at), Buffer.from([e.byte]), out.subarray(at)]);
    else if (e.op === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
    else if (e.op === 'truncate') out = out.subarray(0, at);
  }
  return out;
}

/** Runs every decoder on `bytes`: each returns or throws RoburDecodeError, nothing else. */
function decodeAll(bytes: Buffer): void {
  for (const decode of [decodeCmd, decodeExec, decodeState]) {
    try {
      decode(bytes);
    } catch (err) {
      if (!(err instanceof RoburDecodeError)) throw new Error(`${decode.name} threw ${String(err)} for ${bytes.toString('hex')}`);
      assert.ok(!err.message.includes('\n'), err.message);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Properties

test('fuzz robur codec: every message, exec and state round-trips encode → decode', async () => {
  let inputs = 0;
  await checkFuzz(
    'robur round-trip',
    fc.asyncProperty(cmd, exec, state, async (c, e, s) => {
      inputs += 3;
      assert.deepEqual(decodeCmd(encodeCmd(c)), c);
      assert.deepEqual(decodeExec(encodeExec(e)), e);
      assert.deepEqual(decodeState(encodeState(s)), s);
    }),
    fuzzSettings(300),
    () => inputs,
  );
});

test('fuzz robur codec: random bytes and mutated valid encodings only ever throw RoburDecodeError', async () => {
  let inputs = 0;
  const valid = fc.oneof(cmd.map(encodeCmd), exec.map(encodeExec), state.map(encodeState));
  await checkFuzz(
    'robur decode',
    fc.asyncProperty(fc.uint8Array({ maxLength: 120 }), valid, fc.array(edit, { minLength: 1, maxLength: 4 }), async (random, good, edits) => {
      inputs += 2;
      decodeAll(Buffer.from(random));
      decodeAll(mutate(good, edits));
    }),
    fuzzSettings(1000),
    () => inputs,
  );
});

test('fuzz robur codec: a FrameReader fed a stream cut anywhere yields the same bodies', async () => {
  let inputs = 0;
  await checkFuzz(
    'robur frames',
    fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 10 }), async (raw, cuts) => {
      inputs++;
      const bodies = raw.map((b) => Buffer.from(b));
      const stream = Buffer.concat(bodies.map(frameOf));
      const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const reader = new FrameReader(64);
      const got: Buffer[] = [];
      let from = 0;
      for (const at of [...points, stream.length]) {
        got.push(...reader.push(stream.subarray(from, at)));
        from = at;
      }
      assert.deepEqual(got, bodies);
      assert.equal(reader.pending, 0);
    }),
    fuzzSettings(500),
    () => inputs,
  );
});
