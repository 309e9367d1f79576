/** How jobs, runs and workers look in API responses: times as ISO 8601, results also as text. */
import type { Logger } from 'pino';
import { describeSchedule, formatResult, isoInZone, isTimeInRange, scheduleZone } from '../../core/index.js';
import type { Delivery, Job, Run, RunEvent, ServerRecord, WorkerRecord } from '../../store/index.js';

const iso = (ms: number | null) => (ms === null ? null : isTimeInRange(ms) ? new Date(ms).toISOString() : null);

/**
 * A stored time as text, or null when it cannot be one (out of range, a zone this runtime lacks):
 * a value written by an older version or by hand must not make every listing fail.
 */
function shownTime(job: Job, field: string, ms: number | null, zone: string, log: Pick<Logger, 'warn'> | undefined): string | null {
  if (ms === null) return null;
  try {
    return isoInZone(ms, zone);
  } catch (raw) {
    log?.warn({ job: job.name, field, value: ms, zone, err: (raw as Error).message }, 'stored time cannot be shown; listed as none');
    return null;
  }
}

/** What a job's environment values are shown as to those who may not read secrets. */
export const HIDDEN_SECRET = '(secret)';

/**
 * A job for the API; `log` hears about stored values that cannot be shown (they are shown as null).
 * Environment values are a job's secrets (tokens, passwords): shown only when `secrets` says the
 * caller is an admin, else each as HIDDEN_SECRET (the names stay).
 */
export function presentJob(job: Job, log?: Pick<Logger, 'warn'>, secrets = false) {
  const zone = scheduleZone(job.schedule);
  let scheduleText: string;
  try {
    scheduleText = describeSchedule(job.schedule) ?? 'invalid';
  } catch (raw) {
    log?.warn({ job: job.name, schedule: job.schedule, err: (raw as Error).message }, 'stored schedule cannot be shown');
    scheduleText = 'invalid';
  }
  const skipAt = job.lastSkip && shownTime(job, 'lastSkip.at', job.lastSkip.at, zone, log);
  return {
    name: job.name, platform: job.platform, schedule: job.schedule, scheduleText,
    paused: job.paused, overlap: job.overlap, catchUp: job.catchUp,
    timeoutMs: job.timeoutMs, idleTimeoutMs: job.idleTimeoutMs, retries: job.retries, failureRetries: job.failureRetries,
    env: secrets ? job.env : Object.fromEntries(Object.keys(job.env).map((key) => [key, HIDDEN_SECRET])), labels: job.labels, script: job.script, template: job.template, vars: job.vars,
    artifacts: job.artifacts, artifactsOnFailure: job.artifactsOnFailure, sandbox: job.sandbox,
    /** ISO 8601 in the schedule's zone, with its offset. */
    nextAt: shownTime(job, 'nextAt', job.nextAt, zone, log),
    skipped: job.skipped, lastSkip: job.lastSkip && { at: skipAt ?? '-', reason: job.lastSkip.reason },
    createdAt: iso(job.createdAt), updatedAt: iso(job.updatedAt),
  };
}

export function presentRun(run: Run) {
  return {
    id: run.id, job: run.job, platform: run.platform, labels: run.labels, status: run.status,
    attempt: run.attempt, worker: run.worker,
    queuedAt: iso(run.queuedAt), startedAt: iso(run.startedAt), finishedAt: iso(run.finishedAt),
    result: run.result, resultText: run.result && formatResult(run.result), cancelRequestedBy: run.cancelRequestedBy,
  };
}

export function presentEvent(event: RunEvent) {
  return { at: iso(event.at), attempt: event.attempt, kind: event.kind, detail: event.detail };
}

export function presentWorker(worker: WorkerRecord, running: string[]) {
  return {
    name: worker.name, platform: worker.platform, labels: worker.labels, capacity: worker.capacity,
    state: worker.connected ? (running.length > 0 ? 'busy' : 'idle') : 'disconnected',
    running, hostname: worker.hostname, os: worker.os, arch: worker.arch, version: worker.version,
    connectedAt: iso(worker.connectedAt), lastSeen: worker.connected ? new Date().toISOString() : iso(worker.lastSeen),
    // The id of the server its connection is (or was last) on: several servers share one database.
    server: worker.server ?? null,
  };
}

export type PresentedJob = ReturnType<typeof presentJob>;
export type PresentedRun = ReturnType<typeof presentRun>;
export type PresentedWorker = ReturnType<typeof presentWorker>;
export type PresentedEvent = ReturnType<typeof presentEvent>;

export function presentDelivery(delivery: Delivery) {
  return {
    id: delivery.id, runId: delivery.runId, target: delivery.target, state: delivery.state, attempts: delivery.attempts,
    nextAt: delivery.state === 'pending' ? iso(delivery.nextAt) : null, lastError: delivery.lastError,
    createdAt: iso(delivery.createdAt), endedAt: iso(delivery.endedAt),
  };
}

/**
 * A server of the farm as `GET /api/info` lists it: `self` for the server that answers, and the
 * leases (singletons) it holds. Times ISO 8601 (the database's clock on PostgreSQL).
 */
export function presentServer(server: Pick<ServerRecord, 'id' | 'url' | 'startedAt' | 'heartbeatAt' | 'alive' | 'leases' | 'configDigest'>, selfId: string) {
  return {
    id: server.id, url: server.url, startedAt: new Date(server.startedAt).toISOString(), heartbeatAt: new Date(server.heartbeatAt).toISOString(),
    alive: server.alive, self: server.id === selfId, leases: server.leases,
    /** A digest of the configuration the farm's servers should share (templates dir, pools, upload, artifact store, retention). */
    configDigest: server.configDigest,
  };
}
export type PresentedServer = ReturnType<typeof presentServer>;
