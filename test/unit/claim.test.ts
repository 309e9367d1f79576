/** Label matching and reserved workers: which queued run a worker may take, as a table. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canClaim, firstClaimable, type Claimant } from '../../src/core/index.js';

test('canClaim: every label asked for must be offered with its value; a reserved worker takes only its run', () => {
  const cases: [string, Claimant, Record<string, string>, string, boolean][] = [
    ['no labels asked', { labels: {} }, {}, 'r1', true],
    ['extra labels offered', { labels: { gpu: 'yes', os: 'linux' } }, { gpu: 'yes' }, 'r1', true],
    ['label missing', { labels: { os: 'linux' } }, { gpu: 'yes' }, 'r1', false],
    ['value differs', { labels: { gpu: 'no' } }, { gpu: 'yes' }, 'r1', false],
    ['inherited key is not offered', { labels: {} }, { toString: 'x' }, 'r1', false],
    ['reserved for this run', { labels: {}, onlyRun: 'r1' }, {}, 'r1', true],
    ['reserved for another run', { labels: {}, onlyRun: 'r2' }, {}, 'r1', false],
    ['reserved, labels missing', { labels: {}, onlyRun: 'r1' }, { gpu: 'yes' }, 'r1', false],
  ];
  for (const [name, worker, labels, id, want] of cases) assert.equal(canClaim(worker, { id, labels }), want, name);
});

test('firstClaimable: the first run in queue order the worker may take', () => {
  const queue: { id: string; labels: Record<string, string> }[] = [{ id: 'a', labels: { gpu: 'yes' } }, { id: 'b', labels: {} }, { id: 'c', labels: {} }];
  assert.equal(firstClaimable({ labels: {} }, queue)?.id, 'b');
  assert.equal(firstClaimable({ labels: { gpu: 'yes' } }, queue)?.id, 'a');
  assert.equal(firstClaimable({ labels: {}, onlyRun: 'c' }, queue)?.id, 'c');
  assert.equal(firstClaimable({ labels: {}, onlyRun: 'z' }, queue), undefined);
});
