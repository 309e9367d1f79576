/**
 * robur codec: builder's messages (golden vectors captured from the real builder, reference
 * robur-protocol.md §1.8), strict DER refusals, framing, the exec blob (in memory, streamed, and
 * read from a file by positional reads), the state file, and the result mappings.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer as readAll } from 'node:stream/consumers';
import { test } from 'node:test';
import { RoburDecodeError } from '../../src/errors.js';
import {
  decodeCmd, decodeExec, decodeState, describeCmd, describeRoburResult, encodeCmd, encodeExec, encodeState, execStream, frameOf,
  FrameReader, openExecFile, roburResultOf, runResultOf, type RoburCmd, type RoburExec, type RoburState,
} from '../../src/protocol/robur/index.js';
import { DerReader, explicit, generalizedTime, integer, MAX_DEPTH, nullValue, sequence, TAG, tlv, utf8String } from '../../src/protocol/robur/der.js';

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ''), 'hex');
const ascii = (text: string) => Buffer.from(text, 'latin1').toString('hex');
const UUID = '191e6628-b829-4482-aa59-f4d30da7913b';
const UUID_HEX = '191e6628b8294482aa59f4d30da7913b';

/** A 54-byte script, the length of the one in the captured Schedule vector. */
const SCRIPT = '#!/bin/sh\necho "hello from the tap job" && sleep 1\n!!\n';
assert.equal(Buffer.byteLength(SCRIPT), 54);

/** §1.8, each with the value builder means by it. Placeholders are filled with SCRIPT and UUID. */
const VECTORS: { name: string; hex: string; cmd: RoburCmd }[] = [
  { name: 'Client_hello client 13', hex: 'ae 09 30 07 a0 02 05 00 02 01 0d', cmd: { type: 'client-hello', peer: 'client', version: 13 } },
  { name: 'Client_hello worker 5', hex: 'ae 09 30 07 a1 02 05 00 02 01 05', cmd: { type: 'client-hello', peer: 'worker', version: 5 } },
  { name: 'Server_hello', hex: 'af 02 05 00', cmd: { type: 'server-hello' } },
  { name: 'Success', hex: 'b2 02 05 00', cmd: { type: 'success' } },
  { name: 'Info', hex: 'a6 02 05 00', cmd: { type: 'info' } },
  { name: 'Job_requested debian-12', hex: 'b0 0b 0c 09 64 65 62 69 61 6e 2d 31 32', cmd: { type: 'job-requested', platform: 'debian-12' } },
  { name: 'Execute hello (no platform)', hex: 'b4 09 30 07 0c 05 68 65 6c 6c 6f', cmd: { type: 'execute', name: 'hello' } },
  { name: 'Unschedule nosuch', hex: 'a9 08 0c 06 6e 6f 73 75 63 68', cmd: { type: 'unschedule', name: 'nosuch' } },
  {
    name: 'Failure unknown job nosuch',
    hex: 'b3 14 0c 12 75 6e 6b 6e 6f 77 6e 20 6a 6f 62 20 6e 6f 73 75 63 68',
    cmd: { type: 'failure', message: 'unknown job nosuch' },
  },
  {
    name: 'Schedule daily tapjob',
    hex: `a5 55 30 53 a1 02 05 00 30 4d 0c 06 74 61 70 6a 6f 62 0c 36 ${ascii(SCRIPT)} 30 00 0c 09 64 65 62 69 61 6e 2d 31 32`,
    cmd: { type: 'schedule', period: 'daily', job: { name: 'tapjob', script: SCRIPT, platform: 'debian-12' } },
  },
  {
    name: 'Reschedule tapjob 2030-01-01 hourly',
    hex: 'ad 1f 30 1d 0c 06 74 61 70 6a 6f 62 18 0f 32 30 33 30 30 31 30 31 30 30 30 30 30 30 5a a0 02 05 00',
    cmd: { type: 'reschedule', name: 'tapjob', next: Date.UTC(2030, 0, 1), period: 'hourly' },
  },
  {
    name: 'Orb-build weekly',
    hex: 'ac 1d 30 1b a2 02 05 00 30 15 0c 06 6f 72 62 6a 6f 62 0c 0b 6d 79 2d 6f 70 61 6d 2d 70 6b 67',
    cmd: { type: 'schedule-orb-build', period: 'weekly', job: { name: 'orbjob', opamPackage: 'my-opam-pkg' } },
  },
  {
    name: 'Output (worker to server)',
    hex: 'a4 1b 30 19 0c 10 19 1e 66 28 b8 29 44 82 aa 59 f4 d3 0d a7 91 3b 0c 05 6c 69 6e 65 32',
    cmd: { type: 'output', uuid: UUID, line: 'line2' },
  },
  {
    name: 'Output_timestamped start at 87484274 ns',
    hex: `a4 21 30 1f 0c 10 ${UUID_HEX} 0c 05 73 74 61 72 74 02 04 05 36 e7 72`,
    cmd: { type: 'output', uuid: UUID, line: 'start', timestampNs: 87484274 },
  },
  {
    name: 'Job_finished exited 3 out.txt',
    hex: `a3 2c 30 2a 0c 10 ${UUID_HEX} a0 03 02 01 03 30 11 30 0f 0c 07 6f 75 74 2e 74 78 74 0c 04 61 72 74 0a`,
    cmd: { type: 'job-finished', uuid: UUID, result: { kind: 'exited', code: 3 }, files: [{ path: 'out.txt', data: Buffer.from('art\n') }] },
  },
];

for (const v of VECTORS) {
  test(`golden vector: ${v.name} decodes to its value and re-encodes byte for byte`, () => {
    const bytes = hex(v.hex);
    assert.deepEqual(decodeCmd(bytes), v.cmd);
    assert.equal(encodeCmd(v.cmd).toString('hex'), bytes.toString('hex'));
  });
}

test('the captured frame lengths hold: Schedule is 0x55 + 2 bytes with a 54-byte script, the uuid is 16 raw bytes', () => {
  const schedule = encodeCmd(VECTORS.find((v) => v.name.startsWith('Schedule daily'))!.cmd);
  assert.equal(schedule.length, 0x55 + 2);
  assert.equal(frameOf(schedule).subarray(0, 8).toString('hex'), '0000000000000057');
  const observe = encodeCmd({ type: 'observe', uuid: UUID });
  assert.equal(observe.toString('hex'), `aa120c10${UUID_HEX}`);
  assert.deepEqual(decodeCmd(encodeCmd({ type: 'observe', uuid: UUID.toUpperCase() })), { type: 'observe', uuid: UUID });
});

const JOB = { name: 'tapjob', script: 'echo hi\n', platform: 'debian-12' };
const ORB = { name: 'orbjob', opamPackage: 'my-opam-pkg' };
const INFO = {
  schedule: [
    { next: Date.UTC(2030, 0, 1, 1), period: 'hourly' as const, job: { kind: 'script' as const, job: JOB } },
    { next: Date.UTC(9999, 11, 31, 23, 59, 59, 999), period: 'never' as const, job: { kind: 'orb-build' as const, job: ORB } },
  ],
  queues: [{ platform: 'debian-12', jobs: [{ kind: 'script' as const, job: JOB }, { kind: 'orb-build' as const, job: ORB }] }, { platform: 'empty', jobs: [] }],
  running: [{ started: Date.UTC(2026, 11, 6, 17, 30, 0, 123), uuid: UUID, job: { name: 'x', script: 'y' } }],
};
const EVERY_CMD: RoburCmd[] = [
  { type: 'job-schedule', uuid: UUID, job: JOB },
  { type: 'job-schedule', uuid: UUID, job: { name: 'noplat', script: '' } },
  { type: 'job-finished', uuid: UUID, result: { kind: 'signalled', signal: 9 }, files: [] },
  { type: 'job-finished', uuid: UUID, result: { kind: 'stopped', signal: 19 }, files: [{ path: 'bin/x', data: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0xff, 0xfe, 0]) }] },
  { type: 'job-finished', uuid: UUID, result: { kind: 'msg', message: 'timeout' }, files: [] },
  { type: 'job-finished', uuid: UUID, result: { kind: 'exited', code: -1 }, files: [] },
  { type: 'output', uuid: UUID, line: 'héllo ✓' },
  { type: 'output', uuid: UUID, line: '', timestampNs: 0 },
  { type: 'output', uuid: UUID, line: 'late', timestampNs: Number.MAX_SAFE_INTEGER },
  { type: 'schedule', period: 'never', job: JOB },
  { type: 'info' },
  { type: 'info-reply-old', ...INFO },
  { type: 'unschedule', name: 'tapjob' },
  { type: 'observe', uuid: UUID },
  { type: 'execute-old', name: 'tapjob' },
  { type: 'schedule-orb-build', period: 'hourly', job: ORB },
  { type: 'reschedule', name: 'tapjob', next: Date.UTC(2030, 0, 1, 0, 0, 0, 5) },
  { type: 'client-hello', peer: 'worker', version: 5 },
  { type: 'server-hello' },
  { type: 'job-requested', platform: 'freebsd-14' },
  { type: 'drop-platform', platform: 'debian-12' },
  { type: 'success' },
  { type: 'failure', message: 'execute failed: job not found' },
  { type: 'execute', name: 'tapjob', platform: 'debian-12' },
  { type: 'undrop-platform', platform: 'debian-12' },
  { type: 'info-reply', ...INFO, dropped: ['old-os'] },
  { type: 'info-reply', schedule: [], queues: [], running: [], dropped: [] },
];

test('every cmd type round-trips through encodeCmd and decodeCmd, and describeCmd names it without data', () => {
  const types = new Set<string>();
  for (const cmd of EVERY_CMD) {
    assert.deepEqual(decodeCmd(encodeCmd(cmd)), cmd, cmd.type);
    types.add(cmd.type);
    const text = describeCmd(cmd);
    assert.ok(!text.includes('\n') && !text.includes('echo hi') && !text.includes('héllo'), text);
  }
  assert.equal(types.size, 20);
  assert.equal(describeCmd({ type: 'job-requested', platform: 'debian-12' }), 'Job_requested debian-12');
});

test('Ptime.max is written 99991231235959.999Z; a time with whole seconds has no fraction', () => {
  assert.equal(generalizedTime(Date.UTC(9999, 11, 31, 23, 59, 59, 999)).subarray(2).toString(), '99991231235959.999Z');
  assert.equal(generalizedTime(Date.UTC(2030, 0, 1, 1)).subarray(2).toString(), '20300101010000Z');
  assert.equal(generalizedTime(Date.UTC(2030, 0, 1, 1, 0, 0, 50)).subarray(2).toString(), '20300101010000.050Z');
});

test('times: UTCTime and the other GeneralizedTime forms builder reads are read', () => {
  const reschedule = (time: Buffer) => decodeCmd(explicit(13, sequence([utf8String('j'), time])));
  const at = (tag: number, text: string) => (reschedule(tlv(tag, Buffer.from(text))) as { next: number }).next;
  assert.equal(at(TAG.UTCTIME, '300101000000Z'), Date.UTC(2030, 0, 1));
  assert.equal(at(TAG.UTCTIME, '991231235959Z'), Date.UTC(1999, 11, 31, 23, 59, 59));
  assert.equal(at(TAG.UTCTIME, '5001010000Z'), Date.UTC(1950, 0, 1));
  assert.equal(at(TAG.GENERALIZEDTIME, '2030010112Z'), Date.UTC(2030, 0, 1, 12));
  assert.equal(at(TAG.GENERALIZEDTIME, '203001011230Z'), Date.UTC(2030, 0, 1, 12, 30));
  assert.equal(at(TAG.GENERALIZEDTIME, '20300101123045.5Z'), Date.UTC(2030, 0, 1, 12, 30, 45, 500));
  assert.equal(at(TAG.GENERALIZEDTIME, '20300101123045+0130'), Date.UTC(2030, 0, 1, 11, 0, 45));
  assert.equal(at(TAG.GENERALIZEDTIME, '00010101000000Z'), new Date('0001-01-01T00:00:00Z').getTime());
  for (const bad of ['20300101123045', '20301301000000Z', '20300230000000Z', '20300101240000Z', '20300101000000.1234Z', '2030010100000Z', '20300101000000+2400']) {
    assert.throws(() => at(TAG.GENERALIZEDTIME, bad), RoburDecodeError, bad);
  }
});

/** Bytes each of which DER (or builder) refuses, with what the message must mention. */
const REFUSED: { name: string; hex: string; says: RegExp }[] = [
  { name: 'non-minimal long-form length', hex: 'b0 81 0b 0c 09 64 65 62 69 61 6e 2d 31 32', says: /long-form length 11/ },
  { name: 'length with a leading zero octet', hex: 'b0 82 00 0b 0c 09 64 65 62 69 61 6e 2d 31 32', says: /leading zero/ },
  { name: 'indefinite length', hex: 'b0 80 0c 09 64 65 62 69 61 6e 2d 31 32 00 00', says: /indefinite length/ },
  { name: 'constructed UTF8String', hex: 'b0 0d 2c 0b 0c 09 64 65 62 69 61 6e 2d 31 32', says: /constructed UTF8String/ },
  { name: 'non-minimal INTEGER', hex: 'ae 0a 30 08 a0 02 05 00 02 02 00 0d', says: /non-minimal INTEGER/ },
  { name: 'non-minimal negative INTEGER', hex: 'ae 0a 30 08 a0 02 05 00 02 02 ff ff', says: /non-minimal INTEGER/ },
  { name: 'INTEGER beyond MAX_SAFE_INTEGER', hex: 'ae 0f 30 0d a0 02 05 00 02 07 20 00 00 00 00 00 00', says: /beyond 9007199254740991/ },
  { name: 'trailing bytes at top level', hex: 'af 02 05 00 00', says: /trailing/ },
  { name: 'trailing bytes inside a tag', hex: 'af 04 05 00 05 00', says: /trailing/ },
  { name: 'legacy tag [0]', hex: 'a0 03 02 01 00', says: /legacy tag \[0\]/ },
  { name: 'legacy tag [1]', hex: 'a1 03 02 01 00', says: /legacy tag \[1\]/ },
  { name: 'legacy tag [8]', hex: 'a8 02 05 00', says: /legacy tag \[8\]/ },
  { name: 'tag [23]', hex: 'b7 02 05 00', says: /unknown tag \[23\]/ },
  { name: 'tag [30]', hex: 'be 02 05 00', says: /unknown tag \[30\]/ },
  { name: 'uuid of 15 bytes', hex: `aa 11 0c 0f ${UUID_HEX.slice(0, 30)}`, says: /16 bytes, got 15/ },
  { name: 'a huge claimed length', hex: 'b0 86 ff ff ff ff ff ff 0c 00', says: /exceeds the 2 bytes left/ },
  { name: 'too many length octets', hex: 'b0 88 7f ff ff ff ff ff ff ff', says: /too long/ },
  { name: 'empty input', hex: '', says: /missing/ },
  { name: 'truncated header', hex: 'b0', says: /truncated/ },
  { name: 'NULL with content', hex: 'af 03 05 01 00', says: /NULL with 1/ },
  { name: 'an unknown period', hex: 'a5 0e 30 0c a4 02 05 00 30 06 0c 00 0c 00 30 00', says: /not a period/ },
  { name: 'a universal value at top level', hex: '05 00', says: /expected a context tag/ },
  { name: 'files that are not a SEQUENCE OF Data', hex: 'a5 10 30 0e a1 02 05 00 30 08 0c 00 0c 00 30 02 05 00', says: /expected SEQUENCE/ },
];

for (const r of REFUSED) {
  test(`strict DER refuses ${r.name} with one RoburDecodeError line`, () => {
    assert.throws(
      () => decodeCmd(hex(r.hex)),
      (err: unknown) => err instanceof RoburDecodeError && err.code === 'KILN_ERR_ROBUR_DECODE' && r.says.test(err.message) && !err.message.includes('\n'),
    );
  });
}

test('DER nesting is bounded: a value nested deeper than MAX_DEPTH is refused', () => {
  const nest = (depth: number) => {
    let v = nullValue();
    for (let i = 0; i < depth; i++) v = sequence([v]);
    return v;
  };
  const walk = (bytes: Buffer) => {
    let r = new DerReader(bytes);
    while (r.peekTag() === TAG.SEQUENCE) r = r.sequence('nested');
    r.null('innermost');
  };
  walk(nest(MAX_DEPTH));
  assert.throws(() => walk(nest(MAX_DEPTH + 1)), /nested deeper than 16/);
  assert.equal(integer(-129).toString('hex'), '0202ff7f');
  assert.equal(integer(128).toString('hex'), '02020080');
  assert.equal(integer(0).toString('hex'), '020100');
});

test('FrameReader yields the same bodies whatever the split point, and refuses an oversized length before its body', () => {
  const bodies = VECTORS.slice(9, 12).map((v) => hex(v.hex));
  const stream = Buffer.concat(bodies.map(frameOf));
  for (let cut = 0; cut <= stream.length; cut++) {
    const reader = new FrameReader(1024);
    const got = [...reader.push(stream.subarray(0, cut)), ...reader.push(stream.subarray(cut))];
    assert.deepEqual(got, bodies, `cut at ${cut}`);
    assert.equal(reader.pending, 0);
  }
  const bytewise = new FrameReader(1024);
  const got: Buffer[] = [];
  for (const byte of stream) got.push(...bytewise.push(Buffer.from([byte])));
  assert.deepEqual(got, bodies);
  const small = new FrameReader(100);
  assert.throws(() => small.push(hex('00 00 00 00 00 00 00 65 b2')), /over the limit of 100/);
  assert.throws(() => new FrameReader(100).push(hex('ff ff ff ff ff ff ff ff')), RoburDecodeError);
  assert.deepEqual(new FrameReader(0).push(hex('00 00 00 00 00 00 00 00')), [Buffer.alloc(0)]);
});

const EXEC: RoburExec = {
  job: { name: 'tapjob', script: '#!/bin/sh\necho hi\n', platform: 'debian-12' },
  uuid: UUID,
  console: [
    { deltaNs: 1_000, line: 'first' },
    { deltaNs: 2_500_000_000, line: 'second ✓' },
    { deltaNs: 3_600_000_000_000, line: 'third' },
  ],
  started: Date.UTC(2026, 11, 6, 17, 0, 0, 0),
  finished: Date.UTC(2026, 11, 6, 17, 0, 4, 321),
  result: { kind: 'exited', code: 0 },
  files: [
    { path: 'bin/hello', data: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x00, 0xff, 0xc3]) },
    { path: 'empty', data: Buffer.alloc(0) },
    { path: 'dir/README.md', data: Buffer.from('# readme\n') },
  ],
};

const streamFiles = (exec: RoburExec) => exec.files.map((f) => ({ path: f.path, size: f.data.length, open: async () => Readable.from([f.data]) }));

test('exec: decodeExec(encodeExec(x)) is x, console is newest first on the wire, [1] is refused', () => {
  const blob = encodeExec(EXEC);
  assert.deepEqual(decodeExec(blob), EXEC);
  assert.equal(blob.subarray(0, 1).toString('hex'), 'a0');
  assert.ok(blob.indexOf('third') < blob.indexOf('second') && blob.indexOf('second') < blob.indexOf('first'));
  assert.throws(() => decodeExec(hex('a1 02 05 00')), RoburDecodeError);
  assert.throws(() => decodeExec(Buffer.concat([blob, Buffer.from([0])])), /trailing/);
  assert.throws(() => decodeExec(blob.subarray(0, blob.length - 1)), RoburDecodeError);
  // The uuid of the exec blob is 16 raw bytes too.
  assert.ok(blob.includes(hex(`0c 10 ${UUID_HEX}`)));
});

test('exec: execStream gives exactly encodeExec bytes, its length known first; a short or long artifact fails the stream', async () => {
  const { files: _files, ...head } = EXEC;
  const { length, stream } = execStream(head, streamFiles(EXEC));
  const bytes = await readAll(stream);
  assert.equal(bytes.toString('hex'), encodeExec(EXEC).toString('hex'));
  assert.equal(length, bytes.length);
  const big = { ...EXEC, files: [{ path: 'big', data: Buffer.alloc(70_000, 7) }] };
  const streamed = execStream(head, streamFiles(big));
  const bigBytes = await readAll(streamed.stream);
  assert.ok(bigBytes.equals(encodeExec(big)));
  assert.equal(streamed.length, bigBytes.length);
  for (const size of [6, 8]) {
    const lying = [{ path: 'bin/hello', size, open: async () => Readable.from([EXEC.files[0]!.data]) }];
    await assert.rejects(readAll(execStream(head, lying).stream), /announced/);
  }
});

test('openExecFile reads a multi-MB exec file by positional reads and streams each artifact from its offset', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'kiln-robur-exec-'));
  try {
    const artifact = Buffer.alloc(5 * 1024 * 1024 + 13);
    for (let i = 0; i < artifact.length; i++) artifact[i] = (i * 31 + (i >> 11)) & 0xff;
    const exec: RoburExec = { ...EXEC, files: [EXEC.files[0]!, { path: 'bin/big.bin', data: artifact }, EXEC.files[1]!] };
    const file = path.join(dir, 'full');
    await writeFile(file, encodeExec(exec));
    const opened = await openExecFile(file);
    const { files, ...head } = exec;
    assert.deepEqual(opened.exec, head);
    assert.deepEqual(opened.files.map((f) => [f.path, f.size]), files.map((f) => [f.path, f.data.length]));
    for (const [i, f] of opened.files.entries()) assert.ok((await readAll(f.read())).equals(files[i]!.data), f.path);
    // What was read can be streamed again as the same blob.
    const again = execStream(opened.exec, opened.files.map((f) => ({ path: f.path, size: f.size, open: async () => f.read() })));
    assert.ok((await readAll(again.stream)).equals(await readFile(file)));

    const whole = await readFile(file);
    const cases: [string, Buffer, RegExp][] = [
      ['truncated', whole.subarray(0, whole.length - 100), /exceeds|trailing|truncated/],
      ['trailing byte', Buffer.concat([whole, Buffer.from([0])]), /trailing/],
      ['not an exec', hex('a1 02 05 00'), /expected \[0\]/],
      ['bad head', Buffer.concat([whole.subarray(0, 20), Buffer.alloc(whole.length - 20)]), /robur/],
    ];
    for (const [name, bytes, says] of cases) {
      await writeFile(file, bytes);
      await assert.rejects(openExecFile(file), (err: unknown) => err instanceof RoburDecodeError && says.test(err.message), name);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('state file: decode(encode(x)) is x, written dropped/schedule/queues, legacy [0] [1] [2] items read as builder does', () => {
  const state: RoburState = {
    dropped: ['old-os'],
    schedule: INFO.schedule,
    queues: INFO.queues,
    ignoredLegacy: 0,
  };
  const bytes = encodeState(state);
  assert.deepEqual(decodeState(bytes), state);
  // Order on disk: [5] first, then [3]s, then [4]s.
  const tags: number[] = [];
  for (let pos = bytes[1]! < 0x80 ? 2 : 2 + (bytes[1]! & 0x7f); pos < bytes.length; ) {
    tags.push(bytes[pos]!);
    const l = bytes[pos + 1]!;
    pos += l < 0x80 ? 2 + l : 2 + (l & 0x7f) + bytes.readUIntBE(pos + 2, l & 0x7f);
  }
  assert.deepEqual(tags, [0xa5, 0xa3, 0xa3, 0xa4, 0xa4]);
  assert.deepEqual(decodeState(hex('30 00')), { dropped: [], schedule: [], queues: [], ignoredLegacy: 0 });

  const script = (name: string) => sequence([utf8String(name), utf8String('echo\n'), sequence([]), utf8String('debian-12')]);
  const legacy = sequence([
    explicit(0, script('legacy-queued')),
    explicit(1, sequence([generalizedTime(Date.UTC(2025, 0, 1)), explicit(2, nullValue()), script('legacy-scheduled')])),
    explicit(2, explicit(1, sequence([utf8String('orb'), utf8String('pkg')]))),
    explicit(5, utf8String('gone')),
  ]);
  assert.deepEqual(decodeState(legacy), {
    dropped: ['gone'],
    schedule: [{ next: Date.UTC(2025, 0, 1), period: 'weekly', job: { kind: 'script', job: { name: 'legacy-scheduled', script: 'echo\n', platform: 'debian-12' } } }],
    queues: [],
    ignoredLegacy: 2,
  });
  assert.throws(() => decodeState(sequence([explicit(6, nullValue())])), /unknown item \[6\]/);
  assert.throws(() => decodeState(Buffer.concat([hex('30 00'), hex('00')])), /trailing/);
  assert.throws(() => decodeState(sequence([explicit(5, integer(1))])), RoburDecodeError);
});

test('result mappings: Kiln results to builder and back, and builder\'s text', () => {
  assert.deepEqual(roburResultOf({ kind: 'exited', code: 3 }), { kind: 'exited', code: 3 });
  assert.deepEqual(roburResultOf({ kind: 'signalled', signal: 'SIGKILL' }), { kind: 'signalled', signal: 9 });
  assert.deepEqual(roburResultOf({ kind: 'signalled', signal: 'SIGTERM', note: 'x' }), { kind: 'signalled', signal: 15 });
  assert.deepEqual(roburResultOf({ kind: 'signalled', signal: 'SIGNOPE' }), { kind: 'msg', message: 'signalled SIGNOPE' });
  assert.deepEqual(roburResultOf({ kind: 'signalled', signal: 'constructor' }), { kind: 'msg', message: 'signalled constructor' });
  assert.deepEqual(roburResultOf({ kind: 'aborted', reason: 'worker lost' }), { kind: 'msg', message: 'worker lost' });

  assert.deepEqual(runResultOf({ kind: 'exited', code: 0 }), { kind: 'exited', code: 0 });
  assert.deepEqual(runResultOf({ kind: 'signalled', signal: 9 }), { kind: 'signalled', signal: 'SIGKILL' });
  assert.deepEqual(runResultOf({ kind: 'signalled', signal: 6 }), { kind: 'signalled', signal: 'SIGABRT' });
  // The real builder-worker sends OCaml's own numbers for the signals OCaml knows (Sys.sigkill = -7).
  assert.deepEqual(runResultOf({ kind: 'signalled', signal: -7 }), { kind: 'signalled', signal: 'SIGKILL' });
  assert.deepEqual(runResultOf({ kind: 'signalled', signal: -11 }), { kind: 'signalled', signal: 'SIGTERM' });
  assert.deepEqual(runResultOf({ kind: 'signalled', signal: -28 }), { kind: 'signalled', signal: 'SIGXFSZ' });
  assert.deepEqual(runResultOf({ kind: 'signalled', signal: -29 }), { kind: 'signalled', signal: '-29' });
  assert.deepEqual(runResultOf({ kind: 'stopped', signal: -16 }), { kind: 'aborted', reason: 'stopped SIGSTOP' });
  assert.deepEqual(runResultOf({ kind: 'stopped', signal: 1 }), { kind: 'aborted', reason: 'stopped 1' });
  assert.deepEqual(runResultOf({ kind: 'msg', message: 'timeout' }), { kind: 'aborted', reason: 'timeout' });

  assert.equal(describeRoburResult({ kind: 'exited', code: 0 }), 'exited 0');
  assert.equal(describeRoburResult({ kind: 'signalled', signal: 9 }), 'signalled 9');
  assert.equal(describeRoburResult({ kind: 'stopped', signal: 1 }), 'stopped 1');
  assert.equal(describeRoburResult({ kind: 'msg', message: 'timeout' }), 'execution aborted: timeout');
});
