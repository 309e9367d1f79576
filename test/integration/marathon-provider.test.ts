/**
 * The marathon provider against an HTTP fake of Marathon's REST API v2 (written from its docs, not
 * a real Marathon), whose apps run as real local processes: the app made, its checks, its destroy,
 * finding a server's own apps, and errors that fit on one line.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { test } from 'node:test';
import { coerceError } from '../../src/errors.js';
import { marathonOptionsSchema, MarathonProvider, MarathonRequestError } from '../../src/server/latent/marathon-provider.js';
import type { InstanceSpec } from '../../src/server/latent/provider.js';
import { startFakeMarathon, type RunTask } from '../helpers/fake-marathon.js';
import { freePort } from '../helpers/processes.js';

/** A stand-in task: exits with the code written to its stdin; on SIGTERM after TERM_DELAY_MS. */
const TASK_SCRIPT = `
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => process.exit(Number(d.trim())));
process.on('SIGTERM', () => setTimeout(() => process.exit(0), Number(process.env.TERM_DELAY_MS ?? 0)));
setInterval(() => {}, 1 << 30);
console.log('ready');
`;

/** Runs every app as the stand-in task, and keeps what each was started with. */
function standIn(termDelayMs = 0): { run: RunTask; started: { command: string[]; env: Record<string, string> }[] } {
  const started: { command: string[]; env: Record<string, string> }[] = [];
  const run: RunTask = (command, env) => {
    started.push({ command, env });
    return spawn(process.execPath, ['-e', TASK_SCRIPT], { env: { PATH: process.env.PATH ?? '', TERM_DELAY_MS: String(termDelayMs) }, stdio: ['pipe', 'pipe', 'ignore'] });
  };
  return { run, started };
}

const newOwner = () => randomBytes(8).toString('hex');

function newSpec(owner: string, options: { pool?: string; once?: boolean } = {}): InstanceSpec {
  const id = `${owner}/${randomUUID()}`;
  const pool = options.pool ?? 'Mesos_Pool';
  const name = `${pool}-${id.slice(-12)}`;
  return {
    id, owner, pool, name, token: randomBytes(16).toString('base64url'), server: 'http://127.0.0.1:7420', platform: 'linux-amd64',
    labels: { arch: 'amd64' }, once: options.once ?? true, values: { PLATFORM: 'linux-amd64', POOL: pool, INSTANCE: name },
  };
}

const provider = (options: Record<string, unknown>) => new MarathonProvider(marathonOptionsSchema.parse({ image: 'kiln-worker', ...options }));

/** The reason a promise rejected with, checked to be one line. */
async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (raw) {
    const err = raw as Error;
    assert.doesNotMatch(err.message, /\n/, 'one line');
    return err;
  }
  assert.fail('expected a rejection');
}

test('start makes an app of exactly the expected shape, with Basic auth; check is null while it runs and says why once its task exited; stop destroys it', async (t) => {
  const { run, started } = standIn();
  const fake = await startFakeMarathon(t, { auth: { username: 'kiln', password: 's3cret' }, run });
  const marathon = provider({
    marathon_url: `${fake.url}/`, username: 'kiln', password: 's3cret', image: 'registry.example/kiln-worker:%%PLATFORM%%',
    cpus: 0.5, mem: 512, app_prefix: '/ci/kiln/', server_url: 'http://kiln.example:7420',
    marathon_extra_config: {
      constraints: [['hostname', 'UNIQUE']],
      container: { docker: { forcePullImage: true }, volumes: [{ containerPath: '/cache', hostPath: '/var/cache/kiln', mode: 'RW' }] },
      env: { CCACHE_DIR: '/cache' },
      labels: { team: 'ci', built_for: '%%PLATFORM%%' },
    },
  });
  const spec = newSpec(newOwner());
  const handle = await marathon.start(spec);
  const appId = `/ci/kiln/mesos-pool-${spec.id.slice(-12)}`;
  assert.deepEqual(handle.id, spec.id);
  assert.equal(handle.ref, appId);
  assert.equal(handle.gone, undefined, 'Marathon gives no event: check finds it gone');

  const posts = fake.requests.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 1);
  assert.equal(posts[0]!.status, 201);
  assert.deepEqual(posts[0]!.body, {
    id: appId,
    args: ['kiln', 'worker', '--platform', 'linux-amd64', '--label', 'arch=amd64', '--drain-timeout', '10s', '--kill-grace', '3s', '--once'],
    instances: 1,
    cpus: 0.5,
    mem: 512,
    container: {
      type: 'DOCKER',
      docker: { image: 'registry.example/kiln-worker:linux-amd64', forcePullImage: true },
      volumes: [{ containerPath: '/cache', hostPath: '/var/cache/kiln', mode: 'RW' }],
    },
    env: {
      KILN_SERVER: 'http://kiln.example:7420', KILN_WORKER_NAME: spec.name, KILN_WORKER_TOKEN: spec.token, KILN_POOL_INSTANCE: spec.id, KILN_POOL: 'Mesos_Pool',
      CCACHE_DIR: '/cache',
    },
    labels: { KILN_OWNER: spec.owner, KILN_POOL: 'Mesos_Pool', KILN_INSTANCE: spec.id, KILN_WORKER_NAME: spec.name, team: 'ci', built_for: 'linux-amd64' },
    constraints: [['hostname', 'UNIQUE']],
    taskKillGracePeriodSeconds: 20,
    // One run: Marathon holds its relaunch back for an hour, by when the pool has destroyed it.
    backoffSeconds: 3600,
    backoffFactor: 1,
    maxLaunchDelaySeconds: 3600,
  });
  const basic = `Basic ${Buffer.from('kiln:s3cret').toString('base64')}`;
  assert.ok(fake.requests.every((r) => r.authorization === basic), 'every call carries the Basic credentials');

  // Starting (deploying) and running are both alive.
  assert.equal(await marathon.check(handle), null);
  const task = await fake.running(appId);
  assert.equal(await marathon.check(handle), null);
  assert.equal(started.length, 1);
  assert.equal(started[0]!.env.KILN_WORKER_TOKEN, spec.token);
  assert.ok(fake.requests.some((r) => r.method === 'GET' && r.query.getAll('embed').includes('app.lastTaskFailure')), 'check asks for the last failure');

  // The worker's one run is over: it exits 0 (TASK_FINISHED, no lastTaskFailure) and is not relaunched.
  task.child.stdin!.end('0\n');
  await task.exited;
  assert.equal(await marathon.check(handle), 'its task ended');
  assert.equal(fake.apps.get(appId)!.launches.length, 1, 'not started again');
  assert.equal(handle.lastWords(), '');

  await marathon.stop(handle);
  assert.equal(fake.apps.has(appId), false);
  const calls = fake.requests.filter((r) => r.method !== 'POST').map((r) => `${r.method} ${r.path} ${r.status}`);
  assert.equal(calls.at(-1), `GET /v2/apps${appId} 404`, 'stop resolves on a 404');
  assert.ok(calls.includes(`DELETE /v2/apps${appId} 200`));
  assert.equal(await marathon.check(handle), 'its app was destroyed');
});

test('a task that fails is reported with Marathon\'s lastTaskFailure, and its message is the last words', async (t) => {
  const { run } = standIn();
  const fake = await startFakeMarathon(t, { run });
  const marathon = provider({ marathon_url: fake.url });
  const handle = await marathon.start(newSpec(newOwner()));
  const task = await fake.running(handle.ref);
  task.child.stdin!.end('3\n');
  await task.exited;
  assert.equal(await marathon.check(handle), 'its task ended: TASK_FAILED Command exited with status 3');
  assert.equal(handle.lastWords(), 'Command exited with status 3');
  await marathon.stop(handle);
});

test('a worker kept for more runs that Marathon restarts between two checks is reported gone', async (t) => {
  const { run } = standIn();
  const fake = await startFakeMarathon(t, { run });
  // Marathon's own backoff, shortened so the restart comes at once.
  const marathon = provider({ marathon_url: fake.url, marathon_extra_config: { backoffSeconds: 0 } });
  const handle = await marathon.start(newSpec(newOwner(), { once: false }));
  const post = fake.requests.find((r) => r.method === 'POST')!.body as Record<string, unknown>;
  assert.equal(post.maxLaunchDelaySeconds, undefined, 'no one-run hold for a kept worker');
  assert.equal((post.args as string[]).includes('--once'), false);
  const first = await fake.running(handle.ref);
  assert.equal(await marathon.check(handle), null);
  first.child.stdin!.end('0\n');
  await fake.running(handle.ref, 2);
  assert.equal(await marathon.check(handle), 'its task ended and Marathon started another');
  await marathon.stop(handle);
});

test('stop destroys a running app and resolves only once Marathon no longer has it', async (t) => {
  // The task takes 300 ms to go after SIGTERM, like a worker draining.
  const { run } = standIn(300);
  const fake = await startFakeMarathon(t, { run });
  const marathon = provider({ marathon_url: fake.url });
  const handle = await marathon.start(newSpec(newOwner()));
  const task = await fake.running(handle.ref);
  await once(task.child.stdout!, 'data'); // Its SIGTERM handler is in place.
  const exitedAt = task.exited.then(() => Date.now());
  const stopping = Date.now();
  await marathon.stop(handle);
  const stoppedAt = Date.now();
  assert.ok(task.child.exitCode !== null || task.child.signalCode !== null, 'the task has exited');
  assert.equal(task.child.exitCode, 0, 'by its own SIGTERM handler, not SIGKILL');
  assert.ok((await exitedAt) <= stoppedAt);
  assert.ok(stoppedAt - stopping >= 300, `stop waited for the task's 300 ms drain (${stoppedAt - stopping} ms)`);
  assert.equal(fake.apps.has(handle.ref), false);
  const calls = fake.requests.filter((r) => r.method !== 'POST').map((r) => `${r.method} ${r.path}${r.query.size ? `?${r.query}` : ''} ${r.status}`);
  assert.equal(calls[0], `DELETE /v2/apps${handle.ref} 200`, 'no force when nothing is in the way');
  assert.ok(calls.slice(1, -1).every((c) => c === `GET /v2/apps${handle.ref} 200`), calls.join('\n'));
  assert.equal(calls.at(-1), `GET /v2/apps${handle.ref} 404`);
  // Stopping what is already gone is fine.
  await marathon.stop(handle);
});

test('stop forces past a deployment that holds the app (a task that never got to run)', async (t) => {
  // No `run`: like a cluster with no offer that fits, the task stays staged and the start deployment with it.
  const fake = await startFakeMarathon(t);
  const marathon = provider({ marathon_url: fake.url });
  const handle = await marathon.start(newSpec(newOwner()));
  assert.equal(await marathon.check(handle), null, 'still deploying is alive');
  await marathon.stop(handle);
  const calls = fake.requests.filter((r) => r.method === 'DELETE').map((r) => `${r.path}${r.query.size ? `?${r.query}` : ''} ${r.status}`);
  assert.deepEqual(calls, [`/v2/apps${handle.ref} 409`, `/v2/apps${handle.ref}?force=true 200`]);
  assert.equal(fake.apps.has(handle.ref), false);
});

test('listOwn finds exactly this owner\'s apps by their instance label, never by a shared prefix', async (t) => {
  const fake = await startFakeMarathon(t);
  const owner = newOwner();
  const other = newOwner();
  const marathon = provider({ marathon_url: fake.url });
  const mine = [newSpec(owner, { pool: 'alpha' }), newSpec(owner, { pool: 'beta' })];
  for (const spec of [...mine, newSpec(other)]) await marathon.start(spec);
  // Apps made by others under this owner's label: one for another owner's instance, one whose id only starts like ours.
  for (const [segment, instance] of [['foreign', `${other}/${randomUUID()}`], ['lookalike', `${owner}0/${randomUUID()}`]] as const) {
    const response = await fetch(`${fake.url}/v2/apps`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: `/kiln/${segment}`, instances: 1, container: { type: 'DOCKER', docker: { image: 'x' } }, labels: { KILN_OWNER: owner, KILN_INSTANCE: instance } }),
    });
    assert.equal(response.status, 201);
  }
  const found = await marathon.listOwn(owner);
  assert.deepEqual(
    found.map((own) => ({ pool: own.pool, name: own.name, id: own.handle.id, ref: own.handle.ref })).sort((a, b) => a.pool.localeCompare(b.pool)),
    mine.map((spec) => ({ pool: spec.pool, name: spec.name, id: spec.id, ref: `/kiln/${spec.name}` })),
  );
  const query = fake.requests.find((r) => r.method === 'GET' && r.path === '/v2/apps')!.query;
  assert.equal(query.get('label'), `KILN_OWNER==${owner}`);
  // Found apps can be stopped as any other.
  await Promise.all(found.map((own) => marathon.stop(own.handle)));
  assert.deepEqual(await marathon.listOwn(owner), []);
  assert.equal(fake.apps.size, 3, 'the other owner\'s app and the two strangers are left alone');
});

test('Marathon\'s refusals and an unreachable Marathon are one-line errors with the status and Marathon\'s message', async (t) => {
  const fake = await startFakeMarathon(t, { auth: { username: 'kiln', password: 'right' } });
  const owner = newOwner();

  const wrong = await rejection(provider({ marathon_url: fake.url, username: 'kiln', password: 'wrong' }).start(newSpec(owner)));
  assert.equal(wrong.message, 'Marathon POST /v2/apps: 401 Invalid username or password.');
  assert.ok(wrong instanceof MarathonRequestError && wrong.status === 401);
  const none = await rejection(provider({ marathon_url: fake.url }).start(newSpec(owner)));
  assert.equal(none.message, 'Marathon POST /v2/apps: 401 Invalid username or password.');

  const authed = { marathon_url: fake.url, username: 'kiln', password: 'right' };
  const invalid = await rejection(provider({ ...authed, marathon_extra_config: { env: { PORT: 8080 } } }).start(newSpec(owner)));
  assert.equal(invalid.message, 'Marathon POST /v2/apps: 422 Object is not valid (/env(PORT): error.expected.jsstring)');
  assert.ok(invalid instanceof MarathonRequestError && invalid.status === 422);

  const spec = newSpec(owner);
  const marathon = provider(authed);
  await marathon.start(spec);
  const twice = await rejection(marathon.start(spec));
  assert.equal(twice.message, `Marathon POST /v2/apps: 409 An app with id [/kiln/${spec.name.toLowerCase().replace('_', '-')}] already exists.`);
  assert.ok(twice instanceof MarathonRequestError && twice.status === 409);
  assert.equal(fake.apps.size, 1, 'only the first start made an app');

  const port = await freePort();
  const unreachable = provider({ marathon_url: `http://127.0.0.1:${port}` });
  const down = await rejection(unreachable.start(newSpec(owner)));
  assert.ok(down instanceof MarathonRequestError && down.status === 0 && !down.timedOut);
  assert.match(down.message, new RegExp(`^cannot reach Marathon at http://127\\.0\\.0\\.1:${port} \\(POST /v2/apps\\): connect ECONNREFUSED`));
  // A check that cannot ask is not a verdict of gone: it rejects.
  const checked = await rejection(unreachable.check({ id: spec.id, ref: '/kiln/x', lastWords: () => '' }));
  assert.match(checked.message, /^cannot reach Marathon .*\(GET \/v2\/apps\/kiln\/x\): connect ECONNREFUSED/);
});

test('a placeholder the instance has no value for fails start clearly, before Marathon is asked', async (t) => {
  const fake = await startFakeMarathon(t);
  const err = await rejection(provider({ marathon_url: fake.url, image: 'kiln-worker:%%RELEASE%%' }).start(newSpec(newOwner())));
  assert.equal(coerceError(err).code, 'KILN_ERR_CONFIG');
  assert.match(err.message, /^image: the template uses %%RELEASE%%, which the job does not define/);
  const inExtra = await rejection(provider({ marathon_url: fake.url, marathon_extra_config: { labels: { job: '%%JOB%%' } } }).start(newSpec(newOwner())));
  assert.match(inExtra.message, /^marathon_extra_config\.labels\.job: the template uses %%JOB%%/);
  const inCommand = await rejection(provider({ marathon_url: fake.url, command: ['kiln', 'worker', '--name', '%%NAME%%'] }).start(newSpec(newOwner())));
  assert.match(inCommand.message, /^command\.3: the template uses %%NAME%%/);
  assert.deepEqual(fake.requests, []);
});

test('a custom command (placeholders expanded) replaces the worker\'s, and a cmd in the extra config replaces both', async (t) => {
  const fake = await startFakeMarathon(t);
  const spec = newSpec(newOwner());
  await provider({ marathon_url: fake.url, command: ['/opt/kiln/bin/kiln', 'worker', '--platform', '%%PLATFORM%%', '--once'] }).start(spec);
  const withCmd = newSpec(spec.owner);
  await provider({ marathon_url: fake.url, marathon_extra_config: { cmd: 'exec kiln worker --platform "$PLATFORM" --once' } }).start(withCmd);
  const [first, second] = fake.requests.filter((r) => r.method === 'POST').map((r) => r.body as Record<string, unknown>);
  assert.deepEqual(first!.args, ['/opt/kiln/bin/kiln', 'worker', '--platform', 'linux-amd64', '--once']);
  assert.equal(second!.args, undefined);
  assert.equal(second!.cmd, 'exec kiln worker --platform "$PLATFORM" --once');
});

test('options are checked when the config is read', () => {
  const parsed = marathonOptionsSchema.parse({ marathon_url: 'http://marathon.mesos:8080', image: 'kiln' });
  assert.deepEqual(parsed, { marathon_url: 'http://marathon.mesos:8080', image: 'kiln', cpus: 1, mem: 1024, app_prefix: '/kiln', marathon_extra_config: {} });
  const issues = (options: Record<string, unknown>) =>
    marathonOptionsSchema.safeParse({ marathon_url: 'http://m:8080', image: 'kiln', ...options }).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  assert.deepEqual(issues({ username: 'kiln' }), ['password: give username and password together']);
  assert.deepEqual(issues({ app_prefix: '/Kiln' }), ['app_prefix: use a Marathon group path like /kiln (lowercase letters, digits, - and .)']);
  assert.deepEqual(issues({ marathon_extra_config: { id: '/x', labels: { KILN_INSTANCE: 'x' } } }), [
    "marathon_extra_config.id: 'id' is set by the provider",
    "marathon_extra_config.labels.KILN_INSTANCE: 'KILN_INSTANCE' is set by the provider",
  ]);
  assert.deepEqual(issues({ marathon_url: 'marathon:8080' }), ['marathon_url: use an http(s) URL']);
  assert.deepEqual(issues({ mem: '1g' })?.length, 1);
  assert.deepEqual(issues({ imgae: 'typo' })?.length, 1);
});
