/** The executor with a scripted sandbox: failures of the job's machinery become results, never throws. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { test, type TestContext } from 'node:test';
import pino from 'pino';
import type { ConsoleLine, RunAssignment } from '../../src/protocol/index.js';
import { startExecution } from '../../src/worker/executor.js';
import type { Sandbox, SandboxExit, SandboxLauncher } from '../../src/worker/sandbox/sandbox.js';

const run: RunAssignment = {
  id: '00000000-0000-4000-8000-000000000001', job: 'build', platform: 'testos', attempt: 1,
  script: 'echo hi\n', env: {}, timeoutMs: 60_000, firstSeq: 0, artifacts: [], artifactsOnFailure: false, sandbox: {},
};

/** A sandbox whose output and exit the test writes. */
function scriptedSandbox(play: (output: PassThrough, exit: (e: SandboxExit) => void) => void): SandboxLauncher {
  const signals: string[] = [];
  return {
    // 'none': a plain sandbox, whose runs get no console header.
    kind: 'none',
    describe: () => 'scripted',
    async start(): Promise<Sandbox> {
      const output = new PassThrough();
      let exit!: (e: SandboxExit) => void;
      const exited = new Promise<SandboxExit>((resolve) => (exit = resolve));
      // Played once the executor has the sandbox, as a real job's output comes after its start.
      setImmediate(() => play(output, exit));
      return { output, interrupt: () => signals.push('TERM'), terminate: () => signals.push('KILL'), wait: () => exited };
    },
  };
}

function workRoot(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-exec-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function options(root: string, sandbox: SandboxLauncher, lines: ConsoleLine[]) {
  return { workRoot: root, sandbox, killGraceMs: 10, jobPath: '/usr/bin:/bin', log: pino({ level: 'silent' }), onLine: (l: ConsoleLine) => lines.push(l) };
}

test('output that cannot be read is reported in the console, and the run still ends with its exit', async (t) => {
  const lines: ConsoleLine[] = [];
  const sandbox = scriptedSandbox((output, exit) => {
    output.write('first\n');
    output.destroy(new Error('EIO: i/o error, read'));
    exit({ exitCode: 0, signal: null });
  });
  const root = workRoot(t);
  const execution = startExecution(run, options(root, sandbox, lines));
  const report = await execution.done;
  assert.deepEqual(lines.map((l) => l.text), ['first', "kiln: cannot read the job's output: EIO: i/o error, read"]);
  assert.deepEqual(report, { result: { kind: 'exited', code: 0 } });
  await execution.cleaned;
  assert.deepEqual(readdirSync(root), [], 'the work dir is removed after the report');
});

test('output that cannot be read leaves the run without artifacts (robur\'s rule): they are not even looked at', async (t) => {
  const lines: ConsoleLine[] = [];
  const sandbox = scriptedSandbox((output, exit) => {
    output.write('first\n');
    output.destroy(new Error('EIO: i/o error, read'));
    exit({ exitCode: 0, signal: null });
  });
  let asked = 0;
  const keepArtifacts = async () => {
    asked += 1;
    return [];
  };
  const report = await startExecution(run, { ...options(workRoot(t), sandbox, lines), keepArtifacts }).done;
  assert.equal(asked, 0, 'no artifact was collected');
  assert.deepEqual(lines.map((l) => l.text), [
    'first', "kiln: cannot read the job's output: EIO: i/o error, read", "kiln: no artifacts kept: the job's output could not be read (EIO: i/o error, read)",
  ]);
  assert.deepEqual(report, { result: { kind: 'exited', code: 0 } }, 'the job\'s own result, as robur reports it');
});

test('a work root that cannot take a work dir ends the run aborted with the reason', async (t) => {
  const file = path.join(workRoot(t), 'not-a-dir');
  writeFileSync(file, '');
  const report = await startExecution(run, options(file, scriptedSandbox(() => {}), [])).done;
  assert.equal(report.result.kind, 'aborted');
  assert.match((report.result as { reason: string }).reason, /^cannot create the work dir: ENOTDIR/);
});

test('lines are numbered from the attempt\'s first seq and stamped', async (t) => {
  const lines: ConsoleLine[] = [];
  const sandbox = scriptedSandbox((output, exit) => {
    output.end('a\nb\n');
    exit({ exitCode: 3, signal: null });
  });
  const report = await startExecution({ ...run, firstSeq: 7 }, options(workRoot(t), sandbox, lines)).done;
  assert.deepEqual(lines.map((l) => [l.seq, l.text]), [[7, 'a'], [8, 'b']]);
  assert.ok(lines.every((l) => l.ts > 0));
  assert.deepEqual(report, { result: { kind: 'exited', code: 3 } });
});

test('stop: SIGTERM first, SIGKILL after the grace, and the report says why', async (t) => {
  const signals: string[] = [];
  let stopNow!: () => void;
  // A job that ignores SIGTERM and dies of SIGKILL.
  const sandbox: SandboxLauncher = {
    kind: 'none',
    describe: () => 'stubborn',
    async start(): Promise<Sandbox> {
      const output = new PassThrough();
      let exit!: (e: SandboxExit) => void;
      const exited = new Promise<SandboxExit>((resolve) => (exit = resolve));
      queueMicrotask(() => stopNow());
      return {
        output,
        interrupt: () => signals.push('TERM'),
        terminate: () => {
          signals.push('KILL');
          output.end();
          exit({ exitCode: null, signal: 'SIGKILL' });
        },
        wait: () => exited,
      };
    },
  };
  const execution = startExecution(run, options(workRoot(t), sandbox, []));
  stopNow = () => execution.stop('cancelled by dave', 'cancel');
  const report = await execution.done;
  assert.deepEqual(signals, ['TERM', 'KILL']);
  assert.deepEqual(report, { result: { kind: 'aborted', reason: 'cancelled by dave' }, stoppedBy: 'cancel' });
});
