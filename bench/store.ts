/**
 * The PostgreSQL store beside the SQLite store, in one command (issue 14):
 *   1. execute -> job start: a real server and an idle worker on each store (the compiled package,
 *      separate processes), the stores taking turns run by run; ms from the execute request to the
 *      line the job prints (the worker's stamp) and to an observer receiving it. p50 and p99.
 *   2. trivial-run throughput: N jobs whose script is `true`, each executed once, first request to
 *      the server's N-th `run ended` line, with a worker of capacity 1 and then of 4; the stores take
 *      turns round by round.
 *   3. the store's raw claim rate, in this process: N runs queued, then claimed one by one through
 *      JobStore.claimNext. Peer, on the same PostgreSQL with the same driver (pg), one connection:
 *      a one-row INSERT committed in its own transaction (PostgreSQL's commit rate here, the limit
 *      of anything that commits once per operation), and `SELECT 1` (one round trip).
 * Goals: PostgreSQL's execute -> start p50 within 2 ms of SQLite's, its throughput >= 80 % of SQLite's.
 * With --trace, the latency runs' servers and workers note each stage (src/latency-trace.ts) and the
 * bench prints where the time goes on each store, stage by stage, side by side.
 * PostgreSQL at KILN_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test), a fresh
 * schema per use, dropped at the end.
 * Usage: npm run bench:store [-- --runs 200 --jobs 200 --rounds 3 --claims 2000 --trace]
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import type { Job, JobStore } from '../src/store/job-store.js';
import { openPostgresStore } from '../src/store/postgres/postgres-store.js';
import { openSqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { adminQuery, POSTGRES_URL, postgresReason, urlWithSchema } from '../test/helpers/postgres.js';
import { cpuMs, followFirstLine, freePort, median, numberArg, percentile, rate, readTrace, startKiln } from './support.js';

const RUNS = numberArg('--runs', 200);
const JOBS = numberArg('--jobs', 200);
const ROUNDS = numberArg('--rounds', 3);
const CLAIMS = numberArg('--claims', 2000);
const TRACE = process.argv.includes('--trace');

const why = postgresReason();
if (why) {
  console.error(`bench:store: ${why}`);
  process.exit(1);
}

const cleanups: (() => Promise<unknown> | unknown)[] = [];

/** A fresh schema of the bench's PostgreSQL, dropped at the end; its name and URL. */
async function freshSchema(): Promise<{ schema: string; url: string }> {
  const schema = `kiln_bench_${randomUUID().slice(0, 8)}`;
  await adminQuery(`CREATE SCHEMA ${schema}`);
  cleanups.push(() => adminQuery(`DROP SCHEMA ${schema} CASCADE`));
  return { schema, url: urlWithSchema(POSTGRES_URL, schema) };
}

/** A server (and its data dir) on one store, with an idle worker for latency runs. */
interface Farm {
  store: 'sqlite' | 'postgres';
  url: string;
  headers: Record<string, string>;
  workerToken: string;
  /** Called for each `run ended` line of the server. */
  onEnded: () => void;
  serverPid: number;
  /** Stops its latency worker and its server. */
  close: () => Promise<void>;
  /** The latency trace its server and latency worker write (with --trace), and when the bench sent each run's execute, on its clock. */
  traceFile: string;
  sentAt: Map<string, number>;
}

async function startFarm(store: Farm['store']): Promise<Farm> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const storeArgs = store === 'postgres' ? ['--store', (await freshSchema()).url] : [];
  const traceFile = path.join(dataDir, 'latency.trace');
  const server = startKiln(['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, ...storeArgs], traceEnv(traceFile), /listening/);
  cleanups.push(() => stop(server.child));
  await server.started;
  const farm: Farm = {
    store, url, onEnded: () => {}, close: async () => {}, traceFile, sentAt: new Map(), serverPid: server.child.pid!,
    headers: { authorization: `Bearer ${readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim()}`, 'content-type': 'application/json' },
    workerToken: readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim(),
  };
  createInterface({ input: server.child.stderr! }).on('line', (line) => line.includes('"run ended"') && farm.onEnded());
  await post(farm, '/api/jobs', { name: 'hello', platform: 'latency', script: 'echo first line\n', period: 'never' });
  for (let i = 0; i < JOBS; i += 1) await post(farm, '/api/jobs', { name: `t${i}`, platform: 'bench', script: 'true\n', period: 'never' });
  const latency = await startWorker(farm, 'latency', 1, traceEnv(traceFile));
  farm.close = async () => {
    await stop(latency.child);
    await stop(server.child);
  };
  return farm;
}

async function post(farm: Farm, route: string, body: unknown): Promise<{ run: { id: string } }> {
  const response = await fetch(farm.url + route, { method: 'POST', headers: farm.headers, body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`${farm.store}: POST ${route}: ${response.status} ${await response.text()}`);
  return (await response.json()) as { run: { id: string } };
}

const traceEnv = (file: string): Record<string, string> => (TRACE ? { KILN_LATENCY_TRACE: file } : {});

async function startWorker(farm: Farm, platform: string, capacity: number, env: Record<string, string> = {}) {
  const worker = startKiln(['worker', '--server', farm.url, '--platform', platform, '--capacity', String(capacity), '--name', `${platform}-${capacity}`],
    { KILN_WORKER_TOKEN: farm.workerToken, ...env }, /connected to the server/);
  cleanups.push(() => stop(worker.child));
  await worker.started;
  return worker;
}

/** SIGTERM, then SIGKILL what lingers after 5 s. */
function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => resolve(clearTimeout(timer)));
    child.kill('SIGTERM');
  });
}

/** One latency run: ms from the execute request to the job's line (worker's stamp) and to its receipt here. */
async function latencyRun(farm: Farm): Promise<[number, number]> {
  const t0 = Date.now();
  const sent = Number(process.hrtime.bigint()) / 1e6; // the trace's clock (src/latency-trace.ts)
  const { run } = await post(farm, '/api/jobs/hello/execute', {});
  farm.sentAt.set(run.id, sent);
  const { at, stamped } = await followFirstLine(farm.url, farm.headers, run.id);
  return [stamped - t0, at - t0];
}

/** CPU ms used so far by every PostgreSQL server process of this machine (its backends, WAL writer, checkpointer...). */
function postgresCpuMs(): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'postgres') total += cpuMs(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/** CPU ms per run of the throughput rounds, by store: the server's, the worker's with its jobs', PostgreSQL's. */
const cpuPerRun = { sqlite: { server: [] as number[], worker: [] as number[], postgres: [] as number[] }, postgres: { server: [] as number[], worker: [] as number[], postgres: [] as number[] } };

/** Executes every `t` job once with a worker of `capacity`; runs per second, first request to the last `run ended`. */
async function throughput(farm: Farm, capacity: number): Promise<number> {
  const worker = await startWorker(farm, 'bench', capacity);
  let ended = 0;
  const allEnded = new Promise<void>((resolve) => (farm.onEnded = () => ++ended === JOBS && resolve()));
  const before = { server: cpuMs(farm.serverPid), worker: cpuMs(worker.child.pid!), postgres: postgresCpuMs() };
  const started = performance.now();
  // A few requests in flight: the client is not what is measured.
  await rate(JOBS, 4, async (i) => void (await post(farm, `/api/jobs/t${i}/execute`, {})));
  await allEnded;
  const result = JOBS / ((performance.now() - started) / 1000);
  const used = cpuPerRun[farm.store];
  used.server.push((cpuMs(farm.serverPid) - before.server) / JOBS);
  used.worker.push((cpuMs(worker.child.pid!) - before.worker) / JOBS);
  used.postgres.push((postgresCpuMs() - before.postgres) / JOBS);
  await stop(worker.child);
  return result;
}

function aJob(name: string, platform: string): Job {
  const now = Date.now();
  return {
    name, platform, script: 'true', env: {}, labels: {}, template: null, vars: {}, schedule: { kind: 'period', period: 'never' },
    paused: false, overlap: 'skip', catchUp: false, skipped: 0, lastSkip: null, timeoutMs: 60_000, idleTimeoutMs: null, retries: 1, failureRetries: 0,
    artifacts: [], artifactsOnFailure: false, sandbox: {}, nextAt: null, createdAt: now, updatedAt: now,
  };
}

/**
 * Queues CLAIMS runs (a job each, created with its run), then claims them one by one: [enqueues/s,
 * claims/s]. `beforeClaims`: run between the two (PostgreSQL's ANALYZE, say).
 */
async function claimRates(store: JobStore, prefix: string, beforeClaims?: () => Promise<unknown>): Promise<[number, number]> {
  const enqueued = await rate(CLAIMS, 1, async (i) => void (await store.createJob(aJob(`${prefix}${i}`, prefix), [{ id: randomUUID(), job: `${prefix}${i}`, platform: prefix, labels: {}, queuedAt: Date.now() }])));
  await beforeClaims?.();
  const worker = { name: 'claimer', platform: prefix, labels: {} };
  const claimed = await rate(CLAIMS, 1, async () => {
    if (!(await store.claimNext(worker, Date.now(), 60_000))) throw new Error('claimNext found nothing queued');
  });
  return [enqueued, claimed];
}

/** The same PostgreSQL through the same driver on one connection: one-row INSERTs each committed alone, and SELECT 1; per second. */
async function postgresPeers(url: string): Promise<{ commits: number; roundTrips: number; settings: string }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('CREATE TABLE commit_peer (id BIGINT PRIMARY KEY, at BIGINT NOT NULL)');
    const commits = await rate(CLAIMS, 1, async (i) => void (await client.query({ name: 'peer_insert', text: 'INSERT INTO commit_peer (id, at) VALUES ($1, $2)', values: [i, Date.now()] })));
    const roundTrips = await rate(CLAIMS, 1, async () => void (await client.query({ name: 'peer_select', text: 'SELECT 1' })));
    const show = async (name: string) => (await client.query(`SHOW ${name}`)).rows[0][name] as string;
    const settings = `PostgreSQL ${await show('server_version')}, fsync ${await show('fsync')}, synchronous_commit ${await show('synchronous_commit')}, wal_sync_method ${await show('wal_sync_method')}`;
    return { commits, roundTrips, settings };
  } finally {
    await client.end();
  }
}

/** Where the latency runs' time goes, stage by stage: p50 ms from the stage before, on each store. */
async function showTraces(farms: readonly Farm[]): Promise<void> {
  const traces = await Promise.all(farms.map((farm) => readTrace(farm.traceFile, farm.sentAt)));
  if (traces.some((trace) => trace === undefined)) return void console.log('no trace written (was src/latency-trace.ts built?)');
  console.log(`\nwhere the time goes: p50 (mean) ms from the stage before, ${farms.map((farm) => farm.store).join(' | ')}`);
  for (const [i, { from, stage }] of traces[0]!.stages.entries()) {
    const cells = traces.map((trace) => {
      const step = trace!.stages[i]?.step ?? [];
      return `${percentile(step, 50).toFixed(2).padStart(6)} (${(step.reduce((a, b) => a + b, 0) / step.length).toFixed(2).padStart(6)})`;
    });
    console.log(`  ${`${from} -> ${stage}`.padEnd(40)} ${cells.join('   ')}`);
  }
}

const line = (name: string, values: number[]) =>
  `${name.padEnd(44)} p50 ${percentile(values, 50).toFixed(1).padStart(6)} ms   p99 ${percentile(values, 99).toFixed(1).padStart(6)} ms   mean ${(values.reduce((a, b) => a + b, 0) / values.length).toFixed(2).padStart(6)}`;
const rates = (values: number[]) => `${median(values).toFixed(0).padStart(5)} /s (${values.map((v) => v.toFixed(0)).join(', ')})`;

try {
  console.log(`bench:store, ${os.cpus().length} cores, load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const farms = [await startFarm('sqlite'), await startFarm('postgres')] as const;

  // 1. Latency: the stores take turns, run by run, each going first every other run.
  const started = { sqlite: [] as number[], postgres: [] as number[] };
  const received = { sqlite: [] as number[], postgres: [] as number[] };
  for (let i = 0; i < RUNS; i += 1) {
    for (const farm of i % 2 ? [...farms].reverse() : farms) {
      const [job, observer] = await latencyRun(farm);
      started[farm.store].push(job);
      received[farm.store].push(observer);
    }
  }
  console.log(`\nexecute -> job start, idle worker connected, ${RUNS} runs each (the job's line as the worker stamps it; as an observer receives it)`);
  for (const store of ['sqlite', 'postgres'] as const) {
    console.log(line(`${store}: execute -> line printed by the job`, started[store]));
    console.log(line(`${store}: execute -> line received`, received[store]));
  }
  const gap = percentile(started.postgres, 50) - percentile(started.sqlite, 50);
  console.log(`goal PostgreSQL p50 within 2 ms of SQLite's: ${gap <= 2 ? 'met' : 'NOT met'} (PostgreSQL ${gap >= 0 ? '+' : ''}${gap.toFixed(1)} ms)`);
  if (TRACE) await showTraces(farms);

  // 2. Throughput: the stores take turns, round by round.
  const runsPerS = { sqlite1: [] as number[], postgres1: [] as number[], sqlite4: [] as number[], postgres4: [] as number[] };
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const capacity of [1, 4] as const) for (const farm of farms) runsPerS[`${farm.store}${capacity}`].push(await throughput(farm, capacity));
  }
  console.log(`\n${JOBS} trivial runs (\`true\`), first execute to the last \`run ended\`, median of ${ROUNDS} rounds`);
  for (const capacity of [1, 4] as const) {
    const [s, p] = [median(runsPerS[`sqlite${capacity}`]), median(runsPerS[`postgres${capacity}`])];
    console.log(`capacity ${capacity}: sqlite ${rates(runsPerS[`sqlite${capacity}`])}   postgres ${rates(runsPerS[`postgres${capacity}`])}   ` +
      `PostgreSQL/SQLite ${(100 * p / s).toFixed(0)} %: goal >= 80 % ${p >= 0.8 * s ? 'met' : 'NOT met'}`);
  }
  for (const store of ['sqlite', 'postgres'] as const) {
    const used = cpuPerRun[store];
    console.log(`CPU per run on ${store} (median of the rounds): server ${median(used.server).toFixed(2)} ms, worker with its job ${median(used.worker).toFixed(2)} ms, PostgreSQL's processes ${median(used.postgres).toFixed(2)} ms`);
  }
  // Quiet for the in-process part.
  for (const farm of farms) await farm.close();

  // 3. The stores' own rates, in this process, and PostgreSQL's limit.
  const sqliteDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
  cleanups.push(() => rmSync(sqliteDir, { recursive: true, force: true }));
  const sqlite = openSqliteStore(path.join(sqliteDir, 'kiln.db'));
  const [sqliteEnqueue, sqliteClaim] = await claimRates(sqlite, 'claim');
  await sqlite.close();
  const fresh = await freshSchema();
  const postgres = await openPostgresStore(fresh.url);
  // First as a new schema is (no planner statistics yet), then as autovacuum's ANALYZE leaves it.
  const [postgresEnqueue, postgresClaim] = await claimRates(postgres, 'claim');
  const [, analyzedClaim] = await claimRates(postgres, 'analyzed', () => adminQuery(`ANALYZE ${fresh.schema}.runs, ${fresh.schema}.jobs`));
  await postgres.close();
  const peers = await postgresPeers((await freshSchema()).url);
  const each = (perS: number) => `${perS.toFixed(0).padStart(6)} /s (${(1000 / perS).toFixed(3)} ms each)`;
  console.log(`\nthe store API in-process, ${CLAIMS} runs, one at a time (${peers.settings})`);
  console.log(`sqlite:   enqueue (a job with its run) ${each(sqliteEnqueue)}   claimNext ${each(sqliteClaim)}`);
  console.log(`postgres: enqueue (a job with its run) ${each(postgresEnqueue)}   claimNext ${each(postgresClaim)}; after ANALYZE ${each(analyzedClaim)}`);
  console.log(`peer, same PostgreSQL and driver: one-row INSERT committed alone ${each(peers.commits)}; SELECT 1 ${each(peers.roundTrips)}`);
  console.log(`claimNext on PostgreSQL: ${(100 * postgresClaim / peers.commits).toFixed(0)} % of the commit rate (${(100 * analyzedClaim / peers.commits).toFixed(0)} % after ANALYZE); ` +
    `a claim is 1 statement (pick SKIP LOCKED, start, event; its own transaction): 1 commit would be ${(1000 / peers.commits).toFixed(3)} ms`);
  console.log(`load average at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup();
}
