/**
 * Every route with every kind of credential: the server's own route table (so a new route cannot
 * slip by) against the table below of who may use each. No credential, a wrong, an expired or a
 * revoked one is 401; a valid one the route does not admit is 403; the rest reach the route (whose
 * own answer to made-up ids, 404 or 400, is not a refusal). A route missing from the table fails.
 * Then browser sessions: sign in, the cookie as its token's role, CSRF, sign out, revoke.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { JobStore } from '../../src/store/index.js';
import { inProcessServer } from '../helpers/in-process.js';

type Who = 'viewer' | 'operator' | 'admin' | 'worker' | 'public';

/** Who may use each route: the roles' table the README shows. */
const ROUTES: Record<string, Who> = {
  'GET /healthz': 'public',
  'GET /': 'public',
  'GET /assets/:name': 'public',
  'POST /api/session': 'public',
  'DELETE /api/session': 'public',
  'GET /api/session': 'viewer',
  'GET /api/jobs': 'viewer',
  'GET /api/jobs/:name': 'viewer',
  'GET /api/jobs/:name/next': 'viewer',
  'GET /api/templates': 'viewer',
  'GET /api/platforms/dropped': 'viewer',
  'GET /api/runs': 'viewer',
  'GET /api/runs/latest': 'viewer',
  'GET /api/runs/:id': 'viewer',
  'GET /api/runs/:id/events': 'viewer',
  'GET /api/runs/:id/console': 'viewer',
  'GET /api/runs/:id/artifacts': 'viewer',
  'GET /api/runs/:id/export': 'viewer',
  'GET /api/runs/:id/artifacts/*': 'viewer',
  'GET /api/workers': 'viewer',
  'GET /api/info': 'viewer',
  'GET /api/queues': 'viewer',
  'GET /api/events': 'viewer',
  'POST /api/jobs/:name/execute': 'operator',
  'POST /api/jobs/:name/pause': 'operator',
  'POST /api/jobs/:name/resume': 'operator',
  'POST /api/runs/:id/cancel': 'operator',
  'POST /api/runs/:id/redeliver': 'operator',
  'POST /api/platforms/:platform/drop': 'operator',
  'POST /api/platforms/:platform/undrop': 'operator',
  'POST /api/jobs': 'admin',
  'PATCH /api/jobs/:name': 'admin',
  'DELETE /api/jobs/:name': 'admin',
  'POST /api/jobs/:name/reschedule': 'admin',
  'POST /api/artifacts/gc': 'admin',
  'POST /api/import/robur': 'admin',
  'POST /api/tokens': 'admin',
  'GET /api/tokens': 'admin',
  'DELETE /api/tokens/:name': 'admin',
  'POST /api/worker-tokens': 'admin',
  'GET /api/worker-tokens': 'admin',
  'DELETE /api/worker-tokens/:name': 'admin',
  'GET /api/worker': 'worker',
  'PUT /api/runs/:id/artifacts/*': 'worker',
};

/** Which credentials each audience admits. */
const ADMITS: Record<Who, string[]> = {
  public: ['none', 'wrong', 'expired', 'revoked', 'viewer', 'operator', 'admin', 'admin.token', 'operator signed in', 'worker', 'per-worker'],
  viewer: ['viewer', 'operator', 'admin', 'admin.token', 'operator signed in'],
  operator: ['operator', 'admin', 'admin.token', 'operator signed in'],
  admin: ['admin', 'admin.token'],
  worker: ['worker', 'per-worker'],
};
/** Credentials that are not accepted at all: 401 wherever a credential is needed. */
const UNACCEPTED = ['none', 'wrong', 'expired', 'revoked'];

const concrete = (url: string) => url.replace(/:[A-Za-z]+/g, 'x1').replace(/\*$/, 'f.txt');

test('every route admits exactly the roles of its table: 401 without an accepted credential, 403 for one it does not admit', async (t) => {
  let clock = Date.UTC(2026, 11, 6, 12);
  const server = await inProcessServer(t, { now: () => clock });
  const admin = { authorization: `Bearer ${server.tokens.admin}`, 'content-type': 'application/json' };
  const post = async (path: string, body: unknown, headers: Record<string, string> = admin) => {
    const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { response, body: await response.json() as Record<string, unknown> };
  };
  const create = async (name: string, role: string, expiresInMs?: number) => {
    const { response, body } = await post('/api/tokens', { name, role, expiresInMs });
    assert.equal(response.status, 201, JSON.stringify(body));
    return body.token as string;
  };
  const tokens: Record<string, string> = {
    viewer: await create('viewer-1', 'viewer'),
    operator: await create('operator-1', 'operator'),
    admin: await create('admin-1', 'admin'),
    expired: await create('expired-1', 'viewer', 1000),
    revoked: await create('revoked-1', 'admin'),
    'admin.token': server.tokens.admin,
    worker: server.tokens.worker,
    'per-worker': ((await post('/api/worker-tokens', { name: 'w1' })).body as { token: string }).token,
    wrong: 'not-a-token-of-this-server',
  };
  clock += 2000;
  assert.equal((await fetch(`${server.url}/api/tokens/revoked-1`, { method: 'DELETE', headers: { authorization: admin.authorization } })).status, 200);
  const signIn = await post('/api/session', { token: tokens.operator }, {});
  assert.equal(signIn.response.status, 201, JSON.stringify(signIn.body));
  const cookie = signIn.response.headers.get('set-cookie')!.split(';')[0]!;
  const credentials: Record<string, Record<string, string>> = { none: {} };
  for (const [what, token] of Object.entries(tokens)) credentials[what] = { authorization: `Bearer ${token}` };
  credentials['operator signed in'] = { cookie, 'x-kiln-csrf': signIn.body.csrf as string };

  // The table and the server agree on the routes: none missing from the table, none in it that the server lacks.
  const registered = server.routes.filter((r) => r.method !== 'HEAD').map((r) => `${r.method} ${r.url}`);
  assert.deepEqual(registered.filter((r) => !(r in ROUTES)), [], 'routes missing from the table of roles: add them');
  assert.deepEqual(Object.keys(ROUTES).filter((r) => !registered.includes(r)), [], 'routes in the table the server does not have');

  // Signing out ends the session the walk uses: last.
  const routes = [...server.routes].sort((a, b) => Number(a.url === '/api/session' && a.method === 'DELETE') - Number(b.url === '/api/session' && b.method === 'DELETE'));
  let requests = 0;
  for (const route of routes) {
    const key = `${route.method === 'HEAD' ? 'GET' : route.method} ${route.url}`;
    const who = ROUTES[key]!;
    const path = concrete(route.url);
    for (const [what, headers] of Object.entries(credentials)) {
      const body = ['POST', 'PUT', 'PATCH'].includes(route.method) ? '{}' : undefined;
      const type = route.method === 'PUT' ? 'application/octet-stream' : 'application/json';
      const response = await fetch(`${server.url}${path}`, {
        method: route.method, headers: { ...headers, ...(body ? { 'content-type': type, 'x-kiln-size': '2', 'x-kiln-sha256': '0'.repeat(64) } : {}) }, body,
      });
      // An event stream that admitted the request stays open: its status is the answer. The
      // dashboard's page is HTML, not a JSON refusal.
      const answered = response.headers.get('content-type') ?? '';
      const text = /event-stream|ndjson/.test(answered) ? (await response.body?.cancel(), '') : await response.text();
      requests += 1;
      const code = text === '' || !/json/.test(answered) ? '' : (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? '';
      const refusedByAuth = (response.status === 401 && code !== 'KILN_ERR_INVALID_REQUEST') || (response.status === 403 && code !== 'KILN_ERR_WORKER_IDENTITY');
      const label = `${route.method} ${path} (${who}) with ${what}: ${response.status} ${text.slice(0, 200)}`;
      if (ADMITS[who].includes(what)) assert.equal(refusedByAuth, false, `should be admitted: ${label}`);
      else if (UNACCEPTED.includes(what)) {
        assert.equal(response.status, 401, `should be 401: ${label}`);
        if (route.method !== 'HEAD') assert.equal(code, 'KILN_ERR_UNAUTHORIZED', label);
      } else {
        assert.equal(response.status, 403, `should be 403: ${label}`);
        if (route.method !== 'HEAD') assert.equal(code, 'KILN_ERR_FORBIDDEN', label);
      }
    }
  }
  t.diagnostic(`${requests} requests over ${routes.length} routes and ${Object.keys(credentials).length} credentials`);
});

test('refusals say why in one line: expired, revoked, the role needed', async (t) => {
  let clock = Date.UTC(2026, 11, 6, 12);
  const server = await inProcessServer(t, { now: () => clock });
  const call = async (method: string, path: string, token: string | undefined, body?: unknown) => {
    const response = await fetch(`${server.url}${path}`, {
      method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    });
    return { status: response.status, body: await response.json() as { error: { code: string; message: string } } & Record<string, unknown> };
  };
  const create = async (name: string, role: string, expiresInMs?: number) => (await call('POST', '/api/tokens', server.tokens.admin, { name, role, expiresInMs })).body.token as string;
  const viewer = await create('alice', 'viewer', 60_000);
  const operator = await create('bob', 'operator');
  assert.equal((await call('GET', '/api/jobs', viewer)).status, 200);

  const forbidden = await call('POST', '/api/jobs/x/execute', viewer, {});
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.body.error.message, "the viewer token 'alice' may not POST /api/jobs/:name/execute: it needs operator or admin");
  const worker = await call('GET', '/api/jobs', server.tokens.worker);
  assert.equal(worker.body.error.message, 'a worker token may not GET /api/jobs: it needs viewer or operator or admin');

  clock += 60_000;
  const expired = await call('GET', '/api/jobs', viewer);
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error.message, "the token 'alice' expired at 2026-12-06T12:01:00.000Z");
  assert.equal((await call('DELETE', '/api/tokens/bob', server.tokens.admin)).status, 200);
  const revoked = await call('GET', '/api/jobs', operator);
  assert.equal(revoked.status, 401);
  assert.match(revoked.body.error.message, /^the token 'bob' was revoked at 2026-12-06T12:01:00\.000Z$/);

  // Bad input to the token routes: one line, nothing stored.
  assert.equal((await call('POST', '/api/tokens', server.tokens.admin, { name: 'admin', role: 'viewer' })).body.error.code, 'KILN_ERR_INVALID_REQUEST', 'the admin file token\'s name is taken');
  assert.equal((await call('POST', '/api/tokens', server.tokens.admin, { name: 'carol', role: 'root' })).status, 400);
  assert.equal((await call('POST', '/api/tokens', server.tokens.admin, { name: 'a b', role: 'viewer' })).status, 400);
  assert.equal((await call('POST', '/api/tokens', server.tokens.admin, { name: 'carol', role: 'viewer', expiresInMs: 0 })).status, 400);
  assert.equal((await call('POST', '/api/tokens', server.tokens.admin, { name: 'alice', role: 'viewer' })).body.error.code, 'KILN_ERR_TOKEN_EXISTS', 'an expired token still holds its name until revoked');
  assert.equal((await call('DELETE', '/api/tokens/nobody', server.tokens.admin)).body.error.code, 'KILN_ERR_TOKEN_NOT_FOUND');
  const listed = (await call('GET', '/api/tokens', server.tokens.admin)).body.tokens as { name: string; expired: boolean }[];
  assert.deepEqual(listed.map((r) => [r.name, r.expired]), [['alice', true]], 'revoked ones are not listed, expired ones are, marked');
});

test('job environment values are secrets: only admins read them', async (t) => {
  const server = await inProcessServer(t);
  const call = async (method: string, path: string, token: string, body?: unknown) => {
    const response = await fetch(`${server.url}${path}`, {
      method, body: body === undefined ? undefined : JSON.stringify(body), headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    });
    return await response.json() as Record<string, unknown> & { job: { env: Record<string, string> }; jobs: { env: Record<string, string> }[] };
  };
  await call('POST', '/api/jobs', server.tokens.admin, { name: 'deploy', script: 'echo hi', schedule: { kind: 'period', period: 'never' }, env: { API_KEY: 'hunter2', MODE: 'fast' } });
  const viewer = (await call('POST', '/api/tokens', server.tokens.admin, { name: 'v', role: 'viewer' })).token as string;
  const operator = (await call('POST', '/api/tokens', server.tokens.admin, { name: 'o', role: 'operator' })).token as string;
  assert.deepEqual((await call('GET', '/api/jobs/deploy', server.tokens.admin)).job.env, { API_KEY: 'hunter2', MODE: 'fast' });
  for (const [what, token] of [['viewer', viewer], ['operator', operator]] as const) {
    assert.deepEqual((await call('GET', '/api/jobs/deploy', token)).job.env, { API_KEY: '(secret)', MODE: '(secret)' }, what);
    assert.deepEqual((await call('GET', '/api/jobs', token)).jobs[0]!.env, { API_KEY: '(secret)', MODE: '(secret)' }, what);
  }
  assert.deepEqual((await call('POST', '/api/jobs/deploy/pause', operator)).job.env, { API_KEY: '(secret)', MODE: '(secret)' }, 'nor through an action\'s answer');
  const everything = JSON.stringify(await Promise.all(['/api/jobs', '/api/jobs/deploy', '/api/info', '/api/runs', '/api/workers'].map((p) => call('GET', p, viewer))));
  assert.equal(everything.includes('hunter2'), false, 'no read of a viewer shows the secret');
});

test('browser sessions: the cookie is its token\'s role, changes need the CSRF header, sign-out and revoke end it', async (t) => {
  const server = await inProcessServer(t);
  const admin = { authorization: `Bearer ${server.tokens.admin}`, 'content-type': 'application/json' };
  const operator = ((await (await fetch(`${server.url}/api/tokens`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'ops', role: 'operator' }) })).json()) as { token: string }).token;
  await fetch(`${server.url}/api/jobs`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'build', script: 'echo hi', schedule: { kind: 'period', period: 'never' } }) });

  const signIn = async (token: string, headers: Record<string, string> = {}) => fetch(`${server.url}/api/session`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ token }) });
  assert.equal((await signIn('wrong')).status, 401);
  assert.equal((await signIn(server.tokens.worker)).status, 403, 'a worker token cannot sign in');
  assert.equal((await signIn(operator, { 'sec-fetch-site': 'cross-site' })).status, 403, 'a page of another site cannot sign the browser in');
  const response = await signIn(operator);
  assert.equal(response.status, 201);
  const setCookie = response.headers.get('set-cookie')!;
  assert.match(setCookie, /^kiln_session=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=43200; HttpOnly; SameSite=Strict$/, 'HttpOnly, Strict; not Secure over plain HTTP');
  const signedIn = await response.json() as { name: string; role: string; csrf: string };
  assert.deepEqual({ name: signedIn.name, role: signedIn.role }, { name: 'ops', role: 'operator' });
  assert.equal(setCookie.includes(operator), false, 'the cookie is not the token');
  const cookie = setCookie.split(';')[0]!;
  const withCookie = (method: string, path: string, headers: Record<string, string> = {}) =>
    fetch(`${server.url}${path}`, { method, headers: { cookie, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}), ...headers }, body: method === 'POST' ? '{}' : undefined });

  const who = await (await withCookie('GET', '/api/session')).json() as Record<string, unknown>;
  assert.deepEqual({ name: who.name, role: who.role, via: who.via, csrf: who.csrf }, { name: 'ops', role: 'operator', via: 'session', csrf: signedIn.csrf }, 'a reloaded page gets its CSRF value back');
  assert.equal((await withCookie('GET', '/api/jobs')).status, 200, 'reads need no more than the cookie');

  // A cookie-only change, as a cross-site form or fetch would send it, is refused and changes nothing.
  const forged = await withCookie('POST', '/api/jobs/build/execute');
  assert.equal(forged.status, 403);
  assert.equal(((await forged.json()) as { error: { code: string } }).error.code, 'KILN_ERR_CSRF');
  assert.equal(((await withCookie('POST', '/api/jobs/build/execute', { 'x-kiln-csrf': 'guessed' })).status), 403);
  assert.equal((await withCookie('POST', '/api/jobs/build/execute', { 'x-kiln-csrf': signedIn.csrf, 'sec-fetch-site': 'cross-site' })).status, 403);
  const runs = await (await fetch(`${server.url}/api/runs`, { headers: admin })).json() as { runs: unknown[] };
  assert.equal(runs.runs.length, 0, 'no run was queued by the refused requests');
  assert.equal((await withCookie('POST', '/api/jobs/build/execute', { 'x-kiln-csrf': signedIn.csrf })).status, 201, 'with the header, the operator executes');
  assert.equal((await withCookie('POST', '/api/jobs', { 'x-kiln-csrf': signedIn.csrf })).status, 403, 'and stays an operator');

  // Revoking the token ends its sessions; signing out ends one.
  const second = await signIn(operator);
  const secondCookie = second.headers.get('set-cookie')!.split(';')[0]!;
  const secondCsrf = ((await second.json()) as { csrf: string }).csrf;
  const signOut = await fetch(`${server.url}/api/session`, { method: 'DELETE', headers: { cookie: secondCookie, 'x-kiln-csrf': secondCsrf } });
  assert.deepEqual(await signOut.json(), { signedOut: true });
  assert.match(signOut.headers.get('set-cookie')!, /^kiln_session=; Path=\/; Max-Age=0/);
  assert.equal((await fetch(`${server.url}/api/session`, { headers: { cookie: secondCookie } })).status, 401);
  assert.deepEqual(await (await fetch(`${server.url}/api/tokens/ops`, { method: 'DELETE', headers: { authorization: admin.authorization } })).json(), { name: 'ops', revoked: true, sessions: 1 });
  const ended = await withCookie('GET', '/api/session');
  assert.equal(ended.status, 401);
  assert.match(((await ended.json()) as { error: { message: string } }).error.message, /^the session has ended/);
});

test("a session signed in with admin.token ends when that file is replaced: the restarted server refuses the old cookie", async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-int-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const first = await inProcessServer(t, { dataDir });
  const signIn = await fetch(`${first.url}/api/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: first.tokens.admin }) });
  assert.equal(signIn.status, 201);
  const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
  const csrf = ((await signIn.json()) as { csrf: string }).csrf;
  await first.close();

  // Restarted with the same file: the session lives on.
  const same = await inProcessServer(t, { dataDir });
  assert.equal((await fetch(`${same.url}/api/session`, { headers: { cookie } })).status, 200, 'admin.token unchanged: still signed in');
  await same.close();

  // The admin rotates admin.token (a new file) and restarts: the old session is refused, even to create a token.
  writeFileSync(path.join(dataDir, 'admin.token'), 'a-new-admin-token-of-this-data-dir\n', { mode: 0o600 });
  const rotated = await inProcessServer(t, { dataDir });
  assert.equal(rotated.tokens.admin, 'a-new-admin-token-of-this-data-dir');
  const refused = await fetch(`${rotated.url}/api/session`, { headers: { cookie } });
  assert.equal(refused.status, 401);
  assert.match(((await refused.json()) as { error: { message: string } }).error.message, /^the session has ended/);
  const create = await fetch(`${rotated.url}/api/tokens`, { method: 'POST', headers: { cookie, 'x-kiln-csrf': csrf, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'backdoor', role: 'admin' }) });
  assert.equal(create.status, 401, 'no lasting admin token from the old session');
  const tokens = await (await fetch(`${rotated.url}/api/tokens`, { headers: { authorization: `Bearer ${rotated.tokens.admin}` } })).json() as { tokens: unknown[] };
  assert.deepEqual(tokens.tokens, []);
});

test('a sign-in that races its token\'s revoke leaves no live session: the session is checked against the token on every request', async (t) => {
  // The race, made certain: the revoke (and its deletion of the token's sessions) lands between the
  // sign-in's check of the token and its writing of the session row.
  const race = { armed: false };
  const wrap = (store: JobStore): JobStore => new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      if (key !== 'createSession') return value.bind(target);
      return async (...args: Parameters<JobStore['createSession']>) => {
        if (race.armed) await target.revokeToken('racer', Date.now());
        return target.createSession(...args);
      };
    },
  });
  const server = await inProcessServer(t, { wrapStore: wrap });
  const admin = { authorization: `Bearer ${server.tokens.admin}`, 'content-type': 'application/json' };
  const token = ((await (await fetch(`${server.url}/api/tokens`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'racer', role: 'admin' }) })).json()) as { token: string }).token;
  race.armed = true;
  const signIn = await fetch(`${server.url}/api/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  assert.equal(signIn.status, 201, 'the sign-in saw a live token');
  const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
  assert.equal((await fetch(`${server.url}/api/session`, { headers: { cookie } })).status, 401, 'its session is refused: the token is revoked');
  assert.equal((await fetch(`${server.url}/api/tokens`, { headers: { cookie } })).status, 401);
});

test('signing in again ends the browser\'s previous session', async (t) => {
  const server = await inProcessServer(t);
  const signIn = (headers: Record<string, string> = {}) => fetch(`${server.url}/api/session`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ token: server.tokens.admin }) });
  const first = (await signIn()).headers.get('set-cookie')!.split(';')[0]!;
  const second = (await signIn({ cookie: first })).headers.get('set-cookie')!.split(';')[0]!;
  assert.notEqual(second, first);
  assert.equal((await fetch(`${server.url}/api/session`, { headers: { cookie: first } })).status, 401, 'the previous session row is gone');
  assert.equal((await fetch(`${server.url}/api/session`, { headers: { cookie: second } })).status, 200);
});

test("a cancel is recorded under the token's name: a `by` in the body is only a note after it", async (t) => {
  const server = await inProcessServer(t);
  const admin = { authorization: `Bearer ${server.tokens.admin}`, 'content-type': 'application/json' };
  const otto = ((await (await fetch(`${server.url}/api/tokens`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'otto', role: 'operator' }) })).json()) as { token: string }).token;
  await fetch(`${server.url}/api/jobs`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'build', script: 'echo hi', platform: 'testos', schedule: { kind: 'period', period: 'never' } }) });
  const cancel = async (body: unknown) => {
    const run = ((await (await fetch(`${server.url}/api/jobs/build/execute`, { method: 'POST', headers: admin, body: '{}' })).json()) as { run: { id: string } }).run.id;
    const response = await fetch(`${server.url}/api/runs/${run}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${otto}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: response.status, body: await response.json() as { run: { resultText: string }; error?: { code: string } } };
  };
  const plain = await cancel({});
  assert.equal(plain.body.run.resultText, 'aborted: cancelled by otto');
  const claimed = await cancel({ by: 'alice' });
  assert.equal(claimed.body.run.resultText, 'aborted: cancelled by otto (as alice)', 'the body cannot put another name in its place');
  const forged = await cancel({ by: 'admin)\nrun ok' });
  assert.equal(forged.status, 400, 'a note is one plain name');
  assert.equal(forged.body.error?.code, 'KILN_ERR_INVALID_REQUEST');
});
