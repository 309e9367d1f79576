/** Faults with real processes: cancel, timeouts, a dying server, a cut connection, shutdowns, a worker that cannot keep output. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { test, type TestContext } from 'node:test';
import { followRun, isAlive, kiln, spawnKiln, startProxy, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { skipUnless, whyMissing } from '../helpers/requirements.js';

const never = ['--platform', 'testos', '--period', 'never'];

test('cancel stops a running job and its whole process tree; the run ends cancelled with who did it', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  const dir = tempDir(t);
  const script = `sleep 60 & echo $! > ${dir}/child.pid; echo started; wait`;
  assert.equal((await kiln(server, ['schedule', 'long', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'long'])).stdout.trim();
  const observing = kiln(server, ['observe', runId]);
  await worker.waitFor(/run started/);
  const cancelled = await kiln(server, ['cancel', runId.slice(0, 8)]);
  assert.equal(cancelled.code, 0, cancelled.stderr);
  assert.match(cancelled.stdout, /^cancelling /);
  const observed = await observing;
  assert.equal(observed.code, 1);
  // The admin.token's name, with the CLI's login name as a note.
  assert.match(observed.stdout, /kiln: run .* cancelled: aborted: cancelled by admin \(as [^\s()]+\)\n$/);
  assert.equal(isAlive(Number(readFileSync(`${dir}/child.pid`, 'utf8'))), false, 'the background child was killed too');

  const again = await kiln(server, ['cancel', runId]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^kiln: run .* has already ended \(cancelled\); nothing to cancel\n$/);
});

test('a job that ignores SIGTERM is killed after the grace and ends timed-out; so is one that goes quiet', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--kill-grace', '300ms']);
  assert.equal((await kiln(server, ['schedule', 'armored', '--command', "trap '' TERM; echo armored; sleep 30", ...never, '--timeout', '1s'])).code, 0);
  const armored = await kiln(server, ['observe', (await kiln(server, ['execute', 'armored'])).stdout.trim()]);
  assert.equal(armored.code, 1);
  assert.match(armored.stdout, /^armored\nkiln: timed out after 1s; stopping the job\nkiln: run .* timed-out: aborted: timed out after 1s\n$/);

  assert.equal((await kiln(server, ['schedule', 'quiet', '--command', 'echo hi; sleep 30', ...never, '--idle-timeout', '1s'])).code, 0);
  const quiet = await kiln(server, ['observe', (await kiln(server, ['execute', 'quiet'])).stdout.trim()]);
  assert.equal(quiet.code, 1);
  assert.match(quiet.stdout, /^hi\nkiln: no output for 1s; stopping the job\nkiln: run .* timed-out: aborted: no output for 1s\n$/);
});

test('SIGKILL the server mid-run: its worker keeps the job going, re-attaches to the restarted server, and no line is lost or doubled', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  const dir = tempDir(t);
  // The job waits for the test to say go, so the server is surely dead while it prints.
  const script = `echo before; while [ ! -e ${dir}/go ]; do sleep 0.05; done; for i in $(seq 1 50); do echo "line $i"; done`;
  assert.equal((await kiln(server, ['schedule', 'steady', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'steady'])).stdout.trim();
  await worker.waitFor(/run started/);
  // An observer across the crash: it picks the stream up again after the last line it printed.
  const observer = spawnKiln(t, ['observe', runId], { KILN_SERVER: server.url, KILN_TOKEN: server.adminToken });
  const printed: string[] = [];
  observer.child.stdout!.on('data', (chunk: Buffer) => printed.push(chunk.toString()));
  await observer.waitFor(/^before$/);
  await server.kill('SIGKILL');
  const mark = worker.stderr.length;
  await worker.waitFor(/not connected to the server/, mark);
  writeFileSync(`${dir}/go`, '');
  const restarted = await startServer(t, { dataDir: server.dataDir, port: Number(new URL(server.url).port) });
  await worker.waitFor(/"resumed":1.*connected to the server/, mark);
  const { lines, run } = await followRun(restarted, runId);
  assert.equal(run.status, 'succeeded');
  assert.deepEqual(lines, ['before', ...Array.from({ length: 50 }, (_, i) => `line ${i + 1}`)]);
  const shown = JSON.parse((await kiln(restarted, ['show', runId, '--json'])).stdout);
  assert.equal(shown.run.attempt, 1, 'the same attempt carried on: the job ran once');
  assert.equal((await observer.exited).code, 0, observer.stderr.join('\n'));
  assert.match(observer.stderr.join('\n'), /reconnecting/);
  assert.equal(printed.join(''), ['before', ...Array.from({ length: 50 }, (_, i) => `line ${i + 1}`), `kiln: run ${runId} succeeded: exited 0`].join('\n') + '\n');
});

test("a worker whose connection is cut for a while re-attaches and nothing is lost", async (t) => {
  const server = await startServer(t);
  const proxy = await startProxy(t, Number(new URL(server.url).port));
  const worker = await startWorker(t, { ...server, url: `http://127.0.0.1:${proxy.port}` }, ['--platform', 'testos']);
  const dir = tempDir(t);
  const script = `echo before; while [ ! -e ${dir}/go ]; do sleep 0.05; done; for i in $(seq 1 20); do echo "line $i"; done`;
  assert.equal((await kiln(server, ['schedule', 'cut', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'cut'])).stdout.trim();
  await worker.waitFor(/run started/);
  const mark = worker.stderr.length;
  proxy.cut();
  await worker.waitFor(/not connected to the server/, mark);
  writeFileSync(`${dir}/go`, '');
  // Let a reconnect attempt fail against the cut proxy before the link comes back.
  await worker.waitFor(/"holding":1.*not connected to the server/, worker.stderr.length);
  proxy.restore();
  await worker.waitFor(/"resumed":1.*connected to the server/, mark);
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded');
  assert.deepEqual(lines, ['before', ...Array.from({ length: 20 }, (_, i) => `line ${i + 1}`)]);
});

test('a worker whose server is down retries at most every half second, and is back once a server listens there again', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  const mark = worker.stderr.length;
  await server.kill('SIGTERM');
  await worker.waitForCount(/not connected to the server/, 6, mark);
  const waits = worker.stderr.slice(mark).filter((line) => /not connected to the server/.test(line)).map((line) => (JSON.parse(line) as { retryInMs: number }).retryInMs);
  // The first follows the server's close saying it shuts down; the rest met nobody listening.
  assert.ok(waits.every((wait) => wait <= 600), `waits: ${waits.join(' ')}`);
  const back = worker.stderr.length;
  await startServer(t, { dataDir: server.dataDir, port: Number(new URL(server.url).port) });
  await worker.waitFor(/"msg":"connected to the server"/, back);
});

test('SIGTERM to a worker lets its running job finish, then it exits 0; past the drain time the job is cancelled', async (t) => {
  const server = await startServer(t);
  const dir = tempDir(t);
  const patient = await startWorker(t, server, ['--platform', 'testos', '--name', 'patient']);
  const script = `echo start; while [ ! -e ${dir}/go ]; do sleep 0.05; done; echo end`;
  assert.equal((await kiln(server, ['schedule', 'finishing', '--command', script, ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'finishing'])).stdout.trim();
  await patient.waitFor(/run started/);
  patient.child.kill('SIGTERM');
  await patient.waitFor(/stopping: no more runs/);
  writeFileSync(`${dir}/go`, '');
  assert.equal((await patient.exited).code, 0);
  const done = await followRun(server, runId);
  assert.equal(done.run.status, 'succeeded');
  assert.deepEqual(done.lines, ['start', 'end']);

  const hasty = await startWorker(t, server, ['--platform', 'testos', '--name', 'hasty', '--drain-timeout', '300ms']);
  assert.equal((await kiln(server, ['schedule', 'endless', '--command', 'echo start; sleep 60', ...never])).code, 0);
  const endless = (await kiln(server, ['execute', 'endless'])).stdout.trim();
  await hasty.waitFor(/run started/);
  hasty.child.kill('SIGTERM');
  assert.equal((await hasty.exited).code, 0);
  const cut = await followRun(server, endless);
  assert.equal(cut.run.status, 'cancelled');
  assert.equal(cut.run.resultText, 'aborted: worker shutting down (drain time over)');
});

test('SIGTERM to the server exits cleanly; its data is intact', async (t) => {
  const server = await startServer(t);
  assert.equal((await kiln(server, ['schedule', 'kept', '--command', 'true', ...never])).code, 0);
  server.child.kill('SIGTERM');
  assert.equal((await server.exited).code, 0);
  const restarted = await startServer(t, { dataDir: server.dataDir });
  assert.equal(JSON.parse((await kiln(restarted, ['jobs', '--json'])).stdout).jobs[0].name, 'kept');
});

test('a worker that can neither send nor keep its output stops the job, reports why, and exits non-zero', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos', '--spool-dir', '/dev/null/spool']);
  assert.equal((await kiln(server, ['schedule', 'chatty', '--command', 'echo hello; sleep 30', ...never])).code, 0);
  const runId = (await kiln(server, ['execute', 'chatty'])).stdout.trim();
  const { run } = await followRun(server, runId);
  assert.equal(run.status, 'failed');
  assert.match(run.resultText ?? '', /^aborted: cannot keep the job output: ENOTDIR/);
  assert.equal((await worker.exited).code, 1);
  assert.match(worker.stderr.join('\n'), /cannot keep the job output; stopping the job/);
});

test('kiln worker refuses a bad drain or grace duration', async (t) => {
  const server = await startServer(t);
  const bad = spawnKiln(t, ['worker', '--server', server.url, '--drain-timeout', 'soon'], { KILN_WORKER_TOKEN: server.workerToken });
  assert.equal((await bad.exited).code, 2);
  assert.match(bad.stderr.join('\n'), /bad --drain-timeout 'soon'/);
  // A token descriptor that is not a number, or that is not open, is a usage error too.
  const cases = [
    [{ KILN_WORKER_TOKEN_FD: 'abc' }, /bad KILN_WORKER_TOKEN_FD 'abc': use an inherited descriptor number/],
    [{ KILN_WORKER_TOKEN_FD: '200' }, /cannot read the worker token from descriptor 200: EBADF/],
    [{ KILN_WORKER_TOKEN_FILE: '/nonexistent/token' }, /cannot read the worker token from \/nonexistent\/token: ENOENT/],
  ] as const;
  for (const [env, said] of cases) {
    const noToken = spawnKiln(t, ['worker', '--server', server.url], env);
    assert.equal((await noToken.exited).code, 2);
    assert.match(noToken.stderr.join('\n'), said);
  }
});

/** Mounts a small tmpfs for the test (root only); undefined where mounting is not allowed. */
function mountTmpfs(t: TestContext, options: string): string | undefined {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-mount-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]).status === 0;
  t.after(() => {
    if (mounted) spawnSync('umount', ['--lazy', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return mounted ? dir : undefined;
}

test("robur's matrix: a read-only or full work root ends the run aborted with the reason, and the worker stays healthy", async (t) => {
  const readOnly = mountTmpfs(t, 'ro,size=1m');
  const full = mountTmpfs(t, 'size=64k');
  if (!readOnly || !full) {
    skipUnless(t, `needs to mount a tmpfs: ${whyMissing('root', 'mount') ?? 'mount -t tmpfs failed'} (CI runs as root)`);
    return;
  }
  // Fill the second one: a dir still fits (it costs no blocks), the script does not.
  spawnSync('dd', ['if=/dev/zero', `of=${full}/filler`, 'bs=4k', 'count=64']);
  const server = await startServer(t);
  const cases: [string, string, RegExp][] = [
    [readOnly, 'ro', /^aborted: cannot create the work dir: EROFS/],
    [full, 'full', /^aborted: cannot write the job script: ENOSPC/],
  ];
  for (const [root, platform, reason] of cases) {
    await startWorker(t, server, ['--platform', platform, '--work-dir', root]);
    assert.equal((await kiln(server, ['schedule', `on-${platform}`, '--command', 'echo hi', '--platform', platform, '--period', 'never'])).code, 0);
    for (let i = 0; i < 2; i += 1) {
      const { run } = await followRun(server, (await kiln(server, ['execute', `on-${platform}`])).stdout.trim());
      assert.equal(run.status, 'failed');
      assert.match(run.resultText ?? '', reason);
    }
  }
  const workers = JSON.parse((await kiln(server, ['workers', '--json'])).stdout).workers;
  assert.deepEqual(workers.map((w: { state: string }) => w.state), ['idle', 'idle'], 'both workers are still connected and idle');
});

test('a job whose child escapes its process group (setsid) still ends; the open output is closed', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--kill-grace', '200ms']);
  const dir = tempDir(t);
  t.after(() => {
    try {
      process.kill(Number(readFileSync(`${dir}/escaped.pid`, 'utf8')), 'SIGKILL');
    } catch {
      // Already gone.
    }
  });
  // The job waits until its child has left the group (it writes its pid from the new session), or
  // the group kill at the job's end could take the child before it escapes.
  const script = `setsid sh -c 'echo $$ > ${dir}/escaped.pid; exec sleep 30' & while [ ! -s ${dir}/escaped.pid ]; do sleep 0.01; done; echo started`;
  assert.equal((await kiln(server, ['schedule', 'escape', '--command', script, '--platform', 'testos', '--period', 'never'])).code, 0);
  const { lines, run } = await followRun(server, (await kiln(server, ['execute', 'escape'])).stdout.trim());
  assert.equal(run.status, 'succeeded');
  assert.deepEqual(lines, ['started', "kiln: the job's output is still open after it exited (a process left its group); closing it"]);
});
