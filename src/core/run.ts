/** Runs: their states, results and how a result reads. */

/** Where a run is in its life. All but `queued` and `running` are final. */
export const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'timed-out', 'cancelled', 'lost'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** How the job's process ended, as the worker saw it. */
export type RunResult =
  | { kind: 'exited'; code: number }
  /** `note` says why, when the worker knows (e.g. `out of memory`). */
  | { kind: 'signalled'; signal: string; note?: string }
  | { kind: 'aborted'; reason: string };

/** Why a run ended when it did not end on its own. */
export type EndCause = 'timeout' | 'cancel' | 'lost';

/** True for the states a run never leaves. */
export function isFinal(status: RunStatus): boolean {
  return status !== 'queued' && status !== 'running';
}

/** The final status a result gives, taking into account what stopped it. */
export function statusFor(result: RunResult, cause?: EndCause): RunStatus {
  if (cause === 'timeout') return 'timed-out';
  if (cause === 'cancel') return 'cancelled';
  if (cause === 'lost') return 'lost';
  return result.kind === 'exited' && result.code === 0 ? 'succeeded' : 'failed';
}

/** The one-line form users read: `exited 3`, `signalled SIGTERM`, `aborted: worker lost`. */
export function formatResult(result: RunResult): string {
  switch (result.kind) {
    case 'exited':
      return `exited ${result.code}`;
    case 'signalled':
      return `signalled ${result.signal}${result.note ? ` (${result.note})` : ''}`;
    case 'aborted':
      return `aborted: ${result.reason}`;
  }
}

/** A cancel asked of a run: a queued one ends now with `result`; a running one is asked to stop; an ended one cannot be. */
export type CancelDecision = { kind: 'end'; result: RunResult } | { kind: 'request' } | { kind: 'finished' };

/** What cancelling a run in `status`, asked by `by`, does. */
export function decideCancel(status: RunStatus, by: string): CancelDecision {
  if (status === 'queued') return { kind: 'end', result: { kind: 'aborted', reason: `cancelled by ${by}` } };
  return status === 'running' ? { kind: 'request' } : { kind: 'finished' };
}

/** Whether a run that ends leaving `from` is sent to the upload target: only runs that ran; one cancelled in the queue has nothing to send. */
export function forwardsOnEnd(from: RunStatus): boolean {
  return from === 'running';
}
