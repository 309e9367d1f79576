/** Schedules, templates and platforms with real processes. */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';

test('--every 2s runs on its grid with a real clock', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  const scheduled = await kiln(server, ['schedule', 'tick', '--command', 'echo tick', '--platform', 'testos', '--every', '2s']);
  assert.equal(scheduled.code, 0, scheduled.stderr);
  assert.match(scheduled.stdout, /^scheduled tick on testos, every 2s, next \S+Z\nqueued run /);
  // The first run is queued at once, then one every 2 s: wait for the third to end.
  for (let ended = 0; ended < 3; ended += 1) await worker.waitFor(/run ended/, ended === 0 ? 0 : worker.stderr.findLastIndex((l) => /run ended/.test(l)) + 1);
  const runs = JSON.parse((await kiln(server, ['runs', '--job', 'tick', '--json'])).stdout).runs as { queuedAt: string; status: string }[];
  assert.ok(runs.length >= 3);
  const times = runs.map((r) => Date.parse(r.queuedAt)).reverse();
  for (let i = 1; i < times.length; i += 1) assert.ok(times[i]! > times[i - 1]!, 'one run per slot, in order');
  const preview = await kiln(server, ['jobs', '--next', '3']);
  assert.match(preview.stdout, /^tick \(every 2s\):\n {2}\S+Z\n {2}\S+Z\n {2}\S+Z\n$/);
});

test('a server down across several due times runs the job once when it comes back', async (t) => {
  const server = await startServer(t);
  const worker = await startWorker(t, server, ['--platform', 'testos']);
  // --overlap queue: a run the killed server had just dispatched is still running (its worker
  // re-attaches later) when the catch-up comes due, and the default (skip) would rightly skip it.
  assert.equal((await kiln(server, ['schedule', 'm', '--command', 'true', '--platform', 'testos', '--every', '1s', '--overlap', 'queue'])).code, 0);
  await worker.waitFor(/run ended/);
  await server.kill('SIGKILL');
  const downAt = Date.now();
  // The outage itself: several 1 s slots must pass while the server is down (there is no event for that).
  await new Promise((resolve) => setTimeout(resolve, 3500));
  const restarted = await startServer(t, { dataDir: server.dataDir, port: Number(new URL(server.url).port) });
  await restarted.waitFor(/schedule fired/);
  await restarted.waitFor(/schedule fired/, restarted.stderr.findIndex((l) => /schedule fired/.test(l)) + 1);
  const fires = restarted.stderr.filter((l) => /schedule fired/.test(l)).map((l) => JSON.parse(l) as { due: string; next: string; time: number });
  // Read from the log alone (when the parent saw the server listening says nothing of when its scheduler ran).
  const [catchUp, following] = [fires[0]!, fires[1]!];
  const skippedMs = Date.parse(catchUp.next) - Date.parse(catchUp.due);
  assert.ok(skippedMs >= 3000, `the first run stood for the slots missed while down (${catchUp.due} to ${catchUp.next}, down ${Date.now() - downAt} ms ago)`);
  assert.equal(fires.filter((f) => Date.parse(f.due) < Date.parse(catchUp.next)).length, 1, `one run for the ${skippedMs / 1000} slots missed, not one per slot`);
  // (The slot at `next` itself may find the catch-up's run still queued, and queue nothing: one queued run per job.)
  assert.ok(Date.parse(catchUp.next) > catchUp.time - 1000, `then straight back to the grid ahead: next ${catchUp.next}, fired at ${new Date(catchUp.time).toISOString()}`);
  assert.equal((Date.parse(following.due) - Date.parse(catchUp.due)) % 1000, 0, 'on the same grid');
});

test('templates: one job, a run per platform variant, expanded at dispatch with variables', async (t) => {
  const config = tempDir(t);
  const templates = path.join(config, 'templates');
  mkdirSync(templates);
  const write = (file: string, text: string) => writeFileSync(path.join(templates, file), text);
  write('hello.alpha', 'echo "alpha says %%GREETING%% from %%JOB%% on %%PLATFORM%%"\n');
  write('hello.beta', 'echo "beta says %%GREETING%% (run %%RUN%%)"\n');
  const server = await startServer(t, { args: ['--config-dir', config] });
  await startWorker(t, server, ['--platform', 'alpha']);
  await startWorker(t, server, ['--platform', 'beta']);

  const listed = JSON.parse((await kiln(server, ['templates', '--json'])).stdout).templates;
  assert.deepEqual(listed, [{ name: 'hello', generic: false, platforms: ['alpha', 'beta'] }]);

  assert.equal((await kiln(server, ['schedule', 'greet', '--template', 'hello', '--var', 'GREETING=hi', '--period', 'never'])).code, 0);
  const ids = (await kiln(server, ['execute', 'greet'])).stdout.trim().split('\n');
  assert.equal(ids.length, 2, 'a run on each platform with a variant');
  const outputs = (await Promise.all(ids.map((id) => followRun(server, id)))).map((r) => r.lines[0]).sort();
  const betaId = ids.find((id) => outputs.some((o) => o?.includes(id)));
  assert.ok(betaId, 'the beta run printed its own run id');
  assert.deepEqual(outputs, ['alpha says hi from greet on alpha', `beta says hi (run ${betaId})`]);

  // An edited template applies to the next run.
  write('hello.alpha', 'echo "alpha now says %%GREETING%%"\n');
  const next = (await kiln(server, ['execute', 'greet', '--platform', 'alpha'])).stdout.trim();
  assert.deepEqual((await followRun(server, next)).lines, ['alpha now says hi']);

  // An unknown variable or a missing template ends the run aborted, with the reason.
  write('hello.beta', 'echo %%NOPE%%\n');
  const unknown = await followRun(server, (await kiln(server, ['execute', 'greet', '--platform', 'beta'])).stdout.trim());
  assert.equal(unknown.run.status, 'failed');
  assert.match(unknown.run.resultText ?? '', /^aborted: the template uses %%NOPE%%, which the job does not define/);
  await startWorker(t, server, ['--platform', 'gamma']);
  const missing = await followRun(server, (await kiln(server, ['execute', 'greet', '--platform', 'gamma'])).stdout.trim());
  assert.match(missing.run.resultText ?? '', /^aborted: no template 'hello' for platform gamma/);
});

test('drop-platform empties its queue, refuses new jobs, tells its workers; undrop-platform lifts it', async (t) => {
  const server = await startServer(t);
  assert.equal((await kiln(server, ['schedule', 'old-job', '--command', 'echo still here', '--platform', 'old', '--period', 'daily'])).code, 0);
  const queued = JSON.parse((await kiln(server, ['runs', '--json'])).stdout).runs[0];
  const worker = await startWorker(t, server, ['--platform', 'other-than-old']);
  void worker;
  const oldWorker = await (async () => {
    const dropped = await kiln(server, ['drop-platform', 'old']);
    assert.equal(dropped.code, 0, dropped.stderr);
    assert.equal(dropped.stdout, 'dropped old (cancelled 1 queued runs)\n');
    return startWorker(t, server, ['--platform', 'old']);
  })();
  const run = JSON.parse((await kiln(server, ['runs', '--json'])).stdout).runs.find((r: { id: string }) => r.id === queued.id);
  assert.equal(run.status, 'cancelled');
  assert.equal(run.resultText, 'aborted: platform dropped');
  const refused = await kiln(server, ['schedule', 'new-job', '--command', 'true', '--platform', 'old']);
  assert.equal(refused.code, 1);
  assert.equal(refused.stderr, "kiln: platform 'old' is dropped (kiln undrop-platform old lifts that)\n");
  assert.equal((await kiln(server, ['execute', 'old-job'])).code, 1);
  const info = await kiln(server, ['info']);
  assert.match(info.stdout, /^dropped platforms: old$/m);

  await kiln(server, ['undrop-platform', 'old']);
  const w = await oldWorker;
  await w.waitFor(/platform old is back/);
  const again = (await kiln(server, ['execute', 'old-job'])).stdout.trim();
  assert.deepEqual((await followRun(server, again)).lines, ['still here']);
});

test('schedule --dry-run previews a cron schedule in its zone and stores nothing; pause and resume', async (t) => {
  const server = await startServer(t);
  const dry = await kiln(server, ['schedule', 'report', '--command', 'true', '--cron', '30 2 * * *', '--tz', 'Europe/Berlin', '--dry-run', '--next', '3']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^cron 30 2 \* \* \* Europe\/Berlin: next\n( {2}\d{4}-\d{2}-\d{2}T02:30:00\+0[12]:00\n){3}$/);
  assert.equal(JSON.parse((await kiln(server, ['jobs', '--json'])).stdout).jobs.length, 0, 'a dry run stores nothing');

  assert.equal((await kiln(server, ['schedule', 'report', '--command', 'true', '--cron', '30 2 * * *', '--tz', 'Europe/Berlin', '--platform', 'testos'])).code, 0);
  const paused = await kiln(server, ['pause', 'report']);
  assert.equal(paused.stdout, 'paused report\n');
  assert.match((await kiln(server, ['info'])).stdout, /report on testos, cron 30 2 \* \* \* Europe\/Berlin \(paused\), next \d{4}-\d{2}-\d{2}T02:30:00\+0[12]:00/);
  const resumed = await kiln(server, ['resume', 'report']);
  assert.match(resumed.stdout, /^resumed report, next \d{4}-\d{2}-\d{2}T02:30:00\+0[12]:00\n$/);
  assert.equal((await kiln(server, ['pause', 'nope'])).code, 1);
});
