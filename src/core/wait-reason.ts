/**
 * Why a queued run waits: the question a user of a farm asks first ("why is my build not running?"),
 * answered from what the server knows (its queue, connected workers, pools, dropped platforms), the
 * same way for the dashboard and the CLI. Pure: the caller gathers the farm's state.
 */
import { labelsMatch } from './job.js';

/** A queued run, in queue order. */
export interface QueuedRunView {
  id: string;
  platform: string;
  labels: Record<string, string>;
}

/** A connected worker, as matching sees it. */
export interface WorkerSlotView {
  name: string;
  platform: string;
  labels: Record<string, string>;
  /** Runs it may take now (0 when busy, draining or a `--once` worker that has had its run). */
  freeSlots: number;
  /** Reserved for this run only (a pool instance made for one run). */
  onlyRun?: string;
}

/** A latent pool, as matching sees it. */
export interface PoolStateView {
  name: string;
  platform: string;
  labels: Record<string, string>;
  /** Instances not stopping. */
  live: number;
  max: number;
  /** Instances starting: their workers have yet to connect. */
  starting: number;
  /** The runs instances are starting for (per-run pools). */
  startingFor: string[];
  /** Until when the pool rests after failed starts (ms), or null. */
  quarantinedUntil: number | null;
  lastError: string | null;
}

/** The farm as one look at it sees it. */
export interface FarmView {
  workers: readonly WorkerSlotView[];
  pools: readonly PoolStateView[];
  dropped: ReadonlySet<string>;
  now: number;
}

/** Why a run waits: a stable kind to branch on and a sentence to show. */
export type WaitReason =
  | { kind: 'platform-dropped'; text: string }
  | { kind: 'no-worker'; text: string }
  | { kind: 'no-worker-with-labels'; text: string; missing: Record<string, string> }
  | { kind: 'pool-quarantined'; text: string; pool: string; until: number }
  | { kind: 'pool-starting'; text: string; pool: string }
  | { kind: 'pool-full'; text: string; pool: string }
  | { kind: 'all-busy'; text: string; workers: number; ahead: number }
  | { kind: 'dispatching'; text: string };

/** The kinds, for tests and clients that list them. */
export const WAIT_REASON_KINDS = ['platform-dropped', 'no-worker', 'no-worker-with-labels', 'pool-quarantined', 'pool-starting', 'pool-full', 'all-busy', 'dispatching'] as const;

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
const showLabels = (labels: Record<string, string>) => Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(', ');

/** The labels of `wanted` that no worker of `offered` has as asked (the closest worker's, to say what is missing). */
function missingLabels(wanted: Record<string, string>, offered: readonly Record<string, string>[]): Record<string, string> {
  let best: Record<string, string> = wanted;
  for (const labels of offered) {
    const missing = Object.fromEntries(Object.entries(wanted).filter(([k, v]) => !(Object.hasOwn(labels, k) && labels[k] === v)));
    if (Object.keys(missing).length < Object.keys(best).length) best = missing;
  }
  return best;
}

/**
 * Why `run` waits, given the runs ahead of it in its platform's queue (in order) and the farm.
 * Checked from the most final cause to the most passing one: a dropped platform waits for an
 * undrop whatever the workers; no worker that can ever take it waits for one to come (or a pool to
 * start one); matching workers all busy wait for a slot.
 */
export function waitReason(run: QueuedRunView, ahead: readonly QueuedRunView[], farm: FarmView): WaitReason {
  if (farm.dropped.has(run.platform)) {
    return { kind: 'platform-dropped', text: `platform ${run.platform} is dropped: its runs wait until it is undropped` };
  }
  const ofPlatform = farm.workers.filter((w) => w.platform === run.platform);
  const matching = ofPlatform.filter((w) => labelsMatch(run.labels, w.labels) && (w.onlyRun === undefined || w.onlyRun === run.id));
  const pool = farm.pools.find((p) => p.platform === run.platform && labelsMatch(run.labels, p.labels));

  // Runs ahead that the free workers able to take this one would take first.
  const freeMatching = matching.filter((w) => w.freeSlots > 0);
  const before = ahead.filter((other) => freeMatching.some((w) => labelsMatch(other.labels, w.labels) && (w.onlyRun === undefined || w.onlyRun === other.id))).length;
  const free = freeMatching.reduce((n, w) => n + w.freeSlots, 0);
  if (free > before) return { kind: 'dispatching', text: `a free worker can take it: being dispatched` };

  if (pool) {
    if (pool.quarantinedUntil !== null && pool.quarantinedUntil > farm.now) {
      const until = new Date(pool.quarantinedUntil).toISOString();
      return {
        kind: 'pool-quarantined', pool: pool.name, until: pool.quarantinedUntil,
        text: `pool ${pool.name} is quarantined after failed starts until ${until}${pool.lastError ? ` (last error: ${pool.lastError})` : ''}`,
      };
    }
    if (pool.starting > 0 || pool.startingFor.includes(run.id)) {
      return { kind: 'pool-starting', pool: pool.name, text: `pool ${pool.name} is starting a worker (${plural(pool.starting, 'instance')} starting)` };
    }
    if (pool.live >= pool.max) {
      return { kind: 'pool-full', pool: pool.name, text: `pool ${pool.name} is at its maximum of ${plural(pool.max, 'instance')}, all in use` };
    }
    return { kind: 'pool-starting', pool: pool.name, text: `pool ${pool.name} will start a worker for it` };
  }

  if (matching.length > 0) {
    return {
      kind: 'all-busy', workers: matching.length, ahead: before,
      text: `all ${plural(matching.length, 'worker')} that can take it ${matching.length === 1 ? 'is' : 'are'} busy${before > 0 ? ` (${plural(before, 'run')} ahead of it)` : ''}`,
    };
  }
  if (ofPlatform.length > 0 && Object.keys(run.labels).length > 0) {
    const missing = missingLabels(run.labels, ofPlatform.map((w) => w.labels));
    return {
      kind: 'no-worker-with-labels', missing,
      text: `no connected worker of platform ${run.platform} has the labels ${showLabels(missing)} (${plural(ofPlatform.length, 'worker')} of that platform connected)`,
    };
  }
  return { kind: 'no-worker', text: `no worker of platform ${run.platform}${Object.keys(run.labels).length ? ` with labels ${showLabels(run.labels)}` : ''} is connected, and no pool starts one` };
}

/** Why each run of a platform's queue (in queue order) waits. */
export function waitReasons(queue: readonly QueuedRunView[], farm: FarmView): WaitReason[] {
  return queue.map((run, index) => waitReason(run, queue.slice(0, index), farm));
}
