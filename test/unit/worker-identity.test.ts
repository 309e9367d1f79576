/** The rules binding worker names and runs to credentials. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { holdsRun, identityKey, nameRefusal, type WorkerIdentity } from '../../src/core/index.js';

const shared: WorkerIdentity = { kind: 'shared' };
const token: WorkerIdentity = { kind: 'token', name: 'w1' };
const instance: WorkerIdentity = { kind: 'instance', name: 'pool-1' };

test('a bound credential is good for its own name only; the shared one for names nobody owns', () => {
  const cases: [WorkerIdentity, string, 'token' | 'instance' | undefined, boolean][] = [
    [token, 'w1', 'token', true],
    [token, 'w2', undefined, false],
    [token, 'w1', 'instance', false],
    [instance, 'pool-1', 'instance', true],
    [instance, 'w1', 'token', false],
    [shared, 'anyone', undefined, true],
    [shared, 'w1', 'token', false],
    [shared, 'pool-1', 'instance', false],
  ];
  for (const [identity, name, owner, allowed] of cases) {
    assert.equal(nameRefusal(identity, name, owner) === undefined, allowed, `${identityKey(identity)} as ${name} (owner ${owner})`);
  }
});

test('a run is held by the identity recorded on it; runs from before identities go by name', () => {
  assert.equal(holdsRun('token:w1', token), true);
  assert.equal(holdsRun('token:w1', 'token:w1'), true);
  assert.equal(holdsRun('token:w1', shared), false);
  assert.equal(holdsRun('shared', token), false);
  assert.equal(holdsRun('instance:pool-1', { kind: 'token', name: 'pool-1' }), false, 'same name, other kind');
  assert.equal(holdsRun(null, shared), true);
  assert.deepEqual([shared, token, instance].map(identityKey), ['shared', 'token:w1', 'instance:pool-1']);
});

test('a robur worker\'s identity is its connection: never a WebSocket hello\'s, and none other holds its runs', () => {
  const robur: WorkerIdentity = { kind: 'robur', name: 'robur-debian-12-10.0.0.5:40000' };
  assert.equal(identityKey(robur), 'robur:robur-debian-12-10.0.0.5:40000');
  assert.ok(nameRefusal(robur, robur.name, undefined), 'no hello may come with it');
  assert.equal(holdsRun(identityKey(robur), { kind: 'shared' }), false, 'the shared token does not hold a robur worker\'s run');
  assert.equal(holdsRun(identityKey(robur), robur), true);
});
