/**
 * Runs one assigned run: a fresh work dir, the script written into it, the script run with
 * `/bin/sh -e` in the sandbox, each output line timestamped and numbered, the timeout enforced
 * on the whole process tree, then the work dir removed.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { RunResult } from '../core/index.js';
import { coerceError } from '../errors.js';
import type { ConsoleLine, RunAssignment } from '../protocol/index.js';
import { LineSplitter } from './line-splitter.js';
import type { Sandbox, SandboxLauncher } from './sandbox/sandbox.js';

/** How a run ended, as the worker reports it. */
export interface RunReport {
  result: RunResult;
  timedOut: boolean;
}

/** Options of one execution. */
export interface ExecutorOptions {
  /** Where work dirs are made. */
  workRoot: string;
  sandbox: SandboxLauncher;
  /** Time between SIGTERM and SIGKILL when stopping a job (ms). */
  killGraceMs: number;
  /** PATH given to jobs. */
  jobPath: string;
  log: Logger;
  /** Receives the job's console lines in order. */
  onLine: (line: ConsoleLine) => void;
}

/** A run in progress on this worker. */
export interface Execution {
  /** Stops the job (SIGTERM, then SIGKILL after the grace); the report says `aborted: reason`. */
  stop(reason: string): void;
  /** Resolves with the report once the job has ended and its work dir is gone. */
  done: Promise<RunReport>;
}

const SCRIPT_NAME = 'script.sh';

/** Starts a run; never throws: every failure becomes the report's result. */
export function startExecution(run: RunAssignment, options: ExecutorOptions): Execution {
  let seq = 0;
  const say = (text: string) => options.onLine({ seq: seq++, ts: Date.now(), text });
  let sandbox: Sandbox | undefined;
  let stopReason: string | undefined;
  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;

  const stopTree = () => {
    if (!sandbox) return;
    sandbox.interrupt();
    killTimer ??= setTimeout(() => sandbox?.terminate(), options.killGraceMs);
  };

  const execute = async (): Promise<RunReport> => {
    let workDir: string;
    try {
      workDir = await mkdtemp(path.join(options.workRoot, `kiln-${run.job}-`));
    } catch (raw) {
      return { result: { kind: 'aborted', reason: `cannot create the work dir: ${coerceError(raw).message}` }, timedOut: false };
    }
    try {
      try {
        await writeFile(path.join(workDir, SCRIPT_NAME), run.script, { mode: 0o700 });
      } catch (raw) {
        return { result: { kind: 'aborted', reason: `cannot write the job script: ${coerceError(raw).message}` }, timedOut: false };
      }
      if (stopReason) return { result: { kind: 'aborted', reason: stopReason }, timedOut: false };
      const env = {
        PATH: options.jobPath,
        HOME: workDir,
        LANG: 'C.UTF-8',
        ...run.env,
        KILN_RUN: run.id,
        KILN_JOB: run.job,
        KILN_PLATFORM: run.platform,
      };
      sandbox = options.sandbox.start({ workDir, argv: ['/bin/sh', '-e', `./${SCRIPT_NAME}`], env });
      const timeout = setTimeout(() => {
        timedOut = true;
        say(`kiln: timed out after ${run.timeoutMs / 1000}s; stopping the job`);
        stopTree();
      }, run.timeoutMs);
      const splitter = new LineSplitter(say);
      const outputDone = new Promise<void>((resolve) => {
        sandbox!.output.on('data', (chunk: Buffer) => splitter.push(chunk));
        sandbox!.output.on('end', () => {
          splitter.end();
          resolve();
        });
        sandbox!.output.on('error', (raw) => {
          splitter.end();
          say(`kiln: cannot read the job's output: ${coerceError(raw).message}`);
          resolve();
        });
      });
      let exit;
      try {
        [exit] = await Promise.all([sandbox.wait(), outputDone]);
      } finally {
        clearTimeout(timeout);
        clearTimeout(killTimer);
      }
      if (timedOut) return { result: { kind: 'aborted', reason: `timed out after ${run.timeoutMs / 1000}s` }, timedOut: true };
      if (stopReason) return { result: { kind: 'aborted', reason: stopReason }, timedOut: false };
      if (exit.signal) return { result: { kind: 'signalled', signal: exit.signal }, timedOut: false };
      return { result: { kind: 'exited', code: exit.exitCode ?? 0 }, timedOut: false };
    } catch (raw) {
      return { result: { kind: 'aborted', reason: `cannot run the job: ${coerceError(raw).message}` }, timedOut };
    } finally {
      await rm(workDir, { recursive: true, force: true }).catch((raw) =>
        options.log.warn({ err: coerceError(raw), workDir }, 'could not remove a work dir'),
      );
    }
  };

  return {
    stop(reason) {
      stopReason ??= reason;
      stopTree();
    },
    done: execute(),
  };
}
