/**
 * The embedded store: SQLite through better-sqlite3, in WAL mode. better-sqlite3 is synchronous;
 * each method runs one statement or one `BEGIN IMMEDIATE` transaction and resolves after commit,
 * which keeps the JobStore contract asynchronous for the PostgreSQL store. Every statement is a named
 * constant (or a small builder) of ./statements.ts, compiled once per database and reused.
 */
import { chmodSync, closeSync, constants, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import {
  decideCancel, decideOverlap, decideRetry, endOfReport, firstClaimable, forwardsOnEnd, platformsToQueue, skipReason, ALREADY_QUEUED, SUPERSEDED_REASON, type RunResult, type RunStatus,
} from '../../core/index.js';
import {
  JobExistsError, JobNotFoundError, PlatformDroppedError, RunAmbiguousError, RunFinishedError, RunNotFoundError, TokenExistsError, WorkerTokenExistsError,
} from '../../errors.js';
import type {
  Artifact, AttemptEnd, AttemptEndResult, ConsoleBatch, EndWrites, Delivery, ExpiredArtifacts, FireOutcome, Job, JobPatch, JobStore, NewRun,
  ClaimingWorker, ImportJobOutcome, ImportPlan, ImportRecord, ImportResult, ImportRunOutcome, OutboxSummary, ReportedEnd, RetentionPolicy, WaitingRun, Run, RunEnd, RunEvent, RunFilter, ScriptFor, StoredLine, WorkerRecord, WorkerConnection, LostWorkerRun, ServerRecord, PoolState, PoolInstanceRecord, WorkerTokenRecord, Role, SessionRecord, TokenRecord, CurrentTokens,
} from '../job-store.js';
import { checkDatabase, migrate } from './migrate.js';
import { openDatabase } from './open-database.js';
import * as S from './statements.js';

interface JobRow {
  name: string; platform: string | null; script: string | null; template: string | null; vars: string; env: string; labels: string;
  schedule: string; paused: number; overlap: string; catch_up: number; skipped: number; last_skip: string | null;
  artifacts: string; artifacts_on_failure: number; sandbox: string;
  timeout_ms: number; idle_timeout_ms: number | null; retries: number; failure_retries: number;
  next_at: number | null; created_at: number; updated_at: number;
}
interface RunRow {
  id: string; job: string; platform: string; labels: string; status: string; attempt: number;
  worker: string | null; worker_identity: string | null; worker_session: string | null; queued_at: number; started_at: number | null; finished_at: number | null;
  result: string | null; script: string | null; env: string; timeout_ms: number | null;
  idle_timeout_ms: number | null; lost_retries_left: number; failure_retries_left: number; first_seq: number;
  cancel_requested_by: string | null; deadline_at: number | null; artifacts: string; artifacts_on_failure: number; sandbox: string;
}
interface WorkerRow {
  name: string; platform: string; labels: string; capacity: number; hostname: string; os: string;
  arch: string; version: string; connected: number; connected_at: number; last_seen: number; server_id: string | null;
}

function toJob(row: JobRow): Job {
  return {
    name: row.name, platform: row.platform, script: row.script, template: row.template, vars: JSON.parse(row.vars),
    env: JSON.parse(row.env), labels: JSON.parse(row.labels), schedule: JSON.parse(row.schedule), paused: row.paused === 1,
    overlap: row.overlap as Job['overlap'], catchUp: row.catch_up === 1, skipped: row.skipped,
    lastSkip: row.last_skip === null ? null : JSON.parse(row.last_skip),
    artifacts: JSON.parse(row.artifacts), artifactsOnFailure: row.artifacts_on_failure === 1, sandbox: JSON.parse(row.sandbox),
    timeoutMs: row.timeout_ms, idleTimeoutMs: row.idle_timeout_ms, retries: row.retries, failureRetries: row.failure_retries,
    nextAt: row.next_at, createdAt: row.created_at, updatedAt: row.updated_at,
  };
}

/** A job's columns as statement parameters. */
function jobParams(job: Job) {
  return {
    ...job,
    vars: JSON.stringify(job.vars), env: JSON.stringify(job.env), labels: JSON.stringify(job.labels),
    schedule: JSON.stringify(job.schedule), paused: job.paused ? 1 : 0, catchUp: job.catchUp ? 1 : 0,
    lastSkip: job.lastSkip === null ? null : JSON.stringify(job.lastSkip),
    artifacts: JSON.stringify(job.artifacts), artifactsOnFailure: job.artifactsOnFailure ? 1 : 0, sandbox: JSON.stringify(job.sandbox),
  };
}

function toRun(row: RunRow): Run {
  return {
    id: row.id, job: row.job, platform: row.platform, labels: JSON.parse(row.labels),
    status: row.status as RunStatus, attempt: row.attempt, worker: row.worker, workerIdentity: row.worker_identity, workerSession: row.worker_session,
    queuedAt: row.queued_at, startedAt: row.started_at, finishedAt: row.finished_at,
    result: row.result === null ? null : (JSON.parse(row.result) as RunResult),
    script: row.script, env: JSON.parse(row.env), timeoutMs: row.timeout_ms, idleTimeoutMs: row.idle_timeout_ms,
    lostRetriesLeft: row.lost_retries_left, failureRetriesLeft: row.failure_retries_left, firstSeq: row.first_seq,
    cancelRequestedBy: row.cancel_requested_by, deadlineAt: row.deadline_at,
    artifacts: JSON.parse(row.artifacts), artifactsOnFailure: row.artifacts_on_failure === 1, sandbox: JSON.parse(row.sandbox),
  };
}

function toWorker(row: WorkerRow): WorkerRecord {
  return {
    name: row.name, platform: row.platform, labels: JSON.parse(row.labels), capacity: row.capacity,
    hostname: row.hostname, os: row.os, arch: row.arch, version: row.version,
    connected: row.connected === 1, connectedAt: row.connected_at, lastSeen: row.last_seen, server: row.server_id,
  };
}

/**
 * Opens (creating and migrating if needed) the SQLite store at `file`. A file that is not Kiln's,
 * is from a newer Kiln or is damaged is refused before anything in it changes (see checkDatabase).
 */
export function openSqliteStore(file: string): JobStore {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // Created 0600 before SQLite sees it: SQLite gives its -wal and -shm files the mode of the
  // database file, so they are private from their first byte too.
  closeSync(openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600));
  const db = openDatabase(file);
  try {
    checkDatabase(db, file);
  } catch (raw) {
    db.close();
    throw raw;
  }
  // An older Kiln left these readable by every local user: scripts, env values and consoles.
  for (const suffix of ['', '-wal', '-shm', '-journal']) {
    try {
      chmodSync(file + suffix, 0o600);
    } catch (raw) {
      if ((raw as NodeJS.ErrnoException).code !== 'ENOENT') throw raw;
    }
  }
  db.pragma('journal_mode = WAL');
  // NORMAL is durable across process crashes in WAL mode; FULL also survives power loss, which
  // Kiln promises: a run answered 2xx, a claim a worker may already be acting on, a schedule's
  // moved next time must not roll back when the host loses power (a lost or twice-run build).
  // It costs one fdatasync per commit; execute next to an idle worker needs one commit, not two.
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  return new SqliteStore(db);
}

interface WorkerTokenRow {
  name: string; created_at: number; last_used_at: number | null;
}

function toWorkerToken(row: WorkerTokenRow): WorkerTokenRecord {
  return { name: row.name, createdAt: row.created_at, lastUsedAt: row.last_used_at };
}

interface TokenRow {
  name: string; role: Role; created_at: number; expires_at: number | null; last_used_at: number | null; revoked_at: number | null;
}

function toToken(row: TokenRow): TokenRecord {
  return { name: row.name, role: row.role, createdAt: row.created_at, expiresAt: row.expires_at, lastUsedAt: row.last_used_at, revokedAt: row.revoked_at };
}

interface SessionRow { token_name: string; role: Role; created_at: number; expires_at: number; token_sha256: string }

interface DeliveryRow {
  id: number; run_id: string; target: string; state: string; attempts: number; next_at: number;
  last_error: string | null; created_at: number; ended_at: number | null; claim_epoch: number | null;
}

interface PoolInstanceRow {
  id: string; pool: string; name: string; token_sha256: string; state: string; handle: string; for_run: string | null; adopted: number; started_at: number;
}

function toPoolInstance(row: PoolInstanceRow): PoolInstanceRecord {
  return {
    id: row.id, pool: row.pool, name: row.name, tokenSha256: row.token_sha256, state: row.state, handle: JSON.parse(row.handle),
    forRun: row.for_run, adopted: row.adopted === 1, startedAt: row.started_at,
  };
}

function toDelivery(row: DeliveryRow): Delivery {
  return {
    id: row.id, runId: row.run_id, target: row.target, state: row.state as Delivery['state'], attempts: row.attempts,
    nextAt: row.next_at, lastError: row.last_error, createdAt: row.created_at, endedAt: row.ended_at, claimEpoch: row.claim_epoch,
  };
}

/** Most statements kept compiled at once. */
const MAX_STATEMENTS = 256;

class SqliteStore implements JobStore {
  private uploadTarget: string | null = null;

  /** Statements compiled once, by SQL text: compiling costs more than running most of them. */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  /** The compiled statement for `sql`, returning whole rows (a caller may turn on pluck for its call). */
  private prepare(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      // Bounded, though statements.ts has fewer texts than this (its built ones have a few fixed shapes each).
      if (this.statements.size >= MAX_STATEMENTS) this.statements.clear();
      this.statements.set(sql, statement);
    }
    return statement.reader ? statement.pluck(false) : statement;
  }

  /** Runs `fn` in a BEGIN IMMEDIATE transaction; resolves after COMMIT, rejects (never throws) on error. */
  private async tx<T>(fn: () => T): Promise<T> {
    return this.db.transaction(fn).immediate();
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  async findImport(sha256: string): Promise<ImportRecord | undefined> {
    return this.importRow(sha256);
  }

  private importRow(sha256: string): ImportRecord | undefined {
    const row = this.prepare(S.IMPORT_GET).get(sha256) as { sha256: string; kind: string; imported_at: number; report: string } | undefined;
    return row && { sha256: row.sha256, kind: row.kind, importedAt: row.imported_at, report: JSON.parse(row.report) as unknown };
  }

  async recordImport(record: ImportRecord): Promise<boolean> {
    return this.recordImportInTx(record);
  }

  private recordImportInTx(record: ImportRecord): boolean {
    const { changes } = this.prepare(S.IMPORT_INSERT).run({ sha256: record.sha256, kind: record.kind, importedAt: record.importedAt, report: JSON.stringify(record.report) });
    return changes === 1;
  }

  importState(plan: ImportPlan): Promise<ImportResult> {
    return this.tx((): ImportResult => {
      const { sha256, importedAt } = plan.record;
      // The record first, its report last: as on PostgreSQL, where the row is what a concurrent import of the file waits on.
      if (!this.recordImportInTx({ ...plan.record, report: null })) return { recorded: false, previous: this.importRow(sha256)! };
      const drops = plan.drops.map((platform) => (this.isDropped(platform)
        ? { platform, dropped: false, cancelled: [] }
        : { platform, dropped: true, cancelled: this.dropInTx(platform, importedAt) }));
      const jobs = new Map<string, ImportJobOutcome>();
      for (const { name, job } of plan.jobs) {
        const present = this.prepare(S.JOB_GET).get(name) as JobRow | undefined;
        if (present) jobs.set(name, { outcome: 'present', job: toJob(present) });
        else if (!job) jobs.set(name, { outcome: 'absent' });
        else if (job.platform !== null && this.isDropped(job.platform)) jobs.set(name, { outcome: 'dropped', platform: job.platform });
        else {
          this.prepare(S.JOB_INSERT).run(jobParams(job));
          jobs.set(name, { outcome: 'added', job });
        }
      }
      const runs = plan.queue(jobs).map((asked): ImportRunOutcome => {
        if (this.isDropped(asked.platform)) return { asked, outcome: 'dropped' };
        this.jobRow(asked.job);
        const { run, created } = this.enqueueInTx(asked, 'back');
        return { asked, outcome: created ? 'queued' : 'alreadyQueued', run };
      });
      const writes = { drops, jobs, runs };
      const report = plan.report(writes);
      this.prepare(S.IMPORT_SET_REPORT).run(JSON.stringify(report), sha256);
      return { recorded: true, writes, report };
    });
  }

  createJob(job: Job, firstRuns: NewRun[] = []): Promise<Run[]> {
    return this.tx(() => {
      const exists = this.prepare(S.JOB_EXISTS).get(job.name);
      if (exists) throw new JobExistsError(job.name);
      for (const run of firstRuns) this.refuseDropped(run.platform);
      if (job.platform !== null) this.refuseDropped(job.platform);
      this.prepare(S.JOB_INSERT).run(jobParams(job));
      return firstRuns.map((run) => this.enqueueInTx(run, 'back').run);
    });
  }

  updateJob(name: string, patch: JobPatch, now: number): Promise<Job> {
    return this.tx(() => {
      const current = this.jobRow(name);
      // A key present with the value undefined means "unchanged", as an absent key does.
      const given = Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined));
      const next: Job = { ...toJob(current), ...given, updatedAt: now };
      if (patch.platform) this.refuseDropped(patch.platform);
      this.prepare(S.JOB_UPDATE).run(jobParams(next));
      return next;
    });
  }

  deleteJob(name: string, now: number): Promise<string[]> {
    return this.tx(() => {
      this.jobRow(name);
      const queued = this.prepare(S.RUN_IDS_QUEUED_OF_JOB).pluck().all(name) as string[];
      const result: RunResult = { kind: 'aborted', reason: 'job unscheduled' };
      this.prepare(S.RUNS_CANCEL_QUEUED_OF_JOB).run(now, JSON.stringify(result), name);
      for (const id of queued) this.event(id, now, this.runRow(id).attempt, 'ended', { status: 'cancelled', result });
      this.prepare(S.JOB_DELETE).run(name);
      return queued;
    });
  }

  async getJob(name: string): Promise<Job | undefined> {
    const row = this.prepare(S.JOB_GET).get(name) as JobRow | undefined;
    return row && toJob(row);
  }

  async listJobs(): Promise<Job[]> {
    return (this.prepare(S.JOB_LIST).all() as JobRow[]).map(toJob);
  }

  enqueue(run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    return this.tx(() => {
      this.jobRow(run.job);
      this.refuseDropped(run.platform);
      return this.enqueueInTx(run, position);
    });
  }

  private isDropped(platform: string): boolean {
    return this.prepare(S.DROPPED_GET).get(platform) !== undefined;
  }

  private refuseDropped(platform: string): void {
    if (this.isDropped(platform)) throw new PlatformDroppedError(platform);
  }

  private enqueueInTx(run: NewRun, position: 'back' | 'front'): { run: Run; created: boolean } {
    const bound = this.prepare(position === 'front' ? S.QUEUE_FRONT_POS : S.QUEUE_BACK_POS).pluck()
      .get(run.platform) as number | null;
    const pos = bound ?? 0;
    const existing = this.prepare(S.RUN_QUEUED_OF_JOB).get(run.job, run.platform) as RunRow | undefined;
    if (existing) {
      if (position === 'front') this.prepare(S.RUN_SET_QUEUE_POS).run(pos, existing.id);
      return { run: toRun(existing), created: false };
    }
    const job = this.jobRow(run.job);
    this.prepare(S.RUN_INSERT_QUEUED)
      .run(run.id, run.job, run.platform, JSON.stringify(run.labels), pos, run.queuedAt, job.retries, job.failure_retries);
    this.event(run.id, run.queuedAt, 1, 'queued', { platform: run.platform, position });
    return { run: this.runRow(run.id), created: true };
  }

  enqueueAndClaim(
    run: NewRun, position: 'back' | 'front', worker: ClaimingWorker, now: number, backstopMs = 0, scriptFor?: ScriptFor,
  ): Promise<{ run: Run; created: boolean; claimed: Run | undefined }> {
    return this.tx(() => {
      this.jobRow(run.job);
      this.refuseDropped(run.platform);
      const queued = this.enqueueInTx(run, position);
      return { ...queued, claimed: this.claimInTx(worker, now, backstopMs, scriptFor) };
    });
  }

  claimNext(worker: ClaimingWorker, now: number, backstopMs = 0, scriptFor?: ScriptFor): Promise<Run | undefined> {
    return this.tx(() => this.claimInTx(worker, now, backstopMs, scriptFor));
  }

  private claimInTx(worker: ClaimingWorker, now: number, backstopMs: number, scriptFor?: ScriptFor): Run | undefined {
    // Read the queue a page at a time: the first run usually matches, and a long queue is not read whole.
    const page = this.prepare(S.CLAIM_CANDIDATES);
    let pick: { id: string; job: string } | undefined;
    let after = -Infinity;
    while (!pick) {
      const candidates = page.all(worker.platform, after) as { id: string; job: string; labels: string; queue_pos: number }[];
      if (candidates.length === 0) return undefined;
      pick = firstClaimable(worker, candidates.map((c) => ({ id: c.id, job: c.job, labels: JSON.parse(c.labels) as Record<string, string> })));
      after = candidates.at(-1)!.queue_pos;
    }
    const jobRow = this.prepare(S.JOB_GET).get(pick.job) as JobRow | undefined;
    if (!jobRow) {
      // Its job was unscheduled after the run was queued (a retry, say): it cannot run.
      this.finishInTx(pick.id, 'queued', { status: 'cancelled', result: { kind: 'aborted', reason: 'job unscheduled' }, finishedAt: now });
      return undefined;
    }
    const job = jobRow;
    this.prepare(S.CLAIM_START)
      .run(worker.name, worker.identity ?? null, worker.session ?? null, now, job.script, job.env, job.timeout_ms, job.idle_timeout_ms, now + job.timeout_ms + backstopMs,
        job.artifacts, job.artifacts_on_failure, job.sandbox, pick.id);
    const run = this.runRow(pick.id);
    this.event(run.id, now, run.attempt, 'dispatched', { worker: worker.name });
    const script = run.script === null ? scriptFor?.(run, { template: job.template, vars: JSON.parse(job.vars) as Record<string, string> }) : undefined;
    if (script === undefined) return run;
    this.prepare(S.RUN_SET_SCRIPT).run(script, run.id);
    return { ...run, script };
  }

  async listQueued(): Promise<Run[]> {
    return (this.prepare(S.RUNS_QUEUED).all() as RunRow[]).map(toRun);
  }

  async listWaiting(): Promise<WaitingRun[]> {
    const rows = this.prepare(S.RUNS_WAITING).all() as { id: string; job: string; platform: string; labels: string }[];
    return rows.map((row) => ({ ...row, labels: JSON.parse(row.labels) as Record<string, string> }));
  }

  async listRunning(worker?: string): Promise<Run[]> {
    const rows = worker === undefined
      ? this.prepare(S.RUNS_RUNNING).all()
      : this.prepare(S.RUNS_RUNNING_OF_WORKER).all(worker);
    return (rows as RunRow[]).map(toRun);
  }

  async findRun(idOrPrefix: string): Promise<Run> {
    return toRun(this.findRunRow(idOrPrefix));
  }

  private findRunRow(idOrPrefix: string): RunRow {
    // Prefix match by range, so the index is used and LIKE wildcards in the input mean nothing.
    const rows = this.prepare(S.RUNS_BY_PREFIX).all(idOrPrefix, idOrPrefix + '\u{10FFFF}') as RunRow[];
    const exact = rows.find((r) => r.id === idOrPrefix);
    if (exact) return exact;
    if (rows.length === 0 || idOrPrefix === '') throw new RunNotFoundError(idOrPrefix);
    if (rows.length > 1) throw new RunAmbiguousError(idOrPrefix);
    return rows[0]!;
  }

  async listRuns(filter: RunFilter): Promise<Run[]> {
    const params = [filter.job, filter.status, filter.platform, filter.worker].filter((value) => value !== undefined);
    return (this.prepare(S.runsList(filter)).all(...params, filter.limit) as RunRow[]).map(toRun);
  }

  async lastRuns(): Promise<Map<string, Run>> {
    return new Map((this.prepare(S.RUNS_LAST_PER_JOB).all() as RunRow[]).map((row) => [row.job, toRun(row)]));
  }

  finishRun(id: string, end: RunEnd, guard: { from: RunStatus[]; worker?: string }): Promise<boolean> {
    return this.tx(() => {
      const row = this.prepare(S.RUN_STATUS).get(id) as { status: string; worker: string | null } | undefined;
      if (!row || !guard.from.includes(row.status as RunStatus)) return false;
      if (guard.worker !== undefined && row.worker !== guard.worker) return false;
      return this.finishInTx(id, row.status, end);
    });
  }

  private finishInTx(id: string, from: string, end: RunEnd): boolean {
    const changed = this.prepare(S.RUN_FINISH).run(end.status, JSON.stringify(end.result), end.finishedAt, id, from).changes;
    if (changed !== 1) return false;
    this.event(id, end.finishedAt, this.runRow(id).attempt, 'ended', { status: end.status, result: end.result });
    if (this.uploadTarget !== null && forwardsOnEnd(from as RunStatus)) {
      this.prepare(S.DELIVERY_INSERT).run(id, this.uploadTarget, end.finishedAt, end.finishedAt);
    }
    return true;
  }

  endAttempt(id: string, given: AttemptEnd | ReportedEnd, guard: { worker?: string; attempt?: number }, writes: EndWrites = {}): Promise<AttemptEndResult> {
    return this.tx((): AttemptEndResult => {
      const run = this.findRunRow(id);
      this.insertLines(run.id, writes.lines ?? []);
      for (const e of writes.events ?? []) this.event(run.id, e.at, run.attempt, e.kind, e.detail);
      if (run.status !== 'running' || (guard.worker !== undefined && run.worker !== guard.worker)
        || (guard.attempt !== undefined && run.attempt !== guard.attempt)) {
        if (writes.ifStale) this.event(run.id, writes.ifStale.at, run.attempt, writes.ifStale.kind, writes.ifStale.detail);
        return { outcome: 'stale', run: toRun(run) };
      }
      const end: AttemptEnd = 'report' in given
        ? { ...endOfReport(given.report.result, given.report.stoppedBy, run.cancel_requested_by), finishedAt: given.finishedAt }
        : given;
      const otherQueued = this.prepare(S.RUN_QUEUED_EXISTS).get(run.job, run.platform) !== undefined;
      const jobExists = this.prepare(S.JOB_EXISTS).get(run.job) !== undefined;
      const decision = decideRetry({
        attempt: run.attempt, worker: run.worker, lostRetriesLeft: run.lost_retries_left, failureRetriesLeft: run.failure_retries_left, otherQueued, jobExists,
      }, end);
      if (decision.kind === 'requeue') {
        const last = this.prepare(S.CONSOLE_LAST_SEQ).pluck().get(run.id) as number | null;
        const markerSeq = Math.max(last ?? -1, run.first_seq - 1) + 1;
        this.prepare(S.CONSOLE_INSERT).run(run.id, markerSeq, end.finishedAt, decision.note);
        const note: StoredLine = { seq: markerSeq, ts: end.finishedAt, text: decision.note };
        const front = this.prepare(S.QUEUE_FRONT_POS).pluck().get(run.platform) as number | null;
        this.prepare(S.runRequeue(decision.spend))
          .run(decision.attempt, front ?? 0, markerSeq + 1, run.id);
        if (decision.event === 'requeued') this.event(run.id, end.finishedAt, run.attempt, 'requeued', { why: decision.why, worker: run.worker });
        else this.event(run.id, end.finishedAt, run.attempt, 'retried', { status: end.status, result: end.result, worker: run.worker });
        return { outcome: 'retried', run: this.runRow(run.id), end, note };
      }
      this.finishInTx(run.id, 'running', end);
      return { outcome: 'ended', run: this.runRow(run.id), end };
    });
  }

  requestCancel(id: string, by: string, now: number, deadlineAt: number): Promise<{ run: Run; state: 'cancelled' | 'requested' }> {
    return this.tx(() => {
      const run = this.findRunRow(id);
      const decision = decideCancel(run.status as RunStatus, by);
      if (decision.kind === 'end') {
        this.finishInTx(run.id, 'queued', { status: 'cancelled', result: decision.result, finishedAt: now });
        return { run: this.runRow(run.id), state: 'cancelled' as const };
      }
      if (decision.kind === 'finished') throw new RunFinishedError(run.id, run.status);
      this.prepare(S.RUN_REQUEST_CANCEL).run(by, deadlineAt, deadlineAt, run.id);
      this.event(run.id, now, run.attempt, 'cancel-requested', { by });
      return { run: this.runRow(run.id), state: 'requested' as const };
    });
  }

  async overdueRuns(now: number): Promise<Run[]> {
    return (this.prepare(S.RUNS_OVERDUE).all(now) as RunRow[]).map(toRun);
  }

  async earliestDeadline(after = Number.MIN_SAFE_INTEGER): Promise<number | undefined> {
    const value = this.prepare(S.RUNS_EARLIEST_DEADLINE).pluck().get(after) as number | null;
    return value ?? undefined;
  }

  async recordEvent(runId: string, event: RunEvent): Promise<void> {
    this.event(runId, event.at, event.attempt, event.kind, event.detail);
  }

  async noteRunEvent(runId: string, event: Omit<RunEvent, 'attempt'>): Promise<boolean> {
    return this.prepare(S.EVENT_INSERT_AT_ATTEMPT).run(event.at, event.kind, JSON.stringify(event.detail), runId).changes === 1;
  }

  async listEvents(runId: string): Promise<RunEvent[]> {
    const rows = this.prepare(S.EVENTS_LIST).all(runId) as {
      at: number; attempt: number; kind: string; detail: string;
    }[];
    return rows.map((row) => ({ ...row, detail: JSON.parse(row.detail) }));
  }

  private event(runId: string, at: number, attempt: number, kind: string, detail: Record<string, unknown>): void {
    this.prepare(S.EVENT_INSERT).run(runId, at, attempt, kind, JSON.stringify(detail));
  }

  appendConsole(batches: ConsoleBatch[]): Promise<void> {
    return this.tx(() => {
      for (const batch of batches) this.insertLines(batch.runId, batch.lines);
    });
  }

  /** Stores a run's lines; a line already stored (same seq) is ignored. */
  private insertLines(runId: string, lines: StoredLine[]): void {
    if (lines.length === 0) return;
    const insert = this.prepare(S.CONSOLE_INSERT);
    for (const line of lines) insert.run(runId, line.seq, line.ts, line.text);
  }

  noteQueuedRun(runId: string, text: string, at: number): Promise<StoredLine | undefined> {
    return this.tx(() => {
      const run = this.prepare(S.RUN_QUEUED_FIRST_SEQ).get(runId) as { first_seq: number } | undefined;
      if (!run) return undefined;
      const last = this.prepare(S.CONSOLE_LAST_SEQ).pluck().get(runId) as number | null;
      const seq = Math.max(last ?? -1, run.first_seq - 1) + 1;
      this.prepare(S.CONSOLE_INSERT_NEW).run(runId, seq, at, text);
      this.prepare(S.RUN_SET_FIRST_SEQ).run(seq + 1, runId);
      return { seq, ts: at, text };
    });
  }

  async lastConsoleSeq(runId: string): Promise<number> {
    return (this.prepare(S.CONSOLE_LAST_SEQ).pluck().get(runId) as number | null) ?? -1;
  }

  async readConsole(runId: string, afterSeq = -1, limit = 1_000_000): Promise<StoredLine[]> {
    return this.prepare(S.CONSOLE_READ).all(runId, afterSeq, limit) as StoredLine[];
  }

  async dueJobs(now: number): Promise<Job[]> {
    return (this.prepare(S.JOBS_DUE).all(now) as JobRow[]).map(toJob);
  }

  async earliestNextAt(): Promise<number | undefined> {
    const value = this.prepare(S.JOBS_EARLIEST_NEXT).pluck().get() as number | null;
    return value ?? undefined;
  }

  fireSchedule(
    name: string, expectedNextAt: number, nextAt: number | null, runs: NewRun[], now: number, cancelBackstopMs = 0,
    missed?: { count: number; reason: string },
  ): Promise<FireOutcome> {
    return this.tx((): FireOutcome => {
      const changed = this.prepare(S.JOB_MOVE_NEXT).run(nextAt, name, expectedNextAt).changes;
      if (changed !== 1) return { outcome: 'stale' };
      // Recorded first; a skip of this firing (below) adds one and keeps the catch-up's reason in its own.
      if (missed && missed.count > 0) {
        this.prepare(S.JOB_ADD_SKIPS).run(missed.count, JSON.stringify({ at: now, reason: missed.reason }), name);
      }
      const job = toJob(this.jobRow(name));
      const skip = (reason: string): { outcome: 'skipped'; reason: string } => {
        this.skipInTx(name, now, skipReason(reason, missed));
        return { outcome: 'skipped', reason };
      };
      const open = this.prepare(S.RUNS_OPEN_OF_JOB).all(name) as RunRow[];
      const overlap = decideOverlap(job.overlap, open.map((run) => ({ id: run.id, status: run.status as RunStatus })));
      if (overlap.kind === 'skip') return skip(overlap.reason);
      const cancelled: string[] = [];
      for (const id of overlap.cancelQueued) {
        this.finishInTx(id, 'queued', { status: 'cancelled', result: { kind: 'aborted', reason: SUPERSEDED_REASON }, finishedAt: now });
        cancelled.push(id);
      }
      const cancelRequested: Run[] = [];
      for (const id of overlap.requestCancel) {
        this.prepare(S.RUN_REQUEST_CANCEL).run('the schedule', now + cancelBackstopMs, now + cancelBackstopMs, id);
        const run = this.runRow(id);
        this.event(id, now, run.attempt, 'cancel-requested', { by: 'the schedule', reason: SUPERSEDED_REASON });
        cancelRequested.push(run);
      }
      const dropped = new Set(runs.map((run) => run.platform).filter((platform) => this.isDropped(platform)));
      const platforms = platformsToQueue(runs.map((run) => run.platform), dropped);
      if ('skip' in platforms) return { ...skip(platforms.skip), cancelled };
      const queued = runs.filter((run) => !dropped.has(run.platform)).map((run) => this.enqueueInTx(run, 'back')).filter((q) => q.created).map((q) => q.run);
      if (queued.length === 0) return { ...skip(ALREADY_QUEUED), cancelled };
      return { outcome: 'queued', runs: queued, cancelRequested, cancelled };
    });
  }

  recordSkip(name: string, at: number, reason: string): Promise<void> {
    return this.tx(() => this.skipInTx(name, at, reason));
  }

  private skipInTx(name: string, at: number, reason: string): void {
    this.prepare(S.JOB_ADD_SKIP).run(JSON.stringify({ at, reason }), name);
  }

  dropPlatform(platform: string, now: number): Promise<string[]> {
    return this.tx(() => this.dropInTx(platform, now));
  }

  /** Drops a platform; its queued runs end cancelled (returned). */
  private dropInTx(platform: string, now: number): string[] {
    this.prepare(S.DROPPED_INSERT).run(platform, now);
    const queued = this.prepare(S.RUN_IDS_QUEUED_ON_PLATFORM).pluck().all(platform) as string[];
    for (const id of queued) this.finishInTx(id, 'queued', { status: 'cancelled', result: { kind: 'aborted', reason: 'platform dropped' }, finishedAt: now });
    return queued;
  }

  async undropPlatform(platform: string): Promise<boolean> {
    return this.prepare(S.DROPPED_DELETE).run(platform).changes === 1;
  }

  async listDroppedPlatforms(): Promise<{ platform: string; droppedAt: number }[]> {
    return (this.prepare(S.DROPPED_LIST).all() as { platform: string; dropped_at: number }[])
      .map((row) => ({ platform: row.platform, droppedAt: row.dropped_at }));
  }

  async addArtifact(runId: string, artifact: Artifact): Promise<void> {
    this.prepare(S.ARTIFACT_UPSERT).run(runId, artifact.path, artifact.size, artifact.sha256, artifact.mode);
  }

  async listArtifacts(runId: string): Promise<Artifact[]> {
    return this.prepare(S.ARTIFACTS_LIST).all(runId) as Artifact[];
  }

  async expiredArtifacts(policy: RetentionPolicy): Promise<ExpiredArtifacts[]> {
    if (policy.keepRuns === undefined && policy.keptSince === undefined) return [];
    const rows = this.prepare(S.ARTIFACTS_EXPIRED)
      .all({ keepRuns: policy.keepRuns ?? null, keptSince: policy.keptSince ?? null, target: this.uploadTarget }) as { run_id: string; job: string; finished_at: number; files: number; bytes: number }[];
    return rows.map((row) => ({ runId: row.run_id, job: row.job, finishedAt: row.finished_at, files: row.files, bytes: row.bytes }));
  }

  deleteArtifacts(runIds: string[]): Promise<number> {
    return this.tx(() => {
      const remove = this.prepare(S.ARTIFACTS_DELETE);
      return runIds.reduce((count, id) => count + remove.run(id).changes, 0);
    });
  }

  async unreferencedBlobs(sha256s: string[], ignoringRuns: string[] = []): Promise<string[]> {
    const referenced = this.prepare(S.BLOB_REFERENCED).pluck();
    const ignored = JSON.stringify(ignoringRuns);
    return sha256s.filter((sha) => referenced.get(sha, ignored) === undefined);
  }

  setUploadTarget(target: string | null): void {
    this.uploadTarget = target;
  }

  async nextDeliveryAt(): Promise<number | undefined> {
    return (this.prepare(S.DELIVERIES_NEXT_AT).pluck().get(this.uploadTarget) as number | null) ?? undefined;
  }

  async requeueFailedDelivery(runId: string, at: number): Promise<Delivery | undefined> {
    const row = this.prepare(S.DELIVERY_REQUEUE_FAILED).get({ runId, at, target: this.uploadTarget }) as DeliveryRow | undefined;
    return row && toDelivery(row);
  }

  async listDeliveries(runId: string): Promise<Delivery[]> {
    return (this.prepare(S.DELIVERIES_OF_RUN).all(runId) as DeliveryRow[]).map(toDelivery);
  }

  async outboxSummary(): Promise<OutboxSummary> {
    const counts = Object.fromEntries(
      (this.prepare(S.DELIVERIES_COUNT).all() as { state: string; n: number }[]).map((row) => [row.state, row.n]),
    );
    const oldest = this.prepare(S.DELIVERIES_OLDEST_PENDING).pluck().get() as number | null;
    const troubled = this.prepare(S.DELIVERIES_TROUBLED).all() as DeliveryRow[];
    // A delivery being sent is not delivered yet: it counts as pending.
    return {
      pending: (counts.pending ?? 0) + (counts.sending ?? 0), delivered: counts.delivered ?? 0, failed: counts.failed ?? 0, oldestPendingAt: oldest,
      troubled: troubled.map(toDelivery),
    };
  }

  async setRunScript(id: string, script: string): Promise<void> {
    this.prepare(S.RUN_SET_SCRIPT).run(script, id);
  }

  async recordWorker(worker: WorkerRecord, conn?: WorkerConnection): Promise<boolean> {
    return this.prepare(S.WORKER_CLAIM).run({
      ...worker, labels: JSON.stringify(worker.labels), connected: worker.connected ? 1 : 0,
      serverId: conn?.serverId ?? null, connId: conn?.connId ?? null, dbNow: Date.now(),
    }).changes === 1;
  }

  async workerDisconnected(name: string, now: number, connId?: string): Promise<void> {
    this.prepare(S.WORKER_DISCONNECTED).run({ name, now, connId: connId ?? null });
  }

  async forgetWorker(name: string, connId?: string): Promise<boolean> {
    return this.prepare(S.WORKER_FORGET).run({ name, connId: connId ?? null }).changes === 1;
  }

  async disconnectWorkersOfDeadServers(): Promise<string[]> {
    return this.prepare(S.WORKERS_OF_DEAD_SERVERS).pluck().all({ dbNow: Date.now() }) as string[];
  }

  async runsOfLostWorkers(now: number, graceMs: number): Promise<LostWorkerRun[]> {
    const rows = this.prepare(S.RUNS_LOST_WORKER).all({ now, grace: graceMs }) as { id: string; worker: string | null; attempt: number; last_seen: number | null }[];
    return rows.map((row) => ({ id: row.id, worker: row.worker, attempt: row.attempt, lastSeen: row.last_seen }));
  }

  async nextLossAt(graceMs: number): Promise<number | undefined> {
    return (this.prepare(S.NEXT_LOSS_AT).pluck().get(graceMs) as number | null) ?? undefined;
  }

  async listServers(): Promise<ServerRecord[]> {
    type Row = {
      id: string; url: string; hostname: string; pid: number; version: string; config_digest: string;
      started_at: number; heartbeat_at: number; stopped_at: number | null; alive: number; leases: string;
    };
    return (this.prepare(S.SERVERS_LIST).all({ dbNow: Date.now() }) as Row[]).map((row) => ({
      id: row.id, url: row.url, hostname: row.hostname, pid: row.pid, version: row.version, configDigest: row.config_digest,
      startedAt: row.started_at, heartbeatAt: row.heartbeat_at, stoppedAt: row.stopped_at, alive: row.alive === 1, leases: JSON.parse(row.leases),
    }));
  }

  async farmSecret(name: string, proposed: string, now: number): Promise<string> {
    return this.tx(() => {
      this.prepare(S.FARM_SECRET_INSERT).run(name, proposed, now);
      return this.prepare(S.FARM_SECRET_GET).pluck().get(name) as string;
    });
  }

  async poolState(pool: string): Promise<PoolState> {
    const row = this.prepare(S.POOL_STATE_GET).get(pool) as { failures: number; quarantines: number; quarantined_until: number; last_error: string | null } | undefined;
    return row
      ? { failures: row.failures, quarantines: row.quarantines, quarantinedUntil: row.quarantined_until, lastError: row.last_error }
      : { failures: 0, quarantines: 0, quarantinedUntil: 0, lastError: null };
  }

  async savePoolState(pool: string, state: PoolState): Promise<void> {
    this.prepare(S.POOL_STATE_UPSERT).run({ pool, ...state });
  }

  async addPoolInstance(instance: PoolInstanceRecord): Promise<void> {
    this.prepare(S.POOL_INSTANCE_INSERT).run({ ...instance, handle: JSON.stringify(instance.handle ?? null), adopted: instance.adopted ? 1 : 0 });
  }

  async updatePoolInstance(id: string, change: { state: string; handle?: unknown; adopted?: boolean }): Promise<void> {
    this.prepare(S.POOL_INSTANCE_UPDATE).run({
      id, state: change.state, handle: change.handle === undefined ? null : JSON.stringify(change.handle),
      adopted: change.adopted === undefined ? null : change.adopted ? 1 : 0,
    });
  }

  async removePoolInstance(id: string): Promise<void> {
    this.prepare(S.POOL_INSTANCE_DELETE).run(id);
  }

  async listPoolInstances(pool?: string): Promise<PoolInstanceRecord[]> {
    return (this.prepare(S.POOL_INSTANCES_LIST).all({ pool: pool ?? null }) as PoolInstanceRow[]).map(toPoolInstance);
  }

  async poolInstanceByToken(sha256: string): Promise<PoolInstanceRecord | undefined> {
    const row = this.prepare(S.POOL_INSTANCE_BY_TOKEN).get(sha256) as PoolInstanceRow | undefined;
    return row && toPoolInstance(row);
  }

  touchBlob(sha256: string, size: number, now: number): Promise<boolean> {
    // One transaction: another process on this database cannot forget or insert the row in between.
    return this.tx(() => {
      const existed = this.prepare(S.BLOB_EXISTS).get(sha256) !== undefined;
      this.prepare(S.BLOB_TOUCH).run(sha256, size, now);
      return !existed;
    });
  }

  async staleBlobs(before: number, limit: number): Promise<string[]> {
    return this.prepare(S.BLOBS_STALE).pluck().all(before, limit) as string[];
  }

  async forgetBlob(sha256: string, before: number): Promise<boolean> {
    return this.prepare(S.BLOB_FORGET).run(sha256, before).changes === 1;
  }

  async claimDeliveries(now: number, limit: number, epoch: number): Promise<Delivery[]> {
    const rows = this.prepare(S.DELIVERY_CLAIM).all({ target: this.uploadTarget, now, limit, epoch }) as DeliveryRow[];
    return rows.map(toDelivery).sort((a, b) => a.nextAt - b.nextAt || a.id - b.id);
  }

  async recordClaimedDeliveryAttempt(
    id: number,
    epoch: number,
    outcome: { state: Delivery['state']; nextAt: number; error: string | null; at: number },
  ): Promise<boolean> {
    const endedAt = outcome.state === 'pending' || outcome.state === 'sending' ? null : outcome.at;
    return this.prepare(S.DELIVERY_RECORD_CLAIMED).run({ id, epoch, state: outcome.state, nextAt: outcome.nextAt, error: outcome.error, endedAt }).changes === 1;
  }

  async listWorkers(): Promise<WorkerRecord[]> {
    return (this.prepare(S.WORKERS_LIST).all() as WorkerRow[]).map(toWorker);
  }

  async createWorkerToken(name: string, sha256: string, now: number): Promise<WorkerTokenRecord> {
    return this.tx(() => {
      if (this.prepare(S.WORKER_TOKEN_EXISTS).get(name)) throw new WorkerTokenExistsError(name);
      this.prepare(S.WORKER_TOKEN_INSERT).run(name, sha256, now);
      return { name, createdAt: now, lastUsedAt: null };
    });
  }

  async listWorkerTokens(): Promise<WorkerTokenRecord[]> {
    return (this.prepare(S.WORKER_TOKENS_LIST).all() as WorkerTokenRow[]).map(toWorkerToken);
  }

  async getWorkerToken(name: string): Promise<WorkerTokenRecord | undefined> {
    const row = this.prepare(S.WORKER_TOKEN_GET).get(name) as WorkerTokenRow | undefined;
    return row && toWorkerToken(row);
  }

  async findWorkerToken(sha256: string): Promise<string | undefined> {
    return this.prepare(S.WORKER_TOKEN_FIND).pluck().get(sha256) as string | undefined;
  }

  async touchWorkerToken(name: string, now: number): Promise<void> {
    this.prepare(S.WORKER_TOKEN_TOUCH).run(now, name);
  }

  async revokeWorkerToken(name: string): Promise<boolean> {
    return this.prepare(S.WORKER_TOKEN_DELETE).run(name).changes > 0;
  }

  async createToken(token: { name: string; role: Role; sha256: string; createdAt: number; expiresAt: number | null }): Promise<TokenRecord> {
    const { name, role, sha256, createdAt, expiresAt } = token;
    return this.tx(() => {
      // Names are unique whatever their case: a live `alice` refuses `Alice`; a revoked one gives way.
      const variant = this.prepare(S.TOKEN_LIVE_VARIANT).pluck().get(name, name) as string | undefined;
      if (variant !== undefined) throw new TokenExistsError(variant);
      this.prepare(S.TOKEN_DELETE_REVOKED_VARIANTS).run(name, name);
      if (this.prepare(S.TOKEN_UPSERT).run(name, role, sha256, createdAt, expiresAt).changes !== 1) throw new TokenExistsError(name);
      // A revoked token's sessions were ended with it; none can be left for the new one to inherit.
      this.prepare(S.SESSIONS_DELETE_OF_TOKEN).run(name);
      return { name, role, createdAt, expiresAt, lastUsedAt: null, revokedAt: null };
    });
  }

  async listTokens(): Promise<TokenRecord[]> {
    return (this.prepare(S.TOKENS_LIST).all() as TokenRow[]).map(toToken);
  }

  async findToken(sha256: string): Promise<TokenRecord | undefined> {
    const row = this.prepare(S.TOKEN_FIND).get(sha256) as TokenRow | undefined;
    return row && toToken(row);
  }

  async touchToken(name: string, now: number): Promise<void> {
    this.prepare(S.TOKEN_TOUCH).run(now, name);
  }

  async revokeToken(name: string, now: number): Promise<number | undefined> {
    return this.tx(() => {
      if (this.prepare(S.TOKEN_REVOKE).run(now, name).changes !== 1) return undefined;
      return this.prepare(S.SESSIONS_DELETE_OF_TOKEN).run(name).changes;
    });
  }

  async createSession(sha256: string, session: SessionRecord): Promise<void> {
    await this.tx(() => {
      this.prepare(S.SESSIONS_DELETE_EXPIRED).run(session.createdAt);
      this.prepare(S.SESSION_INSERT).run(sha256, session.tokenName, session.role, session.createdAt, session.expiresAt, session.tokenSha256);
    });
  }

  async findSession(sha256: string, current: CurrentTokens): Promise<SessionRecord | undefined> {
    const row = this.prepare(S.SESSION_FIND_CURRENT).get(sha256, current.now, current.adminSha256, current.now) as SessionRow | undefined;
    return row && { tokenName: row.token_name, role: row.role, tokenSha256: row.token_sha256, createdAt: row.created_at, expiresAt: row.expires_at };
  }

  async deleteSession(sha256: string): Promise<boolean> {
    return this.prepare(S.SESSION_DELETE).run(sha256).changes > 0;
  }

  private jobRow(name: string): JobRow {
    const row = this.prepare(S.JOB_GET).get(name) as JobRow | undefined;
    if (!row) throw new JobNotFoundError(name);
    return row;
  }

  private runRow(id: string): Run {
    return toRun(this.prepare(S.RUN_GET).get(id) as RunRow);
  }
}

