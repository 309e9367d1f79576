/**
 * Several servers on one PostgreSQL database, proven by faults (issue 16, item 5): three real
 * `kiln server` processes on one schema, two workers that fail over between them, a hundred runs
 * executed round-robin on the three, observers on a server other than the execute's, an upload
 * target, and servers SIGKILLed and restarted at seeded moments (KILN_FAULT_SEED replays a run;
 * the seed is printed). Then every run ended exactly once with its whole console, none was
 * dispatched twice, and each was delivered once (or resent with the same delivery id when a kill
 * fell between the target's 2xx and the commit). A second test cuts one server off from PostgreSQL:
 * it stops acting as leader, answers 503 rather than stale data, its worker goes on elsewhere, and
 * it serves again once PostgreSQL is back.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import pg from 'pg';
import { freshSchema } from '../helpers/postgres.js';
import { freePort, spawnKiln, startProxy, tempDir, type Owned } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';
import { seededRandom } from '../helpers/seeded-random.js';
import { S3RVER_KEY, startS3rver } from '../helpers/s3rver.js';

const skip = needs('postgres');

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** One POST the upload target received. */
interface Post {
  delivery: string;
  run: string;
}

/** A real HTTP upload target: records each POST's delivery id and run, answers 200 after 0-50 ms; `beforeAnswer` may act first. */
async function startReceiver(t: TestContext, random: () => number) {
  const posts: Post[] = [];
  const hooks: { beforeAnswer?: (post: Post) => Promise<void> | void } = {};
  const server = http.createServer((request, response) => {
    request.resume();
    request.on('end', async () => {
      const post = { delivery: String(request.headers['x-kiln-delivery']), run: String(request.headers['x-kiln-run']) };
      await delay(Math.floor(random() * 50));
      posts.push(post);
      const hook = hooks.beforeAnswer;
      if (hook) await hook(post);
      response.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/builds`, posts, hooks };
}

/** A farm of servers on one schema, each restartable with the same arguments. */
class Farm {
  readonly servers: { url: string; port: number; dataDir: string; proc?: Owned }[] = [];
  adminToken = '';
  workerToken = '';

  constructor(private readonly t: TestContext, private readonly store: string, private readonly config: string) {}

  async add(storeUrl = this.store): Promise<number> {
    const port = await freePort();
    const index = this.servers.length;
    this.servers.push({ url: `http://127.0.0.1:${port}`, port, dataDir: tempDir(this.t), proc: undefined });
    await this.start(index, storeUrl);
    return index;
  }

  async start(index: number, storeUrl = this.store): Promise<void> {
    const s = this.servers[index]!;
    s.proc = spawnKiln(this.t, ['server', '--listen', `127.0.0.1:${s.port}`, '--data', s.dataDir, '--store', storeUrl, '--config', this.config]);
    await s.proc.waitFor(/kiln server listening/);
    // The farm's tokens: the first server's, written over the local files of the later ones.
    if (!this.adminToken) {
      this.adminToken = readFileSync(path.join(s.dataDir, 'admin.token'), 'utf8').trim();
      this.workerToken = readFileSync(path.join(s.dataDir, 'worker.token'), 'utf8').trim();
    }
    assert.equal(readFileSync(path.join(s.dataDir, 'admin.token'), 'utf8').trim(), this.adminToken, 'every server has the farm admin.token');
  }

  alive(): number[] {
    return this.servers.flatMap((s, i) => (s.proc && s.proc.child.exitCode === null && s.proc.child.signalCode === null ? [i] : []));
  }

  async kill(index: number): Promise<void> {
    await this.servers[index]!.proc?.kill('SIGKILL');
  }

  /** A request to server `index`; connection errors throw. */
  async request(index: number, method: string, route: string, body?: unknown): Promise<Response> {
    return fetch(this.servers[index]!.url + route, {
      method,
      headers: { authorization: `Bearer ${this.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    });
  }

  /** The request on `first`, or, when it cannot be reached or answers 503, on the next live server (as a load balancer does). */
  async anyServer(first: number, method: string, route: string, body?: unknown): Promise<Response> {
    for (let attempt = 0; attempt < 60; attempt += 1) {
      const live = this.alive();
      const index = live.length === 0 ? first : live[(first + attempt) % live.length]!;
      try {
        const response = await this.request(index, method, route, body);
        if (response.status !== 503) return response;
        await response.body?.cancel();
      } catch {
        // Killed meanwhile: the next one.
      }
      await delay(100);
    }
    throw new Error(`${method} ${route}: no server answered`);
  }
}

/** The job every run executes: 30 numbered lines 10 ms apart, a 4 KB artifact, and a note of each start. */
function jobScript(startedFile: string): string {
  return [
    `echo "$KILN_RUN $KILN_ATTEMPT $$" >> ${startedFile}`,
    'i=0; while [ $i -lt 30 ]; do echo "line $i of $KILN_RUN"; i=$((i+1)); sleep 0.01; done',
    'head -c 4096 /dev/urandom > out.bin',
  ].join('\n');
}

/** Queries the farm's schema directly (the test's own view of what was recorded). */
async function schemaClient(t: TestContext, url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.after(() => client.end());
  return client;
}

test('three servers, two workers, a hundred runs, servers SIGKILLed and restarted at seeded moments: every run ends once with its whole console, none dispatched twice, each delivered once', { skip, timeout: 600_000 }, async (t) => {
  const seed = Number(process.env.KILN_FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));
  t.diagnostic(`KILN_FAULT_SEED=${seed}`);
  console.error(`cluster faults: KILN_FAULT_SEED=${seed}`);
  const random = seededRandom(seed);
  const { url: store } = await freshSchema(t);
  const db = await schemaClient(t, store);
  const s3 = await startS3rver('kiln-blobs');
  t.after(() => s3.stop());
  const receiver = await startReceiver(t, random);
  const dir = tempDir(t);
  const config = path.join(dir, 'kiln.yaml');
  writeFileSync(config, [
    'upload:', `  url: ${receiver.url}`, '  retry_min: 100ms', '  retry_max: 400ms',
    'artifacts:', `  store: s3://kiln-blobs/farm?endpoint=${s3.endpoint}&region=us-east-1&force_path_style=true`,
    `  access_key_id: ${S3RVER_KEY}`, `  secret_access_key: ${S3RVER_KEY}`,
    '',
  ].join('\n'), { mode: 0o600 });

  const farm = new Farm(t, store, config);
  for (let i = 0; i < 3; i += 1) await farm.add();
  const serverList = farm.servers.map((s) => s.url).join(',');
  const workers: Owned[] = [];
  for (const name of ['w1', 'w2']) {
    const worker = spawnKiln(t, ['worker', '--server', serverList, '--name', name, '--platform', 'testos', '--capacity', '2'], { KILN_WORKER_TOKEN: farm.workerToken });
    await worker.waitFor(/connected to the server/);
    workers.push(worker);
  }

  const started = path.join(dir, 'started');
  writeFileSync(started, '');
  const RUNS = 100;
  for (let i = 0; i < RUNS; i += 1) {
    const response = await farm.anyServer(i % 3, 'POST', '/api/jobs', {
      name: `step-${i}`, platform: 'testos', script: jobScript(started), period: 'never', retries: 5, artifacts: ['out.bin'],
    });
    assert.equal(response.status, 201, await response.text());
  }
  // The scheduler's singleton: a job due every second, whose due times must each queue at most once.
  assert.equal((await farm.anyServer(0, 'POST', '/api/jobs', { name: 'tick', platform: 'elsewhere', script: 'true', schedule: { kind: 'every', everyMs: 1000 } })).status, 201);
  const tickSince = Date.now();

  // Faults, until every run has ended: a random live server killed (never the last), restarted 0.2-1.5 s later.
  let executing = true;
  let kills = 0;
  const faults = (async () => {
    while (executing || kills < 12) {
      await delay(500 + random() * 1500);
      const live = farm.alive();
      if (live.length < 2) continue;
      const victim = live[Math.floor(random() * live.length)]!;
      await farm.kill(victim);
      kills += 1;
      await delay(200 + random() * 1300);
      await farm.start(victim);
      if (kills >= 20) break;
    }
  })();
  // Once: a kill right after the target's 2xx, before the outbox can record it, to force a resend.
  let forced: string | undefined;
  receiver.hooks.beforeAnswer = async (post) => {
    if (receiver.posts.length < 30 || forced) return;
    const holder = (await db.query<{ url: string }>("SELECT s.url FROM leases l JOIN servers s ON s.id = l.holder WHERE l.name = 'outbox'")).rows[0];
    const index = farm.servers.findIndex((s) => s.url === holder?.url);
    if (index < 0 || farm.alive().length < 2) return;
    forced = post.run;
    setTimeout(() => void farm.kill(index), 5);
  };

  // A hundred executes, round-robin, 20 ms apart; each acknowledged one is recorded.
  const acknowledged: string[] = [];
  const followers: Promise<{ runId: string; lines: string[] } | undefined>[] = [];
  for (let i = 0; i < RUNS; i += 1) {
    const response = await farm.anyServer(i % 3, 'POST', `/api/jobs/step-${i}/execute`, {});
    assert.ok(response.status === 201 || response.status === 200, `execute ${i}: ${response.status}`);
    const runId = ((await response.json()) as { run: { id: string } }).run.id;
    acknowledged.push(runId);
    // Ten observers, each on a server other than the execute's.
    if (i % 10 === 0) followers.push(follow(farm, (i + 1) % 3, runId));
    await delay(20);
  }

  // Every acknowledged run reaches its end (followed through any live server, again after a kill).
  const ends = await Promise.all(acknowledged.map((runId, i) => waitForEnd(farm, i % 3, runId)));
  executing = false;
  await faults;
  for (const index of farm.servers.keys()) if (!farm.alive().includes(index)) await farm.start(index);
  t.diagnostic(`kills: ${kills}; forced resend of ${forced ?? 'none'}`);
  const kinds = (await db.query<{ kind: string; n: string }>('SELECT kind, count(*) AS n FROM run_events GROUP BY kind ORDER BY kind')).rows;
  t.diagnostic(`run events: ${kinds.map((k) => `${k.kind} ${k.n}`).join(', ')}`);
  assert.ok(kills >= 3, `servers were killed (${kills})`);

  // 1. Every acknowledged run succeeded, with exactly one end recorded, for its last attempt.
  assert.deepEqual(ends.filter((e) => e.status !== 'succeeded'), []);
  const endRows = (await db.query<{ run_id: string; n: string; last: number; attempt: number }>(
    "SELECT e.run_id, count(*) AS n, max(e.attempt) AS last, r.attempt FROM run_events e JOIN runs r ON r.id = e.run_id WHERE e.kind = 'ended' AND e.run_id = ANY($1) GROUP BY e.run_id, r.attempt",
    [acknowledged],
  )).rows;
  assert.equal(endRows.length, RUNS, 'an end for every run');
  for (const row of endRows) {
    assert.equal(Number(row.n), 1, `run ${row.run_id} ended once`);
    assert.equal(row.last, row.attempt, `run ${row.run_id} ended for its last attempt`);
  }

  // 2. The last attempt's console: lines 0..29 once each, in order, contiguous seqs.
  for (const runId of acknowledged) {
    const rows = (await db.query<{ seq: number; text: Buffer }>(
      'SELECT c.seq, c.text FROM console_lines c JOIN runs r ON r.id = c.run_id WHERE c.run_id = $1 AND c.seq >= r.first_seq ORDER BY c.seq', [runId],
    )).rows;
    const lines = rows.map((r) => r.text.toString('utf8')).filter((text) => text.startsWith('line '));
    assert.deepEqual(lines, Array.from({ length: 30 }, (_, i) => `line ${i} of ${runId}`), `console of ${runId}`);
    rows.forEach((row, i) => i > 0 && assert.equal(row.seq, rows[i - 1]!.seq + 1, `contiguous seqs in ${runId}`));
  }
  // Each observer that saw the end saw the same lines, none twice, none missing.
  for (const followed of await Promise.all(followers)) {
    if (!followed) continue;
    assert.deepEqual(followed.lines.filter((l) => l.startsWith('line ')), Array.from({ length: 30 }, (_, i) => `line ${i} of ${followed.runId}`));
  }

  // 3. No dispatch twice: one `dispatched` per (run, attempt), but for an assignment that never reached
  // its worker (a server killed between the claim's commit and the send: the worker, back elsewhere,
  // does not hold it, and the run is `requeued` as the same attempt); and one start of the script per
  // (run, attempt), which is what a double dispatch would break.
  const twice = (await db.query(`SELECT run_id, attempt FROM run_events GROUP BY run_id, attempt
    HAVING count(*) FILTER (WHERE kind = 'dispatched') > 1 + count(*) FILTER (WHERE kind = 'requeued')`)).rows;
  assert.deepEqual(twice, []);
  const starts = readFileSync(started, 'utf8').trim().split('\n').map((line) => line.split(' ').slice(0, 2).join(' '));
  assert.equal(new Set(starts).size, starts.length, 'no (run, attempt) started twice');

  // Each run kept its artifact (uploaded to whichever server its worker was on, in the shared bucket),
  // and any server serves it: a tenth of them downloaded through another server, their sha256 checked.
  const kept = (await db.query<{ run_id: string; sha256: string }>("SELECT run_id, sha256 FROM artifacts WHERE path = 'out.bin' AND run_id = ANY($1)", [acknowledged])).rows;
  assert.equal(kept.length, RUNS, 'every run kept out.bin');
  assert.equal(Number((await db.query("SELECT count(*) AS n FROM run_events WHERE kind = 'artifacts-skipped'")).rows[0].n), 0, 'no artifact skipped');
  for (const [i, { run_id: runId, sha256 }] of kept.entries()) {
    if (i % 10 !== 0) continue;
    const response = await farm.anyServer(i % 3, 'GET', `/api/runs/${runId}/artifacts/out.bin`);
    assert.equal(response.status, 200);
    assert.equal(createHash('sha256').update(Buffer.from(await response.arrayBuffer())).digest('hex'), sha256);
  }

  // 4. Deliveries: one delivered per run; several POSTs of a run only with the same delivery id.
  const delivered = (await db.query<{ run_id: string; n: string }>(
    "SELECT run_id, count(*) AS n FROM deliveries WHERE state = 'delivered' AND run_id = ANY($1) GROUP BY run_id", [acknowledged],
  )).rows;
  assert.equal(delivered.length, RUNS, 'every run delivered');
  for (const row of delivered) assert.equal(Number(row.n), 1);
  const byRun = new Map<string, Set<string>>();
  for (const post of receiver.posts) byRun.set(post.run, (byRun.get(post.run) ?? new Set()).add(post.delivery));
  for (const [run, ids] of byRun) assert.equal(ids.size, 1, `POSTs of ${run} carry one delivery id`);
  const resent = [...byRun.keys()].filter((run) => receiver.posts.filter((p) => p.run === run).length > 1);
  t.diagnostic(`runs posted more than once (same delivery id): ${resent.length}`);

  // 5. The scheduler fired each due time at most once, and one live server holds each lease.
  const ticks = Number((await db.query("SELECT count(*) AS n FROM runs WHERE job = 'tick'")).rows[0].n);
  assert.ok(ticks <= Math.ceil((Date.now() - tickSince) / 1000) + 1, `at most one run per due time of 'tick' (${ticks})`);
  const leases = (await db.query<{ name: string; alive: boolean }>(
    "SELECT l.name, s.stopped_at IS NULL AS alive FROM leases l JOIN servers s ON s.id = l.holder WHERE l.name IN ('scheduler', 'outbox', 'reaper')",
  )).rows;
  assert.equal(leases.length, 3);
  for (const lease of leases) assert.ok(lease.alive, `${lease.name} held by a live server`);
  for (const worker of workers) await worker.kill('SIGTERM');
});

/** Follows a run's console on server `index` (NDJSON); undefined when that server was killed meanwhile. */
async function follow(farm: Farm, index: number, runId: string): Promise<{ runId: string; lines: string[] } | undefined> {
  try {
    const response = await fetch(`${farm.servers[index]!.url}/api/runs/${runId}/console?follow=true`, { headers: { authorization: `Bearer ${farm.adminToken}` } });
    if (!response.ok) return undefined;
    const events = (await response.text()).split('\n').filter(Boolean).map((line) => JSON.parse(line) as { type: string; text?: string });
    if (events.at(-1)?.type !== 'end') return undefined;
    return { runId, lines: events.filter((e) => e.type === 'line').map((e) => e.text!) };
  } catch {
    return undefined;
  }
}

/** Waits for a run's end by following its console on any live server (again after a kill); resolves with the run as ended. */
async function waitForEnd(farm: Farm, first: number, runId: string): Promise<{ status: string }> {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const live = farm.alive();
    const index = live[(first + attempt) % Math.max(live.length, 1)] ?? first;
    try {
      const response = await fetch(`${farm.servers[index]!.url}/api/runs/${runId}/console?follow=true`, { headers: { authorization: `Bearer ${farm.adminToken}` } });
      if (response.ok) {
        const events = (await response.text()).split('\n').filter(Boolean).map((line) => JSON.parse(line) as { type: string; run?: { status: string } });
        const end = events.at(-1);
        if (end?.type === 'end' && end.run) return end.run;
      } else {
        await response.body?.cancel();
      }
    } catch {
      // That server died while we followed: follow again elsewhere.
    }
    await delay(100);
  }
  throw new Error(`run ${runId} did not end`);
}

test('a server cut off from PostgreSQL stops leading and answers 503, never stale data; its worker goes on elsewhere; back, it serves again', { skip, timeout: 300_000 }, async (t) => {
  const { url: store } = await freshSchema(t);
  const db = await schemaClient(t, store);
  const dir = tempDir(t);
  const config = path.join(dir, 'kiln.yaml');
  writeFileSync(config, '', { mode: 0o600 });
  // Server 0 reaches PostgreSQL through a proxy the test can cut.
  const proxy = await startProxy(t, 5432);
  const viaProxy = store.replace('127.0.0.1:5432', `127.0.0.1:${proxy.port}`);
  const farm = new Farm(t, store, config);
  await farm.add(viaProxy);
  await farm.add();
  // Server 0 leads: it started first.
  const leaders = async () => (await db.query<{ name: string; url: string }>('SELECT l.name, s.url FROM leases l JOIN servers s ON s.id = l.holder WHERE l.expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint')).rows;
  await until(async () => (await leaders()).some((l) => l.name === 'scheduler'));
  const cutUrl = farm.servers[0]!.url;
  const dirJob = tempDir(t);
  const script = `echo before; while [ ! -e ${dirJob}/go ]; do sleep 0.05; done; i=0; while [ $i -lt 20 ]; do echo "after $i"; i=$((i+1)); done`;
  assert.equal((await farm.request(1, 'POST', '/api/jobs', { name: 'steady', platform: 'testos', script, period: 'never' })).status, 201);
  // Its worker lists server 0 first.
  const worker = spawnKiln(t, ['worker', '--server', `${cutUrl},${farm.servers[1]!.url}`, '--name', 'w1', '--platform', 'testos'], { KILN_WORKER_TOKEN: farm.workerToken });
  await worker.waitFor(/connected to the server/);
  const runId = ((await (await farm.request(1, 'POST', '/api/jobs/steady/execute', {})).json()) as { run: { id: string } }).run.id;
  await worker.waitFor(/run started/);

  proxy.cut();
  // Within seconds, every lease is held by server 1, and server 0 answers 503 (never a 200 with stale data).
  await until(async () => {
    const held = await leaders();
    return held.length > 0 && held.every((l) => l.url !== cutUrl);
  }, 20_000);
  const stale = await farm.request(0, 'GET', '/api/runs');
  assert.equal(stale.status, 503, await stale.text());
  // The worker moved to server 1 and its run goes on there with its whole console.
  await until(async () => (await db.query("SELECT 1 FROM workers w JOIN servers s ON s.id = w.server_id WHERE w.name = 'w1' AND w.connected AND s.url <> $1", [cutUrl])).rowCount === 1, 30_000);
  writeFileSync(path.join(dirJob, 'go'), '');
  const end = await waitForEnd(farm, 1, runId);
  assert.equal(end.status, 'succeeded');
  const lines = (await db.query<{ text: Buffer }>('SELECT text FROM console_lines WHERE run_id = $1 ORDER BY seq', [runId])).rows.map((r) => r.text.toString());
  assert.deepEqual(lines.filter((l) => l.startsWith('before') || l.startsWith('after')), ['before', ...Array.from({ length: 20 }, (_, i) => `after ${i}`)]);

  // PostgreSQL back: server 0 rejoins and serves again.
  proxy.restore();
  await until(async () => (await farm.request(0, 'GET', '/api/runs').catch(() => undefined))?.status === 200, 60_000);
  await worker.kill('SIGTERM');
});

/** Awaits `check()` becoming true, asking again every 100 ms (the state is another process's, with no event to await here). */
async function until(check: () => Promise<boolean>, withinMs = 30_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not true within ${withinMs} ms: ${check.toString().slice(0, 200)}`);
    await delay(100);
  }
}
