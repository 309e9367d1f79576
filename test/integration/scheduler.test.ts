/** The scheduler in a real server with an injected clock: grids, downtime, overlap, pause, cron zones. */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { call, inProcessServer } from '../helpers/in-process.js';

const HOUR = 3_600_000;
const T0 = Date.parse('2026-11-22T10:00:00Z');

async function setup(t: TestContext, start = T0) {
  const clock = { now: start };
  const server = await inProcessServer(t, { now: () => clock.now });
  const job = (name: string, extra: Record<string, unknown>) => call(server, 'POST', '/api/jobs', { name, platform: 'testos', script: 'true\n', ...extra });
  const runs = async (name: string) => (await call(server, 'GET', `/api/runs?job=${name}`)).body.runs as { id: string; status: string; queuedAt: string }[];
  const get = async (name: string) => (await call(server, 'GET', `/api/jobs/${name}`)).body.job;
  /** Moves the clock and lets the scheduler fire what is due. */
  const at = async (ms: number) => {
    clock.now = ms;
    await server.wakeScheduler();
  };
  return { server, clock, job, runs, get, at };
}

test('a due job is queued and its next time stays on its own grid, whatever the delay', async (t) => {
  const { job, runs, get, at, server } = await setup(t);
  assert.equal((await job('hourly', { period: 'hourly', paused: false })).status, 201);
  assert.equal((await runs('hourly')).length, 1, 'the first run is queued at once');
  await call(server, 'POST', `/api/runs/${(await runs('hourly'))[0]!.id}/cancel`, {});
  await at(T0 + HOUR + 1234); // woken a little late
  assert.equal((await runs('hourly')).length, 2);
  assert.equal((await get('hourly')).nextAt, '2026-11-22T12:00:00Z', 'no drift from the late wake-up');
});

test('after downtime a job that missed several slots runs once (or every slot with catch-up)', async (t) => {
  const { job, runs, get, at, server } = await setup(t);
  await job('once', { schedule: { kind: 'every', everyMs: HOUR }, paused: true });
  await job('all', { schedule: { kind: 'every', everyMs: HOUR }, catchUp: true, overlap: 'queue', paused: true });
  for (const name of ['once', 'all']) await call(server, 'POST', `/api/jobs/${name}/resume`);
  await at(T0 + 5.5 * HOUR);
  assert.equal((await runs('once')).length, 1, 'one run, not one per missed slot');
  assert.equal((await get('once')).nextAt, '2026-11-22T16:00:00Z');
  // With catch-up, every missed slot fires (11:00 to 15:00), all in one pass: one run is queued,
  // the others find it still queued and are recorded as skipped.
  const all = await get('all');
  assert.equal(all.nextAt, '2026-11-22T16:00:00Z');
  assert.equal((await runs('all')).length + all.skipped, 5);
});

test('overlap: skip is recorded and shown in info; queue queues behind a running run', async (t) => {
  const { job, runs, get, at, server } = await setup(t);
  await job('busy', { schedule: { kind: 'every', everyMs: HOUR } });
  const first = (await runs('busy'))[0]!;
  await at(T0 + HOUR);
  assert.equal((await runs('busy')).length, 1, 'skipped: the first run is still queued');
  const busy = await get('busy');
  assert.equal(busy.skipped, 1);
  assert.deepEqual(busy.lastSkip, { at: '2026-11-22T11:00:00Z', reason: `run ${first.id} is still queued` });
  const info = (await call(server, 'GET', '/api/info')).body;
  assert.equal(info.schedule[0].skipped, 1);
  assert.equal(info.schedule[0].schedule, 'every 1h');
});

test('a paused job is not queued; resumed, it continues from now without the missed times', async (t) => {
  const { job, runs, get, at, server } = await setup(t);
  await job('p', { period: 'hourly', paused: true });
  assert.equal((await runs('p')).length, 0, 'paused: no first run');
  await at(T0 + 3.5 * HOUR);
  assert.equal((await runs('p')).length, 0);
  const resumed = (await call(server, 'POST', '/api/jobs/p/resume')).body.job;
  assert.equal(resumed.paused, false);
  assert.equal(resumed.nextAt, '2026-11-22T14:00:00Z');
  await at(T0 + 4 * HOUR);
  assert.equal((await runs('p')).length, 1);
  assert.equal((await get('p')).nextAt, '2026-11-22T15:00:00Z');
});

test('cron in Europe/Berlin across the spring gap: 02:30 runs once, at 03:30 local, then daily again', async (t) => {
  const start = Date.parse('2026-03-28T00:00:00Z');
  const { job, runs, get, at, server } = await setup(t, start);
  await job('berlin', { schedule: { kind: 'cron', expr: '30 2 * * *', tz: 'Europe/Berlin' }, paused: true });
  await call(server, 'POST', '/api/jobs/berlin/resume');
  const dues: string[] = [];
  for (let i = 0; i < 3; i += 1) {
    const next = (await get('berlin')).nextAt as string;
    dues.push(next);
    for (const run of await runs('berlin')) if (run.status === 'queued') await call(server, 'POST', `/api/runs/${run.id}/cancel`, {});
    await at(Date.parse(next));
  }
  assert.deepEqual(dues, ['2026-03-28T02:30:00+01:00', '2026-03-29T03:30:00+02:00', '2026-03-30T02:30:00+02:00']);
  assert.equal((await runs('berlin')).length, 3, 'one run per day, none lost in the gap, none doubled');
});

test('reschedule takes any offset and the grid continues from there', async (t) => {
  const { job, get, server } = await setup(t);
  await job('r', { period: 'daily' });
  await call(server, 'POST', '/api/jobs/r/reschedule', { next: '2026-11-25T06:00:00-05:00' });
  assert.equal((await get('r')).nextAt, '2026-11-25T11:00:00Z');
  const preview = (await call(server, 'GET', '/api/jobs/r/next?count=3')).body.next;
  assert.deepEqual(preview, ['2026-11-25T11:00:00Z', '2026-11-26T11:00:00Z', '2026-11-27T11:00:00Z']);
});
