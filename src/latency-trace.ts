/**
 * Timestamps of a run's way from `execute` to its first output line, for bench/execute-latency.ts
 * (`--trace`). Off unless KILN_LATENCY_TRACE names a file: then each stage is kept in memory as
 * `<runId> <stage> <ms on the monotonic clock> <pid>` and appended to that file shortly after, off
 * the path being measured. Server and worker may share the file (O_APPEND lines stay whole).
 */
import { appendFile } from 'node:fs';

const file = process.env.KILN_LATENCY_TRACE || undefined;
let pending: string[] = [];

/**
 * Now in ms on CLOCK_MONOTONIC (process.hrtime), which all processes of one Linux host share;
 * performance.timeOrigin is not precise enough to compare processes within a millisecond.
 */
export function traceNow(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Notes that run `runId` reached `stage` (at `at`, or now); does nothing unless tracing is on. */
export function traceStage(runId: string, stage: string, at?: number): void {
  if (file === undefined) return;
  pending.push(`${runId} ${stage} ${(at ?? traceNow()).toFixed(3)} ${process.pid}\n`);
  if (pending.length === 1) setTimeout(flush, 100).unref();
}

/** True when stages are being recorded (callers skip work done only for the trace). */
export const tracing = file !== undefined;

function flush(): void {
  const text = pending.join('');
  pending = [];
  // Private, as every file of run data is (0600 when it is made).
  appendFile(file!, text, { mode: 0o600 }, () => {});
}
