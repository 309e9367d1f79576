/**
 * No spelling of a path reaches a route without its token. Requests are written byte for byte on
 * raw sockets (node:net), so nothing on the client side normalises the target: every route the
 * server registered (read from its route table, so a new route is covered without touching this
 * file) × path spellings × methods × tokens that must not pass.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { inProcessServer } from '../helpers/in-process.js';

/** One answer read off a raw socket: the status line's code, the headers and the body. */
interface RawAnswer {
  status: number;
  headers: string;
  body: string;
}

/** Writes `request` on a fresh connection and reads the answer until the server closes it. */
function rawRequest(port: number, request: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      // An upgrade that went through keeps the socket open, and so does an event stream (a followed
      // console, the farm's events): the status line and headers are all we need.
      const head = Buffer.concat(chunks).toString('latin1');
      if (/^HTTP\/1\.1 101 /.test(head) || (head.includes('\r\n\r\n') && /^content-type: (text\/event-stream|application\/x-ndjson)/im.test(head.slice(0, head.indexOf('\r\n\r\n'))))) socket.destroy();
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0);
      const split = text.indexOf('\r\n\r\n');
      resolve({ status, headers: text.slice(0, split), body: split === -1 ? '' : text.slice(split + 4) });
    });
    socket.end(request);
  });
}

/** A concrete path for a route pattern: parameters and wildcards filled in. */
function concrete(url: string): string {
  return url.replace(/:[A-Za-z]+/g, 'x1').replace(/\*$/, 'f.txt');
}

/** Ways to spell the same path that a router or a proxy might read differently from a hook. */
function spellings(path: string): [string, string][] {
  const segments = path.split('/').slice(1);
  const encodeFirst = (s: string) => (s === '' ? s : `%${s.charCodeAt(0).toString(16).padStart(2, '0')}${s.slice(1)}`);
  const last = segments.length - 1;
  return [
    ['as is', path],
    ['first letter encoded', `/${encodeFirst(segments[0]!)}/${segments.slice(1).join('/')}`.replace(/\/$/, '')],
    ['every segment encoded', '/' + segments.map(encodeFirst).join('/')],
    ['upper-case escape', path.replace(/^\/api/, '/%41PI')],
    ['doubled slashes', path.replace(/\//g, '//')],
    ['leading doubled slash', '/' + path],
    ['matrix parameter', `/${segments[0]};x=1/${segments.slice(1).join('/')}`.replace(/\/$/, '')],
    ['trailing matrix parameter', `${path};x=1`],
    ['absolute form', `http://x${path}`],
    ['absolute form, encoded', `http://x/${encodeFirst(segments[0]!)}/${segments.slice(1).join('/')}`.replace(/\/$/, '')],
    ['%2F for slashes', '/' + segments.join('%2F')],
    ['%2f lower case', '/' + segments.join('%2f')],
    ['dot segment', '/' + [segments[0], '.', ...segments.slice(1)].join('/')],
    ['parent segment', '/' + [segments[0], 'x', '..', ...segments.slice(1)].join('/')],
    ['trailing dot', `${path}/.`],
    ['trailing slash', `${path}/`],
    ['encoded dot segment', '/' + [segments[0], '%2e', ...segments.slice(1)].join('/')],
    ['query', `${path}?token=x`],
    ['fragment-like', `${path}%23`],
    ['last segment encoded', '/' + segments.map((s, i) => (i === last ? encodeFirst(s) : s)).join('/')],
  ];
}

/** The request bytes: a body for methods that carry one, so the route would run if it were reached. */
function requestBytes(method: string, target: string, token: string | undefined, extra = ''): string {
  const body = ['POST', 'PUT', 'PATCH'].includes(method) ? '{}' : '';
  const type = method === 'PUT' ? 'application/octet-stream' : 'application/json';
  return [
    `${method} ${target} HTTP/1.1`,
    'Host: 127.0.0.1',
    'Connection: close',
    ...(token === undefined ? [] : [`Authorization: Bearer ${token}`]),
    ...(body ? [`Content-Type: ${type}`, `Content-Length: ${body.length}`, 'x-kiln-worker: fake-1', 'x-kiln-size: 2', `x-kiln-sha256: ${'0'.repeat(64)}`] : []),
    ...(extra ? [extra] : []),
    '',
    body,
  ].join('\r\n');
}

/** A refusal is one of ours: 401, 403 or 404 with a JSON `{error: {code, message}}`. */
function assertCatalogued(answer: RawAnswer, what: string): void {
  assert.ok([401, 403, 404].includes(answer.status), `${what}: answered ${answer.status}\n${answer.headers}\n${answer.body.slice(0, 300)}`);
  let parsed: { error?: { code?: string } };
  try {
    parsed = JSON.parse(answer.body);
  } catch {
    assert.fail(`${what}: ${answer.status} without a JSON error body: ${JSON.stringify(answer.body.slice(0, 200))}`);
  }
  assert.match(parsed.error?.code ?? '', /^KILN_ERR_[A-Z_]+$/, `${what}: ${answer.body.slice(0, 200)}`);
}

test('every route refuses every spelling of its path without the right token', async (t) => {
  const server = await inProcessServer(t);
  const port = Number(new URL(server.url).port);
  const routes = server.routes;
  assert.ok(routes.length >= 30, `the route table lists the routes (${routes.length})`);
  assert.deepEqual(
    routes.filter((r) => r.audience === 'public').map((r) => `${r.method} ${r.url}`).sort(),
    ['DELETE /api/session', 'GET /', 'GET /assets/:name', 'GET /healthz', 'HEAD /', 'HEAD /assets/:name', 'HEAD /healthz', 'POST /api/session'],
    'only the health check, signing in and out, and the dashboard\'s static files (the page asks for a token) are public',
  );
  assert.ok(routes.some((r) => r.method === 'HEAD' && r.url === '/api/jobs' && Array.isArray(r.audience) && r.audience.includes('viewer')), 'automatic HEAD routes carry their audience');
  assert.ok(routes.some((r) => r.url === '/api/worker' && r.audience === 'worker'), 'the worker socket is in the table');

  // A worker's own token (kiln worker-token create) is a worker's token too: no good on the admin's routes.
  const created = await fetch(`${server.url}/api/worker-tokens`, {
    method: 'POST', headers: { authorization: `Bearer ${server.tokens.admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'w1' }),
  });
  const perWorker = ((await created.json()) as { token: string }).token;

  let requests = 0;
  for (const route of routes.filter((r) => r.audience !== 'public')) {
    const path = concrete(route.url);
    // The other kind of token: a worker's on the people's routes and the other way round.
    const tokens: [string, string | undefined][] = [['no token', undefined], ['a wrong token', 'wrong-token']];
    if (route.audience !== 'worker') tokens.push(['the shared worker token', server.tokens.worker], ['a per-worker token', perWorker]);
    else tokens.push(['the admin token', server.tokens.admin]);
    // The route's own answer to the right token on the plain path is not a refusal: the paths here reach it.
    const right = route.audience !== 'worker' ? server.tokens.admin : server.tokens.worker;
    const control = await rawRequest(port, requestBytes(route.method, path, right));
    assert.notEqual(control.status, 401, `${route.method} ${path} with its own token: ${control.body}`);

    for (const [spelling, target] of spellings(path)) {
      for (const method of new Set([route.method, 'HEAD', 'OPTIONS', 'GET'])) {
        for (const [tokenWhat, token] of tokens) {
          const what = `${method} ${target} (${route.method} ${route.url}, ${spelling}, ${tokenWhat})`;
          const answer = await rawRequest(port, requestBytes(method, target, token));
          requests += 1;
          assert.ok(answer.status !== 101 && (answer.status < 200 || answer.status >= 300), `${what} was served: ${answer.status} ${answer.body.slice(0, 200)}`);
          // HEAD answers carry no body: the status is the refusal.
          if (method === 'HEAD') assert.ok([401, 403, 404].includes(answer.status), `${what}: ${answer.status}`);
          else assertCatalogued(answer, what);
        }
      }
    }
  }
  t.diagnostic(`${requests} requests over ${routes.length} routes, none served`);
});

test('a WebSocket upgrade to the worker socket is never accepted without a worker token, however spelled', async (t) => {
  const server = await inProcessServer(t);
  const port = Number(new URL(server.url).port);
  const upgrade = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==';
  const bytes = (target: string, token: string | undefined) =>
    [`GET ${target} HTTP/1.1`, 'Host: 127.0.0.1', upgrade, ...(token === undefined ? [] : [`Authorization: Bearer ${token}`]), '', ''].join('\r\n');

  // The control: the worker token on the plain path is upgraded.
  assert.equal((await rawRequest(port, bytes('/api/worker', server.tokens.worker))).status, 101);
  for (const [spelling, target] of [...spellings('/api/worker'), ['encoded, every letter', '/%61%70%69/%77%6f%72%6b%65%72']]) {
    for (const [tokenWhat, token] of [['no token', undefined], ['a wrong token', 'wrong-token'], ['the admin token', server.tokens.admin]] as const) {
      const answer = await rawRequest(port, bytes(target!, token));
      assert.notEqual(answer.status, 101, `GET ${target} (${spelling}, ${tokenWhat}) was upgraded`);
      assertCatalogued(answer, `upgrade ${target} (${spelling}, ${tokenWhat})`);
    }
  }
});
