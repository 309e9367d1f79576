/** Which queued run a worker may take. */
import { labelsMatch } from './job.js';

/** A worker asking for a run, as the claim rule sees it. */
export interface Claimant {
  labels: Record<string, string>;
  /** Only this run (a pool instance made for one run). */
  onlyRun?: string;
}

/** True when the worker may take the run: it offers every label the run asks for, and is not kept for another run. */
export function canClaim(worker: Claimant, run: { id: string; labels: Record<string, string> }): boolean {
  return (worker.onlyRun === undefined || run.id === worker.onlyRun) && labelsMatch(run.labels, worker.labels);
}

/** The first of `candidates` (in queue order) the worker may take. */
export function firstClaimable<T extends { id: string; labels: Record<string, string> }>(worker: Claimant, candidates: readonly T[]): T | undefined {
  return candidates.find((run) => canClaim(worker, run));
}
