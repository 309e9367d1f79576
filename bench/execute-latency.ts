/**
 * Latency from `execute` to the job's first console line, with an idle worker already connected.
 * Starts a real server and a real worker from the compiled package (separate processes, temp data
 * dir, free port), then measures N runs of a job whose first command prints a line:
 *   - api: POST /api/jobs/:name/execute, then follow the console stream until the first line;
 *   - cli: spawn `kiln execute`, then follow the console until the first line (adds the CLI's
 *     own start-up, which is what a user typing the command sees).
 * Peer, in the same command: this process spawning `sh -c 'echo first line'` in a fresh mkdtemp
 * directory and reading the line, N times.
 * Usage: npm run bench [-- --runs 200 --cli-runs 20]
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { freePort, KILN, numberArg, percentile } from './support.js';

const RUNS = numberArg('--runs', 200);
const CLI_RUNS = numberArg('--cli-runs', 20);

/** The peer: ms from spawning `sh -c 'echo first line'` in a fresh directory to its line. */
async function bareFirstLine(): Promise<number> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-peer-'));
  const t0 = performance.now();
  const ms = await new Promise<number>((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'echo first line'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child.once('error', reject);
    child.stdout.once('data', () => resolve(performance.now() - t0));
    child.stdout.resume();
  });
  await rm(dir, { recursive: true, force: true });
  return ms;
}


function startKiln(args: string[], env: Record<string, string>, ready: RegExp) {
  const child = spawn(process.execPath, [KILN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const started = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => ready.test(line) && resolve());
    child.once('exit', (code) => reject(new Error(`kiln ${args[0]} exited with ${code}`)));
  });
  return { child, started };
}


const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], { KILN_LOG_LEVEL: 'info' }, /listening/);
const children = [server.child];
try {
  await server.started;
  const admin = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const workerToken = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
  const worker = startKiln(['worker', '--server', url, '--platform', 'bench'], { KILN_WORKER_TOKEN: workerToken, KILN_LOG_LEVEL: 'info' }, /connected to the server/);
  children.push(worker.child);
  await worker.started;
  const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
  await fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify({ name: 'hello', platform: 'bench', script: 'echo first line\n', period: 'never' }) });

  /** Follows a run until its first line; resolves with the time it arrived and the worker's stamp. */
  const firstLine = async (runId: string) => {
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
        // Read to the end so the worker is idle again before the next run.
        while (!(await reader.read()).done);
        return { at, stamped: event.ts as number };
      }
    }
  };

  const api: number[] = [];
  const stamped: number[] = [];
  for (let i = 0; i < RUNS; i += 1) {
    const t0 = Date.now();
    const reply = (await (await fetch(`${url}/api/jobs/hello/execute`, { method: 'POST', headers, body: '{}' })).json()) as { run: { id: string } };
    const { at, stamped: ts } = await firstLine(reply.run.id);
    api.push(at - t0);
    stamped.push(ts - t0);
  }
  const peer: number[] = [];
  for (let i = 0; i < RUNS; i += 1) peer.push(await bareFirstLine());
  const cli: number[] = [];
  const run = promisify(execFile);
  for (let i = 0; i < CLI_RUNS; i += 1) {
    const t0 = Date.now();
    const { stdout } = await run(process.execPath, [KILN, 'execute', 'hello'], { env: { ...process.env, KILN_SERVER: url, KILN_TOKEN: admin } });
    const { at } = await firstLine(stdout.trim());
    cli.push(at - t0);
  }
  const show = (name: string, values: number[]) =>
    console.log(`${name.padEnd(48)} ${String(values.length).padStart(4)} runs   p50 ${percentile(values, 50).toFixed(1).padStart(6)} ms   p99 ${percentile(values, 99).toFixed(1).padStart(6)} ms   min ${Math.min(...values).toFixed(1)}   max ${Math.max(...values).toFixed(1)}`);
  console.log(`execute -> first console line, idle worker connected (${os.cpus().length} cores)`);
  show('API execute -> line printed by the job', stamped);
  show('API execute -> line received by an observer', api);
  show('peer: spawn sh -c \'echo first line\' -> line', peer);
  show('`kiln execute` process -> line at observer', cli);
  console.log(`ratio of p50s (job's line / peer): ${(percentile(stamped, 50) / percentile(peer, 50)).toFixed(1)}`);
} finally {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
