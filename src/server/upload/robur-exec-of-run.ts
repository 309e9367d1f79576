/**
 * A finished Kiln run as robur builder's exec blob (shared/reference/robur-protocol.md §2.3, §2.5):
 * what the builder-web upload target sends and `kiln export --format robur-exec` writes, byte for
 * byte the same. The head (job, uuid, console, times, result) is built in memory; each artifact is
 * streamed from the blob store into the DER value, whose length is known before the first byte.
 */
import type { Readable } from 'node:stream';
import { formatDuration, formatResult, isValidJobName, JOB_NAME_RULE, type RunResult } from '../../core/index.js';
import { execStream, isRoburUuid, roburResultOf, type RoburConsoleLine, type RoburExec, type RoburResult } from '../../protocol/robur/index.js';
import type { Artifact, Run } from '../../store/index.js';

/** A console line with when it arrived (ms since the epoch). */
export interface TimedLine {
  text: string;
  ts: number;
}

/** An artifact with how to read its bytes. */
export type OpenableArtifact = Pick<Artifact, 'path' | 'size'> & { open(): Promise<Readable> };

/** A run that has started and ended, with its result: the only kind that has an exec. */
export type ExecutableRun = Run & { startedAt: number; finishedAt: number; result: RunResult };

/** Why `run` has no exec blob (it is still queued or running, or it never ran), or undefined when it has one. */
export function execUnavailable(run: Run): string | undefined {
  if (run.status === 'queued' || run.status === 'running' || run.finishedAt === null || run.result === null) {
    return `run ${run.id} has not ended (${run.status}): an exec blob is written once it has`;
  }
  if (run.startedAt === null) return `run ${run.id} never ran (${run.status} before a worker took it): it has no exec to write`;
  // The exec's uuid is the id's 16 bytes; Kiln makes every run id a UUID, but a store is data.
  if (!isRoburUuid(run.id)) return `run id ${run.id} is not a UUID: builder's exec carries the run's id as one`;
  return undefined;
}

/** Narrows `run` to one with an exec (see execUnavailable). */
export function hasExec(run: Run): run is ExecutableRun {
  return execUnavailable(run) === undefined;
}

/**
 * Why builder-web cannot take a run of job `name`, or undefined. builder-web makes the job's name a
 * directory (`<datadir>/<job>/<uuid>/`) and a URL segment, so only `[A-Za-z0-9._-]` names are
 * sent; Kiln's own job names already are (they start with a letter or digit, so never `.` or `..`),
 * and a name from elsewhere (an older store, a robur client) that is not is refused rather than
 * rewritten into another job's name.
 */
export function builderWebJobNameProblem(name: string): string | undefined {
  if (isValidJobName(name)) return undefined;
  return `job name '${name}' cannot be a builder-web job (it becomes a directory there): builder-web takes ${JOB_NAME_RULE} characters`;
}

/**
 * The run's result as builder says it. An exit, a signal or an abort map one to one
 * (roburResultOf); a run Kiln ended itself (timed out, cancelled, lost) whose worker still reported
 * an exit or a signal is sent as `[3]` with Kiln's reason and what the process did, as builder
 * sends its own timeouts (`[3] "timeout"`): builder-web would otherwise list it as an ordinary exit.
 */
export function execResultOf(run: ExecutableRun): RoburResult {
  const { result } = run;
  if (result.kind === 'aborted') return roburResultOf(result);
  switch (run.status) {
    case 'timed-out':
      return { kind: 'msg', message: `timed out${run.timeoutMs ? ` after ${formatDuration(run.timeoutMs)}` : ''} (${formatResult(result)})` };
    case 'cancelled':
      return { kind: 'msg', message: `cancelled${run.cancelRequestedBy ? ` by ${run.cancelRequestedBy}` : ''} (${formatResult(result)})` };
    case 'lost':
      return { kind: 'msg', message: `lost (${formatResult(result)})` };
    default:
      return roburResultOf(result);
  }
}

/**
 * The console as the exec carries it: oldest first here (the codec writes it newest first), each
 * line's delta the ns from the run's start to its arrival. A delta is never negative: a line from
 * an earlier attempt (before this attempt's start) or stamped by a worker whose clock is behind the
 * server's counts from the start (0), as builder's durations cannot be negative. Kiln's lines
 * carry no newline (the worker splits on it); a line that holds one anyway (a worker speaking the
 * protocol by hand) is sent as several entries with the same delta, as builder-web would read
 * them back from its console.txt.
 */
export async function execConsole(lines: AsyncIterable<TimedLine>, startedAt: number): Promise<RoburConsoleLine[]> {
  const out: RoburConsoleLine[] = [];
  for await (const { text, ts } of lines) {
    const deltaNs = Math.max(0, ts - startedAt) * 1_000_000;
    for (const line of text.split('\n')) out.push({ deltaNs, line });
  }
  return out;
}

/** The exec's head (everything but the files) of a run that has one. */
export async function execHeadOf(run: ExecutableRun, lines: AsyncIterable<TimedLine>): Promise<Omit<RoburExec, 'files'>> {
  return {
    job: { name: run.job, script: run.script ?? '', platform: run.platform },
    uuid: run.id,
    console: await execConsole(lines, run.startedAt),
    started: run.startedAt,
    finished: run.finishedAt,
    result: execResultOf(run),
  };
}

/**
 * The run's exec blob as a stream of known length: the head built now, each artifact opened in
 * turn as the stream reaches it (one blob open at a time), never held whole.
 */
export async function runExecStream(
  run: ExecutableRun, lines: AsyncIterable<TimedLine>, artifacts: readonly OpenableArtifact[],
): Promise<{ length: number; stream: Readable }> {
  const head = await execHeadOf(run, lines);
  return execStream(head, artifacts.map((a) => ({ path: a.path, size: a.size, open: () => a.open() })));
}
