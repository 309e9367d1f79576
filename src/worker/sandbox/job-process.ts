/**
 * Starts a job's command in its own process group, inside its resource limits. With limits to
 * apply, a small wrapper shell waits on its stdin until the worker has moved it into the run's
 * cgroups, applies the rlimits, merges stderr into stdout and execs the command (the sandbox, or
 * the job itself), so every process the job starts is limited, signalled and killed with it.
 * Without any, the command is spawned itself (no shell to start first), with stdin /dev/null and
 * stdout and stderr one channel (merged-output.ts): what the command sees is the same.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { traceStage } from '../../latency-trace.js';
import { takeMergedOutput } from './merged-output.js';
import type { LimitSupport } from './resource-limits.js';
import type { Sandbox, SandboxExit, SandboxSpec } from './sandbox.js';

/** Sends `signal` to every process of the group led by `pid`; a group already gone is fine. */
export function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch (raw) {
    // ESRCH: already gone. EPERM: the id now belongs to someone else's process; not ours to signal.
    const code = (raw as NodeJS.ErrnoException).code;
    if (code !== 'ESRCH' && code !== 'EPERM') throw raw;
  }
}

/** How to read the command's exit. */
export interface ExitReading {
  /** bwrap reports a signal death of the job as exit 128+N: read it back as signal N. */
  signalFromStatus: boolean;
}

/** Signal names by number (Linux), for exits reported as 128+N. */
const SIGNALS: Record<number, NodeJS.Signals> = {
  1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 4: 'SIGILL', 5: 'SIGTRAP', 6: 'SIGABRT', 7: 'SIGBUS', 8: 'SIGFPE', 9: 'SIGKILL',
  10: 'SIGUSR1', 11: 'SIGSEGV', 12: 'SIGUSR2', 13: 'SIGPIPE', 14: 'SIGALRM', 15: 'SIGTERM', 24: 'SIGXCPU', 25: 'SIGXFSZ',
};

/** Starts `command` for `spec` within its limits; resolves once it runs inside them. */
export async function startJobProcess(command: string[], spec: SandboxSpec, limits: LimitSupport, reading: ExitReading): Promise<Sandbox> {
  const { memoryBytes, pids, cpuSeconds } = spec.settings;
  const runLimits = await limits.forRun(spec.runId, { memoryBytes, pids, cpuSeconds });
  const plain = !runLimits.grouped && runLimits.shellPrelude.length === 0;
  // Where abstract unix sockets do not exist, the wrapper shell merges the output instead.
  const merged = plain ? await takeMergedOutput().catch(() => undefined) : undefined;
  let child: ChildProcess;
  let output: Readable;
  try {
    traceStage(spec.runId, 'spawn-called');
    if (merged) {
      child = spawn(command[0]!, command.slice(1), { cwd: spec.workDir, env: spec.env, detached: true, stdio: ['ignore', merged.writer, merged.writer] });
      output = merged.reader;
    } else {
      // stderr joins stdout first, so even a limit the prelude cannot set is said in the console.
      const wrapper = ['read _ || exit 125', 'exec </dev/null', 'exec 2>&1', ...runLimits.shellPrelude, 'exec "$@"'].join('\n');
      child = spawn('/bin/sh', ['-c', wrapper, 'kiln-job', ...command], { cwd: spec.workDir, env: spec.env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
      output = child.stdout!;
      // The wrapper's stderr is merged into stdout; this pipe only sees the shell's own complaints.
      child.stderr!.resume();
      // A job that has already gone when the gate opens must not take the worker down with EPIPE.
      child.stdin!.on('error', () => {});
    }
    traceStage(spec.runId, 'spawn-returned');
  } catch (raw) {
    merged?.reader.destroy();
    await runLimits.release().catch(() => []);
    throw raw;
  } finally {
    // The child holds its own copies of the channel's writing end; the worker's would keep it open.
    merged?.writer.destroy();
  }
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const exited = new Promise<SandboxExit>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (exitCode, signal) => {
      // Whatever the job left running goes with it: no process outlives its run.
      signalGroup(child.pid, 'SIGKILL');
      void (async () => {
        const oom = await runLimits.oomKilled().catch(() => false);
        await runLimits.release().catch(() => []);
        let exit: SandboxExit = { exitCode, signal };
        if (reading.signalFromStatus && exitCode !== null && exitCode > 128 && SIGNALS[exitCode - 128]) {
          exit = { exitCode: null, signal: SIGNALS[exitCode - 128]! };
        }
        // A shell whose child the kernel killed for memory exits 137 (128 + SIGKILL).
        if (oom && (exit.signal === 'SIGKILL' || exit.exitCode === 137)) exit = { exitCode: null, signal: 'SIGKILL', note: 'out of memory' };
        else if (oom) exit.note = 'a process was killed: out of memory';
        resolve(exit);
      })();
    });
  });
  // A spawn that fails rejects both; the caller hears it through `spawned`.
  exited.catch(() => {});
  try {
    await spawned;
    await runLimits.enter(child.pid!);
  } catch (raw) {
    signalGroup(child.pid, 'SIGKILL');
    merged?.reader.destroy();
    await runLimits.release().catch(() => []);
    throw raw;
  }
  // Opens the wrapper's gate (a plain command runs already).
  child.stdin?.end('\n');
  return {
    output,
    interrupt: () => signalGroup(child.pid, 'SIGTERM'),
    terminate: () => signalGroup(child.pid, 'SIGKILL'),
    wait: () => exited,
  };
}
