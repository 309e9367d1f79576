/**
 * The worker's WebSocket client against a real `ws` server (the library the server's gateway uses)
 * and against a raw TCP server that sends frames `ws` would not: the handshake, messages both ways
 * at each length encoding, fragments, pings, both closing handshakes, and the close codes of a
 * broken frame (1002), bad UTF-8 (1007) and an oversized message (1009).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type tls from 'node:tls';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { WebSocketServer, type WebSocket as ServerSocket } from 'ws';
import { WsClient } from '../../src/worker/ws-client.js';

/** A `ws` server on a free port; resolves its URL and the next connection with its request. */
async function wsServer(t: TestContext, options: { maxPayload?: number } = {}) {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', ...options });
  await once(server, 'listening');
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/api/worker`;
  const next = () => once(server, 'connection') as Promise<[ServerSocket, http.IncomingMessage]>;
  return { url, next, server };
}

/** A client and its events, recorded in order. */
function client(url: string, options: ConstructorParameters<typeof WsClient>[1] = {}) {
  const socket = new WsClient(url, options);
  const messages: string[] = [];
  const errors: Error[] = [];
  socket.on('message', (data: Buffer) => messages.push(data.toString('utf8')));
  socket.on('error', (err: Error) => errors.push(err));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));
  const opened = new Promise<void>((resolve) => socket.once('open', resolve));
  return { socket, messages, errors, closed, opened };
}

const until = async (check: () => boolean) => {
  while (!check()) await new Promise((resolve) => setImmediate(resolve));
};

test('it connects with the given headers and exchanges messages of every length encoding with a ws server', async (t) => {
  const { url, next } = await wsServer(t);
  const connection = next();
  const c = client(url, { headers: { authorization: 'Bearer tok' } });
  const [server, request] = await connection;
  await c.opened;
  assert.equal(request.headers.authorization, 'Bearer tok');
  assert.equal(c.socket.readyState, WsClient.OPEN);
  const received: string[] = [];
  server.on('message', (data) => received.push(String(data)));
  const sizes = [0, 1, 125, 126, 65_535, 65_536, 300_000];
  for (const size of sizes) c.socket.send('é'.repeat(size / 2) + 'x'.repeat(size % 2));
  await until(() => received.length === sizes.length);
  assert.deepEqual(received.map((m) => Buffer.byteLength(m)), sizes);
  for (const size of sizes) server.send('y'.repeat(size));
  // A message in three fragments, with a ping between two of them.
  server.send('frag-', { fin: false });
  server.ping(Buffer.from('are you there'));
  server.send('ment-', { fin: false });
  server.send('ed', { fin: true });
  const pong = once(server, 'pong');
  await until(() => c.messages.length === sizes.length + 1);
  assert.deepEqual(c.messages.slice(0, -1).map((m) => m.length), sizes);
  assert.equal(c.messages.at(-1), 'frag-ment-ed');
  assert.equal(String((await pong)[0]), 'are you there');
  assert.deepEqual(c.errors, []);
  c.socket.close(1000, 'worker stopping');
  const [code, reason] = (await once(server, 'close')) as [number, Buffer];
  assert.equal(code, 1000);
  assert.equal(String(reason), 'worker stopping');
  assert.deepEqual(await c.closed, { code: 1000, reason: 'worker stopping' });
  assert.equal(c.socket.readyState, WsClient.CLOSED);
});

test("the server's close code and reason reach 'close'; terminate() ends with 1006", async (t) => {
  const { url, next } = await wsServer(t);
  let connection = next();
  const first = client(url);
  const [server] = await connection;
  await first.opened;
  server.close(4002, 'name taken');
  assert.deepEqual(await first.closed, { code: 4002, reason: 'name taken' });
  connection = next();
  const second = client(url);
  const [other] = await connection;
  await second.opened;
  second.socket.terminate();
  assert.equal((await second.closed).code, 1006);
  assert.equal(((await once(other, 'close')) as [number])[0], 1006);
});

test("a message over maxPayload closes with 1009 after an 'error'", async (t) => {
  const { url, next } = await wsServer(t);
  const connection = next();
  const c = client(url, { maxPayload: 1000 });
  const [server] = await connection;
  await c.opened;
  server.send('z'.repeat(1000));
  server.send('z'.repeat(1001));
  assert.equal((await c.closed).code, 1009);
  assert.deepEqual(c.messages.map((m) => m.length), [1000]);
  assert.equal(c.errors.length, 1);
});

test("a refused upgrade is an 'unexpected-response' with the status; a dead port an 'error' and 1006", async (t) => {
  const plain = http.createServer((_req, res) => res.writeHead(401).end('no'));
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  t.after(() => plain.close());
  const c = new WsClient(`ws://127.0.0.1:${(plain.address() as net.AddressInfo).port}/api/worker`);
  const [, response] = (await once(c, 'unexpected-response')) as [http.ClientRequest, http.IncomingMessage];
  assert.equal(response.statusCode, 401);
  const closes: number[] = [];
  const errors: Error[] = [];
  c.on('close', (code: number) => closes.push(code));
  c.on('error', (err: Error) => errors.push(err));
  // What the worker does on a 401: close, then terminate. One 'error' and one 'close' come of it.
  c.close(1000, 'refused');
  c.terminate();
  await until(() => closes.length > 0);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(closes, [1006]);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /closed before the connection was established/);

  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(free));
    });
  });
  const dead = client(`ws://127.0.0.1:${port}/`);
  assert.equal((await dead.closed).code, 1006);
  assert.match(String(dead.errors[0]?.message), /ECONNREFUSED/);
});

/** A TCP server that completes the handshake (with `accept` overridden, if given), then writes `bytes` (or lets `write` write). */
async function rawServer(t: TestContext, bytes: Buffer, accept?: string, write?: (socket: net.Socket) => void): Promise<string> {
  const server = net.createServer((socket) => {
    let head = '';
    socket.on('data', (chunk) => {
      // The handshake is answered once; what the client sends after it (a pong, a close) is dropped.
      if (head.includes('\r\n\r\n')) return;
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const key = /sec-websocket-key: (.*)\r\n/i.exec(head)![1]!;
      const computed = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept ?? computed}\r\n\r\n`);
      if (write) write(socket);
      else socket.write(bytes);
    });
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`;
}

test('frames a server must not send close the connection with the codes ws uses', async (t) => {
  const text = (payload: Buffer, first = 0x81) => Buffer.concat([Buffer.from([first, payload.length]), payload]);
  const cases: [string, Buffer, number][] = [
    ['a masked frame', Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x69 ^ 1, 0x69 ^ 2]), 1002],
    ['an RSV bit without an extension', text(Buffer.from('hi'), 0xc1), 1002],
    ['an unknown opcode', text(Buffer.from('hi'), 0x83), 1002],
    ['a continuation with no message', text(Buffer.from('hi'), 0x80), 1002],
    ['a fragmented ping', text(Buffer.from('hi'), 0x09), 1002],
    ['text that is not UTF-8', text(Buffer.from([0xff, 0xfe])), 1007],
    ['a close code no peer may send', text(Buffer.from([0x03, 0xed]), 0x88), 1002],
  ];
  for (const [what, bytes, code] of cases) {
    const c = client(await rawServer(t, bytes));
    assert.equal((await c.closed).code, code, what);
    assert.equal(c.errors.length, 1, what);
    assert.deepEqual(c.messages, [], what);
  }
  // Two messages in one TCP write, then a close without a code: both read, then 1005.
  const c = client(await rawServer(t, Buffer.concat([text(Buffer.from('one')), text(Buffer.from('two')), Buffer.from([0x88, 0x00])])));
  assert.equal((await c.closed).code, 1005);
  assert.deepEqual(c.messages, ['one', 'two']);
});

test("a wrong Sec-WebSocket-Accept fails the handshake: an 'error', then 1006", async (t) => {
  const c = client(await rawServer(t, Buffer.alloc(0), 'bm90IHRoZSByaWdodCBvbmU='));
  assert.equal((await c.closed).code, 1006);
  assert.match(String(c.errors[0]?.message), /Sec-WebSocket-Accept/);
});

/** An unmasked server frame. */
function serverFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const length = payload.length;
  const header = length < 126 ? Buffer.from([0, length]) : length < 65_536 ? Buffer.from([0, 126, length >> 8, length & 255]) : Buffer.alloc(10);
  if (length >= 65_536) {
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  header[0] = (fin ? 0x80 : 0) | opcode;
  return Buffer.concat([header, payload]);
}

test('messages arrive whole however TCP cuts the frames (fast-check)', async (t) => {
  // Messages of each length encoding, multi-byte UTF-8, some in fragments with pings between them.
  const message = fc.record({
    text: fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('é'.repeat(100), 'x'.repeat(126), 'y'.repeat(70_000), '')),
    fragments: fc.integer({ min: 1, max: 3 }),
  });
  await fc.assert(fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 8 }), async (messages, cuts) => {
    const frames: Buffer[] = [];
    for (const { text, fragments } of messages) {
      const bytes = Buffer.from(text);
      const size = Math.ceil(bytes.length / fragments) || 1;
      const parts = fragments === 1 || bytes.length === 0 ? [bytes] : Array.from({ length: Math.ceil(bytes.length / size) }, (_, i) => bytes.subarray(i * size, (i + 1) * size));
      parts.forEach((part, i) => {
        frames.push(serverFrame(i === 0 ? 0x1 : 0x0, part, i === parts.length - 1));
        if (i < parts.length - 1) frames.push(serverFrame(0x9, Buffer.from('ping')));
      });
    }
    frames.push(serverFrame(0x8, Buffer.from([0x03, 0xe8])));
    const stream = Buffer.concat(frames);
    const at = [...new Set(cuts.map((cut) => cut % stream.length))].sort((a, b) => a - b);
    const pieces = [0, ...at].map((from, i) => stream.subarray(from, [...at, stream.length][i]));
    const url = await rawServer(t, Buffer.alloc(0), undefined, (socket) => {
      void (async () => {
        // One write per piece, each on a later turn, so the client reads them apart.
        for (const piece of pieces) {
          if (piece.length > 0) socket.write(piece);
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      })();
    });
    const c = client(url);
    assert.equal((await c.closed).code, 1000);
    assert.deepEqual(c.errors, []);
    assert.deepEqual(c.messages, messages.map((m) => m.text));
  }), { numRuns: 40 });
});

test('with an address, it connects there while the Host header keeps the name (a name with several addresses, tried one by one)', async (t) => {
  const { url, next } = await wsServer(t);
  const port = new URL(url).port;
  const connection = next();
  // .invalid never resolves (RFC 2606): only the given address can make this connect.
  const c = client(`ws://kiln-failover.invalid:${port}/api/worker`, { address: '127.0.0.1' });
  await opensOrFails(c);
  const [, request] = await connection;
  assert.equal(request.headers.host, `kiln-failover.invalid:${port}`);
  c.socket.close(1000);
  await c.closed;
});

test('over TLS with an address, the certificate is checked against the name (SNI too), not the address', { skip: needsOpenssl() }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-ws-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A certificate for the name only: had the client checked it against 127.0.0.1, the handshake would fail.
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    '-days', '2', '-subj', '/CN=kiln-failover.test', '-addext', 'subjectAltName=DNS:kiln-failover.test'], { stdio: 'ignore' });
  const cert = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  const servernames: (string | false | null)[] = [];
  const server = https.createServer({ cert, key: readFileSync(path.join(dir, 'key.pem')) });
  server.on('secureConnection', (socket: tls.TLSSocket) => servernames.push(socket.servername));
  const wss = new WebSocketServer({ server });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((resolve) => { wss.close(); server.closeAllConnections(); server.close(() => resolve()); }));
  const port = (server.address() as net.AddressInfo).port;
  const c = client(`wss://kiln-failover.test:${port}/api/worker`, { address: '127.0.0.1', ca: cert });
  await opensOrFails(c);
  assert.deepEqual(servernames, ['kiln-failover.test']);
  c.socket.close(1000);
  await c.closed;
});

/** Waits for 'open'; a close first fails the test with the client's errors (rather than waiting forever). */
async function opensOrFails(c: ReturnType<typeof client>): Promise<void> {
  const closedFirst = c.closed.then(({ code }) => {
    throw new Error(`closed (${code}) before opening: ${c.errors.map((e) => e.message).join('; ')}`);
  });
  await Promise.race([c.opened, closedFirst]);
}

function needsOpenssl(): string | false {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'needs openssl';
  }
}
