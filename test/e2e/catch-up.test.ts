/** A `--catch-up` job rescheduled far into the past replays a bounded number of slots in one pass. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CATCH_UP_LIMIT } from '../../src/core/index.js';
import { api, kiln, startServer } from '../helpers/processes.js';

const MIN = 60_000;

test('ten years of missed minutes: one pass, one run, the rest counted as skipped; /healthz keeps answering', { timeout: 120_000 }, async (t) => {
  const server = await startServer(t);
  // No worker: the job's first run stays queued, so every replayed slot finds it queued.
  const scheduled = await kiln(server, ['schedule', 'replay', '--command', 'true', '--platform', 'testos', '--every', '1m', '--catch-up']);
  assert.equal(scheduled.code, 0, scheduled.stderr);
  const due = Math.floor((Date.now() - 3652 * 24 * 60 * MIN) / MIN) * MIN;
  const since = server.stderr.length;
  const before = Date.now();
  const moved = await kiln(server, ['reschedule', 'replay', new Date(due).toISOString()]);
  assert.equal(moved.code, 0, moved.stderr);
  const health = await fetch(`${server.url}/healthz`);
  assert.equal(health.status, 200);
  // The pass that handles the past ends with one line for the job (queued or, here, skipped).
  await server.waitFor(/"job":"replay".*"msg":"schedule due, nothing queued"|"msg":"schedule fired".*"job":"replay"/, since);
  const after = Date.now();
  const { job } = await api<{ job: { skipped: number; nextAt: string; lastSkip: { reason: string } } }>(server, 'GET', '/api/jobs/replay');
  // Every missed minute from `due` to the pass's now is counted, all in that one pass.
  const missedAtLeast = Math.floor((before - due) / MIN) + 1;
  const missedAtMost = Math.floor((after - due) / MIN) + 1;
  assert.ok(job.skipped >= missedAtLeast && job.skipped <= missedAtMost, `${job.skipped} skipped, expected ${missedAtLeast}..${missedAtMost}`);
  assert.ok(Date.parse(job.nextAt) > before, `next ${job.nextAt} is after now`);
  assert.match(job.lastSkip.reason, new RegExp(`^run \\S+ is still queued \\(catch-up: ${CATCH_UP_LIMIT} missed slots replayed at once .*, \\d{7} later missed slots not replayed \\(at most ${CATCH_UP_LIMIT} per pass\\)\\)$`));
  const catching = server.stderr.slice(since).filter((line) => line.includes('"msg":"schedule catching up"'));
  assert.equal(catching.length, 1, 'one pass caught up');
  assert.match(catching[0]!, new RegExp(`"replayed":${CATCH_UP_LIMIT},"skipped":\\d{7}`));
  const runs = JSON.parse((await kiln(server, ['runs', '--job', 'replay', '--json'])).stdout).runs;
  assert.equal(runs.length, 1, 'the queue holds the job once');
  const fires = server.stderr.slice(since).filter((line) => line.includes('"job":"replay"') && /schedule (fired|due)/.test(line));
  assert.equal(fires.length, 1, 'one firing, not one per slot');
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
});
