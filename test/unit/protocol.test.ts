/** The worker protocol at the server's edge: readHello and the workerMessage schema. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { PROTOCOL_VERSION, workerMessage } from '../../src/protocol/index.js';
import { readHello } from '../../src/server/gateway/worker-gateway.js';

function hello(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    v: PROTOCOL_VERSION, type: 'hello', name: 'builder-1.example@lab', platform: 'debian-12', labels: { arch: 'x86_64' },
    capacity: 2, once: false, hostname: 'builder-1', os: 'linux', arch: 'x64', version: '0.1.0', runs: [], ...over,
  };
}

function without(key: string): Record<string, unknown> {
  const frame = hello();
  delete frame[key];
  return frame;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

test('readHello accepts a valid hello and returns it', () => {
  for (const frame of [hello(), hello({ labels: {}, capacity: 256, once: true, hostname: '' }), hello({ name: 'A' })]) {
    assert.deepEqual(readHello(frame), frame);
  }
});

test('readHello refuses another protocol version with KILN_ERR_PROTOCOL_VERSION', () => {
  // The version is checked first, so a future hello with other fields is still told the version.
  for (const v of [0, 2, 99, -1, 1.5]) {
    assert.equal(codeOf(() => readHello(hello({ v }))), 'KILN_ERR_PROTOCOL_VERSION', `v = ${JSON.stringify(v)}`);
  }
  // A version that is not a number is a malformed hello, not another version.
  for (const v of ['1', null, undefined]) {
    assert.equal(codeOf(() => readHello(hello({ v }))), 'KILN_ERR_PROTOCOL', `v = ${JSON.stringify(v)}`);
  }
  assert.equal(codeOf(() => readHello({ v: 2, type: 'hello', shape: 'of the future' })), 'KILN_ERR_PROTOCOL_VERSION');
});

test('readHello refuses a frame that is not a hello with KILN_ERR_PROTOCOL', () => {
  const frames: unknown[] = [
    null, undefined, 'hello', 42, [], [hello()], {},
    { v: 1 },
    without('type'),
    without('v'),
    hello({ type: 'run.output' }),
    hello({ type: 'HELLO' }),
  ];
  for (const frame of frames) assert.equal(codeOf(() => readHello(frame)), 'KILN_ERR_PROTOCOL', JSON.stringify(frame));
});

test('readHello refuses a hello with a missing or mistyped field with KILN_ERR_PROTOCOL', () => {
  const cases: [string, Record<string, unknown>][] = [
    ...['name', 'platform', 'labels', 'capacity', 'once', 'hostname', 'os', 'arch', 'version'].map(
      (key): [string, Record<string, unknown>] => [`missing ${key}`, without(key)],
    ),
    ['name not a string', hello({ name: 7 })],
    ['empty name', hello({ name: '' })],
    ['name with a space', hello({ name: 'my worker' })],
    ['name with a slash', hello({ name: 'a/b' })],
    ['name starting with a dash', hello({ name: '-w' })],
    ['name too long', hello({ name: 'w'.repeat(129) })],
    ['empty platform', hello({ platform: '' })],
    ['labels not an object', hello({ labels: ['arch=arm'] })],
    ['label value not a string', hello({ labels: { cores: 8 } })],
    ['empty label key', hello({ labels: { '': 'x' } })],
    ['capacity zero', hello({ capacity: 0 })],
    ['capacity fractional', hello({ capacity: 1.5 })],
    ['capacity as text', hello({ capacity: '2' })],
    ['capacity too large', hello({ capacity: 257 })],
    ['once as text', hello({ once: 'false' })],
    ['version not a string', hello({ version: 1 })],
  ];
  for (const [name, frame] of cases) {
    assert.equal(codeOf(() => readHello(frame)), 'KILN_ERR_PROTOCOL', name);
  }
});

const runId = randomUUID();
const line = (seq: number) => ({ seq, ts: 1_700_000_000_000 + seq, text: `line ${seq}` });

test('workerMessage accepts output and results of the current version', () => {
  const frames = [
    { v: 1, type: 'run.output', runId, lines: [line(0)] },
    { v: 1, type: 'run.output', runId, lines: Array.from({ length: 10_000 }, (_, i) => line(i)) },
    { v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 } },
    { v: 1, type: 'run.finished', runId, result: { kind: 'signalled', signal: 'SIGKILL' }, stoppedBy: 'timeout' },
    { v: 1, type: 'run.finished', runId, result: { kind: 'aborted', reason: 'sandbox failed' } },
  ];
  for (const frame of frames) assert.equal(workerMessage.safeParse(frame).success, true, JSON.stringify(frame).slice(0, 120));
});

test('workerMessage rejects bad run ids, empty or oversize batches and bad fields', () => {
  const output = (over: Record<string, unknown>) => ({ v: 1, type: 'run.output', runId, lines: [line(0)], ...over });
  const finished = (over: Record<string, unknown>) => ({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: 0 }, ...over });
  const cases: [string, unknown][] = [
    ['runId not a uuid', output({ runId: 'not-a-uuid' })],
    ['runId a uuid prefix', output({ runId: runId.slice(0, 8) })],
    ['runId with a wildcard', output({ runId: '%' })],
    ['runId missing', output({ runId: undefined })],
    ['finished runId not a uuid', finished({ runId: '../../etc/passwd' })],
    ['empty batch', output({ lines: [] })],
    ['oversize batch', output({ lines: Array.from({ length: 10_001 }, (_, i) => line(i)) })],
    ['negative seq', output({ lines: [line(-1)] })],
    ['fractional seq', output({ lines: [{ ...line(0), seq: 0.5 }] })],
    // The stores keep seq in 32 bits: one past it failed every console write on PostgreSQL.
    ['seq past 2^31 - 1', output({ lines: [line(2 ** 31)] })],
    ['oversize line', output({ lines: [{ ...line(0), text: 'x'.repeat(65_537) }] })],
    ['text not a string', output({ lines: [{ ...line(0), text: 3 }] })],
    ['other version', output({ v: 2 })],
    ['unknown type', output({ type: 'run.progress' })],
    ['exit code out of range', finished({ result: { kind: 'exited', code: 256 } })],
    ['negative exit code', finished({ result: { kind: 'exited', code: -1 } })],
    ['unknown result kind', finished({ result: { kind: 'vanished' } })],
    ['empty abort reason', finished({ result: { kind: 'aborted', reason: '' } })],
    ['an unknown stop cause', finished({ stoppedBy: 'boredom' })],
    ['a hello after the hello', hello()],
  ];
  for (const [name, frame] of cases) assert.equal(workerMessage.safeParse(frame).success, false, name);
});
