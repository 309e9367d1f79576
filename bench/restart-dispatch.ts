/**
 * Time from a server (re)start to its first dispatch, with 100,000 runs queued, beside the same
 * restart with 10 runs queued (the peer: what a queue costs the start is the difference).
 * Fills two data dirs through the store (N jobs, each with a queued run), then for R rounds,
 * alternating the two dirs: starts `kiln server` (the compiled package) on it, starts a worker as
 * soon as the server listens, and reads the time of the server's first "run dispatched" log line.
 * The dispatched run is left to finish before the next round; each round dispatches from the same
 * big queue.
 * Usage: npm run bench:restart [-- --queued 100000 --rounds 5]
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { openStore } from '../src/store/index.js';
import { freePort, KILN, median, numberArg } from './support.js';

const QUEUED = numberArg('--queued', 100_000);
const PEER_QUEUED = 10;
const ROUNDS = numberArg('--rounds', 5);

/** A data dir with `count` jobs, each with one queued run. */
async function filled(count: number): Promise<string> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-restart-'));
  const fillStart = Date.now();
  const store = await openStore(dataDir);
  // The fill only: without an fsync per job, 100,000 jobs take seconds instead of many minutes.
  (store as unknown as { db: { pragma(text: string): unknown } }).db.pragma('synchronous = OFF');
  const now = Date.now();
  for (let i = 0; i < count; i += 1) {
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
  const mb = statSync(path.join(dataDir, 'kiln.db')).size / 1048576;
  console.log(`filled ${count} queued runs in ${((Date.now() - fillStart) / 1000).toFixed(1)} s (database ${mb.toFixed(1)} MB)`);
  return dataDir;
}

/** One restart on `dataDir`: ms from spawn to listening and to the first dispatch. */
async function restart(dataDir: string, round: number): Promise<{ listening: number; dispatched: number }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const t0 = performance.now();
  const server = spawn(process.execPath, [KILN, 'server', '--listen', `127.0.0.1:${port}`, '--data', dataDir], {
    env: { ...process.env, KILN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let worker: ReturnType<typeof spawn> | undefined;
  let listening = 0;
  const dispatched = await new Promise<number>((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    createInterface({ input: server.stderr! }).on('line', (line) => {
      // Once: the server says it listens twice (the log line and the line for people).
      if (/kiln server listening/.test(line) && worker === undefined) {
        listening = performance.now() - t0;
        const token = readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim();
        worker = spawn(process.execPath, [KILN, 'worker', '--server', url, '--platform', 'bench', '--name', `bench-${round}`], {
          env: { ...process.env, KILN_WORKER_TOKEN: token }, stdio: 'ignore',
        });
      }
      if (/run dispatched/.test(line)) resolve(performance.now() - t0);
    });
  });
  worker?.kill('SIGTERM');
  await new Promise((resolve) => worker?.once('exit', resolve));
  server.kill('SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  return { listening, dispatched };
}

const big = await filled(QUEUED);
const small = await filled(PEER_QUEUED);
try {
  const times = { big: [] as { listening: number; dispatched: number }[], small: [] as { listening: number; dispatched: number }[] };
  for (let round = 0; round < ROUNDS; round += 1) {
    times.big.push(await restart(big, round));
    times.small.push(await restart(small, round));
  }
  console.log(`server restart, compiled package, ${ROUNDS} rounds each, ${os.cpus().length} cores: median (min - max) in ms`);
  console.log(`${''.padEnd(40)} ${`${QUEUED} queued`.padStart(22)} ${`${PEER_QUEUED} queued (peer)`.padStart(22)}  ratio`);
  const cell = (values: number[]) => `${median(values).toFixed(0)} (${Math.min(...values).toFixed(0)} - ${Math.max(...values).toFixed(0)})`.padStart(22);
  const row = (label: string, pick: (t: { listening: number; dispatched: number }) => number) => {
    const ours = times.big.map(pick);
    const peer = times.small.map(pick);
    console.log(`${label.padEnd(40)} ${cell(ours)} ${cell(peer)}  ${(median(ours) / median(peer)).toFixed(2)}`);
  };
  row('spawn -> listening', (t) => t.listening);
  row('spawn -> first run dispatched', (t) => t.dispatched);
  row('listening -> first dispatch', (t) => t.dispatched - t.listening);
} finally {
  rmSync(big, { recursive: true, force: true });
  rmSync(small, { recursive: true, force: true });
}
