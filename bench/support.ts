/** Small helpers shared by the benchmarks. */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { rm, mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The kiln command of this checkout. */
export const KILN = fileURLToPath(new URL('../bin/kiln.mjs', import.meta.url));

/** A loopback port nobody listens on right now (the tests' helper). */
export { freePort } from '../test/helpers/processes.js';

/** The median of some numbers. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The p-th percentile (0 to 100) of some numbers, nearest rank. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The value after `--name` on the command line, as a number. */
export function numberArg(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}

/** Extra node options for the kiln processes a bench starts, e.g. KILN_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const NODE_ARGS = (process.env.KILN_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** Starts `kiln ARGS` (stderr read for `ready`); `started` resolves once a line matches it. */
export function startKiln(args: string[], env: Record<string, string>, ready: RegExp) {
  const child = spawn(process.execPath, [...NODE_ARGS, KILN, ...args], { env: { ...process.env, KILN_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const started = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => ready.test(line) && resolve());
    child.once('exit', (code) => reject(new Error(`kiln ${args[0]} exited with ${code}`)));
  });
  return { child, started };
}

/**
 * Follows a run's console until its first line: resolves with when it arrived (Date.now()) and the
 * worker's stamp on it, after reading the stream to its end (the worker is idle again then).
 */
export async function followFirstLine(url: string, headers: Record<string, string>, runId: string): Promise<{ at: number; stamped: number }> {
  const response = await fetch(`${url}/api/runs/${runId}/console?follow=true`, { headers });
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`run ${runId} ended without a line`);
    text += decoder.decode(value, { stream: true });
    const event = text.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((e) => e.type === 'line');
    if (event) {
      const at = Date.now();
      while (!(await reader.read()).done);
      return { at, stamped: event.ts as number };
    }
  }
}

/** CPU time (ms) a process has used, with that of its children it has waited for (jobs, shells). */
export function cpuMs(pid: number): number {
  // Fields after the command's closing parenthesis: utime, stime, cutime, cstime are 12 to 15.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0) * (1000 / CLOCK_TICKS);
}
const CLOCK_TICKS = 100;

/** Runs `task` `count` times with at most `inFlight` at once; resolves with runs per second. */
export async function rate(count: number, inFlight: number, task: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const started = performance.now();
  const lane = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  return count / ((performance.now() - started) / 1000);
}

/** Stages of src/latency-trace.ts, in the order a run passes them. */
const STAGES = ['http-received', 'enqueue-committed', 'dispatch-woken', 'claim-committed', 'ws-sent', 'worker-received', 'worker-parsed', 'workdir-made', 'workdir-ready', 'spawn-called', 'spawn-returned', 'first-output'];

/** One stage of a latency trace: ms from the stage before (`step`) and from the bench's request (`total`), per run. */
export interface TraceStage {
  from: string;
  stage: string;
  step: number[];
  total: number[];
}

/**
 * Reads the KILN_LATENCY_TRACE file a server and worker wrote (src/latency-trace.ts), for the runs
 * whose request the bench sent at `sentAt` (by run id, on the trace's clock: hrtime in ms); undefined
 * when none was written.
 */
export async function readTrace(file: string, sentAt: Map<string, number>): Promise<{ runs: number; stages: TraceStage[] } | undefined> {
  // The processes append their stages 100 ms after noting them.
  await new Promise((resolve) => setTimeout(resolve, 500));
  if (!existsSync(file)) return undefined;
  const runs = new Map<string, Map<string, number>>();
  for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const [runId, stage, at] = line.split(' ');
    if (!runs.has(runId!)) runs.set(runId!, new Map());
    runs.get(runId!)!.set(stage!, Number(at));
  }
  const stages: TraceStage[] = [];
  let previous = 'bench-sent';
  for (const stage of STAGES) {
    const step: number[] = [];
    const total: number[] = [];
    for (const [runId, stamps] of runs) {
      const start = sentAt.get(runId);
      const before = previous === 'bench-sent' ? start : stamps.get(previous);
      const at = stamps.get(stage);
      if (start === undefined || before === undefined || at === undefined) continue;
      step.push(at - before);
      total.push(at - start);
    }
    if (step.length === 0) continue;
    stages.push({ from: previous, stage, step, total });
    previous = stage;
  }
  return { runs: runs.size, stages };
}

/** A peer: ms from a fresh directory to the line of `sh -c 'echo first line'` spawned in it by this process, and ms inside spawn(). */
export async function bareFirstLine(): Promise<[number, number]> {
  const t0 = performance.now();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-peer-'));
  const before = performance.now();
  const child = spawn('/bin/sh', ['-c', 'echo first line'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const inSpawn = performance.now() - before;
  const ms = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.stdout.once('data', () => resolve(performance.now() - t0));
    child.stdout.resume();
  });
  await new Promise((resolve) => child.once('close', resolve));
  await rm(dir, { recursive: true, force: true });
  return [ms, inSpawn];
}
