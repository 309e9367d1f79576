/**
 * `POST /api/import/robur` on a real server (SQLite and PostgreSQL): a builder state file made
 * with the codec (as builder writes it, plus legacy entries) moves in once; what it took, kept and
 * refused is reported; the same file again takes nothing, even after its runs ended; garbage is a
 * one-line 400; only admins may import; an import is all or nothing (a failed one takes nothing, and
 * of two at once one takes the file).
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { StoreUnavailableError } from '../../src/errors.js';
import type { RoburJob } from '../../src/protocol/robur/index.js';
import type { ImportPlan, JobStore } from '../../src/store/index.js';
import type { RoburImportReport } from '../../src/server/robur/state-import.js';
import { call, inProcessServer } from '../helpers/in-process.js';
import { freshSchema } from '../helpers/postgres.js';
import { needs } from '../helpers/requirements.js';
import { legacyQueueEntries, stateFile } from '../helpers/robur-state.js';

/** builder's `never`: Ptime.max. */
const PTIME_MAX = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
const DAILY_NEXT = Date.UTC(2030, 0, 1, 0, 0, 0);
const HOURLY_NEXT = Date.UTC(2030, 0, 1, 5, 30, 0, 250);

const script = (name: string, platform?: string, text = `echo ${name}\n`): RoburJob => ({ kind: 'script', job: { name, script: text, ...(platform ? { platform } : {}) } });
const orb = (name: string, opamPackage: string): RoburJob => ({ kind: 'orb-build', job: { name, opamPackage } });

/** A state file with a bit of everything: script and orb-build items, two queues, a dropped platform, legacy entries. */
export function sampleState(): Buffer {
  return stateFile({
    dropped: ['old-os'],
    schedule: [
      { next: DAILY_NEXT, period: 'daily', job: script('nightly', 'debian-12') },
      { next: HOURLY_NEXT, period: 'hourly', job: orb('orb-mirage', 'mirage') },
      { next: PTIME_MAX, period: 'never', job: script('manual') },
      { next: DAILY_NEXT, period: 'weekly', job: script('present-one', 'debian-12', 'echo from robur\n') },
      { next: DAILY_NEXT, period: 'daily', job: script('on-old', 'old-os') },
    ],
    queues: [
      { platform: 'debian-12', jobs: [script('nightly', 'debian-12'), script('adhoc', 'debian-12'), script('present-one', 'debian-12'), orb('orb-mirage', 'mirage')] },
      { platform: 'freebsd-14', jobs: [orb('orb-mirage', 'mirage'), orb('orb-mirage', 'mirage'), script('nightly', 'debian-12')] },
    ],
  }, legacyQueueEntries('debian-12'));
}

async function importBytes(server: { url: string; tokens: { admin: string } }, bytes: Buffer, token = server.tokens.admin, type = 'application/octet-stream') {
  const response = await fetch(`${server.url}/api/import/robur`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': type }, body: bytes });
  return { status: response.status, body: await response.json() as any };
}

async function queues(server: Parameters<typeof call>[0]): Promise<Record<string, string[]>> {
  const reply = (await call(server, 'GET', '/api/queues')).body as { queues: { platform: string; runs: { run: { job: string } }[] }[] };
  return Object.fromEntries(reply.queues.filter((q) => q.runs.length > 0).map((q) => [q.platform, q.runs.map((r) => r.run.job)]));
}

for (const kind of ['sqlite', 'postgres'] as const) {
  test(`${kind}: a builder state file moves in once: jobs keep their next times, queues their order; the same file again takes nothing, even after its runs ended`, { skip: kind === 'postgres' && needs('postgres') }, async (t: TestContext) => {
    const server = await inProcessServer(t, kind === 'postgres' ? { store: (await freshSchema(t)).url } : {});
    // A Kiln job of the same name as one of the file's: left as it is.
    assert.equal((await call(server, 'POST', '/api/jobs', { name: 'present-one', platform: 'debian-12', script: 'echo kiln\n', period: 'never' })).status, 201);

    const first = await importBytes(server, sampleState());
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const report = first.body as RoburImportReport;
    assert.equal(report.alreadyImported, false);
    assert.match(report.sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(report.jobs.added, [
      { name: 'nightly', kind: 'script', platform: 'debian-12', schedule: 'daily', next: '2030-01-01T00:00:00Z', from: 'schedule' },
      { name: 'orb-mirage', kind: 'orb-build', platform: null, schedule: 'hourly', next: '2030-01-01T05:30:00.250Z', from: 'schedule' },
      { name: 'manual', kind: 'script', platform: 'no-platform', schedule: 'never', next: null, from: 'schedule' },
      { name: 'adhoc', kind: 'script', platform: 'debian-12', schedule: 'never', next: null, from: 'queue' },
    ]);
    assert.deepEqual(report.jobs.present, ['present-one']);
    assert.deepEqual(report.runs.queued.map((r) => `${r.platform}:${r.job}`), [
      'debian-12:nightly', 'debian-12:adhoc', 'debian-12:present-one', 'debian-12:orb-mirage', 'freebsd-14:orb-mirage',
    ]);
    assert.deepEqual(report.runs.alreadyQueued.map((r) => `${r.platform}:${r.job}`), ['freebsd-14:orb-mirage']);
    assert.equal(report.runs.alreadyQueued[0]!.run, report.runs.queued[4]!.run, 'the one queued run of the job on that platform');
    assert.deepEqual(report.platforms, { dropped: ['old-os'], alreadyDropped: [] });
    assert.deepEqual(report.refused, [
      { item: 'job on-old', reason: "platform 'old-os' is dropped (kiln undrop-platform old-os lifts that)" },
      { item: 'queue entry nightly on freebsd-14', reason: 'job nightly runs on debian-12, not freebsd-14' },
    ]);
    assert.equal(report.legacy, 2);

    // What the store holds, through the API.
    const jobs = new Map(((await call(server, 'GET', '/api/jobs')).body.jobs as any[]).map((j) => [j.name, j]));
    assert.deepEqual([...jobs.keys()].sort(), ['adhoc', 'manual', 'nightly', 'orb-mirage', 'present-one']);
    assert.equal(jobs.get('nightly').nextAt, '2030-01-01T00:00:00Z');
    assert.equal(jobs.get('nightly').script, 'echo nightly\n');
    assert.deepEqual([jobs.get('orb-mirage').template, jobs.get('orb-mirage').vars, jobs.get('orb-mirage').platform], ['orb-build', { OPAM_PACKAGE: 'mirage' }, null]);
    assert.equal(jobs.get('manual').nextAt, null);
    assert.equal(jobs.get('present-one').script, 'echo kiln\n', 'a present job is left as it is');
    assert.equal(jobs.get('present-one').scheduleText, 'never');
    assert.deepEqual(await queues(server), {
      'debian-12': ['nightly', 'adhoc', 'present-one', 'orb-mirage'],
      'freebsd-14': ['orb-mirage'],
    });
    assert.deepEqual((await call(server, 'GET', '/api/platforms/dropped')).body.dropped.map((d: { platform: string }) => d.platform), ['old-os']);

    // The same file again: nothing taken, the first import reported.
    const again = await importBytes(server, sampleState());
    assert.equal(again.status, 200);
    assert.equal(again.body.alreadyImported, true);
    assert.equal(again.body.sha256, report.sha256);
    assert.equal(again.body.importedAt, report.importedAt);
    assert.deepEqual([again.body.jobs, again.body.runs, again.body.platforms, again.body.refused], [{ added: [], present: [] }, { queued: [], alreadyQueued: [] }, { dropped: [], alreadyDropped: [] }, []]);
    assert.deepEqual(again.body.took, report);

    // Its runs ended (cancelled here): a third import still queues nothing again.
    for (const run of report.runs.queued) assert.equal((await call(server, 'POST', `/api/runs/${run.run}/cancel`, {})).status, 200);
    assert.deepEqual(await queues(server), {});
    const third = await importBytes(server, sampleState());
    assert.equal(third.body.alreadyImported, true);
    assert.deepEqual(await queues(server), {}, 'no run queued again');
    assert.equal((await call(server, 'GET', '/api/runs')).body.runs.length, 5);
  });
}

/** What sampleState takes into an empty store (the first test checks it in full): jobs, queues, drops, runs. */
async function assertTakenOnce(server: Parameters<typeof call>[0], report: RoburImportReport): Promise<void> {
  assert.equal(report.alreadyImported, false);
  assert.deepEqual(report.jobs.added.map((j) => j.name), ['nightly', 'orb-mirage', 'manual', 'present-one', 'adhoc']);
  assert.deepEqual(report.runs.queued.map((r) => `${r.platform}:${r.job}`), [
    'debian-12:nightly', 'debian-12:adhoc', 'debian-12:present-one', 'debian-12:orb-mirage', 'freebsd-14:orb-mirage',
  ]);
  assert.deepEqual(report.platforms, { dropped: ['old-os'], alreadyDropped: [] });
  assert.deepEqual(((await call(server, 'GET', '/api/jobs')).body.jobs as { name: string }[]).map((j) => j.name).sort(), ['adhoc', 'manual', 'nightly', 'orb-mirage', 'present-one']);
  assert.deepEqual(await queues(server), { 'debian-12': ['nightly', 'adhoc', 'present-one', 'orb-mirage'], 'freebsd-14': ['orb-mirage'] });
  assert.equal((await call(server, 'GET', '/api/runs')).body.runs.length, 5, 'each run queued once');
}

for (const kind of ['sqlite', 'postgres'] as const) {
  test(`${kind}: an import that fails part way takes nothing and records nothing; run again, it takes the file once`, { skip: kind === 'postgres' && needs('postgres') }, async (t: TestContext) => {
    // The store fails the first import at its very end, after it wrote everything in its transaction (the report is made last).
    let failures = 1;
    const wrap = (store: JobStore): JobStore => new Proxy(store, {
      get(target, key, receiver) {
        if (key !== 'importState') return Reflect.get(target, key, receiver);
        return (plan: ImportPlan) => target.importState(failures-- > 0 ? { ...plan, report: () => { throw new StoreUnavailableError('test', 'gone'); } } : plan);
      },
    });
    const server = await inProcessServer(t, { wrapStore: wrap, ...(kind === 'postgres' ? { store: (await freshSchema(t)).url } : {}) });
    const failed = await importBytes(server, sampleState());
    assert.equal(failed.status, 503, JSON.stringify(failed.body));
    assert.equal(failed.body.error.code, 'KILN_ERR_STORE_UNAVAILABLE');
    assert.deepEqual((await call(server, 'GET', '/api/jobs')).body.jobs, [], 'no job');
    assert.deepEqual(await queues(server), {}, 'no run');
    assert.deepEqual((await call(server, 'GET', '/api/platforms/dropped')).body.dropped, [], 'no drop');

    const rerun = await importBytes(server, sampleState());
    assert.equal(rerun.status, 200, JSON.stringify(rerun.body));
    await assertTakenOnce(server, rerun.body as RoburImportReport);
    assert.equal((await importBytes(server, sampleState())).body.alreadyImported, true);
  });

  test(`${kind}: two imports of one file at once: one takes it, the other finds it imported; each run is queued once`, { skip: kind === 'postgres' && needs('postgres') }, async (t: TestContext) => {
    // Both imports pass their first look (nothing recorded) before either goes on.
    let arrived = 0;
    let bothArrived!: () => void;
    const both = new Promise<void>((resolve) => { bothArrived = resolve; });
    const wrap = (store: JobStore): JobStore => new Proxy(store, {
      get(target, key, receiver) {
        if (key !== 'findImport') return Reflect.get(target, key, receiver);
        return async (sha256: string) => {
          const found = await target.findImport(sha256);
          if (++arrived === 2) bothArrived();
          if (arrived <= 2) await both;
          return found;
        };
      },
    });
    const server = await inProcessServer(t, { wrapStore: wrap, ...(kind === 'postgres' ? { store: (await freshSchema(t)).url } : {}) });
    const replies = await Promise.all([importBytes(server, sampleState()), importBytes(server, sampleState())]);
    assert.deepEqual(replies.map((r) => r.status), [200, 200]);
    const taken = replies.filter((r) => !r.body.alreadyImported).map((r) => r.body as RoburImportReport);
    const found = replies.filter((r) => r.body.alreadyImported).map((r) => r.body as RoburImportReport);
    assert.equal(taken.length, 1, 'exactly one import takes the file');
    assert.equal(found.length, 1);
    assert.deepEqual(found[0]!.took, taken[0], 'the other reports what the first took');
    assert.deepEqual([found[0]!.jobs, found[0]!.runs], [{ added: [], present: [] }, { queued: [], alreadyQueued: [] }]);
    await assertTakenOnce(server, taken[0]!);
  });
}

test('garbage, a truncated file, a wrong content type and an oversized body are refused with one line; nothing is taken', async (t) => {
  const server = await inProcessServer(t);
  const garbage = await importBytes(server, Buffer.from('this is not a state file\n'));
  assert.equal(garbage.status, 400);
  assert.equal(garbage.body.error.code, 'KILN_ERR_ROBUR_DECODE');
  assert.doesNotMatch(garbage.body.error.message, /\n/);
  const whole = sampleState();
  const truncated = await importBytes(server, whole.subarray(0, whole.length - 7));
  assert.equal(truncated.status, 400);
  assert.equal(truncated.body.error.code, 'KILN_ERR_ROBUR_DECODE');
  assert.doesNotMatch(truncated.body.error.message, /\n/);
  const json = await importBytes(server, Buffer.from('{}'), server.tokens.admin, 'application/json');
  assert.equal(json.status, 400);
  assert.match(json.body.error.message, /application\/octet-stream/);
  const huge = await importBytes(server, Buffer.alloc(32 * 1024 * 1024 + 1));
  assert.equal(huge.status, 413);
  assert.equal(huge.body.error.code, 'KILN_ERR_PAYLOAD_TOO_LARGE');
  assert.equal((await call(server, 'GET', '/api/jobs')).body.jobs.length, 0);
  // A refused file is not recorded: once fixed (here: whole), it imports.
  assert.equal((await importBytes(server, whole)).body.alreadyImported, false);
});

test('only an admin may import: an operator or viewer token is refused (403) and nothing is taken', async (t) => {
  const server = await inProcessServer(t);
  for (const role of ['operator', 'viewer']) {
    const { token } = (await call(server, 'POST', '/api/tokens', { name: `${role}-1`, role })).body as { token: string };
    const refused = await importBytes(server, sampleState(), token);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'KILN_ERR_FORBIDDEN');
  }
  assert.equal((await importBytes(server, sampleState(), 'not-a-token')).status, 401);
  assert.equal((await call(server, 'GET', '/api/jobs')).body.jobs.length, 0);
  assert.deepEqual((await call(server, 'GET', '/api/platforms/dropped')).body.dropped, []);
});
