/** A latent pool's start/stop arithmetic, as tables. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { idleStops, perRunPoolStarts, quarantineAfter, sharedPoolStarts, type IdleCandidate, type SharedPoolCounts } from '../../src/core/index.js';

test('sharedPoolStarts: enough for the runs no worker takes or to keep min_idle, within max', () => {
  const none: SharedPoolCounts = { waiting: 0, free: 0, starting: 0, idle: 0, live: 0, max: 3, minIdle: 0 };
  const cases: [string, Partial<SharedPoolCounts>, number][] = [
    ['nothing waits', {}, 0],
    ['one run, no worker', { waiting: 1 }, 1],
    ['five runs, max 3', { waiting: 5 }, 3],
    ['five runs, two live already', { waiting: 5, live: 2 }, 1],
    ['runs covered by free slots', { waiting: 2, free: 2 }, 0],
    ['runs covered by starting instances', { waiting: 2, starting: 2, live: 2 }, 0],
    ['one more than free and starting', { waiting: 3, free: 1, starting: 1, live: 1 }, 1],
    ['min_idle 2, none idle', { minIdle: 2 }, 2],
    ['min_idle 2, one idle', { minIdle: 2, idle: 1, live: 1 }, 1],
    ['min_idle 2, one starting', { minIdle: 2, starting: 1, live: 1 }, 1],
    ['at max', { waiting: 4, live: 3 }, 0],
    ['over max (config shrank)', { waiting: 4, live: 5 }, 0],
  ];
  for (const [name, counts, want] of cases) assert.equal(sharedPoolStarts({ ...none, ...counts }), want, name);
});

test('perRunPoolStarts: one per unprovided run not taken by a free worker, within max', () => {
  const cases: [{ unprovided: number; free: number; live: number; max: number }, number][] = [
    [{ unprovided: 0, free: 0, live: 0, max: 4 }, 0],
    [{ unprovided: 3, free: 0, live: 0, max: 4 }, 3],
    [{ unprovided: 3, free: 1, live: 0, max: 4 }, 2],
    [{ unprovided: 6, free: 0, live: 1, max: 4 }, 3],
    [{ unprovided: 1, free: 3, live: 0, max: 4 }, 0],
    [{ unprovided: 2, free: 0, live: 5, max: 4 }, 0],
  ];
  for (const [counts, want] of cases) assert.equal(perRunPoolStarts(counts), want, JSON.stringify(counts));
});

test('idleStops: idle instances past the timeout go, oldest listed first, min_idle kept, none while runs wait', () => {
  const now = 100_000;
  const idle = (since: number): IdleCandidate => ({ state: 'idle', idleSince: since });
  const busy: IdleCandidate = { state: 'busy', idleSince: 0 };
  const set = [idle(0), busy, idle(50_000), idle(99_000)];
  const cases: [string, IdleCandidate[], { waiting: number; minIdle: number; idleTimeoutMs: number }, number[]][] = [
    ['timeout 10s: two past it', set, { waiting: 0, minIdle: 0, idleTimeoutMs: 10_000 }, [0, 2]],
    ['timeout 0: every idle one', set, { waiting: 0, minIdle: 0, idleTimeoutMs: 0 }, [0, 2, 3]],
    ['min_idle 2 keeps two of three', set, { waiting: 0, minIdle: 2, idleTimeoutMs: 0 }, [0]],
    ['min_idle 3 keeps all', set, { waiting: 0, minIdle: 3, idleTimeoutMs: 0 }, []],
    ['runs waiting', set, { waiting: 1, minIdle: 0, idleTimeoutMs: 0 }, []],
    ['never stopped for idleness', set, { waiting: 0, minIdle: 0, idleTimeoutMs: -1 }, []],
    ['exactly at the timeout', [idle(90_000)], { waiting: 0, minIdle: 0, idleTimeoutMs: 10_000 }, [0]],
    ['starting and stopping ones are not idle', [{ state: 'starting', idleSince: 0 }, { state: 'stopping', idleSince: 0 }], { waiting: 0, minIdle: 0, idleTimeoutMs: 0 }, []],
  ];
  for (const [name, instances, c, want] of cases) assert.deepEqual(idleStops(instances, { ...c, now }), want, name);
});

test('quarantineAfter: from the second failure in a row, 10 s doubling to an hour, once per batch', () => {
  const cases: [number, number, number, number, number | undefined][] = [
    // failures, quarantines so far, now, quarantined until → rest
    [1, 0, 1000, 0, undefined],
    [2, 0, 1000, 0, 10_000],
    [3, 1, 1000, 0, 20_000],
    [9, 5, 1000, 0, 320_000],
    [30, 20, 1000, 0, 3_600_000],
    [3, 1, 1000, 5000, undefined],
  ];
  for (const [failures, quarantines, now, until, want] of cases) assert.equal(quarantineAfter(failures, quarantines, now, until), want, JSON.stringify([failures, quarantines, now, until]));
});
