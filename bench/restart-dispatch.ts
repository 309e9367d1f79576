/**
 * Time from a server (re)start to its first dispatch, with 10,000 runs queued.
 * Fills a data dir through the store (10,000 jobs, each with a queued run), then N times: starts
 * `kiln server` on it, starts a worker as soon as the server listens, and reads the time of the
 * server's first "run dispatched" log line. The first dispatched run is then left to finish before
 * the next round; each round dispatches from the same big queue.
 * Usage: node --import tsx bench/restart-dispatch.ts [--queued 10000] [--rounds 5]
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { openStore } from '../src/store/index.js';
import { freePort, KILN, median, numberArg } from './support.js';

const QUEUED = numberArg('--queued', 10_000);
const ROUNDS = numberArg('--rounds', 5);



const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-restart-'));
try {
  const fillStart = Date.now();
  const store = await openStore(dataDir);
  const now = Date.now();
  for (let i = 0; i < QUEUED; i += 1) {
    const name = `job-${i}`;
    await store.createJob(
      {
        name, platform: 'bench', script: 'echo hi\n', template: null, vars: {}, env: {}, labels: {}, schedule: { kind: 'period', period: 'weekly' },
        paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null, timeoutMs: 60_000, idleTimeoutMs: null,
        retries: 1, failureRetries: 0, artifacts: [], artifactsOnFailure: false, sandbox: {}, nextAt: now + 604_800_000, createdAt: now, updatedAt: now,
      },
      [{ id: randomUUID(), job: name, platform: 'bench', labels: {}, queuedAt: now }],
    );
  }
  await store.close();
  console.log(`filled ${QUEUED} queued runs in ${((Date.now() - fillStart) / 1000).toFixed(1)} s`);

  const listening: number[] = [];
  const firstDispatch: number[] = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const t0 = performance.now();
    const server = spawn(process.execPath, [KILN, 'server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], {
      env: { ...process.env, KILN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    let worker: ReturnType<typeof spawn> | undefined;
    await new Promise<void>((resolve, reject) => {
      server.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
      createInterface({ input: server.stderr! }).on('line', (line) => {
        if (/kiln server listening/.test(line)) {
          listening.push(performance.now() - t0);
          const token = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
          worker = spawn(process.execPath, [KILN, 'worker', '--server', url, '--platform', 'bench', '--name', `bench-${round}`], {
            env: { ...process.env, KILN_WORKER_TOKEN: token }, stdio: 'ignore',
          });
        }
        if (/run dispatched/.test(line)) {
          firstDispatch.push(performance.now() - t0);
          resolve();
        }
      });
    });
    worker?.kill('SIGTERM');
    await new Promise((resolve) => worker?.once('exit', resolve));
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
  }
  console.log(`server start with ${QUEUED} queued runs, ${ROUNDS} rounds (median, min, max in ms):`);
  const show = (label: string, values: number[]) =>
    console.log(`  ${label.padEnd(34)} ${median(values).toFixed(0).padStart(5)} ${Math.min(...values).toFixed(0).padStart(5)} ${Math.max(...values).toFixed(0).padStart(5)}`);
  show('spawn -> listening', listening);
  show('spawn -> first run dispatched', firstDispatch);
  show('listening -> first dispatch', firstDispatch.map((v, i) => v - listening[i]!));
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
