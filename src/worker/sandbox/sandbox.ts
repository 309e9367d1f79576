/** How a job's process is started and stopped: one small interface, one implementation per sandbox. */
import type { Readable } from 'node:stream';

/** What to run. */
export interface SandboxSpec {
  /** The job's work dir: its cwd and only writable place. */
  workDir: string;
  argv: string[];
  /** The whole environment of the job (nothing is inherited). */
  env: Record<string, string>;
}

/** How the job's main process ended. */
export interface SandboxExit {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
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
  start(spec: SandboxSpec): Sandbox;
}
