/** The HTTP API against a real server and a real SQLite file: auth, validation, errors. */
import assert from 'node:assert/strict';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { call, inProcessServer } from '../helpers/in-process.js';

const job = { name: 'build', platform: 'testos', script: 'echo hi\n', period: 'never' };

test('tokens are created mode 0600 and every API route needs a person\'s token', async (t) => {
  const server = await inProcessServer(t);
  for (const file of ['admin.token', 'worker.token']) assert.equal(statSync(path.join(server.dataDir, file)).mode & 0o777, 0o600);
  assert.notEqual(server.tokens.admin, server.tokens.worker);

  assert.equal((await call(server, 'GET', '/healthz', undefined, null)).status, 200);
  for (const [method, route] of [['GET', '/api/jobs'], ['POST', '/api/jobs'], ['GET', '/api/runs'], ['GET', '/api/info'], ['GET', '/api/workers']]) {
    const missing = await call(server, method!, route!, undefined, null);
    assert.equal(missing.status, 401, `${method} ${route} without a token`);
    assert.equal(missing.body.error.code, 'KILN_ERR_UNAUTHORIZED');
    assert.equal((await call(server, method!, route!, undefined, 'wrong')).status, 401);
    assert.equal((await call(server, method!, route!, undefined, server.tokens.worker)).status, 403, 'the worker token is not an admin token');
  }
});

test('a job is created once; bad bodies get 400 with a clear message and change nothing', async (t) => {
  const server = await inProcessServer(t);
  const created = await call(server, 'POST', '/api/jobs', job);
  assert.equal(created.status, 201);
  assert.equal(created.body.run, null, 'a never job is not queued at creation');
  const duplicate = await call(server, 'POST', '/api/jobs', { ...job, script: 'echo other\n' });
  assert.equal(duplicate.status, 409);
  assert.equal(duplicate.body.error.code, 'KILN_ERR_JOB_EXISTS');

  const bad: [string, unknown][] = [
    ['not JSON', '{"name": '],
    ['a bad period', { ...job, name: 'x', period: 'fortnightly' }],
    ['a bad name', { ...job, name: '../etc' }],
    ['an empty script', { ...job, name: 'x', script: '' }],
    ['an unknown field', { ...job, name: 'x', colour: 'red' }],
    ['a bad env name', { ...job, name: 'x', env: { 'A-B': '1' } }],
    ['a tiny timeout', { ...job, name: 'x', timeoutMs: 5 }],
    ['a wrong type', { ...job, name: 'x', script: 42 }],
    ['a huge script', { ...job, name: 'x', script: 'x'.repeat(300 * 1024) }],
    ['an array', [job]],
    ['an unknown network', { ...job, name: 'x', sandbox: { network: 'bridge' } }],
    ['a tiny memory limit', { ...job, name: 'x', sandbox: { memoryBytes: 1000 } }],
    ['zero pids', { ...job, name: 'x', sandbox: { pids: 0 } }],
  ];
  for (const [what, body] of bad) {
    const reply = await call(server, 'POST', '/api/jobs', body);
    assert.equal(reply.status, 400, `${what}: ${JSON.stringify(reply.body)}`);
    assert.equal(reply.body.error.code, 'KILN_ERR_INVALID_REQUEST', what);
    assert.doesNotMatch(reply.body.error.message, /\n/, 'one line');
  }
  const tooLarge = await call(server, 'POST', '/api/jobs', { ...job, name: 'x', script: 'x'.repeat(2 * 1024 * 1024) });
  assert.equal(tooLarge.status, 413);
  assert.equal(tooLarge.body.error.code, 'KILN_ERR_PAYLOAD_TOO_LARGE');

  const jobs = await call(server, 'GET', '/api/jobs');
  assert.deepEqual(jobs.body.jobs.map((j: { name: string; script: string }) => [j.name, j.script]), [['build', 'echo hi\n']]);
  assert.equal((await call(server, 'GET', '/api/runs')).body.runs.length, 0);
});

test('unknown jobs, runs and routes answer 404 with their code', async (t) => {
  const server = await inProcessServer(t);
  const cases: [string, string, unknown, string][] = [
    ['PATCH', '/api/jobs/nope', { period: 'daily' }, 'KILN_ERR_JOB_NOT_FOUND'],
    ['DELETE', '/api/jobs/nope', undefined, 'KILN_ERR_JOB_NOT_FOUND'],
    ['POST', '/api/jobs/nope/execute', {}, 'KILN_ERR_JOB_NOT_FOUND'],
    ['POST', '/api/jobs/nope/reschedule', { next: '2030-01-01T00:00:00Z' }, 'KILN_ERR_JOB_NOT_FOUND'],
    ['GET', '/api/jobs/nope', undefined, 'KILN_ERR_JOB_NOT_FOUND'],
    ['GET', '/api/runs/0000', undefined, 'KILN_ERR_RUN_NOT_FOUND'],
    ['GET', '/api/runs/0000/console', undefined, 'KILN_ERR_RUN_NOT_FOUND'],
    ['GET', '/api/runs/latest?job=nope', undefined, 'KILN_ERR_RUN_NOT_FOUND'],
    ['GET', '/api/nothing-here', undefined, 'KILN_ERR_ROUTE_NOT_FOUND'],
  ];
  for (const [method, route, body, code] of cases) {
    const reply = await call(server, method, route, body);
    assert.equal(reply.status, 404, `${method} ${route}`);
    assert.equal(reply.body.error.code, code, `${method} ${route}`);
  }
});

test('modify changes only what is given; reschedule takes any RFC 3339 offset', async (t) => {
  const server = await inProcessServer(t);
  await call(server, 'POST', '/api/jobs', { ...job, env: { A: '1' }, timeoutMs: 60_000 });
  const modified = await call(server, 'PATCH', '/api/jobs/build', { period: 'hourly' });
  assert.equal(modified.status, 200);
  assert.deepEqual(modified.body.job.schedule, { kind: 'period', period: 'hourly' });
  assert.deepEqual(modified.body.job.env, { A: '1' });
  assert.equal(modified.body.job.timeoutMs, 60_000);
  assert.ok(modified.body.job.nextAt, 'a new period sets a next time');

  const rescheduled = await call(server, 'POST', '/api/jobs/build/reschedule', { next: '2030-01-01T09:30:00+05:30' });
  assert.equal(rescheduled.status, 200);
  assert.equal(rescheduled.body.job.nextAt, '2030-01-01T04:00:00Z');
  for (const next of ['tomorrow', '2030-01-01', '2030-13-01T00:00:00Z']) {
    const bad = await call(server, 'POST', '/api/jobs/build/reschedule', { next });
    assert.equal(bad.status, 400, next);
  }
  assert.equal((await call(server, 'GET', '/api/jobs/build')).body.job.nextAt, '2030-01-01T04:00:00Z');
});

test('unschedule cancels the queued run and keeps its history', async (t) => {
  const server = await inProcessServer(t);
  const created = await call(server, 'POST', '/api/jobs', { ...job, period: 'daily' });
  const runId = created.body.run.id;
  const removed = await call(server, 'DELETE', '/api/jobs/build');
  assert.deepEqual(removed.body.cancelled, [runId]);
  const run = (await call(server, 'GET', `/api/runs/${runId}`)).body.run;
  assert.equal(run.status, 'cancelled');
  assert.equal(run.resultText, 'aborted: job unscheduled');
  const console = await call(server, 'GET', `/api/runs/${runId}/console?follow=true`);
  assert.equal(console.status, 200);
  assert.deepEqual(console.body, { type: 'end', run });
});

test('a template job modified to a script gets a platform of its own', async (t) => {
  const server = await inProcessServer(t);
  mkdirSync(path.join(server.dataDir, 'templates'));
  writeFileSync(path.join(server.dataDir, 'templates', 'tpl.alpha'), 'echo %%JOB%%\n');
  const created = await call(server, 'POST', '/api/jobs', { name: 'tj', template: 'tpl', period: 'never' });
  assert.equal(created.status, 201);
  assert.equal(created.body.job.platform, null);
  const modified = await call(server, 'PATCH', '/api/jobs/tj', { script: 'echo plain\n' });
  assert.equal(modified.body.job.template, null);
  assert.equal(typeof modified.body.job.platform, 'string');
  assert.equal((await call(server, 'POST', '/api/jobs/tj/execute', {})).status, 201);
});

test("a job's sandbox settings are stored, and modify sets given keys and removes null ones", async (t) => {
  const server = await inProcessServer(t);
  const created = await call(server, 'POST', '/api/jobs', { ...job, sandbox: { memoryBytes: 64 * 1024 ** 2, network: 'none' } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.deepEqual(created.body.job.sandbox, { memoryBytes: 64 * 1024 ** 2, network: 'none' });
  const changed = await call(server, 'PATCH', '/api/jobs/build', { sandbox: { memoryBytes: null, pids: 50, cpuSeconds: 60 } });
  assert.deepEqual(changed.body.job.sandbox, { network: 'none', pids: 50, cpuSeconds: 60 });
  assert.deepEqual((await call(server, 'GET', '/api/jobs/build')).body.job.sandbox, { network: 'none', pids: 50, cpuSeconds: 60 });
  const bad = await call(server, 'PATCH', '/api/jobs/build', { sandbox: { network: 'bridge' } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /sandbox\.network/);
});

test('GET /api/info lists the farm: on SQLite this one server, alive, holding every lease', async (t) => {
  const server = await inProcessServer(t);
  const { status, body } = await call(server, 'GET', '/api/info');
  assert.equal(status, 200);
  const { servers } = body as { servers: { id: string; url: string; alive: boolean; self: boolean; leases: string[]; startedAt: string; heartbeatAt: string; configDigest: string }[] };
  assert.equal(servers.length, 1);
  assert.match(servers[0]!.configDigest, /^[0-9a-f]{64}$/);
  assert.deepEqual({ ...servers[0], startedAt: undefined, heartbeatAt: undefined, configDigest: undefined }, {
    id: server.serverId, url: server.url, alive: true, self: true, leases: ['outbox', 'reaper', 'retention', 'scheduler'], startedAt: undefined, heartbeatAt: undefined,
    configDigest: undefined,
  });
  assert.match(servers[0]!.startedAt, /^\d{4}-\d\d-\d\dT/);
});
