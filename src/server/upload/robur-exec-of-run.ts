/**
 * A finished Kiln run as robur builder's exec blob (shared/reference/robur-protocol.md §2.3, §2.5):
 * what the builder-web upload target sends and `kiln export --format robur-exec` writes, byte for
 * byte the same, streamed with its length known before the first byte: the console is read from the
 * store a page at a time and each artifact from the blob store, so neither is ever held whole.
 */
import type { Readable } from 'node:stream';
import { formatDuration, formatResult, isValidJobName, JOB_NAME_RULE, type RunResult } from '../../core/index.js';
import { InternalError } from '../../errors.js';
import {
  encodeConsoleEntries, execStream, isRoburUuid, roburResultOf, type EncodedConsole, type RoburConsoleLine, type RoburResult,
} from '../../protocol/robur/index.js';
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
export function execConsole(lines: readonly TimedLine[], startedAt: number): RoburConsoleLine[] {
  const out: RoburConsoleLine[] = [];
  for (const { text, ts } of lines) {
    const deltaNs = Math.max(0, ts - startedAt) * 1_000_000;
    for (const line of text.split('\n')) out.push({ deltaNs, line });
  }
  return out;
}

/** A stored console line: its seq orders it and says where the next page starts. */
export type SeqLine = TimedLine & { seq: number };

/** Reads the run's stored console: at most `limit` lines after the one numbered `afterSeq`, oldest first (JobStore.readConsole). */
export type ConsolePageReader = (afterSeq: number, limit: number) => Promise<readonly SeqLine[]>;

/**
 * Lines read and encoded at a time: what one exec's console costs in memory, however long it is
 * (a line is at most 64 Ki characters, so a page at most 64 MiB; ~100 KB for lines of a hundred).
 */
const CONSOLE_PAGE_LINES = 1000;

/**
 * The run's console, encoded for its exec a page at a time. The wire wants its length first and its
 * newest line first, so the console is read twice: forward once, to measure each page, then page by
 * page from the last, each sent newest line first. A console that changes between the two reads
 * (it should not: the run has ended) fails the stream, and the delivery is tried again.
 */
export async function pagedExecConsole(read: ConsolePageReader, startedAt: number, pageLines = CONSOLE_PAGE_LINES): Promise<EncodedConsole> {
  const encode = (lines: readonly SeqLine[]) => encodeConsoleEntries(execConsole(lines, startedAt).reverse());
  const pages: { after: number; lines: number; bytes: number }[] = [];
  for (let after = -1; ;) {
    const lines = await read(after, pageLines);
    if (lines.length > 0) pages.push({ after, lines: lines.length, bytes: encode(lines).length });
    if (lines.length < pageLines) break;
    after = lines.at(-1)!.seq;
  }
  return {
    length: pages.reduce((sum, page) => sum + page.bytes, 0),
    chunks: async function* () {
      for (const page of pages.toReversed()) {
        const encoded = encode(await read(page.after, page.lines));
        if (encoded.length !== page.bytes) throw new InternalError('the run\'s console changed while its exec was being sent');
        yield encoded;
      }
    },
  };
}

/**
 * The run's exec blob as a stream of known length: the console read a page at a time and each
 * artifact opened in turn as the stream reaches it (one blob open at a time), never held whole.
 */
export async function runExecStream(
  run: ExecutableRun, readConsole: ConsolePageReader, artifacts: readonly OpenableArtifact[],
): Promise<{ length: number; stream: Readable }> {
  const head = {
    job: { name: run.job, script: run.script ?? '', platform: run.platform },
    uuid: run.id,
    console: await pagedExecConsole(readConsole, run.startedAt),
    started: run.startedAt,
    finished: run.finishedAt,
    result: execResultOf(run),
  };
  return execStream(head, artifacts.map((a) => ({ path: a.path, size: a.size, open: () => a.open() })));
}
