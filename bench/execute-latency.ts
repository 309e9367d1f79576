/**
 * Latency from `execute` to the job's first console line, with an idle worker already connected.
 * Starts a real server and a real worker from the compiled package (separate processes, temp data
 * dir, free port), then measures N runs of a job whose first command prints a line:
 *   - api: POST /api/jobs/:name/execute, then follow the console stream until the first line;
 *   - cli: spawn `kiln execute`, then follow the console until the first line (adds the CLI's
 *     own start-up, which is what a user typing the command sees).
 * Peers, in the same command and in turn with Kiln's runs (one of each per round), each making a fresh mkdtemp directory, spawning `sh -c 'echo first
 * line'` in it and reading the line, N times: from a bare Node process (bench/small-spawner.mjs:
 * the machine's own limit) and from this bench's own large tsx-loaded process (a fork costs more
 * the bigger the parent).
 * With --trace, the server and the worker note when each run passes each stage (src/latency-trace.ts)
 * and the bench prints where the time goes, stage by stage.
 * Usage: npm run bench [-- --runs 200 --cli-runs 20 --trace]
 */
import { execFile, spawn, type ChildProcess, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { bareFirstLine, followFirstLine, freePort, KILN, numberArg, percentile, readTrace, startKiln } from './support.js';

const RUNS = numberArg('--runs', 200);
const CLI_RUNS = numberArg('--cli-runs', 20);
const TRACE = process.argv.includes('--trace');

/** The fair peer: the same from a bare Node process (bench/small-spawner.mjs), which answers each line on its stdin. */
function smallSpawner() {
  const child: ChildProcessByStdio<Writable, Readable, null> = spawn(process.execPath, [fileURLToPath(new URL('./small-spawner.mjs', import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
  const answers = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return {
    child,
    async firstLine(): Promise<[number, number]> {
      child.stdin!.write('go\n');
      const { value } = await answers.next();
      const [ms, inSpawn] = (value as string).split(' ').map(Number);
      return [ms!, inSpawn!];
    },
  };
}

/** Resident memory of a process (kB), from /proc. */
function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}


const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const traceFile = path.join(dataDir, 'latency.trace');
const traceEnv: Record<string, string> = TRACE ? { KILN_LATENCY_TRACE: traceFile } : {};
const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], { KILN_LOG_LEVEL: 'info', ...traceEnv }, /listening/);
const children: ChildProcess[] = [server.child];
try {
  await server.started;
  const admin = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const workerToken = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
  const worker = startKiln(['worker', '--server', url, '--platform', 'bench'], { KILN_WORKER_TOKEN: workerToken, KILN_LOG_LEVEL: 'info', ...traceEnv }, /connected to the server/);
  children.push(worker.child);
  await worker.started;
  const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
  await fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify({ name: 'hello', platform: 'bench', script: 'echo first line\n', period: 'never' }) });

  const firstLine = (runId: string) => followFirstLine(url, headers, runId);

  const api: number[] = [];
  const stamped: number[] = [];
  /** When the bench sent each run's execute (trace clock), by run id. */
  const sentAt = new Map<string, number>();
  const small = smallSpawner();
  children.push(small.child);
  const peer: number[] = [];
  const peerSpawn: number[] = [];
  const smallPeer: number[] = [];
  const smallSpawn: number[] = [];
  // Kiln and the peers take turns, run by run, so all three see the same load.
  for (let i = 0; i < RUNS; i += 1) {
    const t0 = Date.now();
    const sent = Number(process.hrtime.bigint()) / 1e6; // the trace's clock (src/latency-trace.ts)
    const reply = (await (await fetch(`${url}/api/jobs/hello/execute`, { method: 'POST', headers, body: '{}' })).json()) as { run: { id: string } };
    sentAt.set(reply.run.id, sent);
    const { at, stamped: ts } = await firstLine(reply.run.id);
    api.push(at - t0);
    stamped.push(ts - t0);
    const [ms, inSpawn] = await bareFirstLine();
    peer.push(ms);
    peerSpawn.push(inSpawn);
    const [smallMs, smallInSpawn] = await small.firstLine();
    smallPeer.push(smallMs);
    smallSpawn.push(smallInSpawn);
  }
  const workerRssMb = rssKb(worker.child.pid!) / 1024;
  const smallRssMb = rssKb(small.child.pid!) / 1024;
  const benchRssMb = rssKb(process.pid) / 1024;
  const cli: number[] = [];
  const run = promisify(execFile);
  for (let i = 0; i < CLI_RUNS; i += 1) {
    const t0 = Date.now();
    const { stdout } = await run(process.execPath, [KILN, 'execute', 'hello'], { env: { ...process.env, KILN_SERVER: url, KILN_TOKEN: admin } });
    const { at } = await firstLine(stdout.trim());
    cli.push(at - t0);
  }
  const show = (name: string, values: number[]) =>
    console.log(`${name.padEnd(48)} ${String(values.length).padStart(4)} runs   p50 ${percentile(values, 50).toFixed(1).padStart(6)} ms   p99 ${percentile(values, 99).toFixed(1).padStart(6)} ms   mean ${(values.reduce((a, b) => a + b, 0) / values.length).toFixed(2).padStart(6)}   min ${Math.min(...values).toFixed(1)}   max ${Math.max(...values).toFixed(1)}`);
  console.log(`execute -> first console line, idle worker connected (${os.cpus().length} cores, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')})`);
  console.log('target (issue 13): API execute -> line printed by the job p50 <= 5 ms, p99 <= 15 ms');
  // The job's line carries the worker's Date.now(): its rows are whole ms (the mean is finer).
  show('API execute -> line printed by the job', stamped);
  show('API execute -> line received by an observer', api);
  show(`peer: bare node (${smallRssMb.toFixed(0)} MB) mkdtemp + sh -> line`, smallPeer);
  show(`peer: this bench (${benchRssMb.toFixed(0)} MB) mkdtemp + sh -> line`, peer);
  show('`kiln execute` process -> line at observer', cli);
  show(`inside spawn(): bare node (${smallRssMb.toFixed(0)} MB)`, smallSpawn);
  show(`inside spawn(): this bench (${benchRssMb.toFixed(0)} MB)`, peerSpawn);
  console.log(`worker RSS after the runs: ${workerRssMb.toFixed(1)} MB`);
  const met = percentile(stamped, 50) <= 5 && percentile(stamped, 99) <= 15;
  console.log(`target ${met ? 'met' : 'not met'}; ratio of p50s (job's line / bare node peer): ${(percentile(stamped, 50) / percentile(smallPeer, 50)).toFixed(1)}, (job's line / bench peer): ${(percentile(stamped, 50) / percentile(peer, 50)).toFixed(1)}`);
  if (TRACE) await showTrace(traceFile, sentAt, show);
} finally {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}

/** Prints, per stage, how long runs took to reach it from the one before and from the bench's request. */
async function showTrace(file: string, sentAt: Map<string, number>, show: (name: string, values: number[]) => void): Promise<void> {
  const trace = await readTrace(file, sentAt);
  if (!trace) return void console.log('no trace written (was src/latency-trace.ts built?)');
  console.log(`\nwhere the time goes (${trace.runs} runs traced; ms from the stage before / from the bench's request)`);
  for (const { from, stage, step, total } of trace.stages) {
    show(`  ${from} -> ${stage}`, step);
    if (from !== 'bench-sent') show(`  bench-sent -> ${stage}`, total);
  }
}
