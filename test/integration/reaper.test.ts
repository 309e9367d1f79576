/**
 * The reaper on one server alone on its SQLite store: a server that died without closing (SIGKILL)
 * left its workers recorded as connected; the next life counts their grace from its start and loses
 * the runs of those that do not come back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { call, inProcessServer } from '../helpers/in-process.js';
import { tempDir } from '../helpers/processes.js';

test('a run whose worker a dead server left recorded as connected ends lost after the grace counted from the restart', { timeout: 20_000 }, async (t) => {
  const dataDir = tempDir(t);
  const first = await inProcessServer(t, { dataDir });
  await call(first, 'POST', '/api/jobs', { name: 'held', platform: 'testos', script: 'true\n', period: 'never', retries: 0 });
  const runId: string = (await call(first, 'POST', '/api/jobs/held/execute', {})).body.run.id;
  await first.close();
  // As the dead server left it: the run running on a worker still recorded connected (no close was ever written).
  const store = await openStore(dataDir);
  const now = Date.now();
  await store.recordWorker({ name: 'w-of-the-dead', platform: 'testos', labels: {}, capacity: 1, hostname: 'h', os: 'linux', arch: 'x64', version: 't', connected: true, connectedAt: now, lastSeen: now });
  assert.equal((await store.claimNext({ name: 'w-of-the-dead', platform: 'testos', labels: {} }, now, 60_000))?.id, runId);
  await store.close();

  const second = await inProcessServer(t, { dataDir, reattachGraceMs: 300 });
  for (let i = 0; i < 100 && (await call(second, 'GET', `/api/runs/${runId}`)).body.run.status === 'running'; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const run = (await call(second, 'GET', `/api/runs/${runId}`)).body.run;
  assert.equal(run.status, 'lost');
  assert.match(run.resultText ?? '', /w-of-the-dead did not come back within/);
});
