/**
 * Every SQL statement of the SQLite store, one per operation, each with its parameters in its
 * header (`?` by position, `@name` by name); names follow the PostgreSQL store's statements.ts
 * where the operation is the same. The store compiles each once per database and reuses it. Only
 * column lists and fixed clauses are built into the text, never values.
 */

import { SERVER_TTL_MS } from '../cluster-constants.js';

/** The columns a Run is read from. */
export const RUN_COLUMNS = `id, job, platform, labels, status, attempt, worker, worker_identity, worker_session, queued_at, started_at, finished_at, result, script, env,
  timeout_ms, idle_timeout_ms, lost_retries_left, failure_retries_left, first_seq, cancel_requested_by, deadline_at,
  artifacts, artifacts_on_failure, sandbox`;

// ---- jobs

/** Adds a job. @name, @platform, @script, @template, @vars, @env, @labels, @schedule, @paused, @overlap, @catchUp, @skipped, @lastSkip,
 * @timeoutMs, @idleTimeoutMs, @retries, @failureRetries, @artifacts, @artifactsOnFailure, @sandbox, @nextAt, @createdAt, @updatedAt */
export const JOB_INSERT = `INSERT INTO jobs (name, platform, script, template, vars, env, labels, schedule, paused, overlap, catch_up, skipped, last_skip,
    timeout_ms, idle_timeout_ms, retries, failure_retries, artifacts, artifacts_on_failure, sandbox, next_at, created_at, updated_at)
  VALUES (@name, @platform, @script, @template, @vars, @env, @labels, @schedule, @paused, @overlap, @catchUp, @skipped, @lastSkip,
    @timeoutMs, @idleTimeoutMs, @retries, @failureRetries, @artifacts, @artifactsOnFailure, @sandbox, @nextAt, @createdAt, @updatedAt)`;

/** Rewrites a job's changeable fields. @name, @platform, @script, @template, @vars, @env, @labels, @schedule, @paused, @overlap, @catchUp,
 * @timeoutMs, @idleTimeoutMs, @retries, @failureRetries, @artifacts, @artifactsOnFailure, @sandbox, @nextAt, @updatedAt */
export const JOB_UPDATE = `UPDATE jobs SET platform = @platform, script = @script, template = @template, vars = @vars, env = @env, labels = @labels,
    schedule = @schedule, paused = @paused, overlap = @overlap, catch_up = @catchUp,
    timeout_ms = @timeoutMs, idle_timeout_ms = @idleTimeoutMs, retries = @retries, failure_retries = @failureRetries,
    artifacts = @artifacts, artifacts_on_failure = @artifactsOnFailure, sandbox = @sandbox,
    next_at = @nextAt, updated_at = @updatedAt WHERE name = @name`;

/** Whether a job exists. ?1 name */
export const JOB_EXISTS = 'SELECT 1 FROM jobs WHERE name = ?';

/** A job. ?1 name */
export const JOB_GET = 'SELECT * FROM jobs WHERE name = ?';

/** Every job, by name. (no parameters) */
export const JOB_LIST = 'SELECT * FROM jobs ORDER BY name';

/** Removes a job. ?1 name */
export const JOB_DELETE = 'DELETE FROM jobs WHERE name = ?';

/** Unpaused jobs due at or before a time. ?1 now */
export const JOBS_DUE = 'SELECT * FROM jobs WHERE next_at IS NOT NULL AND next_at <= ? AND paused = 0 ORDER BY next_at';

/** The earliest next time of an unpaused job (null: none). (no parameters) */
export const JOBS_EARLIEST_NEXT = 'SELECT MIN(next_at) FROM jobs WHERE next_at IS NOT NULL AND paused = 0';

/** Moves a job's next time if it still is the one expected (guarded). ?1 new next_at (or null), ?2 name, ?3 expected next_at */
export const JOB_MOVE_NEXT = 'UPDATE jobs SET next_at = ? WHERE name = ? AND next_at = ?';

/** Records due times that queued nothing. ?1 how many, ?2 last_skip ({at, reason}), ?3 name */
export const JOB_ADD_SKIPS = 'UPDATE jobs SET skipped = skipped + ?, last_skip = ? WHERE name = ?';

/** Records one due time that queued nothing. ?1 last_skip ({at, reason}), ?2 name */
export const JOB_ADD_SKIP = 'UPDATE jobs SET skipped = skipped + 1, last_skip = ? WHERE name = ?';

// ---- runs: queue

/** The position before the front of a platform's queue (null: empty queue). ?1 platform */
export const QUEUE_FRONT_POS = "SELECT MIN(queue_pos) - 1 FROM runs WHERE status = 'queued' AND platform = ?";

/** The position after the back of a platform's queue (null: empty queue). ?1 platform */
export const QUEUE_BACK_POS = "SELECT MAX(queue_pos) + 1 FROM runs WHERE status = 'queued' AND platform = ?";

/** Queues a run; its retry budgets are given from its job. ?1 id, ?2 job, ?3 platform, ?4 labels, ?5 queue_pos, ?6 queued_at,
 * ?7 lost_retries_left, ?8 failure_retries_left */
export const RUN_INSERT_QUEUED = `INSERT INTO runs (id, job, platform, labels, status, queue_pos, queued_at, lost_retries_left, failure_retries_left)
  VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)`;

/** The queued run of a job on a platform, if any. ?1 job, ?2 platform */
export const RUN_QUEUED_OF_JOB = `SELECT ${RUN_COLUMNS} FROM runs WHERE job = ? AND platform = ? AND status = 'queued'`;

/** Moves a run in its queue. ?1 queue_pos, ?2 id */
export const RUN_SET_QUEUE_POS = 'UPDATE runs SET queue_pos = ? WHERE id = ?';

/** A page of a platform's queue, in order, after a position. ?1 platform, ?2 after queue_pos */
export const CLAIM_CANDIDATES = "SELECT id, job, labels, queue_pos FROM runs WHERE status = 'queued' AND platform = ? AND queue_pos > ? ORDER BY queue_pos LIMIT 64";

/** Marks a queued run running on a worker with what it executes (from its job). ?1 worker, ?2 worker_identity, ?3 worker_session,
 * ?4 started_at, ?5 script, ?6 env, ?7 timeout_ms, ?8 idle_timeout_ms, ?9 deadline_at, ?10 artifacts, ?11 artifacts_on_failure, ?12 sandbox, ?13 id */
export const CLAIM_START = `UPDATE runs SET status = 'running', queue_pos = NULL, worker = ?, worker_identity = ?, worker_session = ?, started_at = ?, script = ?, env = ?, timeout_ms = ?,
    idle_timeout_ms = ?, deadline_at = ?, artifacts = ?, artifacts_on_failure = ?, sandbox = ?
  WHERE id = ? AND status = 'queued'`;

/** Queued runs, per platform in queue order. (no parameters) */
export const RUNS_QUEUED = `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY platform, queue_pos`;

/** The same, light. (no parameters) */
export const RUNS_WAITING = "SELECT id, job, platform, labels FROM runs WHERE status = 'queued' ORDER BY platform, queue_pos";

/** Running runs, oldest first. (no parameters) */
export const RUNS_RUNNING = `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY started_at`;

/** Running runs of one worker, oldest first. ?1 worker */
export const RUNS_RUNNING_OF_WORKER = `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' AND worker = ? ORDER BY started_at`;

/** Ids of a job's queued runs. ?1 job */
export const RUN_IDS_QUEUED_OF_JOB = "SELECT id FROM runs WHERE job = ? AND status = 'queued'";

/** Ids of a platform's queued runs. ?1 platform */
export const RUN_IDS_QUEUED_ON_PLATFORM = "SELECT id FROM runs WHERE platform = ? AND status = 'queued'";

/** Cancels a job's queued runs. ?1 finished_at, ?2 result, ?3 job */
export const RUNS_CANCEL_QUEUED_OF_JOB = "UPDATE runs SET status = 'cancelled', queue_pos = NULL, finished_at = ?, result = ? WHERE job = ? AND status = 'queued'";

/** Whether a job has a queued run on a platform. ?1 job, ?2 platform */
export const RUN_QUEUED_EXISTS = "SELECT 1 FROM runs WHERE job = ? AND platform = ? AND status = 'queued'";

/** A job's queued and running runs, oldest first. ?1 job */
export const RUNS_OPEN_OF_JOB = `SELECT ${RUN_COLUMNS} FROM runs WHERE job = ? AND status IN ('queued', 'running') ORDER BY queued_at`;

// ---- runs: one run

/** A run by id. ?1 id */
export const RUN_GET = `SELECT ${RUN_COLUMNS} FROM runs WHERE id = ?`;

/** A run's status and worker. ?1 id */
export const RUN_STATUS = 'SELECT status, worker FROM runs WHERE id = ?';

/** A run's first seq, if it is queued. ?1 id */
export const RUN_QUEUED_FIRST_SEQ = "SELECT first_seq FROM runs WHERE id = ? AND status = 'queued'";

/** Up to two runs whose ids fall in a range (a prefix and the prefix followed by U+10FFFF), by id. ?1 from, ?2 below */
export const RUNS_BY_PREFIX = `SELECT ${RUN_COLUMNS} FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2`;

/** Runs, newest first, filtered by what is given (one fixed text per combination). ?s: job, status, platform, worker (only those given), then limit */
export function runsList(filter: { job?: string; status?: string; platform?: string; worker?: string }): string {
  const where: string[] = [];
  if (filter.job !== undefined) where.push('job = ?');
  if (filter.status !== undefined) where.push('status = ?');
  if (filter.platform !== undefined) where.push('platform = ?');
  if (filter.worker !== undefined) where.push('worker = ?');
  return `SELECT ${RUN_COLUMNS} FROM runs ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
  ORDER BY queued_at DESC, id DESC LIMIT ?`;
}

/**
 * The last run (as listRuns orders: newest queued_at, then id) of each job that exists, one row per job
 * with a run; each job's run is found through runs_by_job, not by reading every run. (no parameters)
 */
export const RUNS_LAST_PER_JOB = `SELECT ${RUN_COLUMNS} FROM runs WHERE id IN (
  SELECT (SELECT r.id FROM runs r WHERE r.job = j.name ORDER BY r.queued_at DESC, r.id DESC LIMIT 1) FROM jobs j)`;

/** Running runs whose deadline has passed. ?1 now */
export const RUNS_OVERDUE = `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' AND deadline_at <= ? ORDER BY deadline_at`;

/** The earliest deadline of a running run after ?1 (null: none). */
export const RUNS_EARLIEST_DEADLINE = "SELECT MIN(deadline_at) FROM runs WHERE status = 'running' AND deadline_at > ?";

/** Ends a run still in the status expected. ?1 status, ?2 result, ?3 finished_at, ?4 id, ?5 expected status */
export const RUN_FINISH = 'UPDATE runs SET status = ?, result = ?, finished_at = ?, queue_pos = NULL, deadline_at = NULL WHERE id = ? AND status = ?';

/**
 * Puts a running run back in its queue as its next attempt (or the same one), spending the retry budget named (a fixed
 * column, or none). ?1 attempt, ?2 queue_pos, ?3 first_seq, ?4 id
 */
export function runRequeue(spend: 'lost' | 'failure' | undefined): string {
  const column = spend === 'lost' ? ', lost_retries_left = lost_retries_left - 1' : spend === 'failure' ? ', failure_retries_left = failure_retries_left - 1' : '';
  return `UPDATE runs SET status = 'queued', attempt = ?${column}, worker = NULL, worker_identity = NULL, worker_session = NULL, started_at = NULL, queue_pos = ?,
    first_seq = ?, cancel_requested_by = NULL, deadline_at = NULL
  WHERE id = ? AND status = 'running'`;
}

/** Marks a run for cancelling (the first asker is kept) and brings its deadline no later than given. ?1 by, ?2 deadline, ?3 deadline, ?4 id */
export const RUN_REQUEST_CANCEL = 'UPDATE runs SET cancel_requested_by = COALESCE(cancel_requested_by, ?), deadline_at = MIN(COALESCE(deadline_at, ?), ?) WHERE id = ?';

/** Saves the script a run executes. ?1 script, ?2 id */
export const RUN_SET_SCRIPT = 'UPDATE runs SET script = ? WHERE id = ?';

/** Moves the seq a queued run's attempt starts at. ?1 first_seq, ?2 id */
export const RUN_SET_FIRST_SEQ = 'UPDATE runs SET first_seq = ? WHERE id = ?';

// ---- run events and console

/** Adds to a run's history. ?1 run_id, ?2 at, ?3 attempt, ?4 kind, ?5 detail */
export const EVENT_INSERT = 'INSERT INTO run_events (run_id, at, attempt, kind, detail) VALUES (?, ?, ?, ?, ?)';

/** Adds to a run's history, stamped with its current attempt; nothing when there is no such run. ?1 at, ?2 kind, ?3 detail, ?4 run id */
export const EVENT_INSERT_AT_ATTEMPT = 'INSERT INTO run_events (run_id, at, attempt, kind, detail) SELECT id, ?, attempt, ?, ? FROM runs WHERE id = ?';

/** A run's history, oldest first. ?1 run_id */
export const EVENTS_LIST = 'SELECT at, attempt, kind, detail FROM run_events WHERE run_id = ? ORDER BY id';

/** The seq of a run's last line (null: none). ?1 run_id */
export const CONSOLE_LAST_SEQ = 'SELECT MAX(seq) FROM console_lines WHERE run_id = ?';

/** Adds one line unless its seq is taken. ?1 run_id, ?2 seq, ?3 ts, ?4 text */
export const CONSOLE_INSERT = 'INSERT INTO console_lines (run_id, seq, ts, text) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING';

/** Adds one line (its seq must be free). ?1 run_id, ?2 seq, ?3 ts, ?4 text */
export const CONSOLE_INSERT_NEW = 'INSERT INTO console_lines (run_id, seq, ts, text) VALUES (?, ?, ?, ?)';

/** A run's lines after a seq, in order. ?1 run_id, ?2 after seq, ?3 limit */
export const CONSOLE_READ = 'SELECT seq, ts, text FROM console_lines WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?';

// ---- dropped platforms

/** Whether a platform is dropped. ?1 platform */
export const DROPPED_GET = 'SELECT 1 FROM dropped_platforms WHERE platform = ?';

/** Drops a platform (again: no change). ?1 platform, ?2 dropped_at */
export const DROPPED_INSERT = 'INSERT INTO dropped_platforms (platform, dropped_at) VALUES (?, ?) ON CONFLICT DO NOTHING';

/** Lifts a drop. ?1 platform */
export const DROPPED_DELETE = 'DELETE FROM dropped_platforms WHERE platform = ?';

/** Dropped platforms, by name. (no parameters) */
export const DROPPED_LIST = 'SELECT platform, dropped_at FROM dropped_platforms ORDER BY platform';

// ---- artifacts

/** Records (or replaces) an artifact. ?1 run_id, ?2 path, ?3 size, ?4 sha256, ?5 mode */
export const ARTIFACT_UPSERT = `INSERT INTO artifacts (run_id, path, size, sha256, mode) VALUES (?, ?, ?, ?, ?)
  ON CONFLICT (run_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, mode = excluded.mode`;

/** A run's artifacts, by path. ?1 run_id */
export const ARTIFACTS_LIST = 'SELECT path, size, sha256, mode FROM artifacts WHERE run_id = ? ORDER BY path';

/** Ended runs whose artifacts retention lets go, oldest first. @keepRuns (null: any number), @keptSince (null: any age),
 * @target the current upload target (its pending deliveries pin their runs) */
export const ARTIFACTS_EXPIRED = `WITH per_run AS (
    SELECT a.run_id, r.job, r.finished_at, COUNT(*) AS files, SUM(a.size) AS bytes
    FROM artifacts a JOIN runs r ON r.id = a.run_id
    WHERE r.status NOT IN ('queued', 'running')
    GROUP BY a.run_id
  ), ranked AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY job ORDER BY finished_at DESC, run_id DESC) AS newest
    FROM per_run
  )
  SELECT run_id, job, finished_at, files, bytes FROM ranked
  WHERE ((@keepRuns IS NOT NULL AND newest > @keepRuns) OR (@keptSince IS NOT NULL AND finished_at < @keptSince))
    AND run_id NOT IN (SELECT run_id FROM deliveries WHERE state IN ('pending', 'sending') AND target = @target)
  ORDER BY finished_at, run_id`;

/** Forgets a run's artifacts. ?1 run_id */
export const ARTIFACTS_DELETE = 'DELETE FROM artifacts WHERE run_id = ?';

/** Whether an artifact references a blob, not counting some runs'. ?1 sha256, ?2 ignored run ids (a JSON array) */
export const BLOB_REFERENCED = 'SELECT 1 FROM artifacts WHERE sha256 = ? AND run_id NOT IN (SELECT value FROM json_each(?)) LIMIT 1';

// ---- deliveries

/** A pending delivery of a run that ended. ?1 run_id, ?2 target, ?3 next_at, ?4 created_at */
export const DELIVERY_INSERT = 'INSERT INTO deliveries (run_id, target, next_at, created_at) VALUES (?, ?, ?, ?)';

/** When the next pending delivery to a target is due (null: none). ?1 target */
export const DELIVERIES_NEXT_AT = "SELECT MIN(next_at) FROM deliveries WHERE state = 'pending' AND target = ?";

/** Queues a run's latest failed delivery again, to a target (null: its own). @runId, @at, @target */
export const DELIVERY_REQUEUE_FAILED = `UPDATE deliveries SET state = 'pending', attempts = 0, next_at = @at, ended_at = NULL, target = COALESCE(@target, target)
  WHERE id = (SELECT MAX(id) FROM deliveries WHERE run_id = @runId AND state = 'failed') RETURNING *`;

/** A run's deliveries. ?1 run_id */
export const DELIVERIES_OF_RUN = 'SELECT * FROM deliveries WHERE run_id = ? ORDER BY id';

/** Deliveries counted by state. (no parameters) */
export const DELIVERIES_COUNT = 'SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state';

/** When the oldest pending delivery was created (null: none). (no parameters) */
export const DELIVERIES_OLDEST_PENDING = "SELECT MIN(created_at) FROM deliveries WHERE state IN ('pending', 'sending')";

/** The latest deliveries given up or still failing. (no parameters) */
export const DELIVERIES_TROUBLED = `SELECT * FROM deliveries WHERE state = 'failed' OR (state IN ('pending', 'sending') AND last_error IS NOT NULL)
  ORDER BY id DESC LIMIT 5`;

/** Claims deliveries to a target for the outbox lease's epoch: pending ones due, and ones left `sending` by an older epoch or by
 * this one (the outbox claims only between its sends, so such a row was cut by a stop, a crash or a failed pass; alone on SQLite
 * the epoch is 0 for good), sent again with the same id, oldest first; they become `sending` with this epoch, and are returned.
 * @target, @now, @limit, @epoch */
export const DELIVERY_CLAIM = `UPDATE deliveries SET state = 'sending', claim_epoch = @epoch
  WHERE id IN (SELECT id FROM deliveries
    WHERE target = @target AND ((state = 'pending' AND next_at <= @now) OR (state = 'sending' AND (claim_epoch IS NULL OR claim_epoch <= @epoch)))
    ORDER BY next_at, id LIMIT @limit)
  RETURNING *`;

/** Records an attempt of a delivery only while it is being sent under this epoch. @id, @epoch, @state, @nextAt, @error, @endedAt */
export const DELIVERY_RECORD_CLAIMED = `UPDATE deliveries SET state = @state, attempts = attempts + 1, next_at = @nextAt, last_error = @error, ended_at = @endedAt
  WHERE id = @id AND claim_epoch = @epoch AND state = 'sending'`;

// ---- workers and their tokens

/**
 * The ids of the servers alive at @dbNow (this process's clock: one server per file): not stopped,
 * heartbeat within SERVER_TTL_MS. A subquery's body; its statement passes @dbNow.
 */
const LIVE_SERVER_IDS = `SELECT live.id FROM servers live WHERE live.stopped_at IS NULL AND live.heartbeat_at > @dbNow - ${SERVER_TTL_MS}`;

/** Records a worker as it connects, unless the name is connected on another server still alive; no change then. Without a server
 * (@serverId null) it always writes. @name, @platform, @labels, @capacity, @hostname, @os, @arch, @version, @connected, @connectedAt,
 * @lastSeen, @serverId, @connId, @dbNow */
export const WORKER_CLAIM = `INSERT INTO workers (name, platform, labels, capacity, hostname, os, arch, version, connected, connected_at, last_seen, server_id, conn_id)
  VALUES (@name, @platform, @labels, @capacity, @hostname, @os, @arch, @version, @connected, @connectedAt, @lastSeen, @serverId, @connId)
  ON CONFLICT (name) DO UPDATE SET platform = excluded.platform, labels = excluded.labels, capacity = excluded.capacity,
    hostname = excluded.hostname, os = excluded.os, arch = excluded.arch, version = excluded.version,
    connected = excluded.connected, connected_at = excluded.connected_at, last_seen = excluded.last_seen,
    server_id = excluded.server_id, conn_id = excluded.conn_id
  WHERE excluded.server_id IS NULL OR NOT workers.connected OR workers.server_id IS NULL OR workers.server_id = excluded.server_id
    OR workers.server_id NOT IN (${LIVE_SERVER_IDS})`;

/** Marks a worker gone, while this connection holds it (null: whichever). @name, @now, @connId */
export const WORKER_DISCONNECTED = 'UPDATE workers SET connected = 0, last_seen = @now WHERE name = @name AND (@connId IS NULL OR conn_id = @connId)';

/** Removes a disconnected worker holding no running run. @name @connId */
export const WORKER_FORGET = `DELETE FROM workers WHERE name = @name AND NOT connected AND (@connId IS NULL OR conn_id = @connId)
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.status = 'running' AND r.worker = @name)`;

/** Marks disconnected the workers of servers no longer alive, last seen at their server's last heartbeat; returns their names. @dbNow */
export const WORKERS_OF_DEAD_SERVERS = `UPDATE workers SET connected = 0,
    last_seen = COALESCE((SELECT s.heartbeat_at FROM servers s WHERE s.id = workers.server_id), last_seen)
  WHERE connected AND server_id IS NOT NULL AND server_id NOT IN (${LIVE_SERVER_IDS})
  RETURNING name`;

/** Running runs whose worker is unknown, or disconnected and last seen at or before now - grace, oldest first. @now, @grace */
export const RUNS_LOST_WORKER = `SELECT r.id, r.worker, r.attempt, w.last_seen FROM runs r LEFT JOIN workers w ON w.name = r.worker
  WHERE r.status = 'running' AND (w.name IS NULL OR (NOT w.connected AND w.last_seen <= @now - @grace))
  ORDER BY r.started_at, r.id`;

/** When the first disconnected worker holding a running run passes its grace (null: none). ?1 grace ms */
export const NEXT_LOSS_AT = `SELECT MIN(w.last_seen) + ? FROM workers w
  WHERE NOT w.connected AND EXISTS (SELECT 1 FROM runs r WHERE r.status = 'running' AND r.worker = w.name)`;

/** Every worker, connected first. (no parameters) */
export const WORKERS_LIST = 'SELECT * FROM workers ORDER BY connected DESC, name';

/** Whether a name has a worker token. ?1 name */
export const WORKER_TOKEN_EXISTS = 'SELECT 1 FROM worker_tokens WHERE name = ?';

/** Adds a worker token. ?1 name, ?2 token sha256, ?3 created_at */
export const WORKER_TOKEN_INSERT = 'INSERT INTO worker_tokens (name, token_sha256, created_at) VALUES (?, ?, ?)';

/** Worker tokens, by name. (no parameters) */
export const WORKER_TOKENS_LIST = 'SELECT name, created_at, last_used_at FROM worker_tokens ORDER BY name';

/** A worker token by name. ?1 name */
export const WORKER_TOKEN_GET = 'SELECT name, created_at, last_used_at FROM worker_tokens WHERE name = ?';

/** The name a token hash is bound to. ?1 token sha256 */
export const WORKER_TOKEN_FIND = 'SELECT name FROM worker_tokens WHERE token_sha256 = ?';

/** Notes a token's use. ?1 now, ?2 name */
export const WORKER_TOKEN_TOUCH = 'UPDATE worker_tokens SET last_used_at = ? WHERE name = ?';

/** Removes a worker token. ?1 name */
export const WORKER_TOKEN_DELETE = 'DELETE FROM worker_tokens WHERE name = ?';

// ---- tokens for people and browser sessions

/** The columns a TokenRecord is read from. */
const TOKEN_COLUMNS = 'name, role, created_at, expires_at, last_used_at, revoked_at';

/** Adds a token, or replaces a revoked one of that name; changes no row when the name has a live one. ?1 name, ?2 role, ?3 token sha256, ?4 created_at, ?5 expires_at */
export const TOKEN_UPSERT = `INSERT INTO tokens (name, role, token_sha256, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
  ON CONFLICT (name) DO UPDATE SET role = excluded.role, token_sha256 = excluded.token_sha256, created_at = excluded.created_at,
    expires_at = excluded.expires_at, last_used_at = NULL, revoked_at = NULL
  WHERE tokens.revoked_at IS NOT NULL`;

/** Forgets revoked tokens whose name differs from a new one only in case (names are unique whatever their case). ?1 name, ?2 name */
export const TOKEN_DELETE_REVOKED_VARIANTS = 'DELETE FROM tokens WHERE lower(name) = lower(?) AND name <> ? AND revoked_at IS NOT NULL';

/** The name of a token not revoked whose name differs from this one only in case. ?1 name, ?2 name */
export const TOKEN_LIVE_VARIANT = 'SELECT name FROM tokens WHERE lower(name) = lower(?) AND name <> ? AND revoked_at IS NULL';

/** The tokens not revoked, by name. (no parameters) */
export const TOKENS_LIST = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL ORDER BY name`;

/** A token by its hash, revoked or not. ?1 token sha256 */
export const TOKEN_FIND = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE token_sha256 = ?`;

/** Notes a token's use. ?1 now, ?2 name */
export const TOKEN_TOUCH = 'UPDATE tokens SET last_used_at = ? WHERE name = ?';

/** Revokes a live token. ?1 now, ?2 name */
export const TOKEN_REVOKE = 'UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL';

/** Adds a session. ?1 id sha256, ?2 token name, ?3 role, ?4 created_at, ?5 expires_at, ?6 the token's sha256 */
export const SESSION_INSERT = 'INSERT INTO sessions (id_sha256, token_name, role, created_at, expires_at, token_sha256) VALUES (?, ?, ?, ?, ?, ?)';

/**
 * A live session by its id's hash, only while the token it was signed in with is current: the admin
 * file's token as loaded now, or a stored token of its name neither revoked nor expired.
 * ?1 id sha256, ?2 now, ?3 the admin.token's sha256, ?4 now
 */
export const SESSION_FIND_CURRENT = `SELECT s.token_name, s.role, s.created_at, s.expires_at, s.token_sha256 FROM sessions s
  LEFT JOIN tokens t ON t.token_sha256 = s.token_sha256 AND t.name = s.token_name
  WHERE s.id_sha256 = ? AND s.expires_at > ?
    AND (s.token_sha256 = ? OR (t.name IS NOT NULL AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?)))`;

/** Ends a session. ?1 id sha256 */
export const SESSION_DELETE = 'DELETE FROM sessions WHERE id_sha256 = ?';

/** Ends every session of a token. ?1 token name */
export const SESSIONS_DELETE_OF_TOKEN = 'DELETE FROM sessions WHERE token_name = ?';

/** Forgets sessions expired before a time. ?1 now */
export const SESSIONS_DELETE_EXPIRED = 'DELETE FROM sessions WHERE expires_at <= ?';

// ---- several servers (one per SQLite file; the same tables as PostgreSQL's)

/** The recorded servers, alive (as LIVE_SERVER_IDS) first then newest, with their unexpired leases' names (a JSON array). @dbNow */
export const SERVERS_LIST = `SELECT s.*, s.id IN (${LIVE_SERVER_IDS}) AS alive,
    (SELECT json_group_array(name) FROM (SELECT l.name FROM leases l WHERE l.holder = s.id AND l.expires_at > @dbNow ORDER BY l.name)) AS leases
  FROM servers s ORDER BY alive DESC, s.started_at DESC, s.id`;

/** Stores a farm secret unless one is. ?1 name, ?2 value, ?3 created_at */
export const FARM_SECRET_INSERT = 'INSERT INTO farm_secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING';

/** A farm secret's value. ?1 name */
export const FARM_SECRET_GET = 'SELECT value FROM farm_secrets WHERE name = ?';

/** A pool's kept state. ?1 pool */
export const POOL_STATE_GET = 'SELECT failures, quarantines, quarantined_until, last_error FROM pool_state WHERE pool = ?';

/** Keeps a pool's state. @pool, @failures, @quarantines, @quarantinedUntil, @lastError */
export const POOL_STATE_UPSERT = `INSERT INTO pool_state (pool, failures, quarantines, quarantined_until, last_error)
  VALUES (@pool, @failures, @quarantines, @quarantinedUntil, @lastError)
  ON CONFLICT (pool) DO UPDATE SET failures = excluded.failures, quarantines = excluded.quarantines,
    quarantined_until = excluded.quarantined_until, last_error = excluded.last_error`;

/** Records a pool instance. @id, @pool, @name, @tokenSha256, @state, @handle (JSON), @forRun, @adopted, @startedAt */
export const POOL_INSTANCE_INSERT = `INSERT INTO pool_instances (id, pool, name, token_sha256, state, handle, for_run, adopted, started_at)
  VALUES (@id, @pool, @name, @tokenSha256, @state, @handle, @forRun, @adopted, @startedAt)`;

/** Changes an instance's state, and its handle and adopted flag when given. @id, @state, @handle (JSON; null: unchanged), @adopted (null: unchanged) */
export const POOL_INSTANCE_UPDATE = 'UPDATE pool_instances SET state = @state, handle = COALESCE(@handle, handle), adopted = COALESCE(@adopted, adopted) WHERE id = @id';

/** Forgets an instance. ?1 id */
export const POOL_INSTANCE_DELETE = 'DELETE FROM pool_instances WHERE id = ?';

/** Instances of a pool (null: all), oldest first. @pool (null: all) */
export const POOL_INSTANCES_LIST = 'SELECT * FROM pool_instances WHERE (@pool IS NULL OR pool = @pool) ORDER BY started_at, id';

/** The instance whose worker token has this sha256. ?1 token_sha256 */
export const POOL_INSTANCE_BY_TOKEN = 'SELECT * FROM pool_instances WHERE token_sha256 = ?';

/** Whether a blob has its row. ?1 sha256 */
export const BLOB_EXISTS = 'SELECT 1 FROM blobs WHERE sha256 = ?';

/** Records a blob stored or reused (its touch never moves back). ?1 sha256, ?2 size, ?3 now */
export const BLOB_TOUCH = `INSERT INTO blobs (sha256, size, touched_at) VALUES (?, ?, ?)
  ON CONFLICT (sha256) DO UPDATE SET size = excluded.size, touched_at = max(blobs.touched_at, excluded.touched_at)`;

/** Blobs last touched before a time, oldest first. ?1 before, ?2 limit */
export const BLOBS_STALE = 'SELECT sha256 FROM blobs WHERE touched_at < ? ORDER BY touched_at, sha256 LIMIT ?';

/** Forgets a blob's row unless it was touched since a time. ?1 sha256, ?2 before */
export const BLOB_FORGET = 'DELETE FROM blobs WHERE sha256 = ? AND touched_at < ?';

/** A file's import (kiln import-robur). ?1 sha256 */
export const IMPORT_GET = 'SELECT sha256, kind, imported_at, report FROM imports WHERE sha256 = ?';

/** Records a file's import unless it is recorded (changes = 0 then). @sha256, @kind, @importedAt, @report (JSON) */
export const IMPORT_INSERT = 'INSERT INTO imports (sha256, kind, imported_at, report) VALUES (@sha256, @kind, @importedAt, @report) ON CONFLICT (sha256) DO NOTHING';

/** Sets the report of a file's import (written last, in the import's transaction). ?1 report (JSON), ?2 sha256 */
export const IMPORT_SET_REPORT = 'UPDATE imports SET report = ? WHERE sha256 = ?';
