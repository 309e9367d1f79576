/**
 * The embedded store: SQLite through better-sqlite3, in WAL mode. better-sqlite3 is synchronous;
 * each method runs one statement or one `BEGIN IMMEDIATE` transaction and resolves after commit,
 * which keeps the JobStore contract asynchronous for the PostgreSQL store.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { labelsMatch, type RunResult, type RunStatus } from '../../core/index.js';
import { JobExistsError, JobNotFoundError, RunAmbiguousError, RunNotFoundError } from '../../errors.js';
import type {
  ConsoleBatch, Job, JobPatch, JobStore, NewRun, Run, RunEnd, RunFilter, StoredLine, WorkerRecord,
} from '../job-store.js';
import { migrate } from './migrate.js';

interface JobRow {
  name: string; platform: string; script: string; env: string; labels: string; period: string;
  timeout_ms: number; next_at: number | null; created_at: number; updated_at: number;
}
interface RunRow {
  id: string; job: string; platform: string; labels: string; status: string; attempt: number;
  worker: string | null; queued_at: number; started_at: number | null; finished_at: number | null;
  result: string | null; script: string | null; env: string; timeout_ms: number | null;
}
interface WorkerRow {
  name: string; platform: string; labels: string; capacity: number; hostname: string; os: string;
  arch: string; version: string; connected: number; connected_at: number; last_seen: number;
}

const RUN_COLUMNS = 'id, job, platform, labels, status, attempt, worker, queued_at, started_at, finished_at, result, script, env, timeout_ms';

function toJob(row: JobRow): Job {
  return {
    name: row.name, platform: row.platform, script: row.script,
    env: JSON.parse(row.env), labels: JSON.parse(row.labels), period: row.period as Job['period'],
    timeoutMs: row.timeout_ms, nextAt: row.next_at, createdAt: row.created_at, updatedAt: row.updated_at,
  };
}

function toRun(row: RunRow): Run {
  return {
    id: row.id, job: row.job, platform: row.platform, labels: JSON.parse(row.labels),
    status: row.status as RunStatus, attempt: row.attempt, worker: row.worker,
    queuedAt: row.queued_at, startedAt: row.started_at, finishedAt: row.finished_at,
    result: row.result === null ? null : (JSON.parse(row.result) as RunResult),
    script: row.script, env: JSON.parse(row.env), timeoutMs: row.timeout_ms,
  };
}

function toWorker(row: WorkerRow): WorkerRecord {
  return {
    name: row.name, platform: row.platform, labels: JSON.parse(row.labels), capacity: row.capacity,
    hostname: row.hostname, os: row.os, arch: row.arch, version: row.version,
    connected: row.connected === 1, connectedAt: row.connected_at, lastSeen: row.last_seen,
  };
}

/** Opens (creating and migrating if needed) the SQLite store at `file`. */
export function openSqliteStore(file: string): JobStore {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  // NORMAL is durable across process crashes in WAL mode; FULL also survives power loss.
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  return new SqliteStore(db);
}

class SqliteStore implements JobStore {
  constructor(private readonly db: Database.Database) {}

  /** Runs `fn` in a BEGIN IMMEDIATE transaction; resolves after COMMIT, rejects (never throws) on error. */
  private async tx<T>(fn: () => T): Promise<T> {
    return this.db.transaction(fn).immediate();
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  createJob(job: Job, firstRun?: NewRun): Promise<Run | undefined> {
    return this.tx(() => {
      const exists = this.db.prepare('SELECT 1 FROM jobs WHERE name = ?').get(job.name);
      if (exists) throw new JobExistsError(job.name);
      this.db
        .prepare(`INSERT INTO jobs (name, platform, script, env, labels, period, timeout_ms, next_at, created_at, updated_at)
                  VALUES (@name, @platform, @script, @env, @labels, @period, @timeoutMs, @nextAt, @createdAt, @updatedAt)`)
        .run({ ...job, env: JSON.stringify(job.env), labels: JSON.stringify(job.labels) });
      return firstRun ? this.enqueueInTx(firstRun, 'back').run : undefined;
    });
  }

  updateJob(name: string, patch: JobPatch, now: number): Promise<Job> {
    return this.tx(() => {
      const current = this.jobRow(name);
      // A key present with the value undefined means "unchanged", as an absent key does.
      const given = Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined));
      const next: Job = { ...toJob(current), ...given, updatedAt: now };
      this.db
        .prepare(`UPDATE jobs SET platform = @platform, script = @script, env = @env, labels = @labels, period = @period,
                  timeout_ms = @timeoutMs, next_at = @nextAt, updated_at = @updatedAt WHERE name = @name`)
        .run({ ...next, env: JSON.stringify(next.env), labels: JSON.stringify(next.labels) });
      return next;
    });
  }

  deleteJob(name: string, now: number): Promise<string[]> {
    return this.tx(() => {
      this.jobRow(name);
      const queued = this.db.prepare("SELECT id FROM runs WHERE job = ? AND status = 'queued'").pluck().all(name) as string[];
      const result: RunResult = { kind: 'aborted', reason: 'job unscheduled' };
      this.db
        .prepare("UPDATE runs SET status = 'cancelled', queue_pos = NULL, finished_at = ?, result = ? WHERE job = ? AND status = 'queued'")
        .run(now, JSON.stringify(result), name);
      this.db.prepare('DELETE FROM jobs WHERE name = ?').run(name);
      return queued;
    });
  }

  async getJob(name: string): Promise<Job | undefined> {
    const row = this.db.prepare('SELECT * FROM jobs WHERE name = ?').get(name) as JobRow | undefined;
    return row && toJob(row);
  }

  async listJobs(): Promise<Job[]> {
    return (this.db.prepare('SELECT * FROM jobs ORDER BY name').all() as JobRow[]).map(toJob);
  }

  enqueue(run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }> {
    return this.tx(() => {
      this.jobRow(run.job);
      return this.enqueueInTx(run, position);
    });
  }

  private enqueueInTx(run: NewRun, position: 'back' | 'front'): { run: Run; created: boolean } {
    const bound = this.db
      .prepare(`SELECT ${position === 'front' ? 'MIN(queue_pos) - 1' : 'MAX(queue_pos) + 1'} FROM runs WHERE status = 'queued' AND platform = ?`)
      .pluck()
      .get(run.platform) as number | null;
    const pos = bound ?? 0;
    const existing = this.db
      .prepare(`SELECT ${RUN_COLUMNS} FROM runs WHERE job = ? AND platform = ? AND status = 'queued'`)
      .get(run.job, run.platform) as RunRow | undefined;
    if (existing) {
      if (position === 'front') this.db.prepare('UPDATE runs SET queue_pos = ? WHERE id = ?').run(pos, existing.id);
      return { run: toRun(existing), created: false };
    }
    this.db
      .prepare(`INSERT INTO runs (id, job, platform, labels, status, queue_pos, queued_at)
                VALUES (?, ?, ?, ?, 'queued', ?, ?)`)
      .run(run.id, run.job, run.platform, JSON.stringify(run.labels), pos, run.queuedAt);
    return { run: this.runRow(run.id), created: true };
  }

  claimNext(worker: { name: string; platform: string; labels: Record<string, string> }, now: number): Promise<Run | undefined> {
    return this.tx(() => {
      const candidates = this.db
        .prepare("SELECT id, job, labels FROM runs WHERE status = 'queued' AND platform = ? ORDER BY queue_pos")
        .all(worker.platform) as { id: string; job: string; labels: string }[];
      const pick = candidates.find((c) => labelsMatch(JSON.parse(c.labels), worker.labels));
      if (!pick) return undefined;
      const job = this.jobRow(pick.job);
      this.db
        .prepare(`UPDATE runs SET status = 'running', queue_pos = NULL, worker = ?, started_at = ?, script = ?, env = ?, timeout_ms = ?
                  WHERE id = ? AND status = 'queued'`)
        .run(worker.name, now, job.script, job.env, job.timeout_ms, pick.id);
      return this.runRow(pick.id);
    });
  }

  async listQueued(): Promise<Run[]> {
    return (this.db.prepare(`SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY platform, queue_pos`).all() as RunRow[]).map(toRun);
  }

  async listRunning(): Promise<Run[]> {
    return (this.db.prepare(`SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY started_at`).all() as RunRow[]).map(toRun);
  }

  async findRun(idOrPrefix: string): Promise<Run> {
    // Prefix match by range, so the index is used and LIKE wildcards in the input mean nothing.
    const rows = this.db
      .prepare(`SELECT ${RUN_COLUMNS} FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2`)
      .all(idOrPrefix, idOrPrefix + '\u{10FFFF}') as RunRow[];
    const exact = rows.find((r) => r.id === idOrPrefix);
    if (exact) return toRun(exact);
    if (rows.length === 0 || idOrPrefix === '') throw new RunNotFoundError(idOrPrefix);
    if (rows.length > 1) throw new RunAmbiguousError(idOrPrefix);
    return toRun(rows[0]!);
  }

  async listRuns(filter: RunFilter): Promise<Run[]> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (filter.job !== undefined) { where.push('job = ?'); params.push(filter.job); }
    if (filter.status !== undefined) { where.push('status = ?'); params.push(filter.status); }
    if (filter.platform !== undefined) { where.push('platform = ?'); params.push(filter.platform); }
    const sql = `SELECT ${RUN_COLUMNS} FROM runs ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
                 ORDER BY queued_at DESC, id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...params, filter.limit) as RunRow[]).map(toRun);
  }

  finishRun(id: string, end: RunEnd, guard: { from: RunStatus[]; worker?: string }): Promise<boolean> {
    return this.tx(() => {
      const row = this.db.prepare('SELECT status, worker FROM runs WHERE id = ?').get(id) as { status: string; worker: string | null } | undefined;
      if (!row || !guard.from.includes(row.status as RunStatus)) return false;
      if (guard.worker !== undefined && row.worker !== guard.worker) return false;
      const changed = this.db
        .prepare('UPDATE runs SET status = ?, result = ?, finished_at = ?, queue_pos = NULL WHERE id = ? AND status = ?')
        .run(end.status, JSON.stringify(end.result), end.finishedAt, id, row.status).changes;
      return changed === 1;
    });
  }

  appendConsole(batches: ConsoleBatch[]): Promise<void> {
    const insert = this.db.prepare('INSERT INTO console_lines (run_id, seq, ts, text) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING');
    return this.tx(() => {
      for (const batch of batches) for (const line of batch.lines) insert.run(batch.runId, line.seq, line.ts, line.text);
    });
  }

  async readConsole(runId: string, afterSeq = -1, limit = 1_000_000): Promise<StoredLine[]> {
    return this.db
      .prepare('SELECT seq, ts, text FROM console_lines WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?')
      .all(runId, afterSeq, limit) as StoredLine[];
  }

  async dueJobs(now: number): Promise<Job[]> {
    return (this.db.prepare('SELECT * FROM jobs WHERE next_at IS NOT NULL AND next_at <= ? ORDER BY next_at').all(now) as JobRow[]).map(toJob);
  }

  async earliestNextAt(): Promise<number | undefined> {
    const value = this.db.prepare('SELECT MIN(next_at) FROM jobs WHERE next_at IS NOT NULL').pluck().get() as number | null;
    return value ?? undefined;
  }

  fireSchedule(name: string, expectedNextAt: number, nextAt: number | null, run: NewRun): Promise<boolean> {
    return this.tx(() => {
      const changed = this.db
        .prepare('UPDATE jobs SET next_at = ? WHERE name = ? AND next_at = ?')
        .run(nextAt, name, expectedNextAt).changes;
      if (changed !== 1) return false;
      this.enqueueInTx(run, 'back');
      return true;
    });
  }

  async recordWorker(worker: WorkerRecord): Promise<void> {
    this.db
      .prepare(`INSERT INTO workers (name, platform, labels, capacity, hostname, os, arch, version, connected, connected_at, last_seen)
                VALUES (@name, @platform, @labels, @capacity, @hostname, @os, @arch, @version, @connected, @connectedAt, @lastSeen)
                ON CONFLICT (name) DO UPDATE SET platform = excluded.platform, labels = excluded.labels, capacity = excluded.capacity,
                  hostname = excluded.hostname, os = excluded.os, arch = excluded.arch, version = excluded.version,
                  connected = excluded.connected, connected_at = excluded.connected_at, last_seen = excluded.last_seen`)
      .run({ ...worker, labels: JSON.stringify(worker.labels), connected: worker.connected ? 1 : 0 });
  }

  async workerDisconnected(name: string, now: number): Promise<void> {
    this.db.prepare('UPDATE workers SET connected = 0, last_seen = ? WHERE name = ?').run(now, name);
  }

  async listWorkers(): Promise<WorkerRecord[]> {
    return (this.db.prepare('SELECT * FROM workers ORDER BY connected DESC, name').all() as WorkerRow[]).map(toWorker);
  }

  private jobRow(name: string): JobRow {
    const row = this.db.prepare('SELECT * FROM jobs WHERE name = ?').get(name) as JobRow | undefined;
    if (!row) throw new JobNotFoundError(name);
    return row;
  }

  private runRow(id: string): Run {
    return toRun(this.db.prepare(`SELECT ${RUN_COLUMNS} FROM runs WHERE id = ?`).get(id) as RunRow);
  }
}
