/**
 * `POST /api/artifacts/gc` under load: requests share the sweep in flight instead of queueing one
 * sweep each behind the other, and a shutdown stops a sweep in flight instead of waiting for it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { startServer, tempDir, type ServerProcess } from '../helpers/processes.js';

/**
 * Fills the blob store with `count` empty, unreferenced blobs, as an older server left them: the
 * first sweep records each (the backfill of the blobs table), and deletes them when `writtenAt` is
 * older than the grace.
 */
function fillBlobs(dataDir: string, count: number, writtenAt = new Date()): void {
  const blobs = path.join(dataDir, 'artifacts');
  for (let i = 0; i < count; i += 1) {
    const sha = createHash('sha256').update(`blob ${i}`).digest('hex');
    mkdirSync(path.join(blobs, sha.slice(0, 2)), { recursive: true });
    writeFileSync(path.join(blobs, sha.slice(0, 2), sha), '');
    utimesSync(path.join(blobs, sha.slice(0, 2), sha), writtenAt, writtenAt);
  }
}

/** Fills the uploads' temp dir with `count` fresh files (uploads in progress, as the sweep sees them): a sweep stats each of them. */
function fillTempFiles(dataDir: string, count: number): void {
  const tmp = path.join(dataDir, 'artifacts', 'tmp');
  mkdirSync(tmp, { recursive: true });
  for (let i = 0; i < count; i += 1) writeFileSync(path.join(tmp, `upload-${i}`), '');
}

/** A gc request's status and body (answered, whatever the answer). */
async function gc(server: ServerProcess, body: unknown): Promise<{ status: number; body: any }> {
  const response = await fetch(`${server.url}/api/artifacts/gc`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

const sweepsStarted = (server: ServerProcess) => server.stderr.filter((line) => line.includes('"msg":"artifact sweep started"')).length;

test('200 concurrent gc requests run one or two sweeps and are all answered', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  // Blob rows make a sweep quick whatever their number; temp files are still stat'ed one by one.
  fillTempFiles(dataDir, 20_000);
  const server = await startServer(t, { dataDir });
  // The sweep every server runs at start, out of the way first.
  await server.waitFor(/"msg":"artifact sweep ended"/);
  const before = sweepsStarted(server);
  const answers = await Promise.all(Array.from({ length: 200 }, () => gc(server, { dryRun: true })));
  assert.deepEqual([...new Set(answers.map((a) => a.status))], [200], JSON.stringify(answers.find((a) => a.status !== 200)));
  const sweeps = sweepsStarted(server) - before;
  assert.ok(sweeps >= 1 && sweeps <= 2, `${sweeps} sweeps ran for 200 requests`);
  // Every request got the report of a sweep over the same blobs.
  assert.deepEqual([...new Set(answers.map((a) => a.body.blobs.length))], [0]);
  // Another policy while a sweep runs is refused with a code, not queued.
  const [same, other] = await Promise.all([gc(server, { dryRun: true }), gc(server, { dryRun: true, keepRuns: 1 })]);
  assert.equal(same.status, 200);
  assert.ok(other.status === 200 || (other.status === 409 && other.body.error.code === 'KILN_ERR_SWEEP_BUSY'), JSON.stringify(other));
});

test('SIGTERM during a long sweep stops it: waiting gc requests get 503 and the server exits', { timeout: 60_000 }, async (t) => {
  const dataDir = tempDir(t);
  // Written two hours ago: the sweep at start records and deletes each of them, a long sweep.
  fillBlobs(dataDir, 40_000, new Date(Date.now() - 2 * 3_600_000));
  const server = await startServer(t, { dataDir, env: { KILN_LOG_LEVEL: 'debug' } });
  await server.waitFor(/"msg":"artifact sweep started"/);
  // A gc with the configured policy joins that sweep in flight.
  const since = server.stderr.length;
  const first = gc(server, { dryRun: false });
  await server.waitFor(/"msg":"artifact sweep joined"/, since);
  // More callers join it too; the ones that arrive after the shutdown began are refused.
  const others = Array.from({ length: 50 }, () => gc(server, { dryRun: false }).catch(() => 'refused' as const));
  server.child.kill('SIGTERM');
  const exit = await server.exited;
  assert.equal(exit.code, 0, server.stderr.slice(-5).join('\n'));
  const started = await first;
  assert.equal(started.status, 503, JSON.stringify(started));
  assert.equal(started.body.error.code, 'KILN_ERR_SHUTTING_DOWN');
  // Nobody hung, and nobody waited for a sweep to finish: each was told, or refused at the door.
  for (const answer of await Promise.all(others)) {
    assert.ok(answer === 'refused' || (answer.status === 503 && answer.body.error.code === 'KILN_ERR_SHUTTING_DOWN'), JSON.stringify(answer));
  }
  assert.match(server.stderr.join('\n'), /"msg":"artifact sweep ended early"/);
  assert.equal(sweepsStarted(server), 1, 'the gc requests joined the sweep in flight');
});
