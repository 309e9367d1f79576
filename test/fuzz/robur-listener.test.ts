/**
 * Fuzzes the `--robur-listen` port of a real `kiln server` process over real TCP: random bytes,
 * valid frames cut short, lengths over the bound, a large frame before any hello, valid messages with bytes flipped, and frames a
 * hello must not be (legacy tags 0, 1, 8, unknown tags, wrong versions), each on its own
 * connection, cut into random TCP writes.
 *
 * Asserted for every connection: it is closed (by the server on its own for a complete frame that
 * is not a welcome hello, or after our FIN), within a bound; whatever the server sent is whole,
 * valid frames. Afterwards the process is alive, logged no error, and the port still serves a
 * worker's hello and a client's Info.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { decodeCmd, encodeCmd, frameOf, FrameReader, MAX_ROBUR_FRAME_BYTES, type RoburCmd } from '../../src/protocol/robur/index.js';
import { freePort, startServer } from '../helpers/processes.js';
import { roburClient } from '../helpers/robur-peers.js';
import { checkFuzz, fuzzSettings } from './fuzz-settings.js';

/** Longest a connection may stay open once it cannot go on: past it the server counts as hung. */
const CONNECTION_TIMEOUT_MS = 5000;
const UUID = '191e6628-b829-4482-aa59-f4d30da7913b';

/** Valid messages of every kind the port may meet, to cut and mutate. */
const VALID: RoburCmd[] = [
  { type: 'client-hello', peer: 'worker', version: 5 },
  { type: 'client-hello', peer: 'client', version: 13 },
  { type: 'job-requested', platform: 'fuzz-os' },
  { type: 'output', uuid: UUID, line: 'line' },
  { type: 'job-finished', uuid: UUID, result: { kind: 'exited', code: 3 }, files: [{ path: 'out.txt', data: Buffer.from('art\n') }] },
  { type: 'info' },
  { type: 'server-hello' },
  { type: 'failure', message: 'x' },
  { type: 'execute', name: 'nosuch' },
];
const validFrame = fc.constantFrom(...VALID).map((cmd) => frameOf(encodeCmd(cmd)));
const hellos = fc.constantFrom(frameOf(encodeCmd({ type: 'client-hello', peer: 'worker', version: 5 })), frameOf(encodeCmd({ type: 'client-hello', peer: 'client', version: 13 })));

/** A frame of `body` with its length header. */
const frameOfBytes = (body: Uint8Array) => frameOf(Buffer.from(body));
const legacy = fc.constantFrom('a003020100', 'a103020100', 'a8020500', 'b7020500', 'ae0930' + '07a1020500020104', 'ae0930' + '07a0020500020105', 'ae0930' + '07a2020500020105')
  .map((hex) => frameOf(Buffer.from(hex, 'hex')));
const oversized = fc.oneof(fc.bigInt({ min: BigInt(MAX_ROBUR_FRAME_BYTES) + 1n, max: 2n ** 64n - 1n }), fc.constant(2n ** 63n)).map((length) => {
  const header = Buffer.alloc(8);
  header.writeBigUInt64BE(length);
  return Buffer.concat([header, Buffer.from('a0')]);
});
const mutated = fc.tuple(validFrame, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 })).map(([frame, flips]) => {
  const copy = Buffer.from(frame);
  // The body only: a flipped header is the oversized and truncated cases' business.
  for (const [at, xor] of flips) if (copy.length > 8) copy[8 + (at % (copy.length - 8))]! ^= xor;
  return copy;
});

/** What one connection sends: the bytes, whether they are a whole frame the server must close on its own. */
const input = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ bytes: Buffer.from(bytes), selfClosing: false })),
  fc.tuple(validFrame, fc.nat()).map(([frame, cut]) => ({ bytes: frame.subarray(0, cut % frame.length), selfClosing: false })),
  oversized.map((bytes) => ({ bytes, selfClosing: true })),
  // Within the bound, but more of a frame than a hello may hold before the peer said who it is.
  fc.integer({ min: 4097, max: 20_000 }).map((size) => {
    const header = Buffer.alloc(8);
    header.writeBigUInt64BE(BigInt(MAX_ROBUR_FRAME_BYTES - 1));
    return { bytes: Buffer.concat([header, Buffer.alloc(size)]), selfClosing: true };
  }),
  legacy.map((bytes) => ({ bytes, selfClosing: true })),
  fc.uint8Array({ maxLength: 100 }).map((body) => ({ bytes: frameOfBytes(body), selfClosing: true })),
  mutated.map((bytes) => ({ bytes, selfClosing: true })),
  // After a welcome hello: anything, in the session.
  fc.tuple(hellos, fc.oneof(mutated, legacy, fc.uint8Array({ maxLength: 100 }).map(frameOfBytes))).map(([hello, next]) => ({ bytes: Buffer.concat([hello, next]), selfClosing: false })),
).map((sent) => {
  // A complete frame that decodes as a welcome hello is answered, not closed: the FIN ends it.
  if (!sent.selfClosing || sent.bytes.length < 8) return sent;
  try {
    const cmd = decodeCmd(sent.bytes.subarray(8));
    if (cmd.type === 'client-hello' && ((cmd.peer === 'worker' && cmd.version === 5) || (cmd.peer === 'client' && cmd.version === 13))) return { ...sent, selfClosing: false };
  } catch {
    // Not decodable: the server must close it.
  }
  return sent;
});

/** Sends `bytes` in the given cuts; resolves with what came back once the connection closed. */
async function exchange(port: number, bytes: Buffer, cuts: number[], fin: boolean): Promise<Buffer> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.setNoDelay(true);
  const received: Buffer[] = [];
  socket.on('data', (chunk) => received.push(chunk));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let at = 0;
  for (const cut of [...cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b), bytes.length]) {
    if (cut <= at) continue;
    if (!socket.writable) break;
    socket.write(bytes.subarray(at, cut));
    at = cut;
  }
  if (fin && socket.writable) socket.end();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), CONNECTION_TIMEOUT_MS)));
  const outcome = await Promise.race([closed, hung]);
  clearTimeout(timer);
  if (outcome === 'hung') {
    socket.destroy();
    throw new Error(`the connection stayed open ${CONNECTION_TIMEOUT_MS} ms after ${bytes.toString('hex').slice(0, 200)}${fin ? ' and a FIN' : ''}`);
  }
  return Buffer.concat(received);
}

test('the robur port closes every bad connection, never crashes, and keeps serving', async (t) => {
  const port = await freePort();
  const server = await startServer(t, { args: ['--robur-listen', `127.0.0.1:${port}`] });
  let sent = 0;
  const property = fc.asyncProperty(input, fc.array(fc.nat(), { maxLength: 4 }), async ({ bytes, selfClosing }, cuts) => {
    sent += 1;
    const back = await exchange(port, bytes, cuts, !selfClosing);
    // Whatever came back is whole frames of messages the server may send.
    const replies = new FrameReader(1024 * 1024).push(back).map((body) => decodeCmd(body));
    for (const reply of replies) assert.ok(['server-hello', 'success', 'failure', 'info-reply', 'output'].includes(reply.type), reply.type);
  });
  await checkFuzz('robur listener', property, fuzzSettings(600), () => sent);

  assert.equal(server.child.exitCode, null, 'the server is alive');
  assert.deepEqual(server.stderr.filter((line) => /"level":(50|60)/.test(line)), [], 'nothing logged as an error');
  const replies = await roburClient(port, { type: 'info' });
  assert.deepEqual(replies.map((r) => r.type), ['info-reply', 'success']);
  // A worker's hello is still welcomed.
  const back = await exchange(port, frameOf(encodeCmd({ type: 'client-hello', peer: 'worker', version: 5 })), [], true);
  assert.deepEqual(new FrameReader(1024).push(back).map((body) => decodeCmd(body)), [{ type: 'server-hello' }]);
});
