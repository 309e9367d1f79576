/**
 * A 1 GiB artifact passes from the job to the server's store with bounded memory: the peak RSS of
 * the server and of the worker grows by less than 64 MiB (everything is streamed). Memory is the
 * assertion here, not time.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, kiln, peakRss, startServer, startWorker } from '../helpers/processes.js';

const GIB = 1024 ** 3;
const BOUND = 64 * 1024 ** 2;

test('a 1 GiB artifact is streamed end to end with bounded memory', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'big', '--command', `head -c ${GIB} /dev/urandom > big.bin`, '--platform', 'testos', '--period', 'never'])).code, 0);
  // Peaks after start-up: the baseline the transfer may not raise by more than the bound.
  const before = { server: peakRss(server.pid), worker: peakRss(worker.pid) };
  const runId = (await kiln(server, ['execute', 'big'])).stdout.trim();
  const { run, lines } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', lines.join('\n'));
  assert.equal(lines.at(-1), `kiln: kept 1 of 1 artifacts (${GIB} bytes)`);
  const [artifact] = JSON.parse((await kiln(server, ['artifacts', runId, '--json'])).stdout).artifacts;
  assert.equal(artifact.size, GIB);
  assert.equal(statSync(path.join(server.dataDir, 'artifacts', artifact.sha256.slice(0, 2), artifact.sha256)).size, GIB);
  const grew = { server: peakRss(server.pid) - before.server, worker: peakRss(worker.pid) - before.worker };
  t.diagnostic(`peak RSS growth for 1 GiB: server ${(grew.server / 1024 ** 2).toFixed(1)} MiB, worker ${(grew.worker / 1024 ** 2).toFixed(1)} MiB`);
  assert.ok(grew.server < BOUND, `server peak RSS grew by ${grew.server} bytes`);
  assert.ok(grew.worker < BOUND, `worker peak RSS grew by ${grew.worker} bytes`);
});
