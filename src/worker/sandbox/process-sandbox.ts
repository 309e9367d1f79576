/**
 * The plain sandbox: the job runs as a child process in its own process group, so signals reach
 * its whole tree. stderr is merged into stdout by the shell (`exec 2>&1`), so both share one
 * pipe and keep their relative order.
 */
import { spawn } from 'node:child_process';
import type { Sandbox, SandboxExit, SandboxLauncher, SandboxSpec } from './sandbox.js';

/** Sends `signal` to every process of the group led by `pid`; a group already gone is fine. */
function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch (raw) {
    // ESRCH: already gone. EPERM: the id now belongs to someone else's process; not ours to signal.
    const code = (raw as NodeJS.ErrnoException).code;
    if (code !== 'ESRCH' && code !== 'EPERM') throw raw;
  }
}

/** Runs jobs as plain child processes. */
export class ProcessSandboxLauncher implements SandboxLauncher {
  readonly kind = 'none';

  start(spec: SandboxSpec): Sandbox {
    const [command, ...args] = ['/bin/sh', '-c', 'exec 2>&1; exec "$@"', 'kiln-job', ...spec.argv];
    const child = spawn(command!, args, {
      cwd: spec.workDir,
      env: spec.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // stderr is already redirected into stdout; this pipe only sees the shell's own complaints.
    child.stderr.resume();
    const exited = new Promise<SandboxExit>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (exitCode, signal) => {
        // Whatever the job left running in its group goes with it: no process outlives its run.
        signalGroup(child.pid, 'SIGKILL');
        resolve({ exitCode, signal });
      });
    });
    return {
      output: child.stdout,
      interrupt: () => signalGroup(child.pid, 'SIGTERM'),
      terminate: () => signalGroup(child.pid, 'SIGKILL'),
      wait: () => exited,
    };
  }
}
