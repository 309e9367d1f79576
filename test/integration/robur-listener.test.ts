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
async function listener(t: TestContext, options: { helloTimeoutMs?: number; maxConnections?: number } = {}) {
  const seen = { workers: [] as RoburCmd[][], gone: 0, commands: [] as RoburCmd[] };
  let release!: () => void;
  const goneHeld = new Promise<void>((resolve) => (release = resolve));
  let holdGone = false;
  const robur: RoburListener = await listenForRobur({
    log: pino({ level: 'silent' }),
    worker: () => ({
      handle: async (cmds) => void seen.workers.push(cmds),
      gone: async () => {
        if (holdGone) await goneHeld;
        seen.gone += 1;
      },
    }),
    serveClient: async (conn: RoburConnection, command) => {
      seen.commands.push(command);
      conn.send({ type: 'failure', message: `seen ${command.type}` });
    },
  }, { host: '127.0.0.1', port: 0, ...options });
  t.after(() => robur.close());
  const port = Number(robur.address.split(':').at(-1));
  return { robur, port, seen, holdGoneUntilReleased: () => (holdGone = true), release };
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
  assert.deepEqual(seen, { workers: [], gone: 0, commands: [] });
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
