/** Routes are closed by default: one without a declared audience (roles, worker or public) cannot be registered, anywhere. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { forAdmin, forPublic, forRoles, forWorker, installAuth } from '../../src/server/api/auth.js';

const options = {
  tokens: { admin: 'admin-token', worker: 'worker-token' }, workerIdentity: async () => undefined, now: () => 0,
  store: { findToken: async () => undefined, touchToken: async () => undefined, findSession: async () => undefined },
};

test('a route without an audience, or with an unknown one, is refused at registration', async () => {
  const app = Fastify();
  const routes = installAuth(app, options);
  app.get('/a', forAdmin, async () => 'a');
  app.put('/w', forWorker, async () => 'w');
  app.get('/p', forPublic, async () => 'p');
  assert.throws(() => app.get('/open', async () => 'x'), /route GET \/open declares no audience/);
  assert.throws(() => app.post('/typo', { config: { audience: 'admins' as never } }, async () => 'x'), /declares no audience/);
  assert.throws(() => app.post('/role-typo', { config: { audience: ['admins'] as never } }, async () => 'x'), /declares no audience/);
  assert.throws(() => app.post('/nobody', forRoles(), async () => 'x'), /declares no audience/, 'an empty list of roles is no audience');
  // Routes of a plugin registered later are checked too: the plugin fails to load.
  void app.register(async (child) => {
    child.get('/child', async () => 'x');
  });
  await assert.rejects(async () => { await app.ready(); }, /route GET \/child declares no audience/);
  assert.deepEqual(routes.map((r) => `${r.method} ${r.url} ${String(r.audience)}`), ['GET /a admin', 'HEAD /a admin', 'PUT /w worker', 'GET /p public', 'HEAD /p public']);
});

test('the check follows the matched route: the right token passes, the other kind does not', async (t) => {
  const app = Fastify();
  installAuth(app, options);
  app.get('/api/a', forAdmin, async (request) => request.credential);
  app.get('/api/w', forWorker, async (request) => request.credential);
  t.after(() => app.close());
  const get = (url: string, token?: string) => app.inject({ method: 'GET', url, headers: token ? { authorization: `Bearer ${token}` } : {} });
  assert.deepEqual((await get('/api/a', 'admin-token')).json(), { kind: 'person', name: 'admin', role: 'admin', expiresAt: null, via: 'token' });
  assert.deepEqual((await get('/api/w', 'worker-token')).json(), { kind: 'worker', identity: { kind: 'shared' } });
  assert.equal((await get('/%61pi/a')).statusCode, 401);
  assert.equal((await get('/%61pi/a', 'worker-token')).statusCode, 403, 'a worker token is known, and not an admin');
  assert.equal((await get('/api/%77', 'admin-token')).statusCode, 403, 'the admin token is known, and not a worker');
  assert.equal((await get('/api/%77', 'wrong')).statusCode, 401);
  assert.equal((await get('/api/nothing')).statusCode, 404);
});
