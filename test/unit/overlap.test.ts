/** The overlap rule and the firing's platforms, as tables: what a due job does with its open runs. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideOverlap, platformsToQueue, skipReason, type OpenRun, type Overlap, type OverlapDecision } from '../../src/core/index.js';

const q = (id: string): OpenRun => ({ id, status: 'queued' });
const r = (id: string): OpenRun => ({ id, status: 'running' });
const fire = (cancelQueued: string[] = [], requestCancel: string[] = []): OverlapDecision => ({ kind: 'fire', cancelQueued, requestCancel });

test('decideOverlap: skip, queue and cancel-previous against no, queued, running and mixed open runs', () => {
  const cases: [Overlap, OpenRun[], OverlapDecision][] = [
    ['skip', [], fire()],
    ['skip', [q('a')], { kind: 'skip', reason: 'run a is still queued' }],
    ['skip', [r('a'), q('b')], { kind: 'skip', reason: 'run a is still running' }],
    ['queue', [], fire()],
    ['queue', [r('a'), q('b')], fire()],
    ['cancel-previous', [], fire()],
    ['cancel-previous', [q('a')], fire(['a'])],
    ['cancel-previous', [r('a')], fire([], ['a'])],
    ['cancel-previous', [r('a'), q('b'), r('c')], fire(['b'], ['a', 'c'])],
  ];
  for (const [overlap, open, want] of cases) assert.deepEqual(decideOverlap(overlap, open), want, `${overlap} with ${JSON.stringify(open)}`);
});

test('platformsToQueue: the dropped platforms are left out; none left is a skip that says why', () => {
  const cases: [string[], string[], ReturnType<typeof platformsToQueue>][] = [
    [['linux'], [], { queue: ['linux'] }],
    [['linux', 'bsd'], ['bsd'], { queue: ['linux'] }],
    [['linux', 'bsd'], ['linux', 'bsd'], { skip: 'platform linux, bsd dropped' }],
    [[], [], { skip: 'no platform to run on' }],
  ];
  for (const [platforms, dropped, want] of cases) assert.deepEqual(platformsToQueue(platforms, new Set(dropped)), want, JSON.stringify([platforms, dropped]));
});

test('skipReason: a catch-up that missed slots adds its own reason', () => {
  assert.equal(skipReason('already queued'), 'already queued');
  assert.equal(skipReason('already queued', { count: 0, reason: 'x' }), 'already queued');
  assert.equal(skipReason('run a is still running', { count: 2, reason: 'catch-up: 3 missed' }), 'run a is still running (catch-up: 3 missed)');
});
