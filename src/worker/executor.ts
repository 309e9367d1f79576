/**
 * Runs one assigned run: a fresh work dir, the script written into it, the script run with
 * `/bin/sh -e` in the sandbox, each output line timestamped and numbered, the timeout enforced
 * on the whole process tree, the artifacts kept; then the report, and only after it the work dir
 * removed (off the run's critical path: the next run need not wait for it).
 */
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Log as Logger } from '../log.js';
import { formatDuration } from '../core/duration.js';
import type { RunResult } from '../core/run.js';
import { describeJobSandbox } from '../core/sandbox.js';
import { coerceError } from '../errors.js';
import { traceStage } from '../latency-trace.js';
import type { ConsoleLine, RunAssignment, SkippedArtifact, StopCause } from '../protocol/index.js';
import { LineSplitter } from './line-splitter.js';
import type { Sandbox, SandboxLauncher } from './sandbox/sandbox.js';
import type { SpareWorkDirs } from './spare-work-dirs.js';

/** How a run ended, as the worker reports it. */
export interface RunReport {
  result: RunResult;
  /** Set when the worker stopped the job itself, and why. */
  stoppedBy?: StopCause;
  /** Files left in the work dir that were not kept, and why. */
  artifactsSkipped?: SkippedArtifact[];
}

/** Options of one execution. */
export interface ExecutorOptions {
  /** Where work dirs are made. */
  workRoot: string;
  /** Work dirs made ahead (under workRoot); without it each run makes its own. */
  workDirs?: SpareWorkDirs;
  sandbox: SandboxLauncher;
  /** Time between SIGTERM and SIGKILL when stopping a job (ms). */
  killGraceMs: number;
  /** PATH given to jobs. */
  jobPath: string;
  log: Logger;
  /** Receives the job's console lines in order. */
  onLine: (line: ConsoleLine) => void;
  /**
   * Keeps the run's artifacts, after the job and before its work dir is removed (only for a job
   * that exited, unless the run keeps them on failure); `say` writes to the run's console.
   * Resolves with the files it did not keep.
   */
  keepArtifacts?: (workDir: string, say: (text: string) => void) => Promise<SkippedArtifact[]>;
}

/** A run in progress on this worker. */
export interface Execution {
  /** Stops the job (SIGTERM, then SIGKILL after the grace); the report says `aborted: reason`. */
  stop(reason: string, cause: StopCause): void;
  /** Kills the job's process tree now, with no grace (its worker is going away at once). */
  kill(reason: string): void;
  /** Resolves with the report once the job has ended and its artifacts are kept. */
  done: Promise<RunReport>;
  /** Resolves once the work dir is gone too (after `done`); never rejects. */
  cleaned: Promise<void>;
}

/** The job's script in its work dir (never an artifact). */
export const SCRIPT_NAME = 'script.sh';

/** Starts a run; never throws: every failure becomes the report's result. */
export function startExecution(run: RunAssignment, options: ExecutorOptions): Execution {
  let seq = run.firstSeq;
  let lastOutput = Date.now();
  const say = (text: string) => {
    lastOutput = Date.now();
    options.onLine({ seq: seq++, ts: lastOutput, text });
  };
  let sandbox: Sandbox | undefined;
  let stopped: { reason: string; cause: StopCause } | undefined;
  /** Why the job's output could not be read, if it could not: then the run keeps no artifacts. */
  let unreadable: string | undefined;
  // Read through a function: `stopped` changes in callbacks, which TypeScript's narrowing cannot see.
  const stopRequest = () => stopped;
  let killTimer: NodeJS.Timeout | undefined;

  /** The first reason to stop wins; the tree gets SIGTERM now and SIGKILL after the grace. */
  let finished = false;
  const stop = (reason: string, cause: StopCause) => {
    // After the job has ended its process group may be gone, or its id reused: signal nothing.
    if (finished) return;
    stopped ??= { reason, cause };
    signalStop();
  };
  let killNow = false;
  /** SIGTERM now, SIGKILL after the grace (once the sandbox exists); SIGKILL at once after `kill`. */
  const signalStop = () => {
    if (!sandbox) return;
    if (killNow) return sandbox.terminate();
    sandbox.interrupt();
    killTimer ??= setTimeout(() => sandbox?.terminate(), options.killGraceMs);
  };
  const aborted = (reason: string, stoppedBy?: StopCause): RunReport => ({ result: { kind: 'aborted', reason }, ...(stoppedBy ? { stoppedBy } : {}) });

  /** Set once the work dir exists: the caller removes it after the report. */
  let workDir: string | undefined;
  const execute = async (): Promise<RunReport> => {
    try {
      workDir = options.workDirs ? await options.workDirs.take() : await mkdtemp(path.join(options.workRoot, `kiln-${run.job}-`));
      traceStage(run.id, 'workdir-made');
    } catch (raw) {
      return aborted(`cannot create the work dir: ${coerceError(raw).message}`);
    }
    const report = await runIn(workDir);
    // A job that ran and was stopped (signal, timeout, cancel) keeps its files only when asked.
    const stoppedJob = report.result.kind === 'signalled' || report.stoppedBy !== undefined;
    const keep = report.result.kind === 'exited' || (run.artifactsOnFailure && stoppedJob);
    // Robur's rule (SPEC): output that could not be read is said in the console and the run ends
    // without artifacts, with the job's own result: what was lost may be what the files depend on.
    if (options.keepArtifacts && keep && unreadable !== undefined) {
      say(`kiln: no artifacts kept: the job's output could not be read (${unreadable})`);
    } else if (options.keepArtifacts && keep) {
      try {
        const skipped = await options.keepArtifacts(workDir, say);
        if (skipped.length > 0) report.artifactsSkipped = skipped;
      } catch (raw) {
        say(`kiln: the run's files could not be read; no artifacts kept: ${coerceError(raw).message}`);
      }
    }
    return report;
  };

  /** Removes the work dir once the run is over (the job's processes are gone by then). */
  const removeWorkDir = async (): Promise<void> => {
    if (workDir === undefined) return;
    await rm(workDir, { recursive: true, force: true }).catch((raw) =>
      options.log.warn({ err: coerceError(raw), workDir }, 'could not remove a work dir'),
    );
  };

  /** Runs the job in its work dir; every failure becomes the report. */
  const runIn = async (workDir: string): Promise<RunReport> => {
    const timers: NodeJS.Timeout[] = [];
    try {
      try {
        // Written synchronously: a small file into the page cache takes tens of µs, where the
        // thread pool's open, write and close round trips took ~0.5 ms on the run's way to its start.
        writeFileSync(path.join(workDir, SCRIPT_NAME), run.script, { mode: 0o700, flag: 'wx' });
      } catch (raw) {
        return aborted(`cannot write the job script: ${coerceError(raw).message}`);
      }
      traceStage(run.id, 'workdir-ready');
      const early = stopRequest();
      if (early) return aborted(early.reason, early.cause);
      const env = {
        PATH: options.jobPath,
        HOME: workDir,
        LANG: 'C.UTF-8',
        ...run.env,
        KILN_RUN: run.id,
        KILN_ATTEMPT: String(run.attempt),
        KILN_JOB: run.job,
        KILN_PLATFORM: run.platform,
      };
      const settings = run.sandbox;
      // Say how the job is isolated and limited when it is (a plain job's console stays its own).
      if (options.sandbox.kind !== 'none' || Object.keys(settings).length > 0) {
        const asked = describeJobSandbox(settings);
        say(`kiln: ${options.sandbox.describe()}${asked ? `; this job: ${asked}` : ''}`);
      }
      try {
        sandbox = await options.sandbox.start({ runId: run.id, workDir, argv: ['/bin/sh', '-e', `./${SCRIPT_NAME}`], env, settings });
      } catch (raw) {
        return aborted(`cannot start the job: ${coerceError(raw).message}`);
      }
      // A stop that came while the sandbox was starting applies now.
      if (stopRequest()) signalStop();
      timers.push(setTimeout(() => {
        say(`kiln: timed out after ${formatDuration(run.timeoutMs)}; stopping the job`);
        stop(`timed out after ${formatDuration(run.timeoutMs)}`, 'timeout');
      }, run.timeoutMs));
      if (run.idleTimeoutMs) {
        const idle = run.idleTimeoutMs;
        const check = () => {
          const quiet = Date.now() - lastOutput;
          if (quiet < idle) return void timers.push(setTimeout(check, idle - quiet));
          say(`kiln: no output for ${formatDuration(idle)}; stopping the job`);
          stop(`no output for ${formatDuration(idle)}`, 'idle-timeout');
        };
        timers.push(setTimeout(check, idle));
      }
      const splitter = new LineSplitter(say);
      const outputDone = new Promise<void>((resolve) => {
        sandbox!.output.once('data', () => traceStage(run.id, 'first-output'));
        sandbox!.output.on('data', (chunk: Buffer) => splitter.push(chunk));
        sandbox!.output.on('end', () => {
          splitter.end();
          resolve();
        });
        sandbox!.output.on('error', (raw) => {
          splitter.end();
          unreadable = coerceError(raw).message;
          say(`kiln: cannot read the job's output: ${unreadable}`);
          resolve();
        });
      });
      const exit = await sandbox.wait();
      // A process that left the job's group (setsid) may still hold the output open: once the job
      // has exited and its group is killed, give the output a grace to drain, then close it.
      let escaped: NodeJS.Timeout | undefined;
      await Promise.race([
        outputDone,
        new Promise<void>((resolve) => {
          escaped = setTimeout(() => {
            say("kiln: the job's output is still open after it exited (a process left its group); closing it");
            sandbox!.output.destroy();
            resolve();
          }, Math.max(options.killGraceMs, 1000));
        }),
      ]);
      clearTimeout(escaped);
      const requested = stopRequest();
      if (requested) return aborted(requested.reason, requested.cause);
      if (exit.note && !exit.signal) say(`kiln: ${exit.note}`);
      if (exit.signal) return { result: { kind: 'signalled', signal: exit.signal, ...(exit.note ? { note: exit.note } : {}) } };
      return { result: { kind: 'exited', code: exit.exitCode ?? 0 } };
    } catch (raw) {
      return aborted(`cannot run the job: ${coerceError(raw).message}`, stopRequest()?.cause);
    } finally {
      finished = true;
      for (const timer of timers) clearTimeout(timer);
      clearTimeout(killTimer);
    }
  };

  const kill = (reason: string) => {
    killNow = true;
    stop(reason, 'shutdown');
  };
  const done = execute();
  // runIn turns every failure into the report, so `done` resolves; removal waits for it either way.
  const cleaned = done.then(removeWorkDir, removeWorkDir);
  return { stop, kill, done, cleaned };
}
