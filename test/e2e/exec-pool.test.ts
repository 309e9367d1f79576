/**
 * The `exec` provider with real commands: a stand-in cloud CLI (test/helpers/exec-pool-script.mjs)
 * starts `kiln worker` processes that outlive the server, as VMs or jails would; the server drives
 * it through start/check/stop/list with JSON on stdin.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { api, followRun, freePort, kiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';

const SCRIPT = fileURLToPath(new URL('../helpers/exec-pool-script.mjs', import.meta.url));

interface Call {
  verb: string;
  id?: string;
  ref?: string;
  owner?: string;
  name?: string;
  command?: string[];
  envKeys?: string[];
}

const calls = (state: string): Call[] => readFileSync(path.join(state, 'calls.log'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Call);
const instancesIn = (state: string) => readdirSync(state).filter((f) => f.startsWith('instance-')).map((f) => JSON.parse(readFileSync(path.join(state, f), 'utf8')) as { ref: string });

async function withExecPool(t: TestContext, state: string, extra: string[] = [], dataDir = tempDir(t), port?: number): Promise<ServerProcess> {
  const verb = (v: string) => `      ${v}: ["${process.execPath}", "${SCRIPT}", "${state}", "${v}"]`;
  const yaml = ['pools:', '  - name: vms', '    provider: exec', '    platform: vm', '    max: 2', '    check_interval: 200ms', ...extra,
    '    options:', verb('start'), verb('check'), verb('stop'), verb('list'), '      timeout: 30s', ''].join('\n');
  writeFileSync(path.join(dataDir, 'kiln.yaml'), yaml.replace('{FAIL}', ''));
  return startServer(t, { dataDir, port, args: ['--config', path.join(dataDir, 'kiln.yaml')] });
}

/** The stand-in's state dir; whatever happens, the instances it started are killed (by the pids it recorded), then it goes. */
function stateDir(t: TestContext): string {
  const state = mkdtempSync(path.join(os.tmpdir(), 'kiln-exec-'));
  writeFileSync(path.join(state, 'calls.log'), '');
  t.after(() => {
    for (const { ref } of instancesIn(state)) {
      try {
        process.kill(Number(ref), 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    rmSync(state, { recursive: true, force: true });
  });
  return state;
}

test('an exec pool starts an instance through its start command, checks it, and stops it once its run is done', async (t) => {
  const state = stateDir(t);
  const server = await withExecPool(t, state, ['    idle_timeout: 0']);
  assert.equal((await kiln(server, ['schedule', 'remote', '--command', 'echo "on $KILN_PLATFORM"; sleep 0.5', '--platform', 'vm', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'remote'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}`);
  assert.ok(lines.includes('on vm'));
  await server.waitFor(/"msg":"worker instance stopped"/);
  const seen = calls(state);
  const start = seen.find((c) => c.verb === 'start')!;
  assert.match(start.id!, /^[0-9a-f]{16}\/[0-9a-f-]{36}$/);
  assert.deepEqual(start.command!.slice(0, 4), ['kiln', 'worker', '--platform', 'vm']);
  assert.ok(start.command!.includes('--once'), 'idle_timeout 0: one run');
  assert.deepEqual(start.envKeys, ['KILN_POOL', 'KILN_POOL_INSTANCE', 'KILN_SERVER', 'KILN_WORKER_NAME', 'KILN_WORKER_TOKEN'], 'the token comes on stdin, in env');
  const stops = seen.filter((c) => c.verb === 'stop');
  assert.equal(stops.length, 1, 'stopped exactly once');
  assert.equal(stops[0]!.id, start.id);
  assert.deepEqual(seen.filter((c) => c.verb === 'list').map((c) => c.owner), [start.id!.split('/')[0]], 'listed once at start, by owner');
  assert.deepEqual(instancesIn(state), [], 'nothing left');
});

test("a failing start command's last stderr line is on the waiting run's console; the pool is quarantined", async (t) => {
  const state = stateDir(t);
  const server = await withExecPool(t, state, ['    start_timeout: 5s'], tempDir(t));
  // The same pool, with the stand-in told to fail every start.
  const yamlFile = path.join(server.dataDir, 'kiln.yaml');
  writeFileSync(yamlFile, readFileSync(yamlFile, 'utf8').replace('      timeout: 30s', '      timeout: 30s\n      env: {EXEC_FAIL: "1"}'));
  await server.kill('SIGTERM');
  const failing = await startServer(t, { dataDir: server.dataDir, args: ['--config', yamlFile] });
  assert.equal((await kiln(failing, ['schedule', 'full', '--command', 'true', '--platform', 'vm', '--period', 'never'])).code, 0);
  const runId = (await kiln(failing, ['execute', 'full'])).stdout.trim();
  await failing.waitFor(/"msg":"pool quarantined after repeated start failures"/);
  assert.equal((await kiln(failing, ['cancel', runId])).code, 0);
  const { lines, run } = await followRun(failing, runId);
  assert.equal(run.status, 'cancelled');
  assert.match(lines[0] ?? '', /^kiln: pool vms could not start a worker: could not start: node exited 1: no capacity left in this region$/);
  const shown = await kiln(failing, ['workers']);
  assert.match(shown.stdout, /pool vms \(exec, vm, max 2\).*quarantined until.*no capacity left in this region/);
});

test('a server SIGKILLed while an exec instance runs a job adopts the instance when it comes back', async (t) => {
  const state = stateDir(t);
  const shared = tempDir(t);
  const dataDir = tempDir(t);
  const port = await freePort();
  const server = await withExecPool(t, state, [], dataDir, port);
  const script = `echo started; while [ ! -e ${shared}/go ]; do sleep 0.05; done; echo finished`;
  assert.equal((await kiln(server, ['schedule', 'long', '--command', script, '--platform', 'vm', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'long'])).stdout.trim();
  await server.waitFor(/"msg":"run dispatched"/);
  const [instance] = instancesIn(state);
  await server.kill('SIGKILL');
  const again = await withExecPool(t, state, [], dataDir, port);
  await again.waitFor(/"msg":"adopted a worker instance left by an earlier server"/);
  writeFileSync(path.join(shared, 'go'), '');
  const { lines, run } = await followRun(again, runId);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.ok(lines.includes('finished'));
  const worker = (await api<{ run: { worker: string } }>(again, 'GET', `/api/runs/${runId}`)).run.worker;
  assert.equal(instancesIn(state)[0]?.ref, instance!.ref, 'the same instance, adopted');
  assert.match(worker, /^vms-/);
  assert.equal(calls(state).filter((c) => c.verb === 'start').length, 1, 'no second instance was started');
});

test('an instance whose health check says it died is stopped once and replaced (min_idle)', async (t) => {
  const state = stateDir(t);
  const server = await withExecPool(t, state, ['    min_idle: 1', '    idle_timeout: -1']);
  await server.waitFor(/"msg":"worker connected"/);
  const [first] = instancesIn(state);
  process.kill(Number(first!.ref), 'SIGKILL');
  // The stand-in's check answers {alive: false}: the instance is stopped (through `stop`), and min_idle starts another.
  const stopping = await server.waitFor(/"why":"process \d+ is gone","msg":"stopping a worker instance"/);
  assert.match(stopping, new RegExp(`process ${first!.ref} is gone`));
  await server.waitFor(/"msg":"worker connected"/, server.stderr.indexOf(stopping));
  const seen = calls(state);
  assert.equal(seen.filter((c) => c.verb === 'stop' && c.ref === first!.ref).length, 1, 'stopped exactly once');
  assert.equal(seen.filter((c) => c.verb === 'start').length, 2);
  assert.ok(seen.some((c) => c.verb === 'check' && c.ref === first!.ref), 'found by the check command');
});

test('a start command that hangs is killed at its timeout and counted; the run stays queued, is told why, and can be cancelled', async (t) => {
  const dataDir = tempDir(t);
  const yaml = ['pools:', '  - name: stuck', '    provider: exec', '    platform: vm', '    max: 1', '    check_interval: 200ms', '    options:',
    '      start: "sleep 600"', '      check: "echo \'{\\"alive\\": true}\'"', '      stop: "true"', '      list: "echo []"', '      timeout: 1s', ''].join('\n');
  writeFileSync(path.join(dataDir, 'kiln.yaml'), yaml);
  const server = await startServer(t, { dataDir, args: ['--config', path.join(dataDir, 'kiln.yaml')] });
  assert.equal((await kiln(server, ['schedule', 'waits', '--command', 'true', '--platform', 'vm', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'waits'])).stdout.trim();
  await server.waitFor(/"msg":"pool quarantined after repeated start failures"/);
  assert.equal((await api<{ run: { status: string } }>(server, 'GET', `/api/runs/${runId}`)).run.status, 'queued');
  assert.equal((await kiln(server, ['cancel', runId])).code, 0);
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'cancelled');
  assert.match(lines[0] ?? '', /^kiln: pool stuck could not start a worker: could not start: sh took longer than 1s and was killed$/);
});
