/**
 * Artifacts on several `kiln server` processes sharing one PostgreSQL schema and one `dir:` artifact
 * store (issue 16): a worker's artifacts uploaded to one server download from the other, and the
 * periodic retention sweep runs on the holder of the `retention` lease only.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import type { InfoReply } from '../../src/cli/api-client.js';
import { freshSchema } from '../helpers/postgres.js';
import { followRun, kiln, startServer, startWorker, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const skip = needs('postgres');

/** The id of the server that holds `lease`, as `server` lists the farm, and this server's own id. */
async function leases(server: ServerProcess, lease: string): Promise<{ holder?: string; self: string }> {
  const done = await kiln(server, ['info', '--json']);
  assert.equal(done.code, 0, done.stderr);
  const { servers } = JSON.parse(done.stdout) as InfoReply;
  return { holder: servers.find((s) => s.alive && s.leases.includes(lease))?.id, self: servers.find((s) => s.self)!.id };
}

test('two servers on one PostgreSQL schema and one dir: artifact store: artifacts uploaded to one download from the other; one retention sweeper', { skip, timeout: 120_000 }, async (t) => {
  const { url } = await freshSchema(t);
  const shared = path.join(tempDir(t), 'blobs');
  const a = await startServer(t, { args: ['--store', url, '--artifact-store', `dir:${shared}`] });
  const b = await startServer(t, { args: ['--store', url, '--artifact-store', `dir:${shared}`] });
  await startWorker(t, a, ['--platform', 'testos']);
  assert.equal((await kiln(a, ['schedule', 'release', '--command', 'mkdir -p out; head -c 200000 /dev/urandom > out/app.bin', '--platform', 'testos', '--period', 'never'])).code, 0);
  const runId = (await kiln(a, ['execute', 'release'])).stdout.trim();
  await followRun(a, runId);

  const listed = await fetch(`${a.url}/api/runs/${runId}/artifacts`, { headers: { authorization: `Bearer ${a.adminToken}` } }).then((r) => r.json() as Promise<{ artifacts: { sha256: string }[] }>);
  const fromB = await fetch(`${b.url}/api/runs/${runId}/artifacts/out/app.bin`, { headers: { authorization: `Bearer ${b.adminToken}` } });
  assert.equal(fromB.status, 200, await fromB.clone().text());
  assert.equal(createHash('sha256').update(Buffer.from(await fromB.arrayBuffer())).digest('hex'), listed.artifacts[0]?.sha256);
  for (const server of [a, b]) assert.ok(!server.stderr.some((line) => line.includes("inside this server's data dir")), 'a shared dir: no warning');

  // The holder of the retention lease swept at start; the other never did.
  let holder: string | undefined;
  for (const server of [a, b]) holder ??= (await leases(server, 'retention')).holder;
  const [sweeper, other] = (await leases(a, 'retention')).self === holder ? [a, b] : [b, a];
  await sweeper.waitFor(/"msg":"artifact sweep ended"/);
  assert.ok(!other.stderr.some((line) => line.includes('"msg":"artifact sweep started"')), 'one periodic sweeper in the farm');
  // A sweep asked for by hand runs on the server asked, lease or not.
  const byHand = await kiln(other, ['gc', '--dry-run']);
  assert.equal(byHand.code, 0, byHand.stderr);
  assert.ok(other.stderr.some((line) => line.includes('"msg":"artifact sweep started"')));
});

test('a server on PostgreSQL with its artifact blobs in its own data dir warns at start', { skip, timeout: 60_000 }, async (t) => {
  const { url } = await freshSchema(t);
  const server = await startServer(t, { args: ['--store', url] });
  assert.ok(server.stderr.some((line) => line.includes('"level":40') && line.includes("inside this server's data dir")), server.stderr.join('\n'));
});
