/** Runs: statusFor, formatResult, isFinal, the cancel decision and what is forwarded. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideCancel, formatResult, forwardsOnEnd, isFinal, RUN_STATUSES, statusFor, type CancelDecision, type EndCause, type RunResult, type RunStatus } from '../../src/core/index.js';

test('statusFor maps a result and what stopped it to a final status', () => {
  const cases: { result: RunResult; cause?: EndCause; want: RunStatus }[] = [
    { result: { kind: 'exited', code: 0 }, want: 'succeeded' },
    { result: { kind: 'exited', code: 1 }, want: 'failed' },
    { result: { kind: 'exited', code: 255 }, want: 'failed' },
    { result: { kind: 'signalled', signal: 'SIGKILL' }, want: 'failed' },
    { result: { kind: 'aborted', reason: 'sandbox failed' }, want: 'failed' },
    // The cause wins over the result, even over a clean exit.
    { result: { kind: 'exited', code: 0 }, cause: 'timeout', want: 'timed-out' },
    { result: { kind: 'signalled', signal: 'SIGTERM' }, cause: 'timeout', want: 'timed-out' },
    { result: { kind: 'exited', code: 0 }, cause: 'cancel', want: 'cancelled' },
    { result: { kind: 'signalled', signal: 'SIGTERM' }, cause: 'cancel', want: 'cancelled' },
    { result: { kind: 'aborted', reason: 'worker lost' }, cause: 'lost', want: 'lost' },
    { result: { kind: 'exited', code: 0 }, cause: 'lost', want: 'lost' },
  ];
  for (const { result, cause, want } of cases) {
    const status = statusFor(result, cause);
    assert.equal(status, want, `${JSON.stringify(result)} ${cause ?? ''}`);
    assert.equal(isFinal(status), true);
  }
});

test('formatResult reads as one line', () => {
  const cases: [RunResult, string][] = [
    [{ kind: 'exited', code: 0 }, 'exited 0'],
    [{ kind: 'exited', code: 3 }, 'exited 3'],
    [{ kind: 'signalled', signal: 'SIGTERM' }, 'signalled SIGTERM'],
    [{ kind: 'aborted', reason: 'worker lost' }, 'aborted: worker lost'],
    [{ kind: 'aborted', reason: 'job unscheduled' }, 'aborted: job unscheduled'],
  ];
  for (const [result, want] of cases) assert.equal(formatResult(result), want);
});

test('isFinal is false only for queued and running', () => {
  const cases: [RunStatus, boolean][] = [
    ['queued', false],
    ['running', false],
    ['succeeded', true],
    ['failed', true],
    ['timed-out', true],
    ['cancelled', true],
    ['lost', true],
  ];
  for (const [status, want] of cases) assert.equal(isFinal(status), want, status);
  assert.deepEqual(cases.map(([s]) => s).sort(), [...RUN_STATUSES].sort(), 'every status is covered');
});

test('decideCancel: a queued run ends now, a running one is asked, an ended one cannot be', () => {
  const cases: [RunStatus, CancelDecision][] = [
    ['queued', { kind: 'end', result: { kind: 'aborted', reason: 'cancelled by alice' } }],
    ['running', { kind: 'request' }],
    ['succeeded', { kind: 'finished' }],
    ['cancelled', { kind: 'finished' }],
    ['lost', { kind: 'finished' }],
  ];
  for (const [status, want] of cases) assert.deepEqual(decideCancel(status, 'alice'), want, status);
});

test('forwardsOnEnd: only a run that ran is sent to the upload target', () => {
  const cases: [RunStatus, boolean][] = [['running', true], ['queued', false]];
  for (const [from, want] of cases) assert.equal(forwardsOnEnd(from), want, from);
});
