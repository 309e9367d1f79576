/**
 * The PostgreSQL store: the JobStore contract on a pool of connections (`pg`), for farms that
 * outgrow one SQLite file. Every statement is a named constant of ./statements.ts; each method that
 * changes more than one row is one transaction, and a run's row is locked (`FOR UPDATE`) before a
 * transition reads it, so concurrent servers and requests move it once. Claims take the first
 * matching queued run that no other claim holds (`FOR UPDATE SKIP LOCKED`): claimers never wait on
 * each other. What a transition decides (which run a worker may take, the overlap rule, the retry
 * decision and its console line, a cancel, whether an ended run is forwarded) is core's, as for the
 * SQLite store; this store only reads what core needs and writes what core decided.
 */
import {
  ALREADY_QUEUED, backoffMs, canClaim, decideCancel, decideOverlap, decideRetry, endOfReport, forwardsOnEnd, settledEndOfReport, platformsToQueue, skipReason, SUPERSEDED_REASON,
  type BackoffTimings, type RunResult, type RunStatus,
} from '../../core/index.js';
import {
  JobExistsError, JobNotFoundError, PlatformDroppedError, RunAmbiguousError, RunFinishedError, RunNotFoundError, StoreUnavailableError, TokenExistsError, WorkerTokenExistsError,
} from '../../errors.js';
import type {
  Artifact, AttemptEnd, AttemptEndResult, ClaimingWorker, ConsoleBatch, EndWrites, Delivery, ExpiredArtifacts, FireOutcome, Job, JobPatch, JobStore,
  ImportJobOutcome, ImportPlan, ImportRecord, ImportResult, ImportRunOutcome, NewRun, OutboxSummary, ReportedEnd, RetentionPolicy, Run, RunEnd, RunEvent, RunFilter, ScriptFor, StoredLine, WaitingRun, WorkerRecord, WorkerConnection, LostWorkerRun, ServerRecord, PoolState, PoolInstanceRecord, WorkerTokenRecord, Role, SessionRecord, TokenRecord, CurrentTokens,
} from '../job-store.js';
import { consoleFeedPayloads } from '../feed.js';
import { Connections, type Session, type StoreLog } from './connection.js';
import { migrate } from './migrate.js';
import { joinCluster, type Presence, type PresenceOptions } from './presence.js';
import * as S from './statements.js';

type Json = Record<string, string>;

interface JobRow {
  name: string; platform: string | null; script: string | null; template: string | null; vars: Json; env: Json; labels: Json;
  schedule: Job['schedule']; paused: boolean; overlap: string; catch_up: boolean; skipped: number; last_skip: Job['lastSkip'];
  artifacts: string[]; artifacts_on_failure: boolean; sandbox: Job['sandbox'];
  timeout_ms: number; idle_timeout_ms: number | null; retries: number; failure_retries: number;
  next_at: number | null; created_at: number; updated_at: number;
}
interface RunRow {
  id: string; job: string; platform: string; labels: Json; status: string; attempt: number;
  worker: string | null; worker_identity: string | null; worker_session: string | null; queued_at: number; started_at: number | null; finished_at: number | null;
  result: RunResult | null; script: string | null; env: Json; timeout_ms: number | null;
  idle_timeout_ms: number | null; lost_retries_left: number; failure_retries_left: number; first_seq: number;
  cancel_requested_by: string | null; deadline_at: number | null; artifacts: string[]; artifacts_on_failure: boolean; sandbox: Run['sandbox'];
}
/** A claimed run's row, with its job's template and variables. */
type ClaimRow = RunRow & { job_template: string | null; job_vars: Json | null };
type ClaimedJob = { template: string | null; vars: Json };
/** What a claim statement did: started a run (none: nothing to take), or left a run to claim otherwise. */
/** How long a claim waits for a run it may take that another transaction holds locked: 2, 4, ... 128 ms, 254 ms in all. */
const CLAIM_HELD_WAIT: BackoffTimings = { retryMinMs: 2, retryMaxMs: 128 };
const CLAIM_HELD_TRIES = 7;
type Claimed = { outcome: 'started' | 'template'; run: Run; job: ClaimedJob } | { outcome: 'none' | 'unsure' | 'held' };

interface WorkerRow {
  name: string; platform: string; labels: Json; capacity: number; hostname: string; os: string;
  arch: string; version: string; connected: boolean; connected_at: number; last_seen: number; server_id: string | null;
}
interface DeliveryRow {
  id: number; run_id: string; target: string; state: string; attempts: number; next_at: number;
  last_error: string | null; created_at: number; ended_at: number | null; claim_epoch: number | null;
}
interface ServerRow {
  id: string; url: string; hostname: string; pid: number; version: string; config_digest: string;
  started_at: number; heartbeat_at: number; stopped_at: number | null; alive: boolean; leases: string[];
}
interface PoolInstanceRow {
  id: string; pool: string; name: string; token_sha256: string; state: string; handle: unknown; for_run: string | null; adopted: boolean; started_at: number;
}
interface TokenRow {
  name: string; role: Role; created_at: number; expires_at: number | null; last_used_at: number | null; revoked_at: number | null;
}
interface SessionRow { token_name: string; role: Role; created_at: number; expires_at: number; token_sha256: string }
interface WorkerTokenRow { name: string; created_at: number; last_used_at: number | null }

function toJob(row: JobRow): Job {
  return {
    name: row.name, platform: row.platform, script: row.script, template: row.template, vars: row.vars, env: row.env, labels: row.labels,
    schedule: row.schedule, paused: row.paused, overlap: row.overlap as Job['overlap'], catchUp: row.catch_up, skipped: row.skipped,
    lastSkip: row.last_skip, artifacts: row.artifacts, artifactsOnFailure: row.artifacts_on_failure, sandbox: row.sandbox,
    timeoutMs: row.timeout_ms, idleTimeoutMs: row.idle_timeout_ms, retries: row.retries, failureRetries: row.failure_retries,
    nextAt: row.next_at, createdAt: row.created_at, updatedAt: row.updated_at,
  };
}

function toRun(row: RunRow): Run {
  return {
    id: row.id, job: row.job, platform: row.platform, labels: row.labels, status: row.status as RunStatus, attempt: row.attempt,
    worker: row.worker, workerIdentity: row.worker_identity, workerSession: row.worker_session,
    queuedAt: row.queued_at, startedAt: row.started_at, finishedAt: row.finished_at, result: row.result,
    script: row.script, env: row.env, timeoutMs: row.timeout_ms, idleTimeoutMs: row.idle_timeout_ms,
    lostRetriesLeft: row.lost_retries_left, failureRetriesLeft: row.failure_retries_left, firstSeq: row.first_seq,
    cancelRequestedBy: row.cancel_requested_by, deadlineAt: row.deadline_at,
    artifacts: row.artifacts, artifactsOnFailure: row.artifacts_on_failure, sandbox: row.sandbox,
  };
}

function toWorker(row: WorkerRow): WorkerRecord {
  return {
    name: row.name, platform: row.platform, labels: row.labels, capacity: row.capacity, hostname: row.hostname, os: row.os, arch: row.arch,
    version: row.version, connected: row.connected, connectedAt: row.connected_at, lastSeen: row.last_seen, server: row.server_id,
  };
}

function toDelivery(row: DeliveryRow): Delivery {
  return {
    id: row.id, runId: row.run_id, target: row.target, state: row.state as Delivery['state'], attempts: row.attempts,
    nextAt: row.next_at, lastError: row.last_error, createdAt: row.created_at, endedAt: row.ended_at, claimEpoch: row.claim_epoch,
  };
}

const toPoolInstance = (row: PoolInstanceRow): PoolInstanceRecord => ({
  id: row.id, pool: row.pool, name: row.name, tokenSha256: row.token_sha256, state: row.state, handle: row.handle,
  forRun: row.for_run, adopted: row.adopted, startedAt: row.started_at,
});

const toToken = (row: TokenRow): TokenRecord => ({
  name: row.name, role: row.role, createdAt: row.created_at, expiresAt: row.expires_at, lastUsedAt: row.last_used_at, revokedAt: row.revoked_at,
});
const toWorkerToken = (row: WorkerTokenRow): WorkerTokenRecord => ({ name: row.name, createdAt: row.created_at, lastUsedAt: row.last_used_at });

const json = (value: unknown): string | null => (value === null ? null : JSON.stringify(value));

/** A console line's text as stored (BYTEA: a job may print NUL, which TEXT cannot hold). */
const utf8 = (text: string): Buffer => Buffer.from(text, 'utf8');

/** Options of openPostgresStore. */
export interface PostgresStoreOptions {
  /** Where lost connections are reported (they are retried, not fatal). */
  log?: StoreLog;
  /**
   * Join the schema as a server (presence.ts): its presence held while open, the store refusing
   * statements while it is not; `joined` is given the presence (the lease keeper and the feed use it).
   */
  join?: Omit<PresenceOptions, 'log'> & { joined?: (presence: Presence) => void };
  /**
   * The id of the server this store serves (several servers on one database): the console lines it
   * writes are announced on the feed under it (feed.ts). Absent (tools, migrate-store): nothing is sent.
   * Joining, the join's server id.
   */
  serverId?: string;
}

/**
 * Opens the store at a `postgres://USER@HOST:PORT/DB` URL: connects, refuses a schema that is not
 * Kiln's or is newer than this build, and migrates. Throws ConfigError for a bad URL,
 * StoreUnavailableError when PostgreSQL cannot be reached or the database does not exist, and
 * (join) DataDirInUseError when `kiln migrate-store` holds the schema.
 */
export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<JobStore> {
  const connections = new Connections(url, options.log);
  let presence: Presence | undefined;
  try {
    if (options.join) {
      presence = await joinCluster(url, connections, { log: options.log, ...options.join });
      connections.guardWith(presence);
    }
    await migrate(connections);
    await presence?.start();
  } catch (raw) {
    await presence?.leave();
    await connections.end();
    throw raw;
  }
  if (presence) options.join?.joined?.(presence);
  return new PostgresStore(connections, presence, options.serverId ?? options.join?.serverId);
}

class PostgresStore implements JobStore {
  private uploadTarget: string | null = null;

  constructor(private readonly db: Connections, private readonly presence?: Presence, private readonly serverId?: string) {}

  /** The feed's payloads announcing these lines (none without a server id). */
  private feed(lines: readonly { runId: string; seq: number }[]): string[] {
    return this.serverId === undefined || lines.length === 0 ? [] : consoleFeedPayloads(this.serverId, lines);
  }

  /** Notifies the feed of these lines in the transaction `tx` (delivered at its commit). */
  private async notifyLines(tx: Session, lines: readonly { runId: string; seq: number }[]): Promise<void> {
    const payloads = this.feed(lines);
    if (payloads.length > 0) await tx.run(S.FEED_NOTIFY, [payloads]);
  }

  async close(): Promise<void> {
    await this.db.end();
    await this.presence?.leave();
  }

  async findImport(sha256: string): Promise<ImportRecord | undefined> {
    return this.importRow(this.db, sha256);
  }

  private async importRow(session: Session, sha256: string): Promise<ImportRecord | undefined> {
    const [row] = (await session.run<{ sha256: string; kind: string; imported_at: number; report: unknown }>(S.IMPORT_GET, [sha256])).rows;
    return row && { sha256: row.sha256, kind: row.kind, importedAt: row.imported_at, report: row.report };
  }

  async recordImport(record: ImportRecord): Promise<boolean> {
    return this.recordImportIn(this.db, record);
  }

  private async recordImportIn(session: Session, record: ImportRecord): Promise<boolean> {
    const { rows } = await session.run(S.IMPORT_INSERT, [record.sha256, record.kind, record.importedAt, JSON.stringify(record.report)]);
    return rows.length === 1;
  }

  importState(plan: ImportPlan): Promise<ImportResult> {
    return this.db.transaction(async (tx): Promise<ImportResult> => {
      const { sha256, importedAt } = plan.record;
      // The record first, its report last: a concurrent import of the same file waits on this row's
      // insert until this transaction ends, then finds it recorded (and writes nothing), or takes it
      // when this one rolled back.
      if (!(await this.recordImportIn(tx, { ...plan.record, report: null }))) return { recorded: false, previous: (await this.importRow(tx, sha256))! };
      const drops = [];
      for (const platform of plan.drops) {
        drops.push(await this.isDropped(tx, platform)
          ? { platform, dropped: false, cancelled: [] }
          : { platform, dropped: true, cancelled: await this.dropInTx(tx, platform, importedAt) });
      }
      const jobs = new Map<string, ImportJobOutcome>();
      for (const { name, job } of plan.jobs) {
        const dropped = job?.platform != null && await this.isDropped(tx, job.platform);
        // A job of the name added meanwhile by another transaction is present: the insert does nothing, then the read sees it.
        if (job && !dropped && await this.insertJob(tx, job)) {
          jobs.set(name, { outcome: 'added', job });
          continue;
        }
        const [present] = (await tx.run<JobRow>(S.JOB_GET, [name])).rows;
        if (present) jobs.set(name, { outcome: 'present', job: toJob(present) });
        else if (!job) jobs.set(name, { outcome: 'absent' });
        else if (dropped) jobs.set(name, { outcome: 'dropped', platform: job.platform! });
        // Added and deleted by others between the insert and the read: the import fails (nothing written) and may be run again.
        else throw new JobExistsError(name);
      }
      const runs: ImportRunOutcome[] = [];
      for (const asked of plan.queue(jobs)) {
        if (await this.isDropped(tx, asked.platform)) {
          runs.push({ asked, outcome: 'dropped' });
          continue;
        }
        const { run, created } = await this.enqueueInTx(tx, asked, 'back');
        runs.push({ asked, outcome: created ? 'queued' : 'alreadyQueued', run });
      }
      const writes = { drops, jobs, runs };
      const report = plan.report(writes);
      await tx.run(S.IMPORT_SET_REPORT, [sha256, JSON.stringify(report)]);
      return { recorded: true, writes, report };
    });
  }

  /** Inserts a job unless one of its name is stored (false then). */
  private async insertJob(tx: Session, job: Job): Promise<boolean> {
    const added = await tx.run(S.JOB_INSERT, [
      job.name, job.platform, job.script, job.template, json(job.vars), json(job.env), json(job.labels), json(job.schedule), job.paused,
      job.overlap, job.catchUp, job.skipped, json(job.lastSkip), job.timeoutMs, job.idleTimeoutMs, job.retries, job.failureRetries,
      json(job.artifacts), job.artifactsOnFailure, json(job.sandbox), job.nextAt, job.createdAt, job.updatedAt,
    ]);
    return added.rowCount === 1;
  }

  createJob(job: Job, firstRuns: NewRun[] = []): Promise<Run[]> {
    return this.db.transaction(async (tx) => {
      for (const run of firstRuns) await this.refuseDropped(tx, run.platform);
      if (job.platform !== null) await this.refuseDropped(tx, job.platform);
      if (!(await this.insertJob(tx, job))) throw new JobExistsError(job.name);
      const runs: Run[] = [];
      for (const run of firstRuns) runs.push((await this.enqueueInTx(tx, run, 'back')).run);
      return runs;
    });
  }

  updateJob(name: string, patch: JobPatch, now: number): Promise<Job> {
    return this.db.transaction(async (tx) => {
      const current = await this.jobRow(tx, name, S.JOB_GET_FOR_UPDATE);
      // A key present with the value undefined means "unchanged", as an absent key does.
      const given = Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined));
      const next: Job = { ...toJob(current), ...given, updatedAt: now };
      if (patch.platform) await this.refuseDropped(tx, patch.platform);
      await tx.run(S.JOB_UPDATE, [
        name, next.platform, next.script, next.template, json(next.vars), json(next.env), json(next.labels), json(next.schedule), next.paused,
        next.overlap, next.catchUp, next.timeoutMs, next.idleTimeoutMs, next.retries, next.failureRetries, json(next.artifacts),
        next.artifactsOnFailure, json(next.sandbox), next.nextAt, next.updatedAt,
      ]);
      return next;
    });
  }

  deleteJob(name: string, now: number): Promise<string[]> {
    return this.db.transaction(async (tx) => {
      await this.jobRow(tx, name, S.JOB_GET_FOR_UPDATE);
      const queued = (await tx.run<{ id: string }>(S.RUNS_QUEUED_OF_JOB_LOCKED, [name])).rows.map((row) => row.id);
      for (const id of queued) await this.finishInTx(tx, id, 'queued', { status: 'cancelled', result: { kind: 'aborted', reason: 'job unscheduled' }, finishedAt: now });
      await tx.run(S.JOB_DELETE, [name]);
      return queued;
    });
  }

  async getJob(name: string): Promise<Job | undefined> {
    const [row] = (await this.db.run<JobRow>(S.JOB_GET, [name])).rows;
    return row && toJob(row);
  }

  async listJobs(): Promise<Job[]> {
    return (await this.db.run<JobRow>(S.JOB_LIST)).rows.map(toJob);
  }

  enqueue(run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    // One statement, so its own transaction (a second one only in the rare case enqueueInTx explains).
    return this.enqueueInTx(this.db, run, position);
  }

  enqueueAndClaim(
    run: NewRun, position: 'back' | 'front', worker: ClaimingWorker, now: number, backstopMs = 0, scriptFor?: ScriptFor,
  ): Promise<{ run: Run; created: boolean; claimed: Run | undefined }> {
    return this.db.transaction(async (tx) => {
      const queued = await this.enqueueInTx(tx, run, position);
      return { ...queued, claimed: await this.claimInTx(tx, worker, now, backstopMs, scriptFor) };
    });
  }

  async claimNext(worker: ClaimingWorker, now: number, backstopMs = 0, scriptFor?: ScriptFor): Promise<Run | undefined> {
    for (let held = 0; ; ) {
      // One statement, its own transaction: no BEGIN and COMMIT round trips. It leaves a template
      // job's run queued when a script is to be saved with it (a run it starts has its job's script).
      const claimed = await this.claimOnce(this.db, worker, now, backstopMs, scriptFor !== undefined);
      if (claimed.outcome === 'held') {
        // A run it may take is locked by a short transaction: wait for it. Past the bound this is
        // a store error, which the dispatcher's pass retries with its own backoff.
        if (++held > CLAIM_HELD_TRIES) throw new StoreUnavailableError(this.db.where, 'the queued runs a worker may take stayed locked by other transactions');
        await new Promise((resolve) => setTimeout(resolve, backoffMs(held, CLAIM_HELD_WAIT)));
        continue;
      }
      if (claimed.outcome === 'unsure') return this.db.transaction((tx) => this.claimInTx(tx, worker, now, backstopMs, scriptFor, true));
      if (claimed.outcome !== 'template') return claimed.outcome === 'started' ? claimed.run : undefined;
      // Claimed by id with its expanded script in one transaction, unless another claim took it
      // meanwhile (then the next in the queue).
      const only = { ...worker, onlyRun: claimed.run.id };
      const run = await this.db.transaction((tx) => this.claimInTx(tx, only, now, backstopMs, scriptFor));
      if (run) return run;
    }
  }

  private async isDropped(tx: Session, platform: string): Promise<boolean> {
    return (await tx.run(S.DROPPED_GET, [platform])).rowCount === 1;
  }

  private async refuseDropped(tx: Session, platform: string): Promise<void> {
    if (await this.isDropped(tx, platform)) throw new PlatformDroppedError(platform);
  }

  /**
   * Queues a run (RUN_ENQUEUE: the job held, the run and its event added, or the one already queued
   * found and moved to the front when asked). Throws JobNotFoundError, then PlatformDroppedError.
   */
  private async enqueueInTx(session: Session, run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    // A run of the job queued by a transaction that committed after the statement's snapshot was
    // taken conflicts with the insert but is not seen as `existing`; the second round sees it.
    for (let round = 0; round < 2; round++) {
      const [row] = (await session.run<RunRow & { job_found: boolean; dropped: boolean; outcome: 'added' | 'existing' | null }>(S.RUN_ENQUEUE, [
        run.id, run.job, run.platform, json(run.labels), position, run.queuedAt, json({ platform: run.platform, position }),
      ])).rows;
      if (!row?.job_found) throw new JobNotFoundError(run.job);
      if (row.dropped) throw new PlatformDroppedError(run.platform);
      if (row.outcome) return { run: toRun(row), created: row.outcome === 'added' };
    }
    throw new JobNotFoundError(run.job);
  }

  /** A claim in a transaction: CLAIM (claimPaged when it is unsure, or when `paged`), and a template job's run's script saved. */
  private async claimInTx(tx: Session, worker: ClaimingWorker, now: number, backstopMs: number, scriptFor?: ScriptFor, paged = false): Promise<Run | undefined> {
    let claimed: Claimed = paged ? { outcome: 'unsure' } : await this.claimOnce(tx, worker, now, backstopMs, false);
    if (claimed.outcome === 'unsure') claimed = await this.claimPaged(tx, worker, now, backstopMs);
    return claimed.outcome === 'started' || claimed.outcome === 'template' ? this.withScript(tx, claimed.run, claimed.job, scriptFor) : undefined;
  }

  /** A claimed run of a template job with the script `scriptFor` expands for it saved (as it is when there is none). */
  private async withScript(session: Session, run: Run, job: ClaimedJob, scriptFor?: ScriptFor): Promise<Run> {
    const script = run.script === null ? scriptFor?.(run, job) : undefined;
    if (script === undefined) return run;
    await session.run(S.RUN_SET_SCRIPT, [run.id, script]);
    return { ...run, script };
  }

  /**
   * One CLAIM statement: the run started (undefined: nothing to take, or the run picked had lost its
   * job and was cancelled) with its job's template and variables; `unsure` when labels hold what SQL
   * does not match (see CLAIM): the caller then claims with claimPaged, which matches with core's
   * canClaim itself; with `leaveTemplates`, `template` for a template job's run left queued.
   */
  private async claimOnce(session: Session, worker: ClaimingWorker, now: number, backstopMs: number, leaveTemplates: boolean): Promise<Claimed> {
    const offered = JSON.stringify(worker.labels);
    if (offered.includes('\\u')) return { outcome: 'unsure' };
    const gone: RunEnd = { status: 'cancelled', result: { kind: 'aborted', reason: 'job unscheduled' }, finishedAt: now };
    const [row] = (await session.run<ClaimRow & { outcome: 'started' | 'gone' | 'unsure' | 'template' | 'held' }>(worker.onlyRun === undefined ? S.CLAIM : S.CLAIM_ONE, [
      worker.platform, offered, worker.name, worker.identity ?? null, worker.session ?? null, now, backstopMs,
      json({ worker: worker.name }), json(gone.result), json({ status: gone.status, result: gone.result }),
      this.uploadTarget !== null && forwardsOnEnd('queued') ? this.uploadTarget : null, leaveTemplates,
      ...(worker.onlyRun === undefined ? [] : [worker.onlyRun]),
    ])).rows;
    if (!row || row.outcome === 'gone') return { outcome: 'none' };
    if (row.outcome === 'unsure' || row.outcome === 'held') return { outcome: row.outcome };
    return { outcome: row.outcome, run: toRun(row), job: { template: row.job_template, vars: row.job_vars ?? {} } };
  }

  /**
   * The claim with labels matched in TS (core's canClaim), for labels CLAIM leaves `unsure`: reads
   * the queue a page at a time, then locks the first run of it the worker may take that no other
   * claim holds, and starts it.
   */
  private async claimPaged(tx: Session, worker: ClaimingWorker, now: number, backstopMs: number): Promise<Claimed> {
    let after: number | null = null;
    for (;;) {
      const page: { id: string; labels: Json; queue_pos: number }[] = (await tx.run<{ id: string; labels: Json; queue_pos: number }>(S.CLAIM_CANDIDATES, [worker.platform, after])).rows;
      if (page.length === 0) return { outcome: 'none' };
      after = page.at(-1)!.queue_pos;
      const matching = page.filter((c) => canClaim(worker, c)).map((c) => c.id);
      if (matching.length === 0) continue;
      const [pick] = (await tx.run<{ id: string; job: string }>(S.CLAIM_LOCK, [matching])).rows;
      if (!pick) continue;
      const [started] = (await tx.run<ClaimRow>(S.CLAIM_START, [pick.id, worker.name, worker.identity ?? null, worker.session ?? null, now, backstopMs])).rows;
      if (!started) {
        // Its job was unscheduled after the run was queued (a retry, say): it cannot run.
        await this.finishInTx(tx, pick.id, 'queued', { status: 'cancelled', result: { kind: 'aborted', reason: 'job unscheduled' }, finishedAt: now });
        return { outcome: 'none' };
      }
      await this.event(tx, started.id, now, started.attempt, 'dispatched', { worker: worker.name });
      return { outcome: 'started', run: toRun(started), job: { template: started.job_template, vars: started.job_vars ?? {} } };
    }
  }

  async listQueued(): Promise<Run[]> {
    return (await this.db.run<RunRow>(S.RUNS_QUEUED)).rows.map(toRun);
  }

  async listWaiting(): Promise<WaitingRun[]> {
    return (await this.db.run<WaitingRun>(S.RUNS_WAITING)).rows.map(({ id, job, platform, labels }) => ({ id, job, platform, labels }));
  }

  async listRunning(worker?: string): Promise<Run[]> {
    return (await this.db.run<RunRow>(S.RUNS_RUNNING, [worker ?? null])).rows.map(toRun);
  }

  async findRun(idOrPrefix: string): Promise<Run> {
    return toRun(await this.findRunRow(this.db, idOrPrefix));
  }

  /** A run by id or unique prefix; in a transaction, locked. */
  private async findRunRow(session: Session, idOrPrefix: string, lock = false): Promise<RunRow> {
    // Prefix match by range (ids compare by bytes), so the index is used and LIKE wildcards in the input mean nothing.
    const rows = (await session.run<RunRow>(S.RUNS_BY_PREFIX, [idOrPrefix, idOrPrefix + '\u{10FFFF}'])).rows;
    let found = rows.find((r) => r.id === idOrPrefix);
    if (!found) {
      if (rows.length === 0 || idOrPrefix === '') throw new RunNotFoundError(idOrPrefix);
      if (rows.length > 1) throw new RunAmbiguousError(idOrPrefix);
      found = rows[0]!;
    }
    if (!lock) return found;
    const [locked] = (await session.run<RunRow>(S.RUN_GET_LOCKED, [found.id])).rows;
    return locked!;
  }

  async listRuns(filter: RunFilter): Promise<Run[]> {
    return (await this.db.run<RunRow>(S.RUNS_LIST, [filter.job ?? null, filter.status ?? null, filter.platform ?? null, filter.worker ?? null, filter.limit])).rows.map(toRun);
  }

  async lastRuns(): Promise<Map<string, Run>> {
    return new Map((await this.db.run<RunRow>(S.RUNS_LAST_PER_JOB, [])).rows.map((row) => [row.job, toRun(row)]));
  }

  finishRun(id: string, end: RunEnd, guard: { from: RunStatus[]; worker?: string }): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const [row] = (await tx.run<RunRow>(S.RUN_GET_LOCKED, [id])).rows;
      if (!row || !guard.from.includes(row.status as RunStatus)) return false;
      if (guard.worker !== undefined && row.worker !== guard.worker) return false;
      return this.finishInTx(tx, id, row.status, end);
    });
  }

  private async finishInTx(tx: Session, id: string, from: string, end: RunEnd): Promise<boolean> {
    const [ended] = (await tx.run<{ attempt: number }>(S.RUN_FINISH, [id, end.status, json(end.result), end.finishedAt, from])).rows;
    if (!ended) return false;
    await this.event(tx, id, end.finishedAt, ended.attempt, 'ended', { status: end.status, result: end.result });
    if (this.uploadTarget !== null && forwardsOnEnd(from as RunStatus)) await tx.run(S.DELIVERY_INSERT, [id, this.uploadTarget, end.finishedAt]);
    return true;
  }

  async endAttempt(id: string, given: AttemptEnd | ReportedEnd, guard: { worker?: string; attempt?: number }, writes: EndWrites = {}): Promise<AttemptEndResult> {
    // An end nothing stored can change (most: a run that succeeded) is one statement; when the run
    // is not as guarded it writes nothing, and the end goes the full way.
    const settled = 'report' in given ? settledEndOfReport(given.report.result, given.report.stoppedBy) : given.retry ? undefined : given;
    if (settled) {
      const ended = await this.endSettled(id, { ...settled, finishedAt: given.finishedAt }, guard, writes);
      if (ended) return ended;
    }
    // BEGIN, one read (RUN_END_READ), core's decision, one write (END_WRITE_*), COMMIT.
    return this.db.transaction(async (tx): Promise<AttemptEndResult> => {
      type EndRead = RunRow & { other_queued: boolean; job_exists: boolean; last_seq: number | null };
      let [run] = (await tx.run<EndRead>(S.RUN_END_READ, [id])).rows;
      // Not an exact id: a prefix, resolved (or refused) as findRun does, then read by its id.
      if (!run) [run] = (await tx.run<EndRead>(S.RUN_END_READ, [(await this.findRunRow(tx, id)).id])).rows;
      if (!run) throw new RunNotFoundError(id);
      const lines = [...(writes.lines ?? [])];
      const events = (writes.events ?? []).map((e) => ({ ...e, attempt: run.attempt }));
      const write = (statement: S.Statement, ...rest: unknown[]) => tx.run<RunRow>(statement, [
        run.id, lines.map((l) => l.seq), lines.map((l) => l.ts), lines.map((l) => utf8(l.text)),
        events.map((e) => e.at), events.map((e) => e.attempt), events.map((e) => e.kind), events.map((e) => json(e.detail)), ...rest,
      ]);
      if (run.status !== 'running' || (guard.worker !== undefined && run.worker !== guard.worker)
        || (guard.attempt !== undefined && run.attempt !== guard.attempt)) {
        if (writes.ifStale) events.push({ ...writes.ifStale, attempt: run.attempt });
        if (lines.length > 0 || events.length > 0) await write(S.END_WRITE_STALE);
        await this.notifyLines(tx, lines.map((l) => ({ runId: run.id, seq: l.seq })));
        return { outcome: 'stale', run: toRun(run) };
      }
      const end: AttemptEnd = 'report' in given
        ? { ...endOfReport(given.report.result, given.report.stoppedBy, run.cancel_requested_by), finishedAt: given.finishedAt }
        : given;
      const decision = decideRetry({
        attempt: run.attempt, worker: run.worker, lostRetriesLeft: run.lost_retries_left, failureRetriesLeft: run.failure_retries_left,
        otherQueued: run.other_queued, jobExists: run.job_exists,
      }, end);
      if (decision.kind === 'requeue') {
        // After every line stored or written now (a line whose seq is taken is not written: it changes nothing).
        const markerSeq = Math.max(run.last_seq ?? -1, ...lines.map((l) => l.seq), run.first_seq - 1) + 1;
        const note: StoredLine = { seq: markerSeq, ts: end.finishedAt, text: decision.note };
        lines.push(note);
        if (decision.event === 'requeued') events.push({ at: end.finishedAt, attempt: run.attempt, kind: 'requeued', detail: { why: decision.why, worker: run.worker } });
        else events.push({ at: end.finishedAt, attempt: run.attempt, kind: 'retried', detail: { status: end.status, result: end.result, worker: run.worker } });
        const [requeued] = (await write(S.END_WRITE_REQUEUE,
          decision.attempt, decision.spend === 'lost' ? 1 : 0, decision.spend === 'failure' ? 1 : 0, markerSeq + 1)).rows;
        await this.notifyLines(tx, lines.map((l) => ({ runId: run.id, seq: l.seq })));
        return { outcome: 'retried', run: toRun(requeued!), end, note };
      }
      events.push({ at: end.finishedAt, attempt: run.attempt, kind: 'ended', detail: { status: end.status, result: end.result } });
      const target = this.uploadTarget !== null && forwardsOnEnd('running') ? this.uploadTarget : null;
      const [ended] = (await write(S.END_WRITE_FINISH, end.status, json(end.result), end.finishedAt, target)).rows;
      await this.notifyLines(tx, lines.map((l) => ({ runId: run.id, seq: l.seq })));
      return { outcome: 'ended', run: toRun(ended!), end };
    });
  }

  /** `endAttempt`'s one-statement way (END_SETTLED); undefined when the run was not running as guarded, with nothing written. */
  private async endSettled(id: string, end: AttemptEnd, guard: { worker?: string; attempt?: number }, writes: EndWrites): Promise<AttemptEndResult | undefined> {
    const lines = writes.lines ?? [];
    const events = [...(writes.events ?? []), { at: end.finishedAt, kind: 'ended', detail: { status: end.status, result: end.result } }];
    const target = this.uploadTarget !== null && forwardsOnEnd('running') ? this.uploadTarget : null;
    const [ended] = (await this.db.run<RunRow>(S.END_SETTLED, [
      id, lines.map((l) => l.seq), lines.map((l) => l.ts), lines.map((l) => utf8(l.text)),
      events.map((e) => e.at), events.map((e) => e.kind), events.map((e) => json(e.detail)),
      end.status, json(end.result), target, end.finishedAt, guard.worker ?? null, guard.attempt ?? null,
      this.feed(lines.map((l) => ({ runId: id, seq: l.seq }))),
    ])).rows;
    return ended && { outcome: 'ended', run: toRun(ended), end };
  }

  requestCancel(id: string, by: string, now: number, deadlineAt: number): Promise<{ run: Run; state: 'cancelled' | 'requested' }> {
    return this.db.transaction(async (tx) => {
      const run = await this.findRunRow(tx, id, true);
      const decision = decideCancel(run.status as RunStatus, by);
      if (decision.kind === 'end') {
        await this.finishInTx(tx, run.id, 'queued', { status: 'cancelled', result: decision.result, finishedAt: now });
        return { run: toRun((await tx.run<RunRow>(S.RUN_GET, [run.id])).rows[0]!), state: 'cancelled' as const };
      }
      if (decision.kind === 'finished') throw new RunFinishedError(run.id, run.status);
      const [marked] = (await tx.run<RunRow>(S.RUN_REQUEST_CANCEL, [run.id, by, deadlineAt])).rows;
      await this.event(tx, run.id, now, run.attempt, 'cancel-requested', { by });
      return { run: toRun(marked!), state: 'requested' as const };
    });
  }

  async overdueRuns(now: number): Promise<Run[]> {
    return (await this.db.run<RunRow>(S.RUNS_OVERDUE, [now])).rows.map(toRun);
  }

  async earliestDeadline(after = Number.MIN_SAFE_INTEGER): Promise<number | undefined> {
    return (await this.db.run<{ at: number | null }>(S.RUNS_EARLIEST_DEADLINE, [after])).rows[0]?.at ?? undefined;
  }

  async recordEvent(runId: string, event: RunEvent): Promise<void> {
    await this.event(this.db, runId, event.at, event.attempt, event.kind, event.detail);
  }

  async noteRunEvent(runId: string, event: Omit<RunEvent, 'attempt'>): Promise<boolean> {
    return (await this.db.run(S.EVENT_INSERT_AT_ATTEMPT, [runId, event.at, event.kind, json(event.detail)])).rowCount === 1;
  }

  async listEvents(runId: string): Promise<RunEvent[]> {
    return (await this.db.run<RunEvent>(S.EVENTS_LIST, [runId])).rows.map(({ at, attempt, kind, detail }) => ({ at, attempt, kind, detail }));
  }

  private async event(session: Session, runId: string, at: number, attempt: number, kind: string, detail: Record<string, unknown>): Promise<void> {
    await session.run(S.EVENT_INSERT, [runId, at, attempt, kind, json(detail)]);
  }

  async appendConsole(batches: ConsoleBatch[]): Promise<void> {
    const lines = batches.flatMap((batch) => batch.lines.map((line) => ({ runId: batch.runId, ...line })));
    if (lines.length === 0) return;
    // One statement, so one transaction, however many runs and lines.
    await this.db.run(S.CONSOLE_APPEND, [
      lines.map((l) => l.runId), lines.map((l) => l.seq), lines.map((l) => l.ts), lines.map((l) => utf8(l.text)), this.feed(lines),
    ]);
  }

  noteQueuedRun(runId: string, text: string, at: number): Promise<StoredLine | undefined> {
    return this.db.transaction(async (tx) => {
      const [run] = (await tx.run<RunRow>(S.RUN_GET_LOCKED, [runId])).rows;
      if (!run || run.status !== 'queued') return undefined;
      const [last] = (await tx.run<{ seq: number | null }>(S.CONSOLE_LAST_SEQ, [runId])).rows;
      const seq = Math.max(last?.seq ?? -1, run.first_seq - 1) + 1;
      await tx.run(S.CONSOLE_INSERT, [runId, seq, at, utf8(text)]);
      await tx.run(S.RUN_SET_FIRST_SEQ, [runId, seq + 1]);
      await this.notifyLines(tx, [{ runId, seq }]);
      return { seq, ts: at, text };
    });
  }

  async lastConsoleSeq(runId: string): Promise<number> {
    return (await this.db.run<{ seq: number | null }>(S.CONSOLE_LAST_SEQ, [runId])).rows[0]?.seq ?? -1;
  }

  async readConsole(runId: string, afterSeq = -1, limit = 1_000_000): Promise<StoredLine[]> {
    return (await this.db.run<{ seq: number; ts: number; text: Buffer }>(S.CONSOLE_READ, [runId, afterSeq, limit])).rows.map(({ seq, ts, text }) => ({ seq, ts, text: text.toString('utf8') }));
  }

  async dueJobs(now: number): Promise<Job[]> {
    return (await this.db.run<JobRow>(S.JOBS_DUE, [now])).rows.map(toJob);
  }

  async earliestNextAt(): Promise<number | undefined> {
    return (await this.db.run<{ at: number | null }>(S.JOBS_EARLIEST_NEXT)).rows[0]?.at ?? undefined;
  }

  fireSchedule(
    name: string, expectedNextAt: number, nextAt: number | null, runs: NewRun[], now: number, cancelBackstopMs = 0,
    missed?: { count: number; reason: string },
  ): Promise<FireOutcome> {
    return this.db.transaction(async (tx): Promise<FireOutcome> => {
      // Guarded on the time expected: of concurrent fires of one slot (several servers), one moves it.
      if ((await tx.run(S.JOB_MOVE_NEXT, [name, expectedNextAt, nextAt])).rowCount !== 1) return { outcome: 'stale' };
      // Recorded first; a skip of this firing (below) adds one and keeps the catch-up's reason in its own.
      if (missed && missed.count > 0) await tx.run(S.JOB_ADD_SKIPS, [name, missed.count, json({ at: now, reason: missed.reason })]);
      const job = toJob(await this.jobRow(tx, name, S.JOB_GET));
      const skip = async (reason: string): Promise<{ outcome: 'skipped'; reason: string }> => {
        await tx.run(S.JOB_ADD_SKIPS, [name, 1, json({ at: now, reason: skipReason(reason, missed) })]);
        return { outcome: 'skipped', reason };
      };
      const open = (await tx.run<RunRow>(S.RUNS_OPEN_OF_JOB_LOCKED, [name])).rows;
      const overlap = decideOverlap(job.overlap, open.map((run) => ({ id: run.id, status: run.status as RunStatus })));
      if (overlap.kind === 'skip') return skip(overlap.reason);
      const cancelled: string[] = [];
      for (const id of overlap.cancelQueued) {
        await this.finishInTx(tx, id, 'queued', { status: 'cancelled', result: { kind: 'aborted', reason: SUPERSEDED_REASON }, finishedAt: now });
        cancelled.push(id);
      }
      const cancelRequested: Run[] = [];
      for (const id of overlap.requestCancel) {
        const [marked] = (await tx.run<RunRow>(S.RUN_REQUEST_CANCEL, [id, 'the schedule', now + cancelBackstopMs])).rows;
        await this.event(tx, id, now, marked!.attempt, 'cancel-requested', { by: 'the schedule', reason: SUPERSEDED_REASON });
        cancelRequested.push(toRun(marked!));
      }
      const dropped = new Set<string>();
      for (const run of runs) if (await this.isDropped(tx, run.platform)) dropped.add(run.platform);
      const platforms = platformsToQueue(runs.map((run) => run.platform), dropped);
      if ('skip' in platforms) return { ...(await skip(platforms.skip)), cancelled };
      const queued: Run[] = [];
      for (const run of runs.filter((r) => !dropped.has(r.platform))) {
        const done = await this.enqueueInTx(tx, run, 'back');
        if (done.created) queued.push(done.run);
      }
      if (queued.length === 0) return { ...(await skip(ALREADY_QUEUED)), cancelled };
      return { outcome: 'queued', runs: queued, cancelRequested, cancelled };
    });
  }

  async recordSkip(name: string, at: number, reason: string): Promise<void> {
    await this.db.run(S.JOB_ADD_SKIPS, [name, 1, json({ at, reason })]);
  }

  dropPlatform(platform: string, now: number): Promise<string[]> {
    return this.db.transaction((tx) => this.dropInTx(tx, platform, now));
  }

  /** Drops a platform; its queued runs end cancelled (returned). */
  private async dropInTx(tx: Session, platform: string, now: number): Promise<string[]> {
    await tx.run(S.DROPPED_INSERT, [platform, now]);
    const queued = (await tx.run<{ id: string }>(S.RUNS_QUEUED_ON_PLATFORM_LOCKED, [platform])).rows.map((row) => row.id);
    for (const id of queued) await this.finishInTx(tx, id, 'queued', { status: 'cancelled', result: { kind: 'aborted', reason: 'platform dropped' }, finishedAt: now });
    return queued;
  }

  async undropPlatform(platform: string): Promise<boolean> {
    return (await this.db.run(S.DROPPED_DELETE, [platform])).rowCount === 1;
  }

  async listDroppedPlatforms(): Promise<{ platform: string; droppedAt: number }[]> {
    return (await this.db.run<{ platform: string; dropped_at: number }>(S.DROPPED_LIST)).rows.map((row) => ({ platform: row.platform, droppedAt: row.dropped_at }));
  }

  async addArtifact(runId: string, artifact: Artifact): Promise<void> {
    await this.db.run(S.ARTIFACT_UPSERT, [runId, artifact.path, artifact.size, artifact.sha256, artifact.mode]);
  }

  async listArtifacts(runId: string): Promise<Artifact[]> {
    return (await this.db.run<Artifact>(S.ARTIFACTS_LIST, [runId])).rows.map(({ path, size, sha256, mode }) => ({ path, size, sha256, mode }));
  }

  async expiredArtifacts(policy: RetentionPolicy): Promise<ExpiredArtifacts[]> {
    if (policy.keepRuns === undefined && policy.keptSince === undefined) return [];
    const rows = (await this.db.run<{ run_id: string; job: string; finished_at: number; files: number; bytes: number }>(
      S.ARTIFACTS_EXPIRED, [policy.keepRuns ?? null, policy.keptSince ?? null, this.uploadTarget],
    )).rows;
    return rows.map((row) => ({ runId: row.run_id, job: row.job, finishedAt: row.finished_at, files: row.files, bytes: row.bytes }));
  }

  async deleteArtifacts(runIds: string[]): Promise<number> {
    return (await this.db.run(S.ARTIFACTS_DELETE, [runIds])).rowCount ?? 0;
  }

  async unreferencedBlobs(sha256s: string[], ignoringRuns: string[] = []): Promise<string[]> {
    const referenced = new Set((await this.db.run<{ sha256: string }>(S.BLOBS_REFERENCED, [sha256s, ignoringRuns])).rows.map((row) => row.sha256));
    return sha256s.filter((sha) => !referenced.has(sha));
  }

  setUploadTarget(target: string | null): void {
    this.uploadTarget = target;
  }

  async nextDeliveryAt(): Promise<number | undefined> {
    return (await this.db.run<{ at: number | null }>(S.DELIVERIES_NEXT_AT, [this.uploadTarget])).rows[0]?.at ?? undefined;
  }

  async requeueFailedDelivery(runId: string, at: number): Promise<Delivery | undefined> {
    const [row] = (await this.db.run<DeliveryRow>(S.DELIVERY_REQUEUE_FAILED, [runId, at, this.uploadTarget])).rows;
    return row && toDelivery(row);
  }

  async listDeliveries(runId: string): Promise<Delivery[]> {
    return (await this.db.run<DeliveryRow>(S.DELIVERIES_OF_RUN, [runId])).rows.map(toDelivery);
  }

  async outboxSummary(): Promise<OutboxSummary> {
    const counts = Object.fromEntries((await this.db.run<{ state: string; n: number }>(S.DELIVERIES_COUNT)).rows.map((row) => [row.state, row.n]));
    const oldest = (await this.db.run<{ at: number | null }>(S.DELIVERIES_OLDEST_PENDING)).rows[0]?.at ?? null;
    const troubled = (await this.db.run<DeliveryRow>(S.DELIVERIES_TROUBLED)).rows.map(toDelivery);
    // A delivery being sent is not delivered yet: it counts as pending.
    return { pending: (counts.pending ?? 0) + (counts.sending ?? 0), delivered: counts.delivered ?? 0, failed: counts.failed ?? 0, oldestPendingAt: oldest, troubled };
  }

  async setRunScript(id: string, script: string): Promise<void> {
    await this.db.run(S.RUN_SET_SCRIPT, [id, script]);
  }

  async recordWorker(worker: WorkerRecord, conn?: WorkerConnection): Promise<boolean> {
    const claimed = await this.db.run(S.WORKER_CLAIM, [
      worker.name, worker.platform, json(worker.labels), worker.capacity, worker.hostname, worker.os, worker.arch, worker.version,
      worker.connected, worker.connectedAt, worker.lastSeen, conn?.serverId ?? null, conn?.connId ?? null,
    ]);
    return claimed.rowCount === 1;
  }

  async workerDisconnected(name: string, now: number, connId?: string): Promise<void> {
    await this.db.run(S.WORKER_DISCONNECTED, [name, now, connId ?? null]);
  }

  async forgetWorker(name: string, connId?: string): Promise<boolean> {
    return (await this.db.run(S.WORKER_FORGET, [name, connId ?? null])).rowCount === 1;
  }

  async disconnectWorkersOfDeadServers(): Promise<string[]> {
    return (await this.db.run<{ name: string }>(S.WORKERS_OF_DEAD_SERVERS)).rows.map((row) => row.name);
  }

  async runsOfLostWorkers(now: number, graceMs: number): Promise<LostWorkerRun[]> {
    return (await this.db.run<{ id: string; worker: string | null; attempt: number; last_seen: number | null }>(S.RUNS_LOST_WORKER, [now, graceMs])).rows
      .map((row) => ({ id: row.id, worker: row.worker, attempt: row.attempt, lastSeen: row.last_seen }));
  }

  async nextLossAt(graceMs: number): Promise<number | undefined> {
    return (await this.db.run<{ at: number | null }>(S.NEXT_LOSS_AT, [graceMs])).rows[0]?.at ?? undefined;
  }

  async listServers(): Promise<ServerRecord[]> {
    return (await this.db.run<ServerRow>(S.SERVERS_LIST)).rows.map((row) => ({
      id: row.id, url: row.url, hostname: row.hostname, pid: row.pid, version: row.version, configDigest: row.config_digest,
      startedAt: row.started_at, heartbeatAt: row.heartbeat_at, stoppedAt: row.stopped_at, alive: row.alive, leases: row.leases,
    }));
  }

  async farmSecret(name: string, proposed: string, now: number): Promise<string> {
    // No row: another server stored it in a transaction committed after this statement's snapshot; the next one sees it.
    for (let round = 0; ; round++) {
      const [row] = (await this.db.run<{ value: string }>(S.FARM_SECRET, [name, proposed, now])).rows;
      if (row) return row.value;
      if (round === 2) throw new StoreUnavailableError(this.db.where, `the farm secret ${name} could not be read`);
    }
  }

  async poolState(pool: string): Promise<PoolState> {
    const [row] = (await this.db.run<{ failures: number; quarantines: number; quarantined_until: number; last_error: string | null }>(S.POOL_STATE_GET, [pool])).rows;
    return row
      ? { failures: row.failures, quarantines: row.quarantines, quarantinedUntil: row.quarantined_until, lastError: row.last_error }
      : { failures: 0, quarantines: 0, quarantinedUntil: 0, lastError: null };
  }

  async savePoolState(pool: string, state: PoolState): Promise<void> {
    await this.db.run(S.POOL_STATE_UPSERT, [pool, state.failures, state.quarantines, state.quarantinedUntil, state.lastError]);
  }

  async addPoolInstance(instance: PoolInstanceRecord): Promise<void> {
    await this.db.run(S.POOL_INSTANCE_INSERT, [
      instance.id, instance.pool, instance.name, instance.tokenSha256, instance.state, JSON.stringify(instance.handle ?? null), instance.forRun,
      instance.adopted, instance.startedAt,
    ]);
  }

  async updatePoolInstance(id: string, change: { state: string; handle?: unknown; adopted?: boolean }): Promise<void> {
    await this.db.run(S.POOL_INSTANCE_UPDATE, [id, change.state, change.handle === undefined ? null : JSON.stringify(change.handle), change.adopted ?? null]);
  }

  async removePoolInstance(id: string): Promise<void> {
    await this.db.run(S.POOL_INSTANCE_DELETE, [id]);
  }

  async listPoolInstances(pool?: string): Promise<PoolInstanceRecord[]> {
    return (await this.db.run<PoolInstanceRow>(S.POOL_INSTANCES_LIST, [pool ?? null])).rows.map(toPoolInstance);
  }

  async poolInstanceByToken(sha256: string): Promise<PoolInstanceRecord | undefined> {
    const [row] = (await this.db.run<PoolInstanceRow>(S.POOL_INSTANCE_BY_TOKEN, [sha256])).rows;
    return row && toPoolInstance(row);
  }

  async touchBlob(sha256: string, size: number, now: number): Promise<boolean> {
    // A retry after a lost connection whose first attempt did commit says false for a row it
    // inserted: the S3 store may then skip a PUT it needed (artifact-store.ts, CheckedBlobStore.put).
    return (await this.db.run<{ inserted: boolean }>(S.BLOB_TOUCH, [sha256, size, now])).rows[0]?.inserted === true;
  }

  async staleBlobs(before: number, limit: number): Promise<string[]> {
    return (await this.db.run<{ sha256: string }>(S.BLOBS_STALE, [before, limit])).rows.map((row) => row.sha256);
  }

  async forgetBlob(sha256: string, before: number): Promise<boolean> {
    return (await this.db.run(S.BLOB_FORGET, [sha256, before])).rowCount === 1;
  }

  async claimDeliveries(now: number, limit: number, epoch: number): Promise<Delivery[]> {
    const rows = (await this.db.run<DeliveryRow>(S.DELIVERY_CLAIM, [this.uploadTarget, now, limit, epoch])).rows;
    return rows.map(toDelivery).sort((a, b) => a.nextAt - b.nextAt || a.id - b.id);
  }

  async recordClaimedDeliveryAttempt(
    id: number,
    epoch: number,
    outcome: { state: Delivery['state']; nextAt: number; error: string | null; at: number },
  ): Promise<boolean> {
    const ended = outcome.state === 'pending' || outcome.state === 'sending' ? null : outcome.at;
    return (await this.db.run(S.DELIVERY_RECORD_CLAIMED, [id, epoch, outcome.state, outcome.nextAt, outcome.error, ended])).rowCount === 1;
  }

  async listWorkers(): Promise<WorkerRecord[]> {
    return (await this.db.run<WorkerRow>(S.WORKERS_LIST)).rows.map(toWorker);
  }

  async createWorkerToken(name: string, sha256: string, now: number): Promise<WorkerTokenRecord> {
    if ((await this.db.run(S.WORKER_TOKEN_INSERT, [name, sha256, now])).rowCount !== 1) throw new WorkerTokenExistsError(name);
    return { name, createdAt: now, lastUsedAt: null };
  }

  async listWorkerTokens(): Promise<WorkerTokenRecord[]> {
    return (await this.db.run<WorkerTokenRow>(S.WORKER_TOKENS_LIST)).rows.map(toWorkerToken);
  }

  async getWorkerToken(name: string): Promise<WorkerTokenRecord | undefined> {
    const [row] = (await this.db.run<WorkerTokenRow>(S.WORKER_TOKEN_GET, [name])).rows;
    return row && toWorkerToken(row);
  }

  async findWorkerToken(sha256: string): Promise<string | undefined> {
    return (await this.db.run<{ name: string }>(S.WORKER_TOKEN_FIND, [sha256])).rows[0]?.name;
  }

  async touchWorkerToken(name: string, now: number): Promise<void> {
    await this.db.run(S.WORKER_TOKEN_TOUCH, [name, now]);
  }

  async revokeWorkerToken(name: string): Promise<boolean> {
    return ((await this.db.run(S.WORKER_TOKEN_DELETE, [name])).rowCount ?? 0) > 0;
  }

  async createToken(token: { name: string; role: Role; sha256: string; createdAt: number; expiresAt: number | null }): Promise<TokenRecord> {
    const { name, role, sha256, createdAt, expiresAt } = token;
    return this.db.transaction(async (tx) => {
      // Names are unique whatever their case: a live `alice` refuses `Alice`; a revoked one gives way.
      // (Two servers creating both at once: the index refuses one, 23505, retried here into this check.)
      const [variant] = (await tx.run<{ name: string }>(S.TOKEN_LIVE_VARIANT, [name])).rows;
      if (variant) throw new TokenExistsError(variant.name);
      await tx.run(S.TOKEN_DELETE_REVOKED_VARIANTS, [name]);
      if ((await tx.run(S.TOKEN_UPSERT, [name, role, sha256, createdAt, expiresAt])).rowCount !== 1) throw new TokenExistsError(name);
      // A revoked token's sessions were ended with it; none can be left for the new one to inherit.
      await tx.run(S.SESSIONS_DELETE_OF_TOKEN, [name]);
      return { name, role, createdAt, expiresAt, lastUsedAt: null, revokedAt: null };
    });
  }

  async listTokens(): Promise<TokenRecord[]> {
    return (await this.db.run<TokenRow>(S.TOKENS_LIST)).rows.map(toToken);
  }

  async findToken(sha256: string): Promise<TokenRecord | undefined> {
    const [row] = (await this.db.run<TokenRow>(S.TOKEN_FIND, [sha256])).rows;
    return row && toToken(row);
  }

  async touchToken(name: string, now: number): Promise<void> {
    await this.db.run(S.TOKEN_TOUCH, [name, now]);
  }

  async revokeToken(name: string, now: number): Promise<number | undefined> {
    return this.db.transaction(async (tx) => {
      if ((await tx.run(S.TOKEN_REVOKE, [name, now])).rowCount !== 1) return undefined;
      return (await tx.run(S.SESSIONS_DELETE_OF_TOKEN, [name])).rowCount ?? 0;
    });
  }

  async createSession(sha256: string, session: SessionRecord): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.run(S.SESSIONS_DELETE_EXPIRED, [session.createdAt]);
      await tx.run(S.SESSION_INSERT, [sha256, session.tokenName, session.role, session.createdAt, session.expiresAt, session.tokenSha256]);
    });
  }

  async findSession(sha256: string, current: CurrentTokens): Promise<SessionRecord | undefined> {
    const [row] = (await this.db.run<SessionRow>(S.SESSION_FIND_CURRENT, [sha256, current.now, current.adminSha256])).rows;
    return row && { tokenName: row.token_name, role: row.role, tokenSha256: row.token_sha256, createdAt: row.created_at, expiresAt: row.expires_at };
  }

  async deleteSession(sha256: string): Promise<boolean> {
    return ((await this.db.run(S.SESSION_DELETE, [sha256])).rowCount ?? 0) > 0;
  }

  private async jobRow(session: Session, name: string, statement: S.Statement): Promise<JobRow> {
    const [row] = (await session.run<JobRow>(statement, [name])).rows;
    if (!row) throw new JobNotFoundError(name);
    return row;
  }
}

