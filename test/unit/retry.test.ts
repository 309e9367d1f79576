/** How an attempt ends and whether it goes again, as tables. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideRetry, endOfOverdue, endOfReport, settledEndOfReport, type AttemptEndPlan, type RetryDecision, type RetryState, type RunResult, type WorkerStop } from '../../src/core/index.js';

const exited = (code: number): RunResult => ({ kind: 'exited', code });
const aborted = (reason: string): RunResult => ({ kind: 'aborted', reason });

test('endOfReport: a worker\'s report gives the status, the result and the budget a retry would spend', () => {
  const cases: [RunResult, WorkerStop | undefined, string | null, AttemptEndPlan][] = [
    [exited(0), undefined, null, { status: 'succeeded', result: exited(0), retry: undefined }],
    [exited(3), undefined, null, { status: 'failed', result: exited(3), retry: 'failure' }],
    [aborted('timed out'), 'timeout', null, { status: 'timed-out', result: aborted('timed out'), retry: 'failure' }],
    [aborted('quiet'), 'idle-timeout', null, { status: 'timed-out', result: aborted('quiet'), retry: 'failure' }],
    [exited(0), 'cancel', 'alice', { status: 'cancelled', result: aborted('cancelled by alice') }],
    [exited(143), 'cancel', null, { status: 'cancelled', result: aborted('cancelled by the worker') }],
    [aborted('stopped'), undefined, 'the schedule', { status: 'cancelled', result: aborted('cancelled by the schedule') }],
    // A cancel asked for, but the job finished on its own first: its own result stands.
    [exited(0), undefined, 'alice', { status: 'succeeded', result: exited(0), retry: undefined }],
    [exited(1), 'shutdown', null, { status: 'cancelled', result: exited(1) }],
    [{ kind: 'signalled', signal: 'SIGKILL', note: 'out of memory' }, 'output', null, { status: 'failed', result: { kind: 'signalled', signal: 'SIGKILL', note: 'out of memory' }, retry: 'failure' }],
  ];
  for (const [result, stop, by, want] of cases) assert.deepEqual(endOfReport(result, stop, by), want, JSON.stringify([result, stop, by]));
});

test('settledEndOfReport: where it gives an end, the stored run could not have changed it (any cancel asker, any retry state)', () => {
  const reports: [RunResult, WorkerStop | undefined][] = [
    [exited(0), undefined], [exited(3), undefined], [aborted('timed out'), 'timeout'], [aborted('quiet'), 'idle-timeout'], [exited(0), 'cancel'],
    [exited(143), 'cancel'], [aborted('stopped'), undefined], [exited(1), 'shutdown'], [exited(0), 'shutdown'], [exited(0), 'output'],
    [{ kind: 'signalled', signal: 'SIGKILL', note: 'out of memory' }, 'output'], [{ kind: 'signalled', signal: 'SIGTERM' }, undefined],
  ];
  const states: RetryState[] = [
    { attempt: 1, worker: 'w', lostRetriesLeft: 0, failureRetriesLeft: 0, otherQueued: false, jobExists: true },
    { attempt: 2, worker: 'w', lostRetriesLeft: 3, failureRetriesLeft: 3, otherQueued: false, jobExists: true },
    { attempt: 1, worker: null, lostRetriesLeft: 1, failureRetriesLeft: 1, otherQueued: true, jobExists: false },
  ];
  const settled = reports.filter(([result, stop]) => {
    const plan = settledEndOfReport(result, stop);
    if (!plan) return false;
    for (const by of [null, 'alice']) {
      assert.deepEqual(plan, endOfReport(result, stop, by), JSON.stringify([result, stop, by]));
      for (const state of states) assert.deepEqual(decideRetry(state, plan), { kind: 'end' }, JSON.stringify([result, stop, state]));
    }
    return true;
  });
  // The fast way is taken for what most runs end with; a failure (it may retry) or a cancel reads the run.
  assert.deepEqual(settled, [[exited(0), undefined], [exited(1), 'shutdown'], [exited(0), 'shutdown'], [exited(0), 'output']]);
});

test('endOfOverdue: a cancel\'s backstop ends cancelled; a missed timeout ends timed-out and may retry', () => {
  assert.deepEqual(endOfOverdue({ cancelRequestedBy: 'bob', timeoutMs: 1000 }), { status: 'cancelled', result: aborted('cancelled by bob (the worker did not confirm)') });
  assert.deepEqual(endOfOverdue({ cancelRequestedBy: null, timeoutMs: 90_000 }), { status: 'timed-out', result: aborted('timed out after 1m30s (the worker did not report)'), retry: 'failure' });
});

test('decideRetry: budgets, a queued sibling and a deleted job decide; the note says what happens', () => {
  const base: RetryState = { attempt: 2, worker: 'w1', lostRetriesLeft: 1, failureRetriesLeft: 0, otherQueued: false, jobExists: true };
  const lost = { result: aborted('worker lost'), retry: 'lost' as const };
  const cases: [string, Partial<RetryState>, { result: RunResult; retry?: 'lost' | 'failure' | 'unstarted' }, RetryDecision][] = [
    ['no retry asked', {}, { result: exited(0) }, { kind: 'end' }],
    ['lost, budget left', {}, lost, {
      kind: 'requeue', spend: 'lost', attempt: 3, event: 'retried', note: 'kiln: attempt 2 on w1 ended (aborted: worker lost); retrying as attempt 3',
    }],
    ['lost, budget spent', { lostRetriesLeft: 0 }, lost, { kind: 'end' }],
    ['failure, no budget', {}, { result: exited(1), retry: 'failure' }, { kind: 'end' }],
    ['failure, budget left', { failureRetriesLeft: 2 }, { result: exited(1), retry: 'failure' }, {
      kind: 'requeue', spend: 'failure', attempt: 3, event: 'retried', note: 'kiln: attempt 2 on w1 ended (exited 1); retrying as attempt 3',
    }],
    ['unstarted needs no budget', { lostRetriesLeft: 0 }, { result: aborted('never started: gone'), retry: 'unstarted' }, {
      kind: 'requeue', spend: undefined, attempt: 2, event: 'requeued', why: 'never started: gone', note: 'kiln: attempt 2 on w1 never started (aborted: never started: gone); queued again, no retry used',
    }],
    ['unstarted with an exit', {}, { result: exited(1), retry: 'unstarted' }, {
      kind: 'requeue', spend: undefined, attempt: 2, event: 'requeued', why: 'exited 1', note: 'kiln: attempt 2 on w1 never started (exited 1); queued again, no retry used',
    }],
    ['another run of the job is queued', { otherQueued: true }, lost, { kind: 'end' }],
    ['unstarted, but another is queued', { otherQueued: true }, { result: aborted('x'), retry: 'unstarted' }, { kind: 'end' }],
    ['the job was unscheduled', { jobExists: false }, lost, { kind: 'end' }],
  ];
  for (const [name, state, end, want] of cases) assert.deepEqual(decideRetry({ ...base, ...state }, end), want, name);
});
