/** Why a queued run waits, as a table: each cause, and which one wins when several hold. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitReason, waitReasons, type FarmView, type PoolStateView, type QueuedRunView, type WaitReason, type WorkerSlotView } from '../../src/core/index.js';

const NOW = 1_000_000;
const run = (id: string, labels: Record<string, string> = {}, platform = 'deb'): QueuedRunView => ({ id, platform, labels });
const worker = (name: string, freeSlots: number, labels: Record<string, string> = {}, platform = 'deb', onlyRun?: string): WorkerSlotView => ({ name, platform, labels, freeSlots, onlyRun });
const pool = (over: Partial<PoolStateView> = {}): PoolStateView => ({
  name: 'local', platform: 'deb', labels: {}, live: 0, max: 2, starting: 0, startingFor: [], quarantinedUntil: null, lastError: null, ...over,
});
const farm = (over: Partial<FarmView> = {}): FarmView => ({ workers: [], pools: [], dropped: new Set(), now: NOW, ...over });

test('waitReason: each cause, and the one that wins when several hold', () => {
  const cases: [string, QueuedRunView, QueuedRunView[], FarmView, WaitReason['kind'], RegExp][] = [
    ['no worker at all', run('r'), [], farm(), 'no-worker', /no worker of platform deb is connected, and no pool starts one/],
    ['workers of other platforms only', run('r'), [], farm({ workers: [worker('w', 1, {}, 'bsd')] }), 'no-worker', /no worker of platform deb/],
    ['no worker with its labels', run('r', { arch: 'arm64', gpu: 'yes' }), [], farm({ workers: [worker('w', 1, { arch: 'x86_64', gpu: 'yes' })] }), 'no-worker-with-labels', /has the labels arch=arm64 \(1 worker of that platform/],
    ['labels asked, no worker of the platform', run('r', { arch: 'arm64' }), [], farm(), 'no-worker', /with labels arch=arm64/],
    ['dropped platform wins over free workers', run('r'), [], farm({ workers: [worker('w', 1)], dropped: new Set(['deb']) }), 'platform-dropped', /dropped/],
    ['the only worker is busy', run('r'), [], farm({ workers: [worker('w', 0)] }), 'all-busy', /all 1 worker that can take it is busy$/],
    ['free slot taken by the run ahead', run('r'), [run('a')], farm({ workers: [worker('w', 1)] }), 'all-busy', /\(1 run ahead of it\)/],
    ['runs ahead another worker takes do not count', run('r'), [run('a', { gpu: 'yes' })], farm({ workers: [worker('w', 1), worker('g', 0, { gpu: 'yes' })] }), 'dispatching', /being dispatched/],
    ['a free worker matches', run('r'), [], farm({ workers: [worker('w', 1)] }), 'dispatching', /being dispatched/],
    ['a worker kept for another run does not count', run('r'), [], farm({ workers: [worker('w', 1, {}, 'deb', 'other')] }), 'no-worker', /no worker/],
    ['a worker kept for this run', run('r'), [], farm({ workers: [worker('w', 1, {}, 'deb', 'r')] }), 'dispatching', /being dispatched/],
    ['a pool will start one', run('r'), [], farm({ pools: [pool()] }), 'pool-starting', /pool local will start a worker/],
    ['a pool is starting one', run('r'), [], farm({ pools: [pool({ starting: 1, live: 1 })] }), 'pool-starting', /1 instance starting/],
    ['a pool is quarantined', run('r'), [], farm({ pools: [pool({ quarantinedUntil: NOW + 10_000, lastError: 'exit 1' })] }), 'pool-quarantined', /quarantined .* until 1970-01-01T00:16:50.000Z \(last error: exit 1\)/],
    ['a quarantine that ended', run('r'), [], farm({ pools: [pool({ quarantinedUntil: NOW - 1 })] }), 'pool-starting', /will start/],
    ['a pool at max, busy', run('r'), [], farm({ workers: [worker('local-1', 0), worker('local-2', 0)], pools: [pool({ live: 2 })] }), 'pool-full', /at its maximum of 2 instances/],
    ['a pool of other labels does not serve it', run('r', { gpu: 'yes' }), [], farm({ pools: [pool({ labels: { gpu: 'no' } })] }), 'no-worker', /no worker/],
  ];
  for (const [name, queued, ahead, view, kind, text] of cases) {
    const reason = waitReason(queued, ahead, view);
    assert.equal(reason.kind, kind, name);
    assert.match(reason.text, text, name);
  }
});

test('waitReasons: a queue in order, each run behind the ones before it', () => {
  const reasons = waitReasons([run('a'), run('b'), run('c')], farm({ workers: [worker('w1', 1), worker('w2', 1)] }));
  assert.deepEqual(reasons.map((r) => r.kind), ['dispatching', 'dispatching', 'all-busy']);
  assert.match(reasons[2]!.text, /all 2 workers that can take it are busy \(2 runs ahead of it\)/);
});

test('no-worker-with-labels names the labels the closest worker lacks', () => {
  const reason = waitReason(run('r', { arch: 'arm64', os: 'debian' }), [], farm({ workers: [worker('a', 1, {}), worker('b', 1, { os: 'debian' })] }));
  assert.equal(reason.kind, 'no-worker-with-labels');
  assert.deepEqual(reason.kind === 'no-worker-with-labels' && reason.missing, { arch: 'arm64' });
});
