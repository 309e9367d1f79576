/** The core loop with real processes: a server, workers and the kiln CLI. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { api, firstLine, followRun, killGroup, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';

test('a job that prints and exits 3 is observed line by line and reported as exited 3', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos']);
  const dir = tempDir(t);
  const script = path.join(dir, 'build.sh');
  writeFileSync(script, 'echo first\necho second >&2\nfor i in 1 2 3; do echo "line $i"; done\necho last\nexit 3\n');

  const scheduled = await kiln(server, ['schedule', 'build', '--script', script, '--platform', 'testos', '--period', 'never']);
  assert.equal(scheduled.code, 0, scheduled.stderr);
  const executed = await kiln(server, ['execute', 'build']);
  assert.equal(executed.code, 0, executed.stderr);
  const runId = executed.stdout.trim();
  assert.match(runId, /^[0-9a-f-]{36}$/, 'execute prints the run id alone');

  const observed = await kiln(server, ['observe', runId]);
  assert.equal(observed.code, 1, 'observe exits 1 for a failed run');
  const lines = observed.stdout.trimEnd().split('\n');
  assert.deepEqual(lines.slice(0, -1), ['first', 'second', 'line 1', 'line 2', 'line 3', 'last']);
  assert.match(lines.at(-1)!, /failed: exited 3$/, 'the result is printed last');

  const runs = JSON.parse((await kiln(server, ['runs', '--job', 'build', '--json'])).stdout);
  assert.equal(runs.runs.length, 1);
  const [run] = runs.runs;
  assert.equal(run.status, 'failed');
  assert.equal(run.resultText, 'exited 3');
  assert.equal(run.platform, 'testos');
  assert.equal(run.attempt, 1);
  assert.ok(run.worker, 'the run records its worker');
  assert.ok(Date.parse(run.queuedAt) <= Date.parse(run.startedAt) && Date.parse(run.startedAt) <= Date.parse(run.finishedAt));

  // The console is kept after the run, each line with a timestamp.
  const logs = await kiln(server, ['logs', runId.slice(0, 8), '--timestamps']);
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout.split('\n')[0]!, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z first$/);

  // Observing a finished run replays it too.
  const replayed = await kiln(server, ['observe', '--latest', '--job', 'build']);
  assert.equal(replayed.code, 1);
  assert.equal(replayed.stdout, observed.stdout);
});

test('a succeeding job exits observe with 0 and a job killed by a signal reports it', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'ok', '--command', 'echo fine', '--platform', 'testos', '--period', 'never'])).code, 0);
  assert.equal((await kiln(server, ['schedule', 'killed', '--command', 'echo before; kill -TERM $$; echo after', '--platform', 'testos', '--period', 'never'])).code, 0);

  const ok = await kiln(server, ['observe', (await kiln(server, ['execute', 'ok'])).stdout.trim()]);
  assert.equal(ok.code, 0);
  assert.match(ok.stdout, /^fine\nkiln: run .* succeeded: exited 0\n$/);

  const killed = await kiln(server, ['observe', (await kiln(server, ['execute', 'killed'])).stdout.trim()]);
  assert.equal(killed.code, 1);
  assert.match(killed.stdout, /^before\nkiln: run .* failed: signalled SIGTERM\n$/);
});

test('each platform queue is served by its own workers', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'alpha', '--name', 'worker-alpha']);
  await startWorker(t, server, ['--platform', 'beta', '--name', 'worker-beta']);
  for (const platform of ['alpha', 'beta']) {
    const r = await kiln(server, ['schedule', `job-${platform}`, '--command', 'echo "$KILN_PLATFORM"', '--platform', platform, '--period', 'never']);
    assert.equal(r.code, 0, r.stderr);
  }
  for (const platform of ['alpha', 'beta']) {
    const runId = (await kiln(server, ['execute', `job-${platform}`])).stdout.trim();
    const { lines, run } = await followRun(server, runId);
    assert.equal(run.status, 'succeeded');
    assert.deepEqual(lines, [platform]);
    const shown = JSON.parse((await kiln(server, ['runs', '--job', `job-${platform}`, '--json'])).stdout).runs[0];
    assert.equal(shown.worker, `worker-${platform}`);
  }
});

test('execute puts a run at the front of a queue of 5', async (t) => {
  const server = await startServer(t);
  // No worker yet: five scheduled jobs wait in the queue in order.
  for (let i = 1; i <= 6; i += 1) {
    const period = i === 6 ? 'never' : 'daily';
    const r = await kiln(server, ['schedule', `job${i}`, '--command', `echo job${i}`, '--platform', 'testos', '--period', period]);
    assert.equal(r.code, 0, r.stderr);
  }
  const urgent = (await kiln(server, ['execute', 'job6'])).stdout.trim();
  const info = JSON.parse((await kiln(server, ['info', '--json'])).stdout);
  assert.deepEqual(info.queues.testos.map((r: { job: string }) => r.job), ['job6', 'job1', 'job2', 'job3', 'job4', 'job5']);

  // Executing a job that is already queued moves it to the front instead of queueing it twice.
  const again = JSON.parse((await kiln(server, ['execute', 'job3', '--json'])).stdout);
  assert.equal(again.created, false);
  const reordered = JSON.parse((await kiln(server, ['info', '--json'])).stdout);
  assert.deepEqual(reordered.queues.testos.map((r: { job: string }) => r.job), ['job3', 'job6', 'job1', 'job2', 'job4', 'job5']);

  await startWorker(t, server, ['--platform', 'testos']);
  const { run } = await followRun(server, urgent);
  assert.equal(run.status, 'succeeded');
  const runs = JSON.parse((await kiln(server, ['runs', '--json', '--limit', '10'])).stdout).runs as { job: string; startedAt: string }[];
  const order = runs.filter((r) => r.startedAt).sort((a, b) => a.startedAt.localeCompare(b.startedAt)).map((r) => r.job);
  assert.deepEqual(order.slice(0, 2), ['job3', 'job6']);
});

test('a worker with capacity 2 runs two jobs at once', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--capacity', '2']);
  const dir = tempDir(t);
  // Each job waits for the other through FIFOs: they can only finish if they run together.
  const ping = path.join(dir, 'ping');
  const pong = path.join(dir, 'pong');
  assert.equal((await kiln(server, ['schedule', 'a', '--command', `mkfifo ${ping} ${pong}; echo a > ${ping}; cat ${pong}`, '--platform', 'testos', '--period', 'never', '--timeout', '20s'])).code, 0);
  const a = (await kiln(server, ['execute', 'a'])).stdout.trim();
  assert.equal((await kiln(server, ['schedule', 'b', '--command', `until [ -p ${pong} ]; do :; done; cat ${ping}; echo b > ${pong}`, '--platform', 'testos', '--period', 'never', '--timeout', '20s'])).code, 0);
  const b = (await kiln(server, ['execute', 'b'])).stdout.trim();
  const [ra, rb] = await Promise.all([followRun(server, a), followRun(server, b)]);
  assert.deepEqual([ra.run.status, rb.run.status], ['succeeded', 'succeeded']);
  assert.deepEqual(ra.lines, ['b']);
  assert.deepEqual(rb.lines, ['a']);
});

test('a job over its timeout is stopped and ends timed-out', async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos']);
  assert.equal((await kiln(server, ['schedule', 'slow', '--command', 'echo start; sleep 30; echo never', '--platform', 'testos', '--period', 'never', '--timeout', '1s'])).code, 0);
  const observed = await kiln(server, ['observe', (await kiln(server, ['execute', 'slow'])).stdout.trim()]);
  assert.equal(observed.code, 1);
  assert.match(observed.stdout, /^start\nkiln: timed out after 1s; stopping the job\nkiln: run .* timed-out: aborted: timed out after 1s\n$/);
});

test('a run whose worker dies and whose job allows no retry ends lost, and its observer sees the end', async (t) => {
  const server = await startServer(t, { args: ['--reattach-grace', '1s'] });
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  // The job outlives its SIGKILLed worker (its process group is its own): the test reaps it by pid.
  const pidFile = path.join(tempDir(t), 'job.pid');
  t.after(() => {
    if (existsSync(pidFile)) killGroup(Number(readFileSync(pidFile, 'utf8')));
  });
  const script = `echo $$ > ${pidFile}; echo started; sleep 60`;
  assert.equal((await kiln(server, ['schedule', 'hang', '--command', script, '--platform', 'testos', '--period', 'never', '--retries', '0'])).code, 0);
  const runId = (await kiln(server, ['execute', 'hang'])).stdout.trim();
  const observing = kiln(server, ['observe', runId]);
  // The job's line has reached the server (the worker sends output in batches after it starts the job).
  await firstLine(server, runId);
  await worker.kill('SIGKILL');
  const observed = await observing;
  assert.equal(observed.code, 1);
  assert.match(observed.stdout, /^started\nkiln: run .* lost: aborted: worker lost \(.* did not come back within 1s\)\n$/);
  const run = JSON.parse((await kiln(server, ['runs', '--json'])).stdout).runs[0];
  assert.equal(run.status, 'lost');
});

test('a run whose worker is SIGKILLed mid-job is retried on another worker, and its observer sees it through', async (t) => {
  const server = await startServer(t, { args: ['--reattach-grace', '1s'] });
  const first = await startWorker(t, server, ['--platform', 'testos', '--name', 'first']);
  const dir = tempDir(t);
  const pidFile = path.join(dir, 'job.pid');
  t.after(() => {
    if (existsSync(pidFile)) killGroup(Number(readFileSync(pidFile, 'utf8')));
  });
  // The first attempt hangs; the second finds the marker the first left and finishes.
  const script = `if [ -e ${dir}/marker ]; then echo second attempt; exit 0; fi; touch ${dir}/marker; echo $$ > ${pidFile}; echo first attempt; sleep 60`;
  assert.equal((await kiln(server, ['schedule', 'flaky-host', '--command', script, '--platform', 'testos', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'flaky-host'])).stdout.trim();
  const observing = kiln(server, ['observe', runId]);
  await firstLine(server, runId);
  await startWorker(t, server, ['--platform', 'testos', '--name', 'second']);
  await first.kill('SIGKILL');

  const observed = await observing;
  assert.equal(observed.code, 0, observed.stdout + observed.stderr);
  const lines = observed.stdout.trimEnd().split('\n');
  assert.equal(lines[0], 'first attempt');
  assert.match(lines[1]!, /^kiln: attempt 1 on first ended \(aborted: worker lost .*\); retrying as attempt 2$/);
  assert.equal(lines[2], 'second attempt');
  assert.match(lines[3]!, /succeeded: exited 0$/);

  const shown = JSON.parse((await kiln(server, ['show', runId, '--json'])).stdout);
  assert.equal(shown.run.attempt, 2);
  assert.equal(shown.run.worker, 'second');
  assert.deepEqual(shown.events.map((e: { kind: string }) => e.kind), ['queued', 'dispatched', 'retried', 'dispatched', 'ended']);
});

test('SIGKILL the server with 100 queued runs: after a restart all 100 are queued and then run', async (t) => {
  const server = await startServer(t);
  const jobs = Array.from({ length: 100 }, (_, i) => `job-${String(i).padStart(3, '0')}`);
  for (const name of jobs) await api(server, 'POST', '/api/jobs', { name, platform: 'testos', script: `echo ${name}\n`, period: 'weekly' });
  // A finished run with its console must survive as well.
  await api(server, 'POST', '/api/jobs', { name: 'done', platform: 'other', script: 'echo kept\n', period: 'never' });
  const queuedBefore = JSON.parse((await kiln(server, ['runs', '--status', 'queued', '--limit', '500', '--json'])).stdout).runs;
  assert.equal(queuedBefore.length, 100);
  const other = await startWorker(t, server, ['--platform', 'other']);
  const doneRun = (await api<{ run: { id: string } }>(server, 'POST', '/api/jobs/done/execute', {})).run.id;
  assert.equal((await followRun(server, doneRun)).run.status, 'succeeded');
  await other.kill('SIGTERM');

  await server.kill('SIGKILL');
  const restarted = await startServer(t, { dataDir: server.dataDir, port: Number(new URL(server.url).port) });
  const queuedAfter = JSON.parse((await kiln(restarted, ['runs', '--status', 'queued', '--limit', '500', '--json'])).stdout).runs;
  assert.deepEqual(queuedAfter.map((r: { id: string }) => r.id).sort(), queuedBefore.map((r: { id: string }) => r.id).sort());
  const jobsAfter = JSON.parse((await kiln(restarted, ['jobs', '--json'])).stdout).jobs;
  assert.equal(jobsAfter.length, 101);
  const kept = await kiln(restarted, ['logs', doneRun]);
  assert.equal(kept.stdout, 'kept\n');

  await startWorker(t, restarted, ['--platform', 'testos', '--capacity', '4']);
  const results = await Promise.all(queuedAfter.map((r: { id: string }) => followRun(restarted, r.id)));
  assert.ok(results.every((r) => r.run.status === 'succeeded'), 'every queued run ran after the restart');
  assert.deepEqual(results.map((r) => r.lines[0]).sort(), jobs);
});

test('a work dir that cannot be made ends the run aborted with the reason, and the worker stays healthy', async (t) => {
  const server = await startServer(t);
  const dir = tempDir(t);
  const notADir = path.join(dir, 'file');
  writeFileSync(notADir, '');
  await startWorker(t, server, ['--platform', 'testos', '--work-dir', notADir]);
  assert.equal((await kiln(server, ['schedule', 'j', '--command', 'echo hi', '--platform', 'testos', '--period', 'never'])).code, 0);
  for (let i = 0; i < 2; i += 1) {
    const observed = await kiln(server, ['observe', (await kiln(server, ['execute', 'j'])).stdout.trim()]);
    assert.equal(observed.code, 1);
    assert.match(observed.stdout, /^kiln: run .* failed: aborted: cannot create the work dir: ENOTDIR/);
  }
});
