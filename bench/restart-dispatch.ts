/**
 * Time from a server (re)start to its first dispatch, with 100,000 runs queued, beside the same
 * restart with 10 runs queued (the peer: what a queue costs the start is the difference), in two
 * cases, each for R rounds alternating the two data dirs:
 * - a fresh worker: `kiln server` (the compiled package) starts, a worker is started as soon as the
 *   server says it listens, and the time of the server's first "run dispatched" log line is read;
 * - a reconnecting worker (what a restart in production looks like): one worker per data dir runs
 *   all along; the server is stopped (SIGTERM) and at once started again on the same address, and
 *   the worker, retrying with its own backoff since it lost the connection, comes back by itself.
 *   Between its rounds the worker is paused (SIGSTOP) as soon as it has been dispatched a run, so it
 *   does not empty the peer's queue; it is let go (SIGCONT) as its server is stopped, so it sees the
 *   connection close and retries as it would. The run it held ends while it is away and its result
 *   is delivered on the reconnect, before the next dispatch, as in production.
 * Each fresh-worker round, and each case of reconnecting rounds, starts on its own copy of the
 * filled data dirs, so each starts with the queue it names.
 * Usage: npm run bench:restart [-- --queued 100000 --rounds 5]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
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

/** Times of one restart, ms from the server's spawn. */
interface Times { listening: number; dispatched: number }

/** A copy of a filled data dir, removed at the end. */
function copied(dataDir: string): string {
  const copy = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-restart-'));
  cpSync(dataDir, copy, { recursive: true });
  dirs.push(copy);
  return copy;
}

/** The longest one restart may take before the bench gives up (an empty queue would never dispatch). */
const GIVE_UP_MS = 120_000;

/** A data dir and the address its servers listen on (the same in every round: a running worker finds it again). */
interface Site { dataDir: string; port: number; worker?: ChildProcess }

function spawnWorker(site: Site, name: string): ChildProcess {
  const token = readFileSync(path.join(site.dataDir, 'worker.token'), 'utf8').trim();
  return spawn(process.execPath, [KILN, 'worker', '--server', `http://127.0.0.1:${site.port}`, '--platform', 'bench', '--name', name], {
    env: { ...process.env, KILN_WORKER_TOKEN: token }, stdio: 'ignore',
  });
}

/**
 * Starts a server on `site`; `onListening` runs once it says it listens. Resolves with the times and
 * the running server once it logs its first dispatch.
 */
async function startUntilDispatch(site: Site, onListening: () => void, onDispatch = () => {}): Promise<{ server: ChildProcess; times: Times }> {
  const t0 = performance.now();
  const server = spawn(process.execPath, [KILN, 'server', '--listen', `127.0.0.1:${site.port}`, '--data', site.dataDir], {
    env: { ...process.env, KILN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let listening = 0;
  let timer: NodeJS.Timeout | undefined;
  const dispatched = await new Promise<number>((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    timer = setTimeout(() => reject(new Error(`no dispatch within ${GIVE_UP_MS} ms (${site.dataDir})`)), GIVE_UP_MS);
    createInterface({ input: server.stderr! }).on('line', (line) => {
      // Once: the server says it listens twice (the log line and the line for people).
      if (/kiln server listening/.test(line) && listening === 0) {
        listening = performance.now() - t0;
        onListening();
      }
      if (/run dispatched/.test(line)) {
        onDispatch();
        resolve(performance.now() - t0);
      }
    });
  }).finally(() => clearTimeout(timer));
  server.removeAllListeners('exit');
  return { server, times: { listening, dispatched } };
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** A restart with a worker started once the server listens; both are stopped after the first dispatch. */
async function freshWorker(site: Site, round: number): Promise<Times> {
  let worker: ChildProcess | undefined;
  const { server, times } = await startUntilDispatch(site, () => (worker = spawnWorker(site, `fresh-${round}`)));
  await stop(worker);
  await stop(server);
  return times;
}

/** A restart while `site.worker` runs: stops the previous server, starts the next one at once. */
async function reconnectingWorker(site: Site, previous: ChildProcess): Promise<{ server: ChildProcess; times: Times }> {
  const exited = stop(previous);
  site.worker!.kill('SIGCONT');
  await exited;
  return startUntilDispatch(site, () => undefined, () => site.worker!.kill('SIGSTOP'));
}

const dirs: string[] = [];
const bigDir = await filled(QUEUED);
const smallDir = await filled(PEER_QUEUED);
dirs.push(bigDir, smallDir);
const running: ChildProcess[] = [];
try {
  // The fresh-worker case starts each round on a new copy: each round sees the queue it names.
  const fresh = { big: [] as Times[], small: [] as Times[] };
  const reconnect = { big: [] as Times[], small: [] as Times[] };
  for (let round = 0; round < ROUNDS; round += 1) {
    fresh.big.push(await freshWorker({ dataDir: copied(bigDir), port: await freePort() }, round));
    fresh.small.push(await freshWorker({ dataDir: copied(smallDir), port: await freePort() }, round));
  }
  // The reconnecting case: one worker per site for all its rounds, started against a first server.
  const big: Site = { dataDir: copied(bigDir), port: await freePort() };
  const small: Site = { dataDir: copied(smallDir), port: await freePort() };
  const servers = new Map<Site, ChildProcess>();
  for (const site of [big, small]) {
    const { server } = await startUntilDispatch(site, () => (site.worker = spawnWorker(site, 'steady')), () => site.worker!.kill('SIGSTOP'));
    running.push(site.worker!);
    servers.set(site, server);
  }
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const [site, into] of [[big, reconnect.big], [small, reconnect.small]] as const) {
      const { server, times } = await reconnectingWorker(site, servers.get(site)!);
      servers.set(site, server);
      into.push(times);
    }
  }
  await Promise.all([...servers.values()].map(stop));

  console.log(`server restart, compiled package, ${ROUNDS} rounds each, ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}: median (min - max) in ms`);
  console.log(`${''.padEnd(56)} ${`${QUEUED} queued`.padStart(22)} ${`${PEER_QUEUED} queued (peer)`.padStart(22)}  ratio`);
  const cell = (values: number[]) => `${median(values).toFixed(0)} (${Math.min(...values).toFixed(0)} - ${Math.max(...values).toFixed(0)})`.padStart(22);
  const row = (label: string, times: { big: Times[]; small: Times[] }, pick: (t: Times) => number) => {
    const ours = times.big.map(pick);
    const peer = times.small.map(pick);
    console.log(`${label.padEnd(56)} ${cell(ours)} ${cell(peer)}  ${(median(ours) / median(peer)).toFixed(2)}`);
  };
  row('fresh worker: spawn -> listening', fresh, (t) => t.listening);
  row('fresh worker: spawn -> first run dispatched', fresh, (t) => t.dispatched);
  row('fresh worker: listening -> first dispatch', fresh, (t) => t.dispatched - t.listening);
  row('reconnecting worker: spawn -> listening', reconnect, (t) => t.listening);
  row('reconnecting worker: spawn -> first run dispatched', reconnect, (t) => t.dispatched);
  row('reconnecting worker: listening -> first dispatch', reconnect, (t) => t.dispatched - t.listening);
} finally {
  // The workers may hold a run and have no server to deliver it to: they would wait for one.
  for (const child of running) child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
