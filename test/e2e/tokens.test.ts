/**
 * Tokens with roles, with real processes: `kiln token create/list/revoke`, a viewer and an operator
 * using the CLI against a real server with a real worker, refusals with their exit codes, the data
 * dir's admin.token still the admin, and a browser session that outlives a server restart and ends
 * when its token is revoked.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { followRun, kiln, spawnKiln, startServer } from '../helpers/processes.js';

test('viewer reads without secrets, operator acts on runs, only admins manage; list, expiry and revoke', async (t) => {
  const server = await startServer(t);
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--name', 'w1', '--platform', 'testos'], { KILN_WORKER_TOKEN: server.workerToken });
  await worker.waitFor(/connected to the server/);

  const create = async (name: string, role: string, ...more: string[]) => {
    const created = await kiln(server, ['token', 'create', name, '--role', role, ...more]);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^[A-Za-z0-9_-]{43}\n$/, 'the token alone on stdout');
    assert.match(created.stderr, /shown only now/);
    return created.stdout.trim();
  };
  const viewer = await create('alice', 'viewer', '--expires', '30d');
  const operator = await create('ops', 'operator');
  const as = (token: string, args: string[]) => kiln(server, args, { env: { KILN_TOKEN: token } });

  // The data dir's admin.token is still the admin: it schedules, with a secret in the job's environment.
  const scheduled = await kiln(server, ['schedule', 'build', '--command', 'echo built; echo "key=$API_KEY"', '--platform', 'testos', '--period', 'never', '--env', 'API_KEY=hunter2']);
  assert.equal(scheduled.code, 0, scheduled.stderr);

  // The viewer reads everything but the secret, and may not act.
  const jobs = await as(viewer, ['jobs', '--json']);
  assert.equal(jobs.code, 0, jobs.stderr);
  assert.deepEqual(JSON.parse(jobs.stdout).jobs[0].env, { API_KEY: '(secret)' });
  assert.equal((await as(viewer, ['info'])).code, 0);
  const refused = await as(viewer, ['execute', 'build']);
  assert.equal(refused.code, 3, 'a role that may not: exit 3, as for a token refused');
  assert.equal(refused.stderr, "kiln: the viewer token 'alice' may not POST /api/jobs/:name/execute: it needs operator or admin\n");

  // The operator executes, pauses; the viewer follows the run; neither manages jobs or tokens.
  const executed = await as(operator, ['execute', 'build']);
  assert.equal(executed.code, 0, executed.stderr);
  const runId = executed.stdout.trim();
  const observed = await as(viewer, ['observe', runId]);
  assert.equal(observed.code, 0, observed.stderr);
  assert.match(observed.stdout, /built/);
  assert.equal((await followRun(server, runId)).run.status, 'succeeded');
  assert.equal((await as(operator, ['pause', 'build'])).code, 0);
  assert.equal((await as(operator, ['resume', 'build'])).code, 0);
  for (const args of [['unschedule', 'build'], ['token', 'list'], ['token', 'create', 'x', '--role', 'admin'], ['worker-token', 'list']]) {
    const answer = await as(operator, args);
    assert.equal(answer.code, 3, `${args.join(' ')}: ${answer.stderr}`);
    assert.match(answer.stderr, /^kiln: the operator token 'ops' may not .*: it needs admin\n$/);
  }

  const listed = await kiln(server, ['token', 'list']);
  assert.equal(listed.code, 0, listed.stderr);
  const rows = listed.stdout.trim().split('\n');
  assert.match(rows[0]!, /^NAME\s+ROLE\s+CREATED\s+EXPIRES\s+LAST USED$/);
  assert.match(rows[1]!, /^alice\s+viewer\s+\S+Z\s+\S+Z\s+\d{4}-\d\d-\d\dT\S+Z$/, 'alice: an expiry, and used');
  assert.match(rows[2]!, /^ops\s+operator\s+\S+Z\s+never\s+\d{4}-/);
  assert.equal(listed.stdout.includes(viewer) || listed.stdout.includes(operator), false, 'never a token');
  assert.equal((await kiln(server, ['token', 'create', 'ops', '--role', 'viewer'])).code, 1, 'a live name is not taken twice');
  const otherCase = await kiln(server, ['token', 'create', 'OPS', '--role', 'admin']);
  assert.equal(otherCase.code, 1, 'nor in another case');
  assert.equal(otherCase.stderr, "kiln: a token named 'ops' already exists (kiln token revoke ops first to replace it)\n");
  for (const name of ['admin', 'Admin', 'ADMIN']) {
    const reserved = await kiln(server, ['token', 'create', name, '--role', 'viewer']);
    assert.equal(reserved.code, 2, `${name}: ${reserved.stderr}`);
    assert.match(reserved.stderr, /is the data dir's admin\.token's: choose another\n$/);
  }

  // A person's token is no worker's: a worker given one stops, as for a wrong token.
  const misused = spawnKiln(t, ['worker', '--server', server.url, '--name', 'w2', '--platform', 'testos'], { KILN_WORKER_TOKEN: operator });
  assert.equal((await misused.exited).code, 3);
  await misused.waitFor(/rejected the worker token \(403: it is not a worker token\)/);

  // An expired token, and a revoked one, are refused with one line saying so.
  const brief = await create('brief', 'viewer', '--expires', '1ms');
  const expired = await as(brief, ['jobs']);
  assert.equal(expired.code, 3);
  assert.match(expired.stderr, /^kiln: the server rejected the token: the token 'brief' expired at \S+Z\n$/);
  const revoked = await kiln(server, ['token', 'revoke', 'alice']);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.equal(revoked.stdout, 'revoked the token alice\n');
  const after = await as(viewer, ['jobs']);
  assert.equal(after.code, 3);
  assert.match(after.stderr, /^kiln: the server rejected the token: the token 'alice' was revoked at \S+Z\n$/);
  const again = await kiln(server, ['token', 'revoke', 'alice']);
  assert.equal(again.code, 1);
  assert.equal(again.stderr, "kiln: no token named 'alice' (kiln token list shows them)\n");
  const badRole = await kiln(server, ['token', 'create', 'carol', '--role', 'root']);
  assert.equal(badRole.code, 2, badRole.stderr);
  const badExpiry = await kiln(server, ['token', 'create', 'carol', '--role', 'viewer', '--expires', 'soon']);
  assert.equal(badExpiry.code, 2);
  assert.equal(badExpiry.stderr, "kiln: bad --expires 'soon': use a duration like 500ms, 10s, 5m\n");
});

test('a browser session survives a server restart and ends when its token is revoked', async (t) => {
  const first = await startServer(t);
  const token = (await kiln(first, ['token', 'create', 'dash', '--role', 'viewer'])).stdout.trim();
  const signIn = await fetch(`${first.url}/api/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  assert.equal(signIn.status, 201);
  const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;

  await first.kill('SIGTERM');
  await first.exited;
  const second = await startServer(t, { dataDir: first.dataDir, port: Number(new URL(first.url).port) });
  const who = await fetch(`${second.url}/api/session`, { headers: { cookie } });
  assert.equal(who.status, 200, 'the session is in the store, not the process');
  assert.deepEqual(((await who.json()) as { name: string; role: string }).role, 'viewer');

  const revoked = await kiln(second, ['token', 'revoke', 'dash']);
  assert.equal(revoked.stdout, 'revoked the token dash (ended 1 session)\n');
  assert.equal((await fetch(`${second.url}/api/session`, { headers: { cookie } })).status, 401);
});
