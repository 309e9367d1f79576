/** A shell started ahead becomes the job: what the job sees must be what a fresh spawn gives it. */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { test, type TestContext } from 'node:test';
import { jobProgram, prepareSpareShell, spareShellReady, takeSpareShell } from '../../src/worker/sandbox/spare-shell.js';

async function readAll(stream: Readable): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += String(chunk);
  return text;
}

function workDir(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-spare-shell-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** What the job prints about itself: its env (sorted), cwd, stdin, open fds, argv and process group. */
const PROBE = ['/bin/sh', '-c', 'env | sort; pwd; readlink /proc/self/fd/0; ls /proc/$$/fd | sort -n | tr "\\n" " "; echo; echo "$0 $1"; [ "$(ps -o pgid= -p $$ | tr -d " ")" = "$$" ] && echo leader', 'probe', "it's"];

const env = { PATH: '/usr/bin:/bin', HOME: '/nowhere', LANG: 'C.UTF-8', QUOTED: `it's "quoted" $HOME \`x\` \\ ;`, MULTI: 'one\ntwo\n', EMPTY: '', OLDPWD: 'mine' };

test('a job run by the spare shell sees what a fresh spawn shows it: env, cwd, stdin, fds, argv, its own group', async (t) => {
  const dir = workDir(t);
  prepareSpareShell();
  assert.equal(await spareShellReady(), true);
  const shell = await takeSpareShell(jobProgram(PROBE, dir, env)!);
  assert.ok(shell);
  const [viaSpare] = await Promise.all([readAll(shell.output), new Promise((resolve) => shell.child.once('exit', resolve))]);

  const direct = spawn(PROBE[0]!, PROBE.slice(1), { cwd: dir, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const [viaSpawn] = await Promise.all([readAll(direct.stdout!), new Promise((resolve) => direct.once('exit', resolve))]);
  // Open fds included: none of the spare shell's own reaches the job.
  assert.equal(viaSpare, viaSpawn);
  assert.match(viaSpare, /^leader$/m);
  assert.match(viaSpare, /^\/dev\/null$/m);
});

test('the job\'s exit and death by signal are the command\'s own', async (t) => {
  const dir = workDir(t);
  prepareSpareShell();
  await spareShellReady();
  const exited = await takeSpareShell(jobProgram(['/bin/sh', '-c', 'exit 7'], dir, env)!);
  assert.deepEqual(await new Promise((resolve) => exited!.child.once('exit', (code, signal) => resolve([code, signal]))), [7, null]);
  prepareSpareShell();
  await spareShellReady();
  const killed = await takeSpareShell(jobProgram(['/bin/sh', '-c', 'kill -TERM $$; sleep 5'], dir, env)!);
  assert.deepEqual(await new Promise((resolve) => killed!.child.once('exit', (code, signal) => resolve([code, signal]))), [null, 'SIGTERM']);
});

test('an env name sh cannot export is not given to the spare shell (the job is spawned as before)', () => {
  assert.equal(jobProgram(['/bin/true'], '/', { 'A-B': '1' }), undefined);
  assert.equal(jobProgram(['/bin/true'], '/', { '1A': '1' }), undefined);
  assert.ok(jobProgram(['/bin/true'], '/', { _A1: '1' }));
});

test('no spare shell: take says so, and nothing waits', async () => {
  assert.equal(await takeSpareShell('exit 0\n'), undefined);
});

test('a spare shell does not keep the worker alive, and ends with it', { timeout: 60_000 }, async () => {
  const script = `import { execFileSync } from 'node:child_process';
import { prepareSpareShell, spareShellReady } from ${JSON.stringify(new URL('../../src/worker/sandbox/spare-shell.ts', import.meta.url).href)};
prepareSpareShell();
await spareShellReady();
console.log(execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' }));`;
  // Exits by itself with the spare waiting (the test times out if not).
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
  const line = stdout.split('\n').find((l) => l.includes('read -r program'));
  assert.ok(line, stdout);
  const pid = Number(line.trim().split(' ')[0]);
  // Its stdin reached EOF when the worker went: the shell exits (waited for, not timed).
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  while (alive()) await new Promise((resolve) => setTimeout(resolve, 20));
});
