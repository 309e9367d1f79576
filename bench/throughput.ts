/**
 * Throughput of trivial runs, against the machine's own rate for the same job shape.
 * Starts a real server and worker from the compiled package (bin/kiln.mjs -> dist), makes N jobs
 * whose script is `true`, executes each once and times the first POST to the server's N-th
 * `run ended` log line; first with a worker of capacity 1, then with one of capacity 4.
 * Peer, in the same command: this process spawning `sh -c true` in a fresh mkdtemp directory
 * (then removing it), N times one after another, and N times with 4 in flight. The machine is
 * shared, so it also prints the CPU time per run (server, worker with its jobs; the peer with its
 * shells), which load on other processes does not inflate as much as the wall-clock rates.
 * Usage: npm run bench:throughput [-- --runs 200 --rounds 3]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { cpuMs, freePort, median, numberArg, rate, startKiln } from './support.js';

const RUNS = numberArg('--runs', 200);
const ROUNDS = numberArg('--rounds', 3);

/** The peer: one `sh -c true` in a fresh directory, as a worker would run it, without Kiln. */
async function bareJob(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-peer-'));
  await new Promise<void>((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'true'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.resume();
    child.stderr.resume();
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`sh exited ${code}`))));
  });
  await rm(dir, { recursive: true, force: true });
}

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], {}, /listening/);
const children = [server.child];
/** Called for each `run ended` line of the server. */
let onEnded = () => {};
createInterface({ input: server.child.stderr! }).on('line', (line) => line.includes('"run ended"') && onEnded());

/** CPU ms per run of each round: the server's, the worker's with its jobs', the peer's with its shells'. */
const cpu = { server: [] as number[], worker: [] as number[], peer: [] as number[] };

/** Starts a worker of `capacity`, executes every job once, and resolves with runs per second. */
async function kilnRate(capacity: number, headers: Record<string, string>, workerToken: string): Promise<number> {
  const worker = startKiln(['worker', '--server', url, '--platform', 'bench', '--capacity', String(capacity), '--name', `bench-${capacity}`],
    { KILN_WORKER_TOKEN: workerToken }, /connected to the server/);
  children.push(worker.child);
  await worker.started;
  let ended = 0;
  const allEnded = new Promise<void>((resolve) => (onEnded = () => ++ended === RUNS && resolve()));
  const serverBefore = cpuMs(server.child.pid!);
  const workerBefore = cpuMs(worker.child.pid!);
  const started = performance.now();
  // A few requests in flight: the client is not what is measured.
  let next = 0;
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < RUNS) {
      const response = await fetch(`${url}/api/jobs/t${next++}/execute`, { method: 'POST', headers, body: '{}' });
      if (!response.ok) throw new Error(`execute: ${response.status} ${await response.text()}`);
    }
  }));
  await allEnded;
  const result = RUNS / ((performance.now() - started) / 1000);
  cpu.server.push((cpuMs(server.child.pid!) - serverBefore) / RUNS);
  cpu.worker.push((cpuMs(worker.child.pid!) - workerBefore) / RUNS);
  const exited = new Promise((resolve) => worker.child.once('exit', resolve));
  worker.child.kill('SIGTERM');
  await exited;
  return result;
}

try {
  await server.started;
  const admin = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const workerToken = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
  const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
  for (let i = 0; i < RUNS; i += 1) {
    const response = await fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify({ name: `t${i}`, platform: 'bench', script: 'true\n', period: 'never' }) });
    if (!response.ok) throw new Error(`create job: ${response.status} ${await response.text()}`);
  }
  const figures = { kiln1: [] as number[], kiln4: [] as number[], peer1: [] as number[], peer4: [] as number[] };
  for (let round = 0; round < ROUNDS; round += 1) {
    const peerBefore = cpuMs(process.pid);
    figures.peer1.push(await rate(RUNS, 1, bareJob));
    cpu.peer.push((cpuMs(process.pid) - peerBefore) / RUNS);
    figures.kiln1.push(await kilnRate(1, headers, workerToken));
    figures.peer4.push(await rate(RUNS, 4, bareJob));
    figures.kiln4.push(await kilnRate(4, headers, workerToken));
  }
  const show = (values: number[]) => `${median(values).toFixed(0).padStart(5)} /s (${values.map((v) => v.toFixed(0)).join(', ')})`;
  console.log(`${RUNS} trivial runs (\`true\`), median of ${ROUNDS} rounds, ${os.cpus().length} cores`);
  console.log(`capacity 1: kiln ${show(figures.kiln1)}   peer sh -c true, 1 at a time ${show(figures.peer1)}   ratio ${(median(figures.kiln1) / median(figures.peer1)).toFixed(2)}`);
  console.log(`CPU per run (capacity 1 and 4 rounds): server ${median(cpu.server).toFixed(2)} ms + worker with its job ${median(cpu.worker).toFixed(2)} ms; ` +
    `peer (this process with its shell, 1 at a time) ${median(cpu.peer).toFixed(2)} ms`);
  console.log(`capacity 4: kiln ${show(figures.kiln4)}   peer sh -c true, 4 in flight ${show(figures.peer4)}   ratio ${(median(figures.kiln4) / median(figures.peer4)).toFixed(2)}`);
} finally {
  // SIGTERM first, so a server run with --cpu-prof writes its profile; SIGKILL what lingers.
  await Promise.all(children.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => resolve(clearTimeout(timer)));
    child.kill('SIGTERM');
  })));
  rmSync(dataDir, { recursive: true, force: true });
}
