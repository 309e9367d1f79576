/**
 * Per-run resource limits: the real cgroup v1 of the host (memory, pids), rlimits in the wrapper
 * shell (cpu time), and cgroup v2 and the rlimit fallback against fake cgroup trees. Every group
 * and process made here is removed or killed when its test ends; waits are on exit events.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, existsSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { detectLimits, type LimitSupport, type RunLimits } from '../../src/worker/sandbox/resource-limits.js';
import { tempDir } from '../helpers/processes.js';
import { skipUnless, whyMissing } from '../helpers/requirements.js';

const MiB = 1024 * 1024;
const CGROUP_ROOT = '/sys/fs/cgroup';
/** Not the worker's `kiln`: these tests must not touch a real worker's groups on the same host. */
const PARENT = `kiln-test-${process.pid}`;
const PYTHON = '/usr/bin/python3';

after(() => {
  for (const hierarchy of ['memory', 'pids']) {
    try {
      rmdirSync(join(CGROUP_ROOT, hierarchy, PARENT));
    } catch (raw) {
      if ((raw as NodeJS.ErrnoException).code !== 'ENOENT') throw raw;
    }
  }
});

/** The host's v1 hierarchies, or a skip (with why) where they cannot be written. */
function realV1(t: TestContext): LimitSupport | undefined {
  if (skipUnless(t, whyMissing('cgroup'))) return undefined;
  for (const hierarchy of ['memory', 'pids']) {
    const procs = join(CGROUP_ROOT, hierarchy, 'cgroup.procs');
    try {
      accessSync(procs, constants.W_OK);
    } catch (raw) {
      // Not a missing requirement: a cgroup v2 host, whose code the fake-tree tests cover.
      t.skip(`this host has no writable cgroup v1 ${hierarchy} hierarchy (${procs}: ${(raw as Error).message})`);
      return undefined;
    }
  }
  const support = detectLimits({ parentName: PARENT });
  assert.equal(support.mechanism, 'cgroup-v1', support.describe());
  return support;
}

/** Prepares a run whose groups are released when the test ends, whatever happens. */
async function prepare(t: TestContext, support: LimitSupport, runId: string, limits: Parameters<LimitSupport['forRun']>[1]) {
  const run = await support.forRun(`${runId}-${process.pid}`, limits);
  t.after(async () => {
    await run.release();
  });
  return run;
}

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `script` in a wrapper shell that waits on stdin until it has been moved into the run's
 * groups, as the worker's wrapper does before it execs the sandbox.
 */
async function runEntered(t: TestContext, run: RunLimits, script: string): Promise<Finished> {
  const child = own(t, spawn('/bin/sh', ['-c', `read _; ${script}`], { stdio: ['pipe', 'pipe', 'pipe'] }));
  const exit = exited(child);
  await run.enter(child.pid!);
  child.stdin!.end('\n');
  return exit;
}

/** Kills `child` when the test ends if it is still running. */
function own(t: TestContext, child: ChildProcess): ChildProcess {
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

/** Waits for `child` to exit and for its output pipes (if any) to close. */
async function exited(child: ChildProcess): Promise<Finished> {
  const text = { stdout: '', stderr: '' };
  const closed: Promise<unknown>[] = [];
  for (const name of ['stdout', 'stderr'] as const) {
    const stream = child[name];
    if (!stream) continue;
    stream.setEncoding('utf8').on('data', (chunk: string) => (text[name] += chunk));
    closed.push(once(stream, 'close'));
  }
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  await Promise.all(closed);
  return { code, signal, ...text };
}

/** Alive = has a /proc entry that is not a zombie (orphans are reaped by whoever is pid 1). */
function isAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (raw) {
    if ((raw as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw raw;
  }
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

test('cgroup v1: a job over its memory limit is OOM-killed and reported; one under it is not', async (t) => {
  const support = realV1(t);
  if (!support) return;
  if (skipUnless(t, !existsSync(PYTHON) && `needs ${PYTHON} to allocate memory (apt-get install python3)`)) return;

  const over = await prepare(t, support, 'mem-over', { memoryBytes: 64 * MiB });
  const group = join(CGROUP_ROOT, 'memory', PARENT, `mem-over-${process.pid}`);
  assert.equal(readFileSync(join(group, 'memory.limit_in_bytes'), 'utf8').trim(), String(64 * MiB));
  if (existsSync(join(group, 'memory.memsw.limit_in_bytes'))) {
    assert.equal(readFileSync(join(group, 'memory.memsw.limit_in_bytes'), 'utf8').trim(), String(64 * MiB), 'swap cannot dodge the limit');
  }
  const hog = await runEntered(t, over, `exec ${PYTHON} -c "x = bytearray(512*1024*1024)"`);
  assert.equal(hog.signal, 'SIGKILL', `the hog ended with ${hog.code}/${hog.signal}`);
  assert.equal(await over.oomKilled(), true);
  t.diagnostic(`memory.oom_control: ${readFileSync(join(group, 'memory.oom_control'), 'utf8').trim().replace(/\n/g, ', ')}`);
  assert.deepEqual(await over.release(), []);

  const under = await prepare(t, support, 'mem-under', { memoryBytes: 64 * MiB });
  const modest = await runEntered(t, under, `exec ${PYTHON} -c "x = bytearray(8*1024*1024)"`);
  assert.deepEqual([modest.code, modest.signal], [0, null]);
  assert.equal(await under.oomKilled(), false);
});

test('cgroup v1: a pids limit stops forks, and release kills what is left and removes the groups', async (t) => {
  const support = realV1(t);
  if (!support) return;
  const runId = `pids-${process.pid}`;
  const run = await support.forRun(runId, { pids: 20 });
  t.after(async () => {
    await run.release();
  });
  const dirs = ['memory', 'pids'].map((h) => join(CGROUP_ROOT, h, PARENT, runId));
  assert.equal(readFileSync(join(dirs[1]!, 'pids.max'), 'utf8').trim(), '20');

  // Each started sleep prints its pid; the shell exits (without waiting) once the loop ends or a fork fails.
  const shell = await runEntered(t, run, 'i=0; while [ $i -lt 100 ]; do sleep 5 >/dev/null 2>&1 & echo $!; i=$((i+1)); done; exit 0');
  const sleeps = shell.stdout.split('\n').filter(Boolean).map(Number);
  assert.ok(sleeps.length >= 1 && sleeps.length < 25, `${sleeps.length} sleeps started under pids.max 20`);
  assert.match(shell.stderr, /Cannot fork/);
  assert.ok(sleeps.some(isAlive), 'the orphaned sleeps are still running before release');

  assert.deepEqual(await run.release(), [], 'every group removed');
  for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} is gone`);
  assert.deepEqual(sleeps.filter(isAlive), [], 'no process of the run outlives it');
  t.diagnostic(`${sleeps.length} of 100 sleeps started; the shell ended with ${shell.code}/${shell.signal}`);
});

test('cpu time: the prelude ulimit ends a busy loop by SIGXCPU', async (t) => {
  // CPU time is an rlimit on every host; the rlimit-only support shows it needs no cgroup.
  const support = detectLimits({ cgroupRoot: tempDir(t, 'kiln-no-cgroup-') });
  const run = await support.forRun('cpu', { cpuSeconds: 1 });
  const script = [...run.shellPrelude, 'exec /bin/sh -c "while :; do :; done"'].join('\n');
  const started = Date.now();
  const child = own(t, spawn('/bin/sh', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'] }));
  // Without the limit the loop never ends (the test would time out); the signal says the limit ended it.
  const { signal } = await exited(child);
  assert.ok(signal === 'SIGXCPU' || signal === 'SIGKILL', `ended by ${signal}`);
  t.diagnostic(`ended by ${signal} after ${Date.now() - started} ms`);
});

test('cgroup v2 (fake tree): detection enables the controllers and a run gets its own leaf group', async (t) => {
  const root = tempDir(t, 'kiln-cgroup-v2-');
  // What the kernel shows at a v2 root; the files of new groups are written by the code under test.
  writeFileSync(join(root, 'cgroup.controllers'), 'cpu io memory pids\n');
  writeFileSync(join(root, 'cgroup.subtree_control'), '');
  writeFileSync(join(root, 'cgroup.procs'), '');

  const support = detectLimits({ cgroupRoot: root });
  assert.equal(support.mechanism, 'cgroup-v2');
  assert.equal(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), '+memory +pids');
  assert.equal(readFileSync(join(root, 'kiln', 'cgroup.subtree_control'), 'utf8'), '+memory +pids');
  assert.equal(support.describe(), `limits by cgroup v2 (memory, pids in ${root}/kiln) + rlimit (cpu time, per process)`);

  const noGroup = await support.forRun('cpu-only', { cpuSeconds: 2 });
  assert.equal(existsSync(join(root, 'kiln', 'cpu-only')), false, 'no group without a memory or pids limit');
  assert.equal(noGroup.shellPrelude.length, 1);

  const run = await support.forRun('run-1', { memoryBytes: 64 * MiB, pids: 20, cpuSeconds: 3 });
  const dir = join(root, 'kiln', 'run-1');
  assert.equal(readFileSync(join(dir, 'memory.max'), 'utf8'), String(64 * MiB));
  assert.equal(readFileSync(join(dir, 'pids.max'), 'utf8'), '20');
  assert.deepEqual(run.shellPrelude, [
    "ulimit -S -t 3 && ulimit -H -t 4 || { echo 'kiln: cannot set the cpu time limit' >&2; exit 125; }",
  ]);

  const child = own(t, spawn('sleep', ['30'], { stdio: 'ignore' }));
  const exit = exited(child);
  await run.enter(child.pid!);
  assert.equal(readFileSync(join(dir, 'cgroup.procs'), 'utf8'), String(child.pid));

  assert.equal(await run.oomKilled(), false, 'no memory.events yet');
  writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 7\noom 1\noom_kill 0\n');
  assert.equal(await run.oomKilled(), false, 'hitting the limit is not a kill');
  writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n');
  assert.equal(await run.oomKilled(), true);

  // A fake group is a plain directory with files in it, so rmdir fails: release reports it.
  assert.deepEqual(await run.release(), [dir]);
  assert.equal((await exit).signal, 'SIGKILL', 'release killed the process in the group');
});

test('no usable cgroup: memory falls back to ulimit -v, and a pids limit is refused clearly', async (t) => {
  const support = detectLimits({ cgroupRoot: tempDir(t, 'kiln-no-cgroup-') });
  assert.equal(support.mechanism, 'rlimit');
  assert.match(support.describe(), /^limits by rlimit only \(memory as address space per process, cpu time per process; no pids limit: /);
  await assert.rejects(support.forRun('r', { pids: 10, memoryBytes: 64 * MiB }), {
    message: /^this worker cannot limit processes: no writable cgroup \(pids controller\); cgroup v2: .*; cgroup v1: /,
  });

  const run = await support.forRun('r', { memoryBytes: 64 * MiB, cpuSeconds: 2.5 });
  // The prelude is valid for the wrapper's /bin/sh and sets exactly these limits.
  const script = [...run.shellPrelude, 'ulimit -v; ulimit -S -t; ulimit -H -t'].join('\n');
  const shell = await exited(own(t, spawn('/bin/sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] })));
  assert.deepEqual([shell.code, shell.stdout, shell.stderr], [0, '65536\n3\n4\n', '']);
  await run.enter(process.pid); // no group: a no-op that must not touch the test's own process
  assert.equal(await run.oomKilled(), false);
  assert.deepEqual(await run.release(), []);

  // A v2 root without the pids controller is no v2 for Kiln either.
  const partial = tempDir(t, 'kiln-cgroup-v2-partial-');
  writeFileSync(join(partial, 'cgroup.controllers'), 'cpu memory\n');
  const fallback = detectLimits({ cgroupRoot: partial });
  assert.equal(fallback.mechanism, 'rlimit');
  assert.match(fallback.describe(), /cgroup v2: controller pids not offered/);
});

test('limits that no kernel would take are refused before anything is created', async (t) => {
  const support = detectLimits({ cgroupRoot: tempDir(t, 'kiln-no-cgroup-') });
  await assert.rejects(support.forRun('r', { memoryBytes: -1 }), { message: 'resource limit memoryBytes must be a positive number, got -1' });
  await assert.rejects(support.forRun('r', { cpuSeconds: Number.NaN }), { message: 'resource limit cpuSeconds must be a positive number, got NaN' });
});
