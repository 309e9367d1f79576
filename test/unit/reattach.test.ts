/** A reconnecting worker's runs: which it resumes, which are released (and why), which go back or are lost. Tables. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideReattach, decideUnheld, type HeldRun, type ReattachDecision, type Reconnecting } from '../../src/core/index.js';

const worker: Reconnecting = { name: 'w1', identity: 'token:w1', session: 'p2' };
const running: HeldRun = { status: 'running', worker: 'w1', attempt: 1, workerIdentity: 'token:w1', workerSession: 'p2' };

test('decideReattach: resumed only where it runs, as that attempt, under the credential that took it', () => {
  const cases: [string, HeldRun | undefined, number, ReattachDecision][] = [
    ['still running here', running, 1, { kind: 'resume' }],
    ['taken before identities were kept', { ...running, workerIdentity: null }, 1, { kind: 'resume' }],
    ['another credential, same name', { ...running, workerIdentity: 'token:other' }, 1, { kind: 'release', why: 'it is held by another credential than this worker\'s' }],
    ['unknown run', undefined, 1, { kind: 'release', why: 'unknown run' }],
    ['a later attempt elsewhere', { ...running, worker: 'w2', attempt: 2 }, 1, { kind: 'release', why: 'now attempt 2 on w2' }],
    ['a later attempt here', { ...running, attempt: 2 }, 1, { kind: 'release', why: 'now attempt 2 on w1' }],
    ['queued again', { ...running, status: 'queued', worker: null, attempt: 2 }, 1, { kind: 'release', why: 'queued again as attempt 2' }],
    ['ended', { ...running, status: 'lost' }, 1, { kind: 'release', why: 'the run has ended (lost)' }],
  ];
  for (const [name, run, attempt, want] of cases) assert.deepEqual(decideReattach(run, worker, attempt), want, name);
});

test('decideUnheld: sent to this very process → requeued; to an earlier one → lost; anything unsure waits the grace', () => {
  const run = { ...running, id: 'r1' };
  const cases: [string, HeldRun & { id: string }, string[], boolean, 'keep' | 'requeue' | 'lose'][] = [
    ['sent to this process, which lacks it', run, [], false, 'requeue'],
    ['run by an earlier process', { ...run, workerSession: 'p1' }, [], false, 'lose'],
    ['listed by the hello', run, ['r1#1'], false, 'keep'],
    ['an older attempt listed', run, ['r1#0'], false, 'requeue'],
    ['no process id recorded', { ...run, workerSession: null }, [], false, 'keep'],
    ['a pass may still be sending it', run, [], true, 'keep'],
    ['another credential\'s', { ...run, workerIdentity: 'token:other' }, [], false, 'keep'],
    ['another worker\'s', { ...run, worker: 'w2' }, [], false, 'keep'],
  ];
  for (const [name, r, listed, claiming, want] of cases) assert.equal(decideUnheld(r, worker, new Set(listed), claiming), want, name);
  assert.equal(decideUnheld(run, { ...worker, session: undefined }, new Set(), false), 'lose', 'a hello without an id is taken as another process (as before this move)');
});
