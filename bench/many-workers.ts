/**
 * Ten thousand idle workers on one server (issue 16, item 6). The server is a child process (on
 * PostgreSQL when KILN_BENCH_POSTGRES is set, to that URL or "1" for the tests' default, in a fresh
 * schema dropped at the end; else SQLite in a temp dir). The workers are simulated in this process:
 * real WebSockets (the `ws` package) speaking the real protocol (src/protocol/messages.ts): a hello
 * with the worker token, pongs to the server's pings (ws answers them), and each `run` frame
 * answered with a line of output and a result.
 *   1. 10 workers on platform `bench` (label lane=timed, which the job asks for): N executes of a
 *      no-op job one at a time; p50/p95 of execute sent -> `run` frame received by the worker;
 *   2. add the idle workers (platforms idle-0..4, and 1,000 on `bench` with lane=idle, which the job
 *      does not ask for), connecting 200 at a time; wait --idle-seconds;
 *   3. the server's RSS (/proc/PID/status VmRSS) and CPU (/proc/PID/stat utime+stime) over
 *      --sample-seconds, beside this process's own CPU (the 10,000 clients answering the same pings);
 *   4. phase 1 again.
 * Gates (printed beside the figures, not asserted): RSS <= 500 MB, idle CPU <= 5 %, p50(4) - p50(1) <= 2 ms.
 * Usage: npm run bench:workers [-- --workers 10000 --idle-seconds 60 --sample-seconds 30 --runs 200]
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import WebSocket from 'ws';
import { freePort, numberArg, percentile, startKiln } from './support.js';

const WORKERS = numberArg('--workers', 10_000);
const IDLE_SECONDS = numberArg('--idle-seconds', 60);
const SAMPLE_SECONDS = numberArg('--sample-seconds', 30);
const RUNS = numberArg('--runs', 200);
const TIMED = 10;
const CONCURRENCY = 200;
/** Source addresses the clients are spread over, so 10,000 connections do not run short of ephemeral ports on one. */
const SOURCES = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** The descriptor limit, raised to what the run needs (this process and the server each hold one socket a worker), or a clear failure. */
function ensureDescriptors(needed: number): void {
  const soft = () => Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
  if (soft() >= needed) return;
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${needed}:${needed}`], { stdio: 'ignore' });
  } catch {
    // Reported below.
  }
  if (soft() < needed) {
    console.error(`needs ${needed} open files per process (ulimit -n is ${soft()}): run 'ulimit -n ${needed}' (or raise the hard limit) first`);
    process.exit(1);
  }
}

const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
/** utime and stime of a process, in clock ticks. */
const cpuSplit = (pid: number | 'self') => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { user: Number(fields[11]), system: Number(fields[12]) };
};
/** utime+stime of a process, in clock ticks. */
const cpuTicks = (pid: number | 'self') => {
  const { user, system } = cpuSplit(pid);
  return user + system;
};

/** One simulated worker: a real WebSocket, the real protocol. */
class SimWorker {
  private socket: WebSocket | undefined;
  /** Waiting for the next `run` frame (phase 1 and 4): resolves with when it came. */
  private waitingRun: ((at: number) => void) | undefined;
  private waitingDone: (() => void) | undefined;

  constructor(readonly name: string, readonly platform: string, readonly labels: Record<string, string>, private readonly source: string) {}

  connect(url: string, token: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/api/worker`, { headers: { authorization: `Bearer ${token}` }, localAddress: this.source, perMessageDeflate: false });
      this.socket = socket;
      socket.once('error', reject);
      socket.on('open', () => socket.send(JSON.stringify({
        v: 1, type: 'hello', name: this.name, platform: this.platform, labels: this.labels, capacity: 1, once: false,
        hostname: 'bench', os: 'linux', arch: 'x64', version: 'bench', session: randomUUID(), runs: [],
      })));
      socket.on('close', (code) => reject(new Error(`${this.name} closed (${code})`)));
      socket.on('message', (data: Buffer) => {
        const message = JSON.parse(data.toString('utf8')) as { type: string; run?: { id: string; firstSeq: number }; runId?: string };
        if (message.type === 'welcome') resolve();
        else if (message.type === 'run.assign') this.take(message.run!);
        else if (message.type === 'run.done') {
          this.waitingDone?.();
          this.waitingDone = undefined;
        }
      });
    });
  }

  /** Answers a run at once: one line, then exit 0. */
  private take(run: { id: string; firstSeq: number }): void {
    const at = performance.now();
    this.waitingRun?.(at);
    this.waitingRun = undefined;
    this.socket!.send(JSON.stringify({ v: 1, type: 'run.output', runId: run.id, lines: [{ seq: run.firstSeq, ts: Date.now(), text: 'ok' }] }));
    this.socket!.send(JSON.stringify({ v: 1, type: 'run.finished', runId: run.id, result: { kind: 'exited', code: 0 } }));
  }

  /** Resolves with when the next run frame arrives, and then once its result is acknowledged. */
  nextRun(): { frame: Promise<number>; done: Promise<void> } {
    return {
      frame: new Promise((resolve) => (this.waitingRun = resolve)),
      done: new Promise((resolve) => (this.waitingDone = resolve)),
    };
  }

  close(): void {
    this.socket?.removeAllListeners('close');
    this.socket?.on('error', () => undefined);
    this.socket?.terminate();
  }
}

/** Connects workers, CONCURRENCY at a time. */
async function connectAll(workers: SimWorker[], url: string, token: string): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, workers.length) }, async () => {
    while (next < workers.length) await workers[next++]!.connect(url, token);
  }));
}

/** RUNS executes one at a time; ms from the execute request to the `run` frame at a timed worker. */
async function measure(url: string, headers: Record<string, string>, timed: SimWorker[]): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i += 1) {
    const waits = timed.map((worker) => worker.nextRun());
    const t0 = performance.now();
    const reply = await fetch(`${url}/api/jobs/noop/execute`, { method: 'POST', headers, body: '{}' });
    if (!reply.ok) throw new Error(`execute: ${reply.status} ${await reply.text()}`);
    const at = await Promise.race(waits.map((w) => w.frame));
    samples.push(at - t0);
    // The worker is idle again once its result is in.
    await Promise.race(waits.map((w, k) => w.frame.then(() => w.done).then(() => k)));
  }
  return samples;
}

const fmt = (ms: number) => ms.toFixed(2);
const verdict = (ok: boolean) => (ok ? 'within' : 'OVER');

ensureDescriptors(WORKERS + 200);
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-workers-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
let storeArgs: string[] = [];
let dropSchema: (() => Promise<void>) | undefined;
const postgres = process.env.KILN_BENCH_POSTGRES;
if (postgres) {
  const base = postgres === '1' ? (process.env.KILN_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test') : postgres;
  const schema = `kiln_bench_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  dropSchema = async () => {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  };
  const withSchema = new URL(base);
  withSchema.searchParams.set('options', `-c search_path=${schema}`);
  storeArgs = ['--store', withSchema.href];
}
const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, ...storeArgs], {}, /listening/);
let stopping = false;
// Stopped by a signal: the server goes too (the finally below does not run then).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => {
  stopping = true;
  server.child.kill('SIGKILL');
  process.exit(130);
});
server.started.catch((err: Error) => {
  if (stopping) return;
  console.error(err.message);
  process.exit(1);
});
const workers: SimWorker[] = [];
try {
  await server.started;
  const adminToken = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const workerToken = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
  const headers = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };
  const created = await fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify({ name: 'noop', platform: 'bench', labels: { lane: 'timed' }, script: 'true\n', period: 'never' }) });
  if (!created.ok) throw new Error(`create job: ${created.status} ${await created.text()}`);
  const pid = server.child.pid!;
  console.log(`kiln server pid ${pid} on ${postgres ? 'PostgreSQL' : 'SQLite'}; ${WORKERS} workers (${TIMED} timed), ${RUNS} executes per phase, idle ${IDLE_SECONDS} s, sampled ${SAMPLE_SECONDS} s; ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  const timed = Array.from({ length: TIMED }, (_, i) => new SimWorker(`timed-${i}`, 'bench', { lane: 'timed' }, SOURCES[0]!));
  workers.push(...timed);
  await connectAll(timed, url, workerToken);
  const baseRss = rssKb(pid);
  const before = await measure(url, headers, timed);
  // The idle server's own CPU with 10 workers: the floor the 10,000's figure is read against.
  const baseSeconds = Math.min(SAMPLE_SECONDS, 10);
  const baseCpu0 = cpuTicks(pid);
  await new Promise((resolve) => setTimeout(resolve, baseSeconds * 1000));
  const baseCpuPct = ((cpuTicks(pid) - baseCpu0) / CLK_TCK / baseSeconds) * 100;
  console.log(`phase 1: ${TIMED} workers: execute -> run frame p50 ${fmt(percentile(before, 50))} ms, p95 ${fmt(percentile(before, 95))} ms; server RSS ${(baseRss / 1024).toFixed(1)} MB, idle CPU ${baseCpuPct.toFixed(2)} % over ${baseSeconds} s`);

  const idleCount = WORKERS - TIMED;
  const idle = Array.from({ length: idleCount }, (_, i) => {
    const name = `sim-${String(i + 1).padStart(5, '0')}`;
    const onBench = i < Math.min(1000, idleCount);
    return new SimWorker(name, onBench ? 'bench' : `idle-${i % 5}`, onBench ? { lane: 'idle' } : {}, SOURCES[i % SOURCES.length]!);
  });
  workers.push(...idle);
  const joinStart = performance.now();
  const joinCpu = cpuTicks(pid);
  await connectAll(idle, url, workerToken);
  const joinMs = performance.now() - joinStart;
  console.log(`phase 2: ${idleCount} more workers connected in ${(joinMs / 1000).toFixed(1)} s (server CPU ${(((cpuTicks(pid) - joinCpu) / CLK_TCK) * 1000 / joinMs * 100).toFixed(0)} % meanwhile); idle ${IDLE_SECONDS} s`);
  await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));

  const cpu0 = cpuTicks(pid);
  const split0 = cpuSplit(pid);
  const self0 = cpuTicks('self');
  const t0 = performance.now();
  const rssSamples: number[] = [];
  while (performance.now() - t0 < SAMPLE_SECONDS * 1000) {
    rssSamples.push(rssKb(pid));
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpuPct = ((cpuTicks(pid) - cpu0) / CLK_TCK / seconds) * 100;
  const split1 = cpuSplit(pid);
  const pct = (ticks: number) => ((ticks / CLK_TCK / seconds) * 100).toFixed(2);
  const selfPct = ((cpuTicks('self') - self0) / CLK_TCK / seconds) * 100;
  const rssMb = Math.max(...rssSamples) / 1024;
  const perWorkerKb = (Math.max(...rssSamples) - baseRss) / idleCount;
  const after = await measure(url, headers, timed);
  const delta = percentile(after, 50) - percentile(before, 50);

  console.log(`phase 3: ${WORKERS} connected: server RSS ${rssMb.toFixed(1)} MB (gate 500 MB: ${verdict(rssMb <= 500)}; ${perWorkerKb.toFixed(1)} kB a worker over the ${(baseRss / 1024).toFixed(1)} MB with ${TIMED})`);
  console.log(`         idle CPU ${cpuPct.toFixed(2)} % of a core over ${seconds.toFixed(0)} s (gate 5 %: ${verdict(cpuPct <= 5)}; user ${pct(split1.user - split0.user)} %, kernel ${pct(split1.system - split0.system)} %); peer: this process answering the same pings for ${WORKERS} clients ${selfPct.toFixed(2)} %`);
  console.log(`phase 4: ${WORKERS} workers: execute -> run frame p50 ${fmt(percentile(after, 50))} ms, p95 ${fmt(percentile(after, 95))} ms`);
  console.log(`p50 change ${delta >= 0 ? '+' : ''}${fmt(delta)} ms against ${TIMED} workers (gate 2 ms: ${verdict(delta <= 2)})`);
} finally {
  for (const worker of workers) worker.close();
  stopping = true;
  server.child.kill('SIGTERM');
  await new Promise((resolve) => server.child.once('exit', resolve));
  await dropSchema?.().catch((err: Error) => console.error(`schema left behind: ${err.message}`));
  rmSync(dataDir, { recursive: true, force: true });
}
