/**
 * Robur's error matrix (SPEC): unreadable output is reported in the console and the run ends
 * without artifacts, with the job's own result. A real worker (not root: root reads any file), a
 * real job that leaves a file it cannot read back.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { api, followRun, KILN_BIN, kiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';

/** The uid/gid a root test runs the worker as, so that a mode-000 file is really unreadable. */
const NOBODY = 65534;

/** Starts `kiln worker` as a user that file modes apply to: this user, or nobody when the test runs as root. */
async function startUnprivilegedWorker(t: TestContext, server: ServerProcess, args: string[]): Promise<boolean> {
  const root = process.getuid?.() === 0;
  if (root) {
    try {
      execFileSync('setpriv', ['--version'], { stdio: 'pipe' });
    } catch {
      const why = 'running as root and setpriv (util-linux) is missing: a job\'s file cannot be made unreadable to the worker';
      if (process.env.KILN_TEST_REQUIRE_ALL === '1') throw new Error(`${why}; KILN_TEST_REQUIRE_ALL forbids skipping`);
      t.skip(why);
      return false;
    }
  }
  const workDir = tempDir(t, 'kiln-unreadable-');
  chmodSync(workDir, 0o777);
  if (root) chownSync(workDir, NOBODY, NOBODY);
  const argv = [process.execPath, KILN_BIN, 'worker', '--server', server.url, '--work-dir', workDir, '--spool-dir', path.join(workDir, 'spool'), ...args];
  const command = root ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...argv] : argv;
  const child = spawn(command[0]!, command.slice(1), {
    env: { ...process.env, KILN_WORKER_TOKEN: server.workerToken, HOME: workDir, TMPDIR: workDir, KILN_LOG_LEVEL: 'info' },
    stdio: 'ignore',
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await server.waitFor(/"msg":"worker connected"/);
  return true;
}

test('a job whose output file cannot be read ends with its own result and no artifacts; the console says why', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  if (!(await startUnprivilegedWorker(t, server, ['--name', 'plain', '--platform', 'unreadable-os']))) return;
  const script = 'echo fine > a.txt; mkdir out; echo secret > out/b.bin; chmod 000 out/b.bin; echo also > z.txt; echo built';
  assert.equal((await kiln(server, ['schedule', 'sealed', '--command', script, '--platform', 'unreadable-os', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'sealed'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.resultText, 'exited 0', 'the job\'s own result, as robur reports it');
  assert.ok(lines.includes('built'));
  assert.ok(lines.some((line) => /^kiln: output file out\/b\.bin cannot be read \(.*EACCES.*\); no artifacts kept$/.test(line)), lines.join('\n'));

  const stored = await api<{ artifacts: unknown[] }>(server, 'GET', `/api/runs/${runId}/artifacts`);
  assert.deepEqual(stored.artifacts, [], 'not even the readable files are kept');
  const { events } = await api<{ events: { kind: string; detail: { files: { path: string; reason: string }[] } }[] }>(server, 'GET', `/api/runs/${runId}/events`);
  const skipped = events.find((e) => e.kind === 'artifacts-skipped')?.detail.files ?? [];
  assert.deepEqual(skipped.map((f) => f.path), ['a.txt', 'out/b.bin', 'z.txt']);
  assert.match(skipped[1]!.reason, /^cannot be read: .*EACCES/);
  assert.equal(skipped[0]!.reason, 'not kept: output file out/b.bin cannot be read');
});
