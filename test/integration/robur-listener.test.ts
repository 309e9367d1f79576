/**
 * The robur listener alone over real TCP, with recording parts in place of the worker sessions and
 * client commands: who gets which connection, what closes it, and its bounds (hello timeout, the
 * number of connections, a stop that closes every connection and waits until each is let go).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import pino from 'pino';
import { decodeCmd, encodeCmd, frameOf, FrameReader, type RoburCmd } from '../../src/protocol/robur/index.js';
import type { RoburConnection } from '../../src/server/robur/connection.js';
import { listenForRobur, type RoburListener } from '../../src/server/robur/robur-listener.js';

const workerHello = frameOf(encodeCmd({ type: 'client-hello', peer: 'worker', version: 5 }));
const clientHello = frameOf(encodeCmd({ type: 'client-hello', peer: 'client', version: 13 }));

/** A listener on a free port whose parts record what they are given. */
async function listener(t: TestContext, options: { helloTimeoutMs?: number; maxConnections?: number; maxFrameBytes?: number } = {}) {
  const seen = { workers: [] as RoburCmd[][], gone: 0, commands: [] as RoburCmd[], holdsRun: false, tooLarge: [] as [number, number][] };
  let holdCommand: Promise<void> | undefined;
  let release!: () => void;
  const goneHeld = new Promise<void>((resolve) => (release = resolve));
  let holdGone = false;
  const logs: string[] = [];
  const robur: RoburListener = await listenForRobur({
    log: pino({ level: 'info' }, { write: (line: string) => void logs.push(line) }),
    worker: () => ({
      handle: async (cmds) => void seen.workers.push(cmds),
      gone: async () => {
        if (holdGone) await goneHeld;
        seen.gone += 1;
      },
      get holdsRun() {
        return seen.holdsRun;
      },
      tooLarge: async (size, limit) => void seen.tooLarge.push([size, limit]),
    }),
    serveClient: async (conn: RoburConnection, command) => {
      seen.commands.push(command);
      await holdCommand;
      conn.send({ type: 'failure', message: `seen ${command.type}` });
    },
  }, { host: '127.0.0.1', port: 0, ...options });
  t.after(() => robur.close());
  const port = Number(robur.address.split(':').at(-1));
  return { robur, port, seen, logs, holdGoneUntilReleased: () => (holdGone = true), release, holdCommandUntil: (until: Promise<void>) => (holdCommand = until) };
}

/** A raw connection: what it receives, and when it is closed. */
async function connect(port: number) {
  const socket = net.connect({ port, host: '127.0.0.1' });
  const reader = new FrameReader(1024 * 1024);
  const received: RoburCmd[] = [];
  socket.on('data', (chunk) => received.push(...reader.push(chunk).map((body) => decodeCmd(body))));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise((resolve) => socket.once('connect', resolve));
  return { socket, received, closed };
}

test('a worker hello makes a session fed every later read; a client gets its one command answered, then the close', async (t) => {
  const { port, seen } = await listener(t);
  const worker = await connect(port);
  worker.socket.write(workerHello);
  worker.socket.write(Buffer.concat([
    frameOf(encodeCmd({ type: 'job-requested', platform: 'p' })),
  ]));
  const client = await connect(port);
  client.socket.write(Buffer.concat([clientHello, frameOf(encodeCmd({ type: 'info' })), frameOf(encodeCmd({ type: 'info' }))]));
  await client.closed;
  assert.deepEqual(client.received, [{ type: 'server-hello' }, { type: 'failure', message: 'seen info' }]);
  assert.deepEqual(seen.commands, [{ type: 'info' }], 'one command per connection, as builder');
  worker.socket.end();
  await worker.closed;
  assert.deepEqual(worker.received, [{ type: 'server-hello' }]);
  assert.deepEqual(seen.workers.flat(), [{ type: 'job-requested', platform: 'p' }]);
});

test('a hello of another version, or another first message, is closed without a reply', async (t) => {
  const { port, seen } = await listener(t);
  for (const first of [
    { type: 'client-hello', peer: 'worker', version: 4 },
    { type: 'client-hello', peer: 'client', version: 5 },
    { type: 'info' },
    { type: 'job-requested', platform: 'p' },
  ] as RoburCmd[]) {
    const peer = await connect(port);
    peer.socket.write(frameOf(encodeCmd(first)));
    await peer.closed;
    assert.deepEqual(peer.received, [], JSON.stringify(first));
  }
  assert.deepEqual(seen, { workers: [], gone: 0, commands: [], holdsRun: false, tooLarge: [] });
});

test('a peer that says nothing is closed at the hello timeout; the number of connections is bounded', async (t) => {
  const { port } = await listener(t, { helloTimeoutMs: 200, maxConnections: 2 });
  const silent = await connect(port);
  await silent.closed;
  assert.deepEqual(silent.received, []);
  const first = await connect(port);
  const second = await connect(port);
  first.socket.write(workerHello);
  second.socket.write(workerHello);
  const third = await connect(port);
  // Over the bound: closed by the server at once, never greeted.
  third.socket.write(workerHello);
  await third.closed;
  assert.deepEqual(third.received, []);
  for (const peer of [first, second]) peer.socket.destroy();
});

test('a stop closes every connection and waits until each session is let go', async (t) => {
  const { robur, port, seen, holdGoneUntilReleased, release } = await listener(t);
  const worker = await connect(port);
  worker.socket.write(workerHello);
  await new Promise<void>((resolve) => worker.socket.once('data', () => resolve()));
  holdGoneUntilReleased();
  let stopped = false;
  const stopping = robur.close().then(() => (stopped = true));
  await worker.closed;
  // The session's let-go is still in hand: the stop has not resolved.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(stopped, false);
  release();
  await stopping;
  assert.equal(seen.gone, 1);
});

/** An 8-byte frame header declaring `length` body bytes. */
function header(length: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(length));
  return bytes;
}

test('a worker holding no run may not start a large frame: it is cut at once, before and after its Job_requested', async (t) => {
  const { port, seen } = await listener(t);
  for (const before of [[], [frameOf(encodeCmd({ type: 'job-requested', platform: 'p' }))]]) {
    const worker = await connect(port);
    worker.socket.write(Buffer.concat([workerHello, ...before, header(200 * 1024 * 1024)]));
    await worker.closed;
  }
  // A slow sender of a large body is cut too, once it has sent more than the small bound.
  const slow = await connect(port);
  slow.socket.write(Buffer.concat([workerHello, frameOf(encodeCmd({ type: 'job-requested', platform: 'p' }))]));
  slow.socket.write(Buffer.alloc(8 * 1024, 0xff));
  await slow.closed;
  assert.deepEqual(seen.tooLarge, []);
});

test('a worker holding a run may send a large frame; one over the limit ends its run through the session, not as bad input', async (t) => {
  const { port, seen } = await listener(t, { maxFrameBytes: 64 * 1024 });
  seen.holdsRun = true;
  const worker = await connect(port);
  const line = { type: 'output', uuid: '00000000-0000-0000-0000-000000000000', line: 'x'.repeat(32 * 1024) } as RoburCmd;
  worker.socket.write(Buffer.concat([workerHello, frameOf(encodeCmd({ type: 'job-requested', platform: 'p' })), frameOf(encodeCmd(line))]));
  while (seen.workers.flat().length < 2) await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen.workers.flat()[1], line);
  worker.socket.write(header(300 * 1024 * 1024));
  while (seen.tooLarge.length === 0) await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen.tooLarge, [[300 * 1024 * 1024, 64 * 1024]]);
  worker.socket.destroy();
});

test('a hello and a large command in one write are read as a client\'s, whatever the chain has done', async (t) => {
  const { port, seen } = await listener(t);
  const client = await connect(port);
  const big = { type: 'unschedule', name: 'x'.repeat(8 * 1024) } as RoburCmd;
  client.socket.write(Buffer.concat([clientHello, frameOf(encodeCmd(big))]));
  await client.closed;
  assert.deepEqual(seen.commands, [big]);
});

test('a client or a worker that says hello and then nothing is closed at the timeout', async (t) => {
  const { port, seen } = await listener(t, { helloTimeoutMs: 200 });
  for (const hello of [clientHello, workerHello]) {
    const peer = await connect(port);
    peer.socket.write(hello);
    await peer.closed;
    assert.deepEqual(peer.received, [{ type: 'server-hello' }]);
  }
  assert.deepEqual(seen.commands, []);
});

test('after a client\'s command nothing more is read: bad bytes behind it are not decoded while the command runs', async (t) => {
  const { port, seen, logs, holdCommandUntil } = await listener(t);
  let answer!: () => void;
  holdCommandUntil(new Promise<void>((resolve) => (answer = resolve)));
  const client = await connect(port);
  client.socket.write(Buffer.concat([clientHello, frameOf(encodeCmd({ type: 'info' }))]));
  while (seen.commands.length === 0) await new Promise((resolve) => setImmediate(resolve));
  // Not a message, then a header of 1 GiB: read, either would close the connection as bad input.
  client.socket.write(Buffer.concat([header(4), Buffer.from([0xff, 0xff, 0xff, 0xff]), header(1024 * 1024 * 1024)]));
  // The server reads the hang-up after those bytes (TCP keeps the order): once closed, they were handled.
  client.socket.end();
  await client.closed;
  answer();
  assert.deepEqual(logs.filter((line) => line.includes('bad input')), []);
  assert.deepEqual(seen.commands, [{ type: 'info' }]);
});
