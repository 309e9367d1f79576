/** What a worker that (re)connects may do with the runs it says it holds, and with those it does not list. */
import type { RunStatus } from './run.js';
import { holdsRun, type WorkerIdentity } from './worker-identity.js';

/** A run as these rules read it. */
export interface HeldRun {
  status: RunStatus;
  worker: string | null;
  attempt: number;
  workerIdentity: string | null;
  workerSession: string | null;
}

/** The connecting worker: its name, credential and process id (from its hello). */
export interface Reconnecting {
  name: string;
  identity: WorkerIdentity | string;
  session?: string;
}

/** Resume a run the worker holds, or release it, saying why. */
export type ReattachDecision = { kind: 'resume' } | { kind: 'release'; why: string };

/**
 * A run the worker lists as held (`attempt`): resumed only when it still runs there as that
 * attempt and under the identity that took it (the same name is not enough).
 */
export function decideReattach(run: HeldRun | undefined, worker: Reconnecting, attempt: number): ReattachDecision {
  if (!run) return { kind: 'release', why: 'unknown run' };
  const here = run.status === 'running' && run.worker === worker.name && run.attempt === attempt;
  if (here && holdsRun(run.workerIdentity, worker.identity)) return { kind: 'resume' };
  if (here) return { kind: 'release', why: 'it is held by another credential than this worker\'s' };
  if (run.status === 'running') return { kind: 'release', why: `now attempt ${run.attempt} on ${run.worker}` };
  if (run.status === 'queued') return { kind: 'release', why: `queued again as attempt ${run.attempt}` };
  return { kind: 'release', why: `the run has ended (${run.status})` };
}

/**
 * A run the store says runs on this worker that its hello does not list: `keep` it (another
 * credential's, listed, of unknown process, or a pass may still be sending it: the grace window
 * decides), `requeue` it unused (sent to this very process, so the assignment never arrived), or
 * `lose` it now (the process that ran it is gone).
 */
export function decideUnheld(run: HeldRun & { id: string }, worker: Reconnecting, listed: ReadonlySet<string>, claimingForOther: boolean): 'keep' | 'requeue' | 'lose' {
  if (run.worker !== worker.name || !holdsRun(run.workerIdentity, worker.identity) || listed.has(`${run.id}#${run.attempt}`)) return 'keep';
  if (run.workerSession === null || claimingForOther) return 'keep';
  return run.workerSession === worker.session ? 'requeue' : 'lose';
}
