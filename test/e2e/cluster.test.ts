/**
 * Several `kiln server` processes on one PostgreSQL schema (issue 16), with real processes: both
 * run, `kiln info` against either lists both and which holds the scheduler's lease; the holder
 * SIGKILLed, the other takes the lease within seconds; a clean stop hands it over at once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { InfoReply } from '../../src/cli/api-client.js';
import { freshSchema, POSTGRES_URL } from '../helpers/postgres.js';
import { kiln, startProxy, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const skip = needs('postgres');

async function info(server: ServerProcess): Promise<InfoReply> {
  const done = await kiln(server, ['info', '--json']);
  assert.equal(done.code, 0, done.stderr);
  return JSON.parse(done.stdout) as InfoReply;
}

/** The id of the server that holds `lease`, as `server` lists the farm (undefined: none alive holds it). */
async function holderOf(server: ServerProcess, lease: string): Promise<string | undefined> {
  return (await info(server)).servers.find((s) => s.alive && s.leases.includes(lease))?.id;
}

/** Polls until `check` gives a value, every 100 ms; fails after `withinMs`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, withinMs: number): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value !== undefined) return { value, ms: Date.now() - start };
    if (Date.now() - start > withinMs) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('two servers on one PostgreSQL schema: kiln info on either lists both and the scheduler lease holder; SIGKILLed, the holder is replaced within seconds; a clean stop hands over at once', { skip, timeout: 120_000 }, async (t) => {
  const { url } = await freshSchema(t);
  const a = await startServer(t, { args: ['--store', url] });
  const b = await startServer(t, { args: ['--store', url, '--advertise', 'http://kiln-b.example:7420'] });

  const fromA = await until('one server holds the scheduler lease', () => holderOf(a, 'scheduler'), 15_000);
  const [infoA, infoB] = [await info(a), await info(b)];
  for (const [seen, self] of [[infoA, a], [infoB, b]] as const) {
    assert.equal(seen.servers.length, 2, JSON.stringify(seen.servers));
    assert.ok(seen.servers.every((s) => s.alive));
    assert.equal(seen.servers.filter((s) => s.self).length, 1);
    assert.equal(seen.servers.filter((s) => s.leases.includes('scheduler')).length, 1, 'one holder');
    assert.equal(seen.servers.find((s) => s.self)!.url, self === b ? 'http://kiln-b.example:7420' : a.url);
  }
  assert.deepEqual(infoA.servers.map((s) => s.id).sort(), infoB.servers.map((s) => s.id).sort(), 'both list the same farm');
  assert.equal(await holderOf(b, 'scheduler'), fromA.value, 'and agree on the holder');
  const text = await kiln(b, ['info']);
  assert.equal(text.code, 0, text.stderr);
  const lines = text.stdout.slice(text.stdout.indexOf('servers:\n')).split('\n').slice(1).filter((l) => l.startsWith('  '));
  assert.equal(lines.length, 2, text.stdout);
  assert.match(text.stdout, /^ {2}\S+ http:\/\/kiln-b\.example:7420 \(this one\) alive, since \S+, heartbeat \S+, leases: .+$/m);
  assert.match(lines.find((l) => l.includes(fromA.value))!, /leases: .*\bscheduler\b/);
  assert.doesNotMatch(text.stdout, /configs differ/, 'the same config on both');

  // The holder SIGKILLed: the other takes its leases within seconds (its presence lock is gone at once).
  const holderIsA = infoA.servers.find((s) => s.self)!.id === fromA.value;
  const [holder, other] = holderIsA ? [a, b] : [b, a];
  await holder.kill('SIGKILL');
  const otherId = (await info(other)).servers.find((s) => s.self)!.id;
  const taken = await until('the other server holds the scheduler lease', async () => ((await holderOf(other, 'scheduler')) === otherId ? true : undefined), 15_000);
  t.diagnostic(`scheduler lease taken over ${taken.ms} ms after the SIGKILL`);
  const after = await info(other);
  assert.equal(after.servers.find((s) => s.id === fromA.value)?.alive, false, 'the killed server is listed, not alive');

  // A third server; the holder stopped cleanly: the lease moves at once, not after its 8 s TTL.
  const c = await startServer(t, { args: ['--store', url] });
  const cId = (await info(c)).servers.find((s) => s.self)!.id;
  await until('c sees the holder', async () => ((await holderOf(c, 'scheduler')) === otherId ? true : undefined), 10_000);
  await other.kill('SIGTERM');
  const { code } = await other.exited;
  assert.equal(code, 0);
  const handed = await until('c holds the scheduler lease', async () => ((await holderOf(c, 'scheduler')) === cId ? true : undefined), 15_000);
  t.diagnostic(`handed over ${handed.ms} ms after the clean stop`);
  assert.ok(handed.ms < 7_000, `handed over in ${handed.ms} ms, inside the 8 s TTL: let go, not expired`);
  const farm = (await info(c)).servers;
  assert.deepEqual(farm.filter((s) => s.alive).map((s) => s.id), [cId]);
});

test("the server's presence connection cut off: /healthz and the API answer 503 (no stale answers) until it is back, then it serves again", { skip, timeout: 60_000 }, async (t) => {
  const { url } = await freshSchema(t);
  const proxy = await startProxy(t, Number(new URL(POSTGRES_URL).port || 5432));
  const through = new URL(url);
  through.host = `127.0.0.1:${proxy.port}`;
  const server = await startServer(t, { args: ['--store', through.toString(), '--lock-retake', '30s'] });
  const status = async (route: string) => (await fetch(`${server.url}${route}`, { headers: { authorization: `Bearer ${server.adminToken}` } })).status;
  assert.equal(await status('/healthz'), 200);
  const mark = server.stderr.length;
  proxy.cut();
  await server.waitFor(/the connection holding this server's presence on the store was lost/, mark);
  assert.equal(await status('/healthz'), 503);
  assert.equal(await status('/api/jobs'), 503);
  proxy.restore();
  await server.waitFor(/took this server's presence on the store back/, mark);
  assert.equal(await status('/healthz'), 200);
  assert.equal(await status('/api/jobs'), 200);
});

test("kiln info warns when the farm's servers run different configs (each reads its own file)", { skip, timeout: 60_000 }, async (t) => {
  const { url } = await freshSchema(t);
  const a = await startServer(t, { args: ['--store', url] });
  const shared = tempDir(t);
  const b = await startServer(t, { args: ['--store', url, '--artifact-store', `dir:${shared}`] });
  const text = await kiln(a, ['info']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^warning: the servers' configs differ \\(templates dir, pools, upload target, artifact store, retention\\): (${a.url} \\| ${b.url}|${b.url} \\| ${a.url})$`, 'm'));
  const digests = new Set((await info(a)).servers.map((s) => s.configDigest));
  assert.equal(digests.size, 2);
});
