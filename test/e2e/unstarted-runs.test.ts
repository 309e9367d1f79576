/**
 * A run whose dispatch was committed but never sent (the server died in between) is queued again
 * as soon as its worker says hello without it: no re-attach grace, no retry spent.
 */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { api, followRun, kiln, spawnKiln, startServer, startWorker, storeOf, tempDir } from '../helpers/processes.js';

test('a run committed to a worker that never got it runs on that worker at once after a restart, even with --retries 0', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDir(t);
  // A grace far longer than the test's deadline: without the fix the run would sit `running` for it.
  const serverArgs = ['--reattach-grace', '1h'];
  const first = await startServer(t, { dataDir, args: serverArgs });
  const added = await kiln(first, ['schedule', 'once', '--command', 'echo ran here', '--platform', 'unstarted-os', '--period', 'never', '--retries', '0']);
  assert.equal(added.code, 0, added.stderr);
  const runId = (await kiln(first, ['execute', 'once'])).stdout.trim();
  await first.kill('SIGTERM');

  // The worker process is up before the server comes back (it keeps trying): its hello's process id
  // is the one the dispatch below records, as for a run sent to it when the server died.
  const worker = spawnKiln(t, ['worker', '--server', first.url, '--name', 'w1', '--platform', 'unstarted-os'], { KILN_WORKER_TOKEN: first.workerToken });
  const session = (JSON.parse(await worker.waitFor(/not connected to the server/)) as { session: string }).session;
  assert.match(session, /^[0-9a-f-]{36}$/);

  // What the dispatcher commits before it sends the run: the claim. The server "dies" before sending.
  const store = await openStore(dataDir, storeOf(dataDir));
  const claimed = await store.claimNext({ name: 'w1', platform: 'unstarted-os', labels: {}, identity: 'shared', session }, Date.now(), 60_000);
  await store.close();
  assert.equal(claimed?.id, runId);

  const second = await startServer(t, { dataDir, port: Number(new URL(first.url).port), args: serverArgs });
  await worker.waitFor(/connected to the server/);
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

test('a worker SIGKILLed mid-job and started again under its name: the run ends lost and is retried per --retries, not run again as the same attempt', { timeout: 120_000 }, async (t) => {
  // A grace far longer than the test's deadline: only the restarted worker's hello may end the runs.
  const server = await startServer(t, { args: ['--reattach-grace', '1h'] });
  const dir = tempDir(t);
  const args = ['--name', 'w1', '--platform', 'restart-os', '--capacity', '2'];
  const first = await startWorker(t, server, args);
  const runs: Record<string, string> = {};
  for (const [name, retries] of [['zero', '0'], ['one', '1']] as const) {
    // The first time it runs the job marks that it ran and waits for the test; any later time it says so and ends.
    const script = `if [ -e ${dir}/${name}.ran ]; then echo "ran again"; exit 0; fi; touch ${dir}/${name}.ran; echo "first run"; while [ ! -e ${dir}/go ]; do sleep 0.05; done`;
    assert.equal((await kiln(server, ['schedule', name, '--command', script, '--platform', 'restart-os', '--period', 'never', '--retries', retries])).code, 0);
    runs[name] = (await kiln(server, ['execute', name])).stdout.trim();
  }
  await first.waitForCount(/run started/, 2);
  for (const name of ['zero', 'one']) assert.ok(existsSync(`${dir}/${name}.ran`));
  await first.kill('SIGKILL');
  // The jobs it left (if its sandbox did not take them down with it) end now.
  writeFileSync(`${dir}/go`, '');

  await startWorker(t, server, args);
  const zero = await followRun(server, runs.zero!);
  assert.equal(zero.run.status, 'lost', zero.lines.join('\n'));
  assert.match(zero.run.resultText ?? '', /w1 came back as a new process without it/);
  assert.ok(!zero.lines.includes('ran again'), `--retries 0: not run again\n${zero.lines.join('\n')}`);
  const one = await followRun(server, runs.one!);
  assert.equal(one.run.status, 'succeeded', one.lines.join('\n'));
  assert.ok(one.lines.includes('ran again'), one.lines.join('\n'));
  assert.ok(one.lines.some((line) => /^kiln: attempt 1 on w1 ended \(.*\); retrying as attempt 2$/.test(line)), one.lines.join('\n'));
  const shown = await api<{ run: { attempt: number } }>(server, 'GET', `/api/runs/${runs.one}`);
  assert.equal(shown.run.attempt, 2, 'the attempt that ran is counted');
});
