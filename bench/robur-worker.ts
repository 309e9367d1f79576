/**
 * A robur worker's run through Kiln against the same run through a Kiln worker, in one command:
 * one real server (the compiled package, `--robur-listen`), one `kiln worker` (a separate process)
 * and stand-in builder-workers (test/helpers/robur-peers.ts, in this process: there is no OCaml
 * here, so the real builder-worker cannot run; like it, each takes one job per connection and a
 * fresh one connects for the next, as `Restart=always` would start it again).
 *   - latency: API execute -> the job's first console line at an observer, and -> the run's end
 *     (the console stream's end), an idle worker of each kind waiting; Kiln and robur runs take turns;
 *   - throughput: `--jobs` one-line runs queued at once for each kind, with `--workers` workers of
 *     each kind (robur: that many connections waiting at a time), runs per second to the last end.
 * The machine's own limit is printed beside them: this process making a fresh directory and spawning
 * `sh -c 'echo'` in it (the stand-in workers run their scripts from this process too).
 * Usage: npm run bench:robur [-- --runs 100 --jobs 200 --workers 2]
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { roburWorker } from '../test/helpers/robur-peers.js';
import { bareFirstLine, freePort, numberArg, percentile, startKiln } from './support.js';

const RUNS = numberArg('--runs', 100);
const JOBS = numberArg('--jobs', 200);
const WORKERS = numberArg('--workers', 2);

/** The machine's limit: ms from a fresh directory to `sh -c 'echo'` printing, spawned by this process. */
const machineLimit = async (): Promise<number> => (await bareFirstLine())[0];

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-robur-'));
const port = await freePort();
const roburPort = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--robur-listen', `127.0.0.1:${roburPort}`], {}, /listening/);
const children: ChildProcess[] = [server.child];
/** Stand-in robur workers keep coming back after each job until this is false. */
let roburWanted = true;
const roburKills: (() => void)[] = [];

/** Keeps one stand-in builder-worker of `platform` connected and waiting, a fresh one after each job. */
function roburLane(platform: string): Promise<void> {
  return (async () => {
    while (roburWanted) {
      const worker = roburWorker(roburPort, platform);
      roburKills.push(() => worker.kill());
      await worker.done.catch(() => undefined);
    }
  })();
}

try {
  await server.started;
  const admin = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const workerToken = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
  const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
  const api = async (method: string, route: string, body?: unknown) => {
    const response = await fetch(`${url}${route}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${await response.text()}`);
    return response.json() as Promise<Record<string, unknown>>;
  };
  /** Resolves once the server lists `count` idle workers of `platform` (between measurements, never inside one). */
  const workersOf = async (platform: string, count: number) => {
    for (;;) {
      const { workers } = (await api('GET', '/api/workers')) as { workers: { platform: string; state: string }[] };
      if (workers.filter((w) => w.platform === platform && w.state === 'idle').length >= count) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  /** Executes `job`; resolves with ms to its first console line and to its end, at an observer. */
  const timedRun = async (job: string): Promise<{ first: number; end: number }> => {
    const t0 = performance.now();
    const { run } = (await api('POST', `/api/jobs/${job}/execute`, {})) as { run: { id: string } };
    const response = await fetch(`${url}/api/runs/${run.id}/console?follow=true`, { headers });
    const reader = response.body!.getReader();
    let first: number | undefined;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (first === undefined && Buffer.from(value).toString('utf8').includes('"type":"line"')) first = performance.now() - t0;
    }
    return { first: first ?? NaN, end: performance.now() - t0 };
  };

  for (const kind of ['kiln', 'robur']) {
    await api('POST', '/api/jobs', { name: `${kind}-hello`, platform: `${kind}-bench`, script: 'echo first line\n', period: 'never' });
  }
  for (let w = 0; w < WORKERS; w += 1) {
    const worker = startKiln(['worker', '--server', url, '--platform', 'kiln-bench', '--name', `kiln-${w}`], { KILN_WORKER_TOKEN: workerToken }, /connected to the server/);
    children.push(worker.child);
    await worker.started;
  }
  const lanes = Array.from({ length: WORKERS }, () => roburLane('robur-bench'));
  await workersOf('robur-bench', WORKERS);

  // Latency, one run at a time, the kinds taking turns (and the machine's limit after each pair).
  const latency = { kiln: { first: [] as number[], end: [] as number[] }, robur: { first: [] as number[], end: [] as number[] }, limit: [] as number[] };
  for (let i = 0; i < RUNS; i += 1) {
    for (const kind of ['kiln', 'robur'] as const) {
      // A robur worker is one job per connection: wait for the next one to be waiting.
      if (kind === 'robur') await workersOf('robur-bench', WORKERS);
      const { first, end } = await timedRun(`${kind}-hello`);
      latency[kind].first.push(first);
      latency[kind].end.push(end);
    }
    latency.limit.push(await machineLimit());
  }

  // Throughput: JOBS distinct jobs per kind (a job waits in a queue at most once), queued at once.
  const throughput: Record<string, number> = {};
  for (const kind of ['kiln', 'robur'] as const) {
    for (let j = 0; j < JOBS; j += 1) await api('POST', '/api/jobs', { name: `${kind}-t${j}`, platform: `${kind}-bench`, script: `echo run ${j}\n`, period: 'never' });
    if (kind === 'robur') await workersOf('robur-bench', WORKERS);
    const t0 = performance.now();
    const ids: string[] = [];
    for (let j = 0; j < JOBS; j += 1) ids.push(((await api('POST', `/api/jobs/${kind}-t${j}/execute`, {})) as { run: { id: string } }).run.id);
    // Each console stream ends with its run.
    await Promise.all(ids.map(async (id) => {
      const response = await fetch(`${url}/api/runs/${id}/console?follow=true`, { headers });
      await response.arrayBuffer();
    }));
    throughput[kind] = JOBS / ((performance.now() - t0) / 1000);
  }
  const limitRate = await (async () => {
    const t0 = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: WORKERS }, async () => {
      while (next++ < JOBS) await machineLimit();
    }));
    return JOBS / ((performance.now() - t0) / 1000);
  })();

  const show = (name: string, values: number[]) =>
    console.log(`${name.padEnd(52)} ${String(values.length).padStart(4)} runs   p50 ${percentile(values, 50).toFixed(1).padStart(6)} ms   p90 ${percentile(values, 90).toFixed(1).padStart(6)} ms   p99 ${percentile(values, 99).toFixed(1).padStart(6)} ms`);
  console.log(`robur worker vs Kiln worker through one Kiln server (${os.cpus().length} cores, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')})`);
  show('Kiln worker: execute -> first line at observer', latency.kiln.first);
  show('robur worker: execute -> first line at observer', latency.robur.first);
  show('Kiln worker: execute -> run ended at observer', latency.kiln.end);
  show('robur worker: execute -> run ended at observer', latency.robur.end);
  show('machine limit: mkdtemp + spawn sh -> line (this process)', latency.limit);
  console.log(`throughput, ${JOBS} one-line runs queued at once, ${WORKERS} workers of each kind:`);
  console.log(`  Kiln workers   ${throughput.kiln!.toFixed(1).padStart(7)} runs/s`);
  console.log(`  robur workers  ${throughput.robur!.toFixed(1).padStart(7)} runs/s   (a fresh connection per run, as builder-worker)`);
  console.log(`  machine limit  ${limitRate.toFixed(1).padStart(7)} runs/s   (${WORKERS} lanes of mkdtemp + spawn sh from this process)`);
  console.log(`ratio robur/Kiln: first line p50 ${(percentile(latency.robur.first, 50) / percentile(latency.kiln.first, 50)).toFixed(2)}, throughput ${(throughput.robur! / throughput.kiln!).toFixed(2)}`);
} catch (raw) {
  console.error(raw);
  process.exitCode = 1;
} finally {
  roburWanted = false;
  for (const kill of roburKills) kill();
  for (const child of children) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
// Stand-in workers still connecting would keep the process alive.
process.exit(process.exitCode ?? 0);
