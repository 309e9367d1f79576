/** How an attempt ends: the end a worker's report or a missed deadline gives, and whether the run goes again. */
import { formatDuration } from './duration.js';
import { formatResult, statusFor, type RunResult, type RunStatus } from './run.js';

/** Which budget may give a run another attempt; `unstarted` goes back as the same attempt, using none. */
export type RetryBudget = 'lost' | 'failure' | 'unstarted';

/** An attempt's end as the store records it. */
export interface AttemptEndPlan {
  status: RunStatus;
  result: RunResult;
  retry?: RetryBudget;
}

/** Why a worker stopped a run itself (the protocol's StopCause). */
export type WorkerStop = 'timeout' | 'idle-timeout' | 'cancel' | 'shutdown' | 'output';

/**
 * The end a worker's report gives: a cancel (asked for, or said by the worker) ends `cancelled`
 * naming who asked; a worker shutting down cancels with its result; anything else but success may
 * be retried from the failure budget.
 */
export function endOfReport(result: RunResult, stoppedBy: WorkerStop | undefined, cancelRequestedBy: string | null): AttemptEndPlan {
  if (stoppedBy === 'cancel' || (cancelRequestedBy && result.kind === 'aborted')) {
    return { status: 'cancelled', result: { kind: 'aborted', reason: `cancelled by ${cancelRequestedBy ?? 'the worker'}` } };
  }
  if (stoppedBy === 'shutdown') return { status: 'cancelled', result };
  const status = statusFor(result, stoppedBy === 'timeout' || stoppedBy === 'idle-timeout' ? 'timeout' : undefined);
  return { status, result, retry: status === 'succeeded' ? undefined : 'failure' };
}

/**
 * The end of a worker's report when nothing the store holds can change it: no cancel is involved
 * (a cancel's end names who asked) and there is nothing to retry (a retry reads the budgets and
 * the queue). The common case, a run that succeeded, ends so: a store may then write the end
 * without reading the run first. Undefined: the store must read the run and decide.
 */
export function settledEndOfReport(result: RunResult, stoppedBy: WorkerStop | undefined): AttemptEndPlan | undefined {
  if (stoppedBy === 'cancel' || result.kind === 'aborted') return undefined;
  const plan = endOfReport(result, stoppedBy, null);
  return plan.retry ? undefined : plan;
}

/** The end the server gives a run whose worker never reported by its deadline (a cancel's backstop, or its timeout). */
export function endOfOverdue(run: { cancelRequestedBy: string | null; timeoutMs: number | null }): AttemptEndPlan {
  if (run.cancelRequestedBy) {
    return { status: 'cancelled', result: { kind: 'aborted', reason: `cancelled by ${run.cancelRequestedBy} (the worker did not confirm)` } };
  }
  return { status: 'timed-out', result: { kind: 'aborted', reason: `timed out after ${formatDuration(run.timeoutMs ?? 0)} (the worker did not report)` }, retry: 'failure' };
}

/** What a run holds that the retry decision reads. */
export interface RetryState {
  attempt: number;
  worker: string | null;
  lostRetriesLeft: number;
  failureRetriesLeft: number;
  /** Another run of the job is queued on the platform (a job waits in a queue at most once). */
  otherQueued: boolean;
  /** The job still exists (an unscheduled job's runs are not retried). */
  jobExists: boolean;
}

/**
 * The retry decision: end the run, or queue it again as attempt `attempt` saying `note` on its
 * console: `retried` spends a budget; `requeued` (it never started) spends none, and says `why`.
 */
export type RetryDecision =
  | { kind: 'end' }
  | { kind: 'requeue'; event: 'retried'; spend: 'lost' | 'failure'; attempt: number; note: string }
  | { kind: 'requeue'; event: 'requeued'; spend: undefined; attempt: number; note: string; why: string };

/** Whether an attempt ending with `end` goes back to the queue, and the console line that says so. */
export function decideRetry(state: RetryState, end: { result: RunResult; retry?: RetryBudget }): RetryDecision {
  if (!end.retry || state.otherQueued || !state.jobExists) return { kind: 'end' };
  const said = formatResult(end.result);
  // An attempt that never started goes back without using a retry: nothing of the job ran.
  if (end.retry === 'unstarted') {
    return {
      kind: 'requeue', spend: undefined, attempt: state.attempt, event: 'requeued',
      why: end.result.kind === 'aborted' ? end.result.reason : said,
      note: `kiln: attempt ${state.attempt} on ${state.worker} never started (${said}); queued again, no retry used`,
    };
  }
  const left = end.retry === 'lost' ? state.lostRetriesLeft : state.failureRetriesLeft;
  if (left <= 0) return { kind: 'end' };
  return {
    kind: 'requeue', spend: end.retry, attempt: state.attempt + 1, event: 'retried',
    note: `kiln: attempt ${state.attempt} on ${state.worker} ended (${said}); retrying as attempt ${state.attempt + 1}`,
  };
}
