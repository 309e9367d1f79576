/**
 * Requests that never reach a route (a path that is not valid percent-encoding, headers larger than
 * Node reads) and a plain GET of the worker socket: each is answered with a catalogued error, found
 * by the fuzz suite (test/fuzz/http.test.ts). Sent over raw sockets, byte for byte.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { inProcessServer } from '../helpers/in-process.js';

/** Sends `request` as is and resolves with the whole answer, once the server has closed or answered. */
function raw(url: string, request: string): Promise<{ status: number; headers: string; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(text.slice(0, end));
      // A complete answer (its whole body read) is enough; the connection may stay open.
      if (end >= 0 && length && text.length >= end + 4 + Number(length[1]) && !/^HEAD /.test(request)) socket.end();
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const end = text.indexOf('\r\n\r\n');
      resolve({ status: Number(text.slice(9, 12)), headers: text.slice(0, end), body: text.slice(end + 4) });
    });
    socket.write(request);
  });
}

test('a path that is not valid percent-encoding gets a catalogued 400, not fastify\'s own shape', async (t) => {
  const server = await inProcessServer(t);
  const answer = await raw(server.url, `GET /api/runs/% HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${server.tokens.admin}\r\nconnection: close\r\n\r\n`);
  assert.equal(answer.status, 400);
  assert.equal(JSON.parse(answer.body).error.code, 'KILN_ERR_INVALID_REQUEST');
});

test('headers over Node\'s limit get a catalogued 431 (no body to a HEAD), and the server carries on', async (t) => {
  const server = await inProcessServer(t);
  const huge = `/api/jobs/${'a'.repeat(20_000)}`;
  const get = await raw(server.url, `GET ${huge} HTTP/1.1\r\nhost: x\r\n\r\n`);
  assert.equal(get.status, 431);
  assert.deepEqual(JSON.parse(get.body).error.code, 'KILN_ERR_BAD_HTTP_REQUEST');
  const head = await raw(server.url, `HEAD ${huge} HTTP/1.1\r\nhost: x\r\n\r\n`);
  assert.equal(head.status, 431);
  assert.equal(head.body, '', 'an answer to HEAD has no body');
  const garbage = await raw(server.url, 'NOT HTTP AT ALL\r\n\r\n');
  assert.equal(garbage.status, 400);
  assert.equal(JSON.parse(garbage.body).error.code, 'KILN_ERR_BAD_HTTP_REQUEST');
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
});

test('a plain GET (no upgrade) of the worker socket gets a catalogued 400, not an empty 404', async (t) => {
  const server = await inProcessServer(t);
  for (const method of ['GET', 'HEAD']) {
    const answer = await fetch(`${server.url}/api/worker`, { method, headers: { authorization: `Bearer ${server.tokens.worker}` } });
    assert.equal(answer.status, 400, method);
    if (method === 'GET') assert.equal(((await answer.json()) as { error: { code: string } }).error.code, 'KILN_ERR_INVALID_REQUEST');
  }
});
