/** What a schedule's firing does with the job's open runs and the platforms it would queue on. */
import type { Overlap } from './job.js';
import type { RunStatus } from './run.js';

/** A run of the job still queued or running when it is due again. */
export interface OpenRun {
  id: string;
  status: RunStatus;
}

/** Why the runs of a cancel-previous job make way. */
export const SUPERSEDED_REASON = 'superseded by the next scheduled run';

/** The skip reason when every run of a firing is already waiting in its queue. */
export const ALREADY_QUEUED = 'already queued';

/** The overlap rule applied: skip the firing, or fire after ending (queued) or stopping (running) the open runs. */
export type OverlapDecision =
  | { kind: 'skip'; reason: string }
  | { kind: 'fire'; cancelQueued: string[]; requestCancel: string[] };

/** The overlap rule of a job due while `open` (oldest first) are queued or running. */
export function decideOverlap(overlap: Overlap, open: readonly OpenRun[]): OverlapDecision {
  const first = open[0];
  if (first && overlap === 'skip') return { kind: 'skip', reason: `run ${first.id} is still ${first.status}` };
  if (overlap !== 'cancel-previous') return { kind: 'fire', cancelQueued: [], requestCancel: [] };
  return {
    kind: 'fire',
    cancelQueued: open.filter((run) => run.status === 'queued').map((run) => run.id),
    requestCancel: open.filter((run) => run.status === 'running').map((run) => run.id),
  };
}

/** The platforms a firing queues on (the dropped ones left out), or why it queues nothing. */
export function platformsToQueue(platforms: readonly string[], dropped: ReadonlySet<string>): { queue: string[] } | { skip: string } {
  const queue = platforms.filter((platform) => !dropped.has(platform));
  if (queue.length > 0) return { queue };
  return { skip: platforms.length === 0 ? 'no platform to run on' : `platform ${platforms.join(', ')} dropped` };
}

/** A firing's skip reason, with the catch-up's own when slots were missed too (their count is recorded apart). */
export function skipReason(reason: string, missed?: { count: number; reason: string }): string {
  return missed && missed.count > 0 ? `${reason} (${missed.reason})` : reason;
}
