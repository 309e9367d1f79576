/** How a job's process is started and stopped: one small interface, one implementation per sandbox. */
import type { Readable } from 'node:stream';
import type { JobSandbox } from '../../core/index.js';

/** What to run. */
export interface SandboxSpec {
  runId: string;
  /** The job's work dir: its cwd and only writable place. */
  workDir: string;
  argv: string[];
  /** The whole environment of the job (nothing is inherited). */
  env: Record<string, string>;
  /** What the job asks of its sandbox: limits and network. */
  settings: JobSandbox;
}

/** How the job's main process ended. */
export interface SandboxExit {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Why, when the sandbox knows more than the exit (e.g. `out of memory`). */
  note?: string;
}

/** A started job. */
export interface Sandbox {
  /** stdout and stderr, merged into one stream. */
  readonly output: Readable;
  /** Asks the job's whole process tree to stop (SIGTERM). */
  interrupt(): void;
  /** Kills the job's whole process tree (SIGKILL). */
  terminate(): void;
  /** Resolves when the main process has exited and the rest of its tree is killed. */
  wait(): Promise<SandboxExit>;
}

/** Starts jobs in one kind of sandbox. */
export interface SandboxLauncher {
  readonly kind: string;
  /** One line for the worker's log and each run's console header: the isolation and limits in force. */
  describe(): string;
  /** Starts a job; rejects with a one-line reason when the job cannot run here as it asks. */
  start(spec: SandboxSpec): Promise<Sandbox>;
}
