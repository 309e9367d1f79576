/**
 * Latent worker pools with real processes: the server starts `kiln worker` instances itself when
 * runs wait, and stops them when idle; failed starts quarantine the pool while runs stay queued;
 * a SIGKILLed server's instances are removed by its next life.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { api, followRun, instanceProcesses, kiln, spawnKiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

interface PoolView {
  name: string;
  instances: { name: string; state: string; runs: string[] }[];
  quarantinedUntil: string | null;
  lastError: string | null;
}

async function withPools(t: TestContext, yaml: string, dataDir = tempDir(t)): Promise<ServerProcess> {
  const config = path.join(dataDir, 'kiln.yaml');
  writeFileSync(config, yaml);
  const server = await startServer(t, { dataDir, args: ['--config', config] });
  // Whatever happens to the test, no instance outlives it (found by the exact owner id, killed by pid).
  const owner = ownerOf(dataDir);
  t.after(() => {
    for (const pid of instanceProcesses(owner)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  });
  return server;
}

/** Waits until none of `pids` runs (another process's end gives no event to await). */
async function gone(pids: number[], withinMs = 15_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  const alive = () => pids.filter((pid) => { try { process.kill(pid, 0); return true; } catch { return false; } });
  while (alive().length > 0) {
    if (Date.now() > deadline) assert.fail(`still running: ${alive().join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const pools = async (server: ServerProcess) => (await api<{ pools: PoolView[] }>(server, 'GET', '/api/workers')).pools;


test('a process pool scales from 0 to 3 under 3 waiting runs, and back to 0 after its idle timeout', async (t) => {
  const dir = tempDir(t);
  const server = await withPools(t, [
    'pools:', '  - name: local', '    provider: process', '    platform: pooled', '    max: 3', '    idle_timeout: 1s', '    check_interval: 200ms', '',
  ].join('\n'));
  assert.deepEqual((await pools(server)).map((p) => p.instances.length), [0], 'nothing runs while nothing waits');
  const script = `echo "$KILN_RUN" > ${dir}/$KILN_JOB.started; while [ ! -e ${dir}/go ]; do sleep 0.05; done; echo done`;
  const runIds: string[] = [];
  for (const name of ['a', 'b', 'c']) {
    assert.equal((await kiln(server, ['schedule', name, '--command', script, '--platform', 'pooled', '--period', 'never'])).code, 0);
    runIds.push((await kiln(server, ['execute', name])).stdout.trim());
  }
  // Three runs, three instances, each busy with one (they block until `go`).
  await server.waitForCount(/"msg":"run dispatched"/, 3);
  const busy = (await pools(server))[0]!;
  assert.deepEqual(busy.instances.map((i) => i.state).sort(), ['busy', 'busy', 'busy'], JSON.stringify(busy));
  const shown = (await kiln(server, ['workers'])).stdout;
  assert.match(shown, /pool local \(process, pooled, max 3\): 0 starting, 0 idle, 3 busy, 0 stopping\n/);
  for (const instance of busy.instances) assert.match(shown, new RegExp(`\\n  ${instance.name}  busy  up [0-9.hms]+  running [0-9a-f]{8}\\n`));
  // An instance's name is its own: a worker with the shared worker token cannot take it.
  const impostor = spawnKiln(t, ['worker', '--server', server.url, '--platform', 'pooled', '--name', busy.instances[0]!.name], { KILN_WORKER_TOKEN: server.workerToken });
  assert.equal((await impostor.exited).code, 3);
  assert.match(impostor.stderr.join('\n'), /is a pool instance's name: only its own token may use it/);
  writeFileSync(path.join(dir, 'go'), '');
  for (const id of runIds) assert.equal((await followRun(server, id)).run.status, 'succeeded');
  const workers = new Set((await Promise.all(runIds.map((id) => api<{ run: { worker: string } }>(server, 'GET', `/api/runs/${id}`)))).map((r) => r.run.worker));
  assert.equal(workers.size, 3, 'one instance per waiting run');
  // Idle for 1s, each is stopped, exactly once.
  await server.waitForCount(/"msg":"worker instance stopped"/, 3);
  assert.deepEqual((await pools(server))[0]!.instances, []);
  assert.equal(server.stderr.filter((l) => /"why":"idle for .*stopping a worker instance/.test(l)).length, 3);
  assert.equal(server.stderr.filter((l) => /"msg":"starting a worker instance"/.test(l)).length, 3);
  assert.deepEqual(instanceProcesses(ownerOf(server.dataDir)), [], 'no instance process is left');
});

// Without bubblewrap every instance fails to start, the pool rests and the runs wait for ever (by
// design): the test would hang until its timeout, so it needs bwrap.
test('a bwrap pool starts sandboxed instances for waiting runs and stops them when idle', { skip: needs('bwrap') }, async (t) => {
  const server = await withPools(t, [
    'pools:', '  - name: boxed', '    provider: bwrap', '    platform: pooled', '    labels: {tier: sandbox}', '    max: 2', '    idle_timeout: 1s', '    check_interval: 200ms', '',
  ].join('\n'));
  // (The sandbox's /tmp is private, so these jobs cannot wait on a host file: they just run.)
  const script = 'touch /etc/escape 2>/dev/null || echo "etc: denied"';
  const runIds: string[] = [];
  for (const name of ['x', 'y']) {
    assert.equal((await kiln(server, ['schedule', name, '--command', script, '--platform', 'pooled', '--label', 'tier=sandbox', '--period', 'never'])).code, 0);
    runIds.push((await kiln(server, ['execute', name])).stdout.trim());
  }
  for (const id of runIds) {
    const { lines, run } = await followRun(server, id);
    assert.equal(run.status, 'succeeded', lines.join('\n'));
    assert.match(lines[0]!, /^kiln: sandbox bwrap/);
    assert.ok(lines.includes('etc: denied'));
  }
  const started = server.stderr.filter((l) => /"msg":"starting a worker instance"/.test(l)).length;
  assert.ok(started >= 1 && started <= 2, `${started} instances for 2 runs (max 2)`);
  await server.waitForCount(/"msg":"worker instance stopped"/, started);
  assert.deepEqual(instanceProcesses(ownerOf(server.dataDir)), []);
});

test('idle_timeout 0 gives every run a fresh instance', async (t) => {
  const server = await withPools(t, ['pools:', '  - name: fresh', '    provider: process', '    platform: pooled', '    max: 2', '    idle_timeout: 0', ''].join('\n'));
  // The job looks for a worker token in the environment of each of its ancestors (its worker among them).
  const script = [
    'p=$$; found=0',
    'while [ "$p" -gt 1 ]; do',
    "  if tr '\\0' '\\n' < /proc/$p/environ | grep -q '^KILN_WORKER_TOKEN='; then found=1; fi",
    "  p=$(awk '/^PPid:/ {print $2}' /proc/$p/status)",
    'done',
    'echo "token in ancestors: $found"',
  ].join('\n');
  assert.equal((await kiln(server, ['schedule', 'once', '--command', script, '--platform', 'pooled', '--period', 'never'])).code, 0);
  const workers: string[] = [];
  for (let i = 0; i < 3; i += 1) {
    const runId = (await kiln(server, ['execute', 'once'])).stdout.trim();
    const { lines, run } = await followRun(server, runId);
    assert.equal(run.status, 'succeeded', lines.join('\n'));
    assert.deepEqual(lines, ['token in ancestors: 0'], 'the instance got its token on a pipe, not in its environment');
    workers.push((await api<{ run: { worker: string } }>(server, 'GET', `/api/runs/${runId}`)).run.worker);
  }
  assert.equal(new Set(workers).size, 3, `three runs, three instances: ${workers.join(', ')}`);
  await server.waitForCount(/"msg":"worker instance stopped"/, 3);
  assert.deepEqual(instanceProcesses(ownerOf(server.dataDir)), []);
});

test('a pool whose options name the job makes one instance per run, and each takes only its own run', async (t) => {
  const server = await withPools(t, [
    'pools:', '  - name: per-job', '    provider: process', '    platform: pooled', '    max: 2', '    idle_timeout: 10m',
    '    options:', '      args: ["--label", "made-for=%%JOB%%-%%FLAVOUR%%"]', '',
  ].join('\n'));
  const dir = tempDir(t);
  const runIds: string[] = [];
  for (const [name, flavour] of [['alpha', 'a'], ['beta', 'b']]) {
    const script = `touch ${dir}/${name}.started; while [ ! -e ${dir}/go ]; do sleep 0.05; done`;
    assert.equal((await kiln(server, ['schedule', name!, '--command', script, '--platform', 'pooled', '--period', 'never', '--var', `FLAVOUR=${flavour}`])).code, 0);
    runIds.push((await kiln(server, ['execute', name!])).stdout.trim());
  }
  await server.waitFor(/"runId":"[^"]+","job":"alpha","worker":"per-job-[^"]+","msg":"run dispatched"/);
  await server.waitFor(/"runId":"[^"]+","job":"beta","worker":"per-job-[^"]+","msg":"run dispatched"/);
  // While both run: each instance has the labels made from its run's job and variables.
  const { workers } = await api<{ workers: { name: string; labels: Record<string, string>; running: string[] }[] }>(server, 'GET', '/api/workers');
  const labelsByRun = new Map(workers.flatMap((w) => w.running.map((runId) => [runId, w.labels] as const)));
  assert.deepEqual([labelsByRun.get(runIds[0]!), labelsByRun.get(runIds[1]!)], [{ 'made-for': 'alpha-a' }, { 'made-for': 'beta-b' }], JSON.stringify(workers));
  writeFileSync(path.join(dir, 'go'), '');
  for (const runId of runIds) assert.equal((await followRun(server, runId)).run.status, 'succeeded');
  // Each run ran on the instance started for it (the server logs which run an instance is for).
  const startedFor = new Map(server.stderr.filter((l) => /"msg":"starting a worker instance"/.test(l)).map((l) => {
    const { runId, instance } = JSON.parse(l) as { runId: string; instance: string };
    return [runId, instance];
  }));
  assert.equal(startedFor.size, 2, 'one instance per run');
  for (const runId of runIds) {
    assert.equal((await api<{ run: { worker: string } }>(server, 'GET', `/api/runs/${runId}`)).run.worker, startedFor.get(runId));
  }
  // Not needed once their runs are done, whatever the idle timeout: each was made for one run.
  await server.waitForCount(/"msg":"worker instance stopped"/, 2);
});

test('instances that fail to start quarantine the pool; the run stays queued, is shown why, and can be cancelled', async (t) => {
  // The first instance cannot parse its options; the pool then rests before trying again.
  const server = await withPools(t, [
    'pools:', '  - name: broken', '    provider: process', '    platform: pooled', '    max: 2', '    start_timeout: 2s', '    check_interval: 200ms',
    '    options:', '      args: ["--capacity", "none"]', '',
  ].join('\n'));
  assert.equal((await kiln(server, ['schedule', 'stuck', '--command', 'echo never', '--platform', 'pooled', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'stuck'])).stdout.trim();
  await server.waitFor(/"msg":"pool quarantined after repeated start failures"/);
  const [pool] = await pools(server);
  assert.ok(pool!.quarantinedUntil, 'quarantined');
  assert.match(pool!.lastError ?? '', /exited 2 before its worker connected \(kiln: bad --capacity 'none'/);
  const shown = await kiln(server, ['workers']);
  assert.match(shown.stdout, /pool broken \(process, pooled, max 2\): 0 starting.*; quarantined until .*; last error: .*bad --capacity/);
  const run = await api<{ run: { status: string } }>(server, 'GET', `/api/runs/${runId}`);
  assert.equal(run.run.status, 'queued', 'the run waits');
  assert.match((await kiln(server, ['show', runId])).stdout, /pool-start-failed .*bad --capacity/);
  // Why it waits, as the dashboard and `kiln queues` say it.
  const queues = await api<{ queues: { platform: string; runs: { run: { id: string }; waiting: { kind: string; text: string } }[] }[] }>(server, 'GET', '/api/queues');
  const waiting = queues.queues.find((q) => q.platform === 'pooled')!.runs.find((r) => r.run.id === runId)!.waiting;
  assert.equal(waiting.kind, 'pool-quarantined');
  assert.match(waiting.text, /^pool broken is quarantined after failed starts until \S+ \(last error: .*bad --capacity/);
  assert.equal((await kiln(server, ['cancel', runId])).code, 0);
  const { lines, run: cancelled } = await followRun(server, runId);
  assert.equal(cancelled.status, 'cancelled');
  assert.match(lines[0] ?? '', /^kiln: pool broken could not start a worker: .*bad --capacity/, 'the console says why it waits');
  assert.ok(lines.some((line) => /the pool rests for 10s after 2 failures in a row, and this run stays queued$/.test(line)), lines.join('\n'));
});

test('an instance whose worker never connects is stopped after start_timeout', async (t) => {
  const server = await withPools(t, [
    'pools:', '  - name: lost', '    provider: process', '    platform: pooled', '    max: 1', '    start_timeout: 1s', '    check_interval: 200ms',
    '    options:', '      args: ["--server", "http://127.0.0.1:9"]', '',
  ].join('\n'));
  assert.equal((await kiln(server, ['schedule', 'waits', '--command', 'true', '--platform', 'pooled', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'waits'])).stdout.trim();
  // Two such starts, each stopped once; then the pool rests and nothing of it is left running.
  await server.waitFor(/did not connect within 1s.*"msg":"pool quarantined after repeated start failures"/);
  await server.waitForCount(/"msg":"worker instance stopped"/, 2);
  assert.equal(server.stderr.filter((l) => /"msg":"starting a worker instance"/.test(l)).length, 2);
  assert.deepEqual(instanceProcesses(ownerOf(server.dataDir)), [], 'the stopped instances are gone');
  assert.equal((await kiln(server, ['cancel', runId])).code, 0);
  const { lines } = await followRun(server, runId);
  assert.match(lines[0] ?? '', /^kiln: pool lost could not start a worker: its worker did not connect within 1s$/, 'the waiting run is told');
});

test('min_idle keeps instances ready; a server SIGKILLed with instances running leaves none behind', async (t) => {
  const dataDir = tempDir(t);
  const yaml = ['pools:', '  - name: survivor', '    provider: process', '    platform: pooled', '    max: 2', '    idle_timeout: -1', '    min_idle: 2', ''].join('\n');
  const server = await withPools(t, yaml, dataDir);
  await server.waitForCount(/"msg":"worker connected"/, 2);
  const leftovers = instanceProcesses(ownerOf(dataDir));
  assert.equal(leftovers.length, 2, 'two idle instances with nothing queued');
  await server.kill('SIGKILL');
  // They stop on their own (the pipe to their server closed); a restarted server removes any left.
  await withPools(t, yaml, dataDir);
  await gone(leftovers);
});

/** The owner id of the pools of the server on `dataDir`. */
function ownerOf(dataDir: string): string {
  return readFileSync(path.join(dataDir, 'pool-owner.id'), 'utf8').trim();
}

