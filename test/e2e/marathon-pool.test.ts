/**
 * A `marathon` pool on the real Kiln server, against an HTTP fake of Marathon's REST API v2
 * (written from its docs; no real Marathon is involved) that runs each app's task as a real local
 * `kiln worker`: a queued run makes an app, its worker runs it, and the app is destroyed after.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { startFakeMarathon, type RunTask } from '../helpers/fake-marathon.js';
import { api, followRun, KILN_BIN, kiln, startServer, tempDir } from '../helpers/processes.js';

const ownerOf = (dataDir: string) => readFileSync(path.join(dataDir, 'pool-owner.id'), 'utf8').trim();

test('a run on a marathon pool makes an app whose worker runs it; the app is destroyed after', async (t) => {
  // The app's container, played locally: its `kiln` is this checkout's, its environment the app's own.
  const workerLog: string[] = [];
  const run: RunTask = (command, env) => {
    assert.equal(command[0], 'kiln', 'the app runs kiln');
    const child = spawn(process.execPath, [KILN_BIN, ...command.slice(1)], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', LANG: 'C.UTF-8', KILN_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    createInterface({ input: child.stderr! }).on('line', (line) => workerLog.push(line));
    return child;
  };
  // (The fake kills every task it started, by pid, when the test ends.)
  const fake = await startFakeMarathon(t, { auth: { username: 'kiln', password: 's3cret' }, run });
  const dataDir = tempDir(t);
  const config = path.join(dataDir, 'kiln.yaml');
  writeFileSync(config, [
    'pools:', '  - name: mesos', '    provider: marathon', '    platform: mesos', '    max: 1', '    check_interval: 200ms', '    options:',
    `      marathon_url: "${fake.url}"`, '      username: kiln', '      password: s3cret', '      image: "registry.example/kiln-worker:%%PLATFORM%%"',
    '      cpus: 0.25', '      mem: 256', '',
  ].join('\n'));
  const server = await startServer(t, { dataDir, args: ['--config', config] });

  const script = 'echo "hello from $KILN_PLATFORM"; env | grep -c KILN_WORKER_TOKEN || true';
  assert.equal((await kiln(server, ['schedule', 'on-mesos', '--command', script, '--platform', 'mesos', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'on-mesos'])).stdout.trim();
  const { lines, run: result } = await followRun(server, runId);
  assert.equal(result.status, 'succeeded', `${lines.join('\n')}\n${workerLog.join('\n')}`);
  assert.ok(lines.includes('hello from mesos'), lines.join('\n'));
  assert.ok(lines.includes('0'), 'the job does not see the worker token');
  const worker = (await api<{ run: { worker: string } }>(server, 'GET', `/api/runs/${runId}`)).run.worker;
  assert.match(worker, /^mesos-[0-9a-f]{12}$/);

  // idle_timeout defaults to 0 for marathon: the worker exits after its run, a check finds the app's
  // task ended, and the app is destroyed.
  const stopping = await server.waitFor(/"msg":"stopping a worker instance"/);
  assert.match(stopping, /"why":"its task ended"/);
  await server.waitFor(/"msg":"worker instance stopped"/);
  const appId = `/kiln/${worker}`;
  assert.equal(fake.apps.size, 0, 'no app is left');

  const owner = ownerOf(dataDir);
  const posts = fake.requests.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 1, 'one app for one run');
  const app = posts[0]!.body as Record<string, unknown> & { env: Record<string, string>; labels: Record<string, string> };
  const token = app.env.KILN_WORKER_TOKEN!;
  assert.ok(token.length >= 32, 'its own token');
  assert.notEqual(token, server.workerToken);
  assert.deepEqual(app, {
    id: appId,
    args: ['kiln', 'worker', '--platform', 'mesos', '--drain-timeout', '10s', '--kill-grace', '3s', '--once'],
    instances: 1,
    cpus: 0.25,
    mem: 256,
    container: { type: 'DOCKER', docker: { image: 'registry.example/kiln-worker:mesos' } },
    env: { KILN_SERVER: server.url, KILN_WORKER_NAME: worker, KILN_WORKER_TOKEN: token, KILN_POOL_INSTANCE: app.labels.KILN_INSTANCE, KILN_POOL: 'mesos' },
    labels: { KILN_OWNER: owner, KILN_POOL: 'mesos', KILN_INSTANCE: app.labels.KILN_INSTANCE, KILN_WORKER_NAME: worker },
    taskKillGracePeriodSeconds: 20,
    backoffSeconds: 3600,
    backoffFactor: 1,
    maxLaunchDelaySeconds: 3600,
  });
  assert.match(app.labels.KILN_INSTANCE!, new RegExp(`^${owner}/[0-9a-f-]{36}$`));
  const basic = `Basic ${Buffer.from('kiln:s3cret').toString('base64')}`;
  assert.ok(fake.requests.every((r) => r.authorization === basic && r.status !== 401), 'every call authenticated');
  const calls = fake.requests.map((r) => `${r.method} ${r.path} ${r.status}`);
  assert.ok(calls.includes(`DELETE /v2/apps${appId} 200`), calls.join('\n'));
  assert.equal(calls.at(-1), `GET /v2/apps${appId} 404`, 'the stop waited until the app was gone');

  // The app's one task ran and exited by itself (its --once run done), and was not started again.
  const tasks = fake.launched.filter((task) => task.appId === appId);
  assert.equal(tasks.length, 1, 'started once');
  assert.equal(tasks[0]!.child.exitCode, 0, workerLog.join('\n'));
});
