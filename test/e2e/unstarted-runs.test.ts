/**
 * A run whose dispatch was committed but never sent (the server died in between) is queued again
 * as soon as its worker says hello without it: no re-attach grace, no retry spent.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { api, followRun, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';

test('a run committed to a worker that never got it runs on that worker at once after a restart, even with --retries 0', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  // A grace far longer than the test's deadline: without the fix the run would sit `running` for it.
  const serverArgs = ['--reattach-grace', '1h'];
  const first = await startServer(t, { dataDir, args: serverArgs });
  const added = await kiln(first, ['schedule', 'once', '--command', 'echo ran here', '--platform', 'unstarted-os', '--period', 'never', '--retries', '0']);
  assert.equal(added.code, 0, added.stderr);
  const runId = (await kiln(first, ['execute', 'once'])).stdout.trim();
  await first.kill('SIGTERM');

  // What the dispatcher commits before it sends the run: the claim. The server "dies" before sending.
  const store = await openStore(dataDir);
  const claimed = await store.claimNext({ name: 'w1', platform: 'unstarted-os', labels: {} }, Date.now(), 60_000);
  await store.close();
  assert.equal(claimed?.id, runId);

  const second = await startServer(t, { dataDir, args: serverArgs });
  await startWorker(t, second, ['--name', 'w1', '--platform', 'unstarted-os']);
  const { lines, run } = await followRun(second, runId);
  assert.equal(run.status, 'succeeded');
  assert.ok(lines.includes('ran here'), lines.join('\n'));
  assert.ok(lines.some((line) => /^kiln: attempt 1 on w1 never started .*queued again, no retry used$/.test(line)), lines.join('\n'));

  const { events } = await api<{ events: { kind: string; detail: { why?: string } }[] }>(second, 'GET', `/api/runs/${runId}/events`);
  const requeued = events.find((e) => e.kind === 'requeued');
  assert.match(requeued?.detail.why ?? '', /never started: w1 reconnected without it/);
  assert.ok(!events.some((e) => e.kind === 'retried' || (e.kind === 'ended' && JSON.stringify(e.detail).includes('lost'))), JSON.stringify(events));
  const shown = await api<{ run: { attempt: number } }>(second, 'GET', `/api/runs/${runId}`);
  assert.equal(shown.run.attempt, 1, 'the attempt that never started is not counted');
});
