/**
 * Every SQL statement of the PostgreSQL store, one per operation, each with its parameters in its
 * header. Each is sent as a named query (`{ name, text, values }`), so a connection parses and plans
 * it once and then only binds values. Only column lists are built into the text, never values.
 */

import { PRESENCE_LOCK_KEY, SERVER_TTL_MS } from '../cluster-constants.js';
import { FEED_CHANNEL_SQL } from '../feed.js';

/** A named, parameterised statement. */
export interface Statement {
  /** The name a connection keeps it prepared under (unique within this file). */
  readonly name: string;
  readonly text: string;
  /**
   * Running it twice does what running it once does, with the same answer (a read, or a write of
   * absolute values): when its connection turns out dead, it may simply be sent again.
   */
  readonly idempotent: boolean;
}

/**
 * A statement; a read (SELECT, or WITH whose parts only read) is idempotent, a write only when
 * `idempotent` says so. A WITH that writes (INSERT, UPDATE, DELETE in a part) or locks is not.
 */
function sql(name: string, text: string, idempotent = false): Statement {
  const flat = text.replace(/\s+/g, ' ').trim();
  return { name: `kiln_${name}`, text: flat, idempotent: idempotent || /^(SELECT|WITH)\b/.test(flat) && !/\b(INSERT|UPDATE|DELETE)\b|FOR (UPDATE|SHARE)/.test(flat) };
}

// ---- several servers: liveness, shared by statements here and by presence.ts

/** The database's clock, ms since the epoch (leases and heartbeats use it, never a server's). */
export const DB_NOW_SQL = '(extract(epoch FROM clock_timestamp()) * 1000)::bigint';

/**
 * SQL text (a subquery's body) selecting the ids of the servers alive now: not stopped, heartbeat
 * within SERVER_TTL_MS on the database's clock, and holding their presence advisory lock (key
 * PRESENCE_LOCK_KEY, hashtext(id)), so a server whose connection PostgreSQL closed (SIGKILL,
 * pg_terminate_backend) is dead at once. Use as `x IN (${LIVE_SERVER_IDS_SQL})`; it takes no parameters.
 */
export const LIVE_SERVER_IDS_SQL = `SELECT live.id FROM servers live
  WHERE live.stopped_at IS NULL AND live.heartbeat_at > ${DB_NOW_SQL} - ${SERVER_TTL_MS}
    AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = ${PRESENCE_LOCK_KEY}::bigint::oid
      AND l.objid = (hashtext(live.id)::bigint & 4294967295)::oid AND l.objsubid = 2)`;

const RUN_FIELDS = [
  'id', 'job', 'platform', 'labels', 'status', 'attempt', 'worker', 'worker_identity', 'worker_session', 'queued_at', 'started_at', 'finished_at',
  'result', 'script', 'env', 'timeout_ms', 'idle_timeout_ms', 'lost_retries_left', 'failure_retries_left', 'first_seq', 'cancel_requested_by',
  'deadline_at', 'artifacts', 'artifacts_on_failure', 'sandbox',
];
/** The columns a Run is read from. */
const RUN_COLUMNS = RUN_FIELDS.join(', ');
/** The same, of the runs table as `r`. */
const R_RUN_COLUMNS = RUN_FIELDS.map((field) => `r.${field}`).join(', ');

// ---- jobs

/** Adds a job unless its name is taken; returns its name when added. $1 name, $2 platform, $3 script, $4 template, $5 vars, $6 env,
 * $7 labels, $8 schedule, $9 paused, $10 overlap, $11 catch_up, $12 skipped, $13 last_skip, $14 timeout_ms, $15 idle_timeout_ms,
 * $16 retries, $17 failure_retries, $18 artifacts, $19 artifacts_on_failure, $20 sandbox, $21 next_at, $22 created_at, $23 updated_at */
export const JOB_INSERT = sql('job_insert', `
  INSERT INTO jobs (name, platform, script, template, vars, env, labels, schedule, paused, overlap, catch_up, skipped, last_skip,
    timeout_ms, idle_timeout_ms, retries, failure_retries, artifacts, artifacts_on_failure, sandbox, next_at, created_at, updated_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)
  ON CONFLICT (name) DO NOTHING RETURNING name`);

/** Rewrites a job's changeable fields. $1 name, then as JOB_INSERT minus skipped, last_skip, created_at: $2 platform, $3 script,
 * $4 template, $5 vars, $6 env, $7 labels, $8 schedule, $9 paused, $10 overlap, $11 catch_up, $12 timeout_ms, $13 idle_timeout_ms,
 * $14 retries, $15 failure_retries, $16 artifacts, $17 artifacts_on_failure, $18 sandbox, $19 next_at, $20 updated_at */
export const JOB_UPDATE = sql('job_update', `
  UPDATE jobs SET platform = $2, script = $3, template = $4, vars = $5, env = $6, labels = $7, schedule = $8, paused = $9, overlap = $10,
    catch_up = $11, timeout_ms = $12, idle_timeout_ms = $13, retries = $14, failure_retries = $15, artifacts = $16,
    artifacts_on_failure = $17, sandbox = $18, next_at = $19, updated_at = $20
  WHERE name = $1`);

/** A job. $1 name */
export const JOB_GET = sql('job_get', 'SELECT * FROM jobs WHERE name = $1');

/** A job, locked against change until the transaction ends. $1 name */
export const JOB_GET_FOR_UPDATE = sql('job_get_for_update', 'SELECT * FROM jobs WHERE name = $1 FOR UPDATE');

/** Every job, by name. (no parameters) */
export const JOB_LIST = sql('job_list', 'SELECT * FROM jobs ORDER BY name');

/** Removes a job. $1 name */
export const JOB_DELETE = sql('job_delete', 'DELETE FROM jobs WHERE name = $1');

/** Unpaused jobs due at or before a time. $1 now */
export const JOBS_DUE = sql('jobs_due', 'SELECT * FROM jobs WHERE next_at IS NOT NULL AND next_at <= $1 AND NOT paused ORDER BY next_at');

/** The earliest next time of an unpaused job (null: none). (no parameters) */
export const JOBS_EARLIEST_NEXT = sql('jobs_earliest_next', 'SELECT MIN(next_at) AS at FROM jobs WHERE next_at IS NOT NULL AND NOT paused');

/** Moves a job's next time if it still is the one expected (guarded). $1 name, $2 expected next_at, $3 new next_at (or null) */
export const JOB_MOVE_NEXT = sql('job_move_next', 'UPDATE jobs SET next_at = $3 WHERE name = $1 AND next_at = $2');

/** Records due times that queued nothing. $1 name, $2 how many, $3 last_skip ({at, reason}) */
export const JOB_ADD_SKIPS = sql('job_add_skips', 'UPDATE jobs SET skipped = skipped + $2, last_skip = $3 WHERE name = $1');

// ---- runs: queue

/**
 * Queues a run of a job in one statement: holds the job (FOR SHARE: it cannot be deleted before the
 * transaction ends), refuses a dropped platform, inserts the run (retry budgets from the job) with
 * its `queued` event unless the job is already queued on the platform, and then moves that run to
 * the front when asked. One row: `job_found`, `dropped`, `outcome` ('added', 'existing', or null when
 * nothing was queued: no job, dropped, or a run of the job queued by a transaction this statement's
 * snapshot cannot see), and the run added or found (null columns otherwise).
 * $1 id, $2 job, $3 platform, $4 labels, $5 'front' or 'back', $6 queued_at, $7 the queued event's detail
 */
export const RUN_ENQUEUE = sql('run_enqueue', `
  WITH job AS (SELECT name, retries, failure_retries FROM jobs WHERE name = $2 FOR SHARE),
  dropped AS (SELECT 1 FROM dropped_platforms WHERE platform = $3),
  added AS (
    INSERT INTO runs (id, job, platform, labels, status, queue_pos, queued_at, lost_retries_left, failure_retries_left)
    SELECT $1, name, $3, $4, 'queued', CASE WHEN $5::text = 'front' THEN -nextval('queue_front') ELSE nextval('queue_back') END, $6,
      retries, failure_retries
    FROM job WHERE NOT EXISTS (SELECT 1 FROM dropped)
    ON CONFLICT (job, platform) WHERE status = 'queued' DO NOTHING
    RETURNING ${RUN_COLUMNS}),
  queued_event AS (
    INSERT INTO run_events (run_id, at, attempt, kind, detail) SELECT id, $6, 1, 'queued', $7::json FROM added),
  existing AS (
    SELECT ${RUN_COLUMNS} FROM runs
    WHERE job = $2 AND platform = $3 AND status = 'queued' AND EXISTS (SELECT 1 FROM job) AND NOT EXISTS (SELECT 1 FROM dropped)),
  moved AS (
    UPDATE runs SET queue_pos = -nextval('queue_front')
    WHERE $5::text = 'front' AND id IN (SELECT id FROM existing) AND status = 'queued' AND NOT EXISTS (SELECT 1 FROM added)),
  found AS (
    SELECT 'added' AS outcome, ${RUN_COLUMNS} FROM added
    UNION ALL SELECT 'existing', ${RUN_COLUMNS} FROM existing WHERE NOT EXISTS (SELECT 1 FROM added))
  SELECT EXISTS (SELECT 1 FROM job) AS job_found, EXISTS (SELECT 1 FROM dropped) AS dropped, found.*
  FROM (SELECT 1) AS one LEFT JOIN found ON TRUE`);

/** Whether labels' JSON (runs.labels, a worker's) holds an escape jsonb refuses (\u0000, a lone surrogate) or might: SQL text, on `labels`. */
const UNSURE_LABELS = "strpos(labels::text, '\\u') > 0";

/**
 * Claims the first queued run of a platform a worker may take, in one statement (its own transaction
 * when sent alone): picks it in queue order, skipping runs another claim holds (FOR UPDATE SKIP
 * LOCKED), with core's canClaim in SQL: the run's labels contained in the worker's (jsonb `<@`: for
 * flat string maps, every label the run asks for is one the worker has, with that value; the store
 * suite holds the two together) and, for a pool instance, only its run. Then it starts it, copying
 * what it executes from its job, and records its `dispatched` event. A run whose job is gone (a
 * retry after its job was unscheduled) ends as finishInTx ends a queued run: cancelled with `gone`
 * as its result, its `ended` event, and a delivery row when `$11` names a target (core's
 * forwardsOnEnd: never, from the queue). Labels whose JSON text holds a \u escape (control
 * characters, NUL or a lone surrogate, which jsonb cannot hold) are not matched here: the first
 * such run ahead of any match comes back `unsure`, for the caller to match in TS. With $12, a run of
 * a template job (no script) is not started either but comes back `template`, for the caller to
 * claim in a transaction that also saves its expanded script.
 * Or `held`: nothing picked, yet a run the worker may take is queued, locked by another transaction
 * (a schedule firing that reads the job's queued runs FOR UPDATE, an execute moving it to the front):
 * SKIP LOCKED passed it over, and without a word the dispatcher would leave it waiting for the next event.
 * At most one row: `outcome` ('started', 'gone', 'unsure', 'template', 'held'), the run's columns (as
 * started; as queued otherwise), and its job's `job_template` and `job_vars` (started, template).
 * $1 platform, $2 the worker's labels (JSON, no \u escape), $3 worker, $4 worker_identity, $5 worker_session, $6 now,
 * $7 backstop ms, $8 the dispatched event's detail, $9 the gone run's result, $10 its ended event's detail, $11 delivery target
 * for the gone run (null: none), $12 leave template jobs' runs queued (boolean); CLAIM_ONE also $13, the one run it may take.
 * Two statements, not one with `($13 IS NULL OR id = $13)`: with that, PostgreSQL's plan cache finds
 * the generic plan dearer than a custom one and plans the statement anew at every claim (0.7 ms here).
 */
const claim = (name: string, only: string) => sql(name, `
  WITH pick AS (
    SELECT id, job, ${UNSURE_LABELS} AS unsure FROM runs
    WHERE status = 'queued' AND platform = $1${only}
      AND CASE WHEN ${UNSURE_LABELS} THEN TRUE ELSE labels::jsonb <@ $2::jsonb END
    ORDER BY queue_pos LIMIT 1 FOR UPDATE SKIP LOCKED),
  started AS (
    UPDATE runs r SET status = 'running', queue_pos = NULL, worker = $3, worker_identity = $4, worker_session = $5, started_at = $6,
      script = j.script, env = j.env, timeout_ms = j.timeout_ms, idle_timeout_ms = j.idle_timeout_ms, deadline_at = $6 + j.timeout_ms + $7,
      artifacts = j.artifacts, artifacts_on_failure = j.artifacts_on_failure, sandbox = j.sandbox
    FROM pick p JOIN jobs j ON j.name = p.job
    WHERE r.id = p.id AND NOT p.unsure AND (j.script IS NOT NULL OR NOT $12::boolean)
    RETURNING ${R_RUN_COLUMNS}, j.template AS job_template, j.vars AS job_vars),
  dispatched AS (
    INSERT INTO run_events (run_id, at, attempt, kind, detail) SELECT id, $6, attempt, 'dispatched', $8::json FROM started),
  gone AS (
    UPDATE runs r SET status = 'cancelled', result = $9::json, finished_at = $6, queue_pos = NULL, deadline_at = NULL
    FROM pick p
    WHERE r.id = p.id AND NOT p.unsure AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.name = p.job)
    RETURNING ${R_RUN_COLUMNS}),
  gone_event AS (
    INSERT INTO run_events (run_id, at, attempt, kind, detail) SELECT id, $6, attempt, 'ended', $10::json FROM gone),
  gone_delivery AS (
    INSERT INTO deliveries (run_id, target, next_at, created_at) SELECT id, $11, $6, $6 FROM gone WHERE $11::text IS NOT NULL)
  SELECT 'started' AS outcome, ${RUN_COLUMNS}, job_template, job_vars FROM started
  UNION ALL SELECT 'gone', ${RUN_COLUMNS}, NULL, NULL FROM gone
  UNION ALL SELECT 'unsure', ${R_RUN_COLUMNS}, NULL, NULL FROM pick p JOIN runs r ON r.id = p.id WHERE p.unsure
  UNION ALL SELECT 'template', ${R_RUN_COLUMNS}, j.template, j.vars FROM pick p JOIN runs r ON r.id = p.id JOIN jobs j ON j.name = p.job
    WHERE NOT p.unsure AND j.script IS NULL AND $12::boolean
  UNION ALL (SELECT 'held', ${R_RUN_COLUMNS}, NULL, NULL FROM runs r
    WHERE NOT EXISTS (SELECT 1 FROM pick) AND r.status = 'queued' AND r.platform = $1${only.replace('id', 'r.id')}
      AND CASE WHEN ${UNSURE_LABELS.replace(/labels/g, 'r.labels')} THEN TRUE ELSE r.labels::jsonb <@ $2::jsonb END
    ORDER BY r.queue_pos LIMIT 1)`);

/** Claims the first queued run a worker may take (see above). */
export const CLAIM = claim('claim', '');

/** Claims one queued run by id, if the worker may take it (see above): a pool instance made for it, a template job's run. */
export const CLAIM_ONE = claim('claim_one', ' AND id = $13');

/** A page of a platform's queue, in order, after a position (null: from the start). $1 platform, $2 after queue_pos */
export const CLAIM_CANDIDATES = sql('claim_candidates', `
  SELECT id, labels, queue_pos FROM runs WHERE status = 'queued' AND platform = $1 AND ($2::bigint IS NULL OR queue_pos > $2)
  ORDER BY queue_pos LIMIT 64`);

/** Locks the first of these runs that is still queued and that no other claim holds. $1 ids (text[]) */
export const CLAIM_LOCK = sql('claim_lock', `
  SELECT id, job FROM runs WHERE id = ANY($1::text[]) AND status = 'queued' ORDER BY queue_pos LIMIT 1 FOR UPDATE SKIP LOCKED`);

/** Marks a locked queued run running on a worker, copying what it executes from its job; nothing when the job is gone.
 * Returns the run, and its job's `job_template` and `job_vars`. $1 id, $2 worker, $3 worker_identity, $4 worker_session, $5 now, $6 backstop ms */
export const CLAIM_START = sql('claim_start', `
  UPDATE runs r SET status = 'running', queue_pos = NULL, worker = $2, worker_identity = $3, worker_session = $4, started_at = $5,
    script = j.script, env = j.env, timeout_ms = j.timeout_ms, idle_timeout_ms = j.idle_timeout_ms, deadline_at = $5 + j.timeout_ms + $6,
    artifacts = j.artifacts, artifacts_on_failure = j.artifacts_on_failure, sandbox = j.sandbox
  FROM jobs j WHERE r.id = $1 AND r.status = 'queued' AND j.name = r.job
  RETURNING ${R_RUN_COLUMNS}, j.template AS job_template, j.vars AS job_vars`);

/** Queued runs, per platform in queue order. (no parameters) */
export const RUNS_QUEUED = sql('runs_queued', `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY platform, queue_pos`);

/** The same, light. (no parameters) */
export const RUNS_WAITING = sql('runs_waiting', "SELECT id, job, platform, labels FROM runs WHERE status = 'queued' ORDER BY platform, queue_pos");

/** Running runs, oldest first, of one worker or all. $1 worker (null: all) */
export const RUNS_RUNNING = sql('runs_running', `
  SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' AND ($1::text IS NULL OR worker = $1) ORDER BY started_at, id`);

/** Queued runs of a job, locked. $1 job */
export const RUNS_QUEUED_OF_JOB_LOCKED = sql('runs_queued_of_job_locked', `
  SELECT id, attempt FROM runs WHERE job = $1 AND status = 'queued' ORDER BY queue_pos FOR UPDATE`);

/** Queued runs of a platform, locked. $1 platform */
export const RUNS_QUEUED_ON_PLATFORM_LOCKED = sql('runs_queued_on_platform_locked', `
  SELECT id FROM runs WHERE platform = $1 AND status = 'queued' ORDER BY queue_pos FOR UPDATE`);

/** A job's queued and running runs, oldest first, locked. $1 job */
export const RUNS_OPEN_OF_JOB_LOCKED = sql('runs_open_of_job_locked', `
  SELECT ${RUN_COLUMNS} FROM runs WHERE job = $1 AND status IN ('queued', 'running') ORDER BY queued_at, id FOR UPDATE`);

// ---- runs: reading

/** A run by id. $1 id */
export const RUN_GET = sql('run_get', `SELECT ${RUN_COLUMNS} FROM runs WHERE id = $1`);

/** A run by id, locked until the transaction ends. $1 id */
export const RUN_GET_LOCKED = sql('run_get_locked', `SELECT ${RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE`);

/** Up to two runs whose ids fall in a range (a prefix and the prefix followed by U+10FFFF), by id. $1 from, $2 below */
export const RUNS_BY_PREFIX = sql('runs_by_prefix', `SELECT ${RUN_COLUMNS} FROM runs WHERE id >= $1 AND id < $2 ORDER BY id LIMIT 2`);

/** Runs, newest first, filtered by what is given. $1 job, $2 status, $3 platform, $4 worker (each null: any), $5 limit */
export const RUNS_LIST = sql('runs_list', `
  SELECT ${RUN_COLUMNS} FROM runs
  WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR platform = $3) AND ($4::text IS NULL OR worker = $4)
  ORDER BY queued_at DESC, id DESC LIMIT $5`);

/**
 * The last run (as RUNS_LIST orders: newest queued_at, then id) of each job that exists, one row per job
 * with a run: a lateral look-up per job down runs_by_job, not a sort of every run. (no parameters)
 */
export const RUNS_LAST_PER_JOB = sql('runs_last_per_job', `
  SELECT ${R_RUN_COLUMNS} FROM jobs j
  CROSS JOIN LATERAL (SELECT ${RUN_COLUMNS} FROM runs WHERE job = j.name ORDER BY queued_at DESC, id DESC LIMIT 1) r`);

/** Running runs whose deadline has passed. $1 now */
export const RUNS_OVERDUE = sql('runs_overdue', `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' AND deadline_at <= $1 ORDER BY deadline_at`);

/** The earliest deadline of a running run after $1 (null: none). */
export const RUNS_EARLIEST_DEADLINE = sql('runs_earliest_deadline', "SELECT MIN(deadline_at) AS at FROM runs WHERE status = 'running' AND deadline_at > $1");

// ---- runs: transitions

/**
 * What ending a run's attempt reads, in one statement: the run (locked until the transaction ends),
 * whether another run of its job is queued on its platform, whether its job exists (held FOR SHARE,
 * so it cannot be deleted before the transaction ends), and the seq of its last console line.
 * By exact id only (a prefix is resolved first). $1 id
 */
export const RUN_END_READ = sql('run_end_read', `
  WITH r AS (SELECT ${RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE),
  job AS (SELECT 1 FROM jobs WHERE name = (SELECT job FROM r) FOR SHARE)
  SELECT r.*,
    EXISTS (SELECT 1 FROM runs o WHERE o.job = r.job AND o.platform = r.platform AND o.status = 'queued') AS other_queued,
    EXISTS (SELECT 1 FROM job) AS job_exists,
    (SELECT MAX(seq) FROM console_lines WHERE run_id = r.id) AS last_seq
  FROM r`);

/** The parts every END_WRITE_* statement begins with: a run's console lines and its history entries, in order. */
const END_WRITES = `
  lines AS (
    INSERT INTO console_lines (run_id, seq, ts, text) SELECT $1, * FROM unnest($2::int[], $3::bigint[], $4::bytea[])
    ON CONFLICT DO NOTHING),
  events AS (
    INSERT INTO run_events (run_id, at, attempt, kind, detail)
    SELECT $1, e.at, e.attempt, e.kind, e.detail FROM unnest($5::bigint[], $6::int[], $7::text[], $8::json[]) WITH ORDINALITY
      AS e(at, attempt, kind, detail, n)
    ORDER BY e.n)`;

/** An attempt's end that changed nothing (stale): its console lines and history entries only.
 * $1 run_id, $2 seqs, $3 timestamps, $4 texts as UTF-8 (parallel arrays), $5 ats, $6 attempts, $7 kinds, $8 details (parallel arrays) */
export const END_WRITE_STALE = sql('end_write_stale', `WITH ${END_WRITES} SELECT 1`);

/** Ends a locked running run, with its console lines and history entries (its `ended` entry last) and, when $12 names a target,
 * its delivery; returns it. $1..$8 as END_WRITE_STALE, $9 status, $10 result, $11 finished_at, $12 delivery target (null: none) */
export const END_WRITE_FINISH = sql('end_write_finish', `
  WITH ${END_WRITES},
  finished AS (
    UPDATE runs SET status = $9, result = $10::json, finished_at = $11, queue_pos = NULL, deadline_at = NULL WHERE id = $1 AND status = 'running'
    RETURNING ${RUN_COLUMNS}),
  delivery AS (
    INSERT INTO deliveries (run_id, target, next_at, created_at) SELECT id, $12, $11, $11 FROM finished WHERE $12::text IS NOT NULL)
  SELECT * FROM finished`);

/** Ends a running run whose end needs nothing read first (core's settledEndOfReport: no cancel, nothing to retry), in one statement:
 * the run, its console lines, its history entries stamped with its attempt (its `ended` entry last) and, when $10 names a target, its
 * delivery; returns it. Nothing at all is written when the run is not running as guarded (the caller then reads it and decides).
 * $1 id, $2 seqs, $3 timestamps, $4 texts as UTF-8 (parallel arrays), $5 ats, $6 kinds, $7 details (parallel arrays), $8 status,
 * $9 result, $10 delivery target (null: none), $11 finished_at, $12 worker (null: any), $13 attempt (null: any), $14 the feed's
 * payloads announcing the lines (text[]; empty: none), sent only when the run ended here (notified at commit) */
export const END_SETTLED = sql('end_settled', `
  WITH finished AS (
    UPDATE runs SET status = $8, result = $9::json, finished_at = $11, queue_pos = NULL, deadline_at = NULL
    WHERE id = $1 AND status = 'running' AND ($12::text IS NULL OR worker = $12) AND ($13::int IS NULL OR attempt = $13)
    RETURNING ${RUN_COLUMNS}),
  lines AS (
    INSERT INTO console_lines (run_id, seq, ts, text) SELECT f.id, l.seq, l.ts, l.text
    FROM finished f, unnest($2::int[], $3::bigint[], $4::bytea[]) AS l(seq, ts, text)
    ON CONFLICT DO NOTHING),
  events AS (
    INSERT INTO run_events (run_id, at, attempt, kind, detail)
    SELECT f.id, e.at, f.attempt, e.kind, e.detail FROM finished f, unnest($5::bigint[], $6::text[], $7::json[]) WITH ORDINALITY AS e(at, kind, detail, n)
    ORDER BY e.n),
  delivery AS (
    INSERT INTO deliveries (run_id, target, next_at, created_at) SELECT id, $10, $11, $11 FROM finished WHERE $10::text IS NOT NULL)
  SELECT f.* FROM finished f
  CROSS JOIN (SELECT COUNT(pg_notify(${FEED_CHANNEL_SQL}, p)) AS notified FROM unnest($14::text[]) AS p WHERE EXISTS (SELECT 1 FROM finished)) AS feed`);

/** Puts a locked running run back at the front of its queue as its next attempt (or the same one), spending a retry budget, with its
 * console lines (the line saying why among them) and history entries; returns it. $1..$8 as END_WRITE_STALE, $9 the attempt it goes
 * back as, $10 lost retries spent, $11 failure retries spent (each 0 or 1), $12 first_seq */
export const END_WRITE_REQUEUE = sql('end_write_requeue', `
  WITH ${END_WRITES},
  requeued AS (
    UPDATE runs SET status = 'queued', attempt = $9, lost_retries_left = lost_retries_left - $10,
      failure_retries_left = failure_retries_left - $11, worker = NULL, worker_identity = NULL, worker_session = NULL, started_at = NULL,
      queue_pos = -nextval('queue_front'), first_seq = $12, cancel_requested_by = NULL, deadline_at = NULL
    WHERE id = $1 AND status = 'running'
    RETURNING ${RUN_COLUMNS})
  SELECT * FROM requeued`);

/** Ends a run still in the status expected; returns its attempt when it applied. $1 id, $2 status, $3 result, $4 finished_at, $5 expected status */
export const RUN_FINISH = sql('run_finish', `
  UPDATE runs SET status = $2, result = $3, finished_at = $4, queue_pos = NULL, deadline_at = NULL WHERE id = $1 AND status = $5
  RETURNING attempt`);

/** Marks a running run for cancelling (the first asker is kept) and brings its deadline no later than given. $1 id, $2 by, $3 deadline */
export const RUN_REQUEST_CANCEL = sql('run_request_cancel', `
  UPDATE runs SET cancel_requested_by = COALESCE(cancel_requested_by, $2), deadline_at = LEAST(COALESCE(deadline_at, $3), $3) WHERE id = $1
  RETURNING ${RUN_COLUMNS}`);

/** Saves the script a run executes. $1 id, $2 script */
export const RUN_SET_SCRIPT = sql('run_set_script', 'UPDATE runs SET script = $2 WHERE id = $1', true);

/** Adds to a run's history, stamped with its current attempt; nothing when there is no such run. $1 run id, $2 at, $3 kind, $4 detail */
export const EVENT_INSERT_AT_ATTEMPT = sql('event_insert_at_attempt', `
  INSERT INTO run_events (run_id, at, attempt, kind, detail) SELECT id, $2, attempt, $3, $4 FROM runs WHERE id = $1`);

/** Moves the seq a queued run's attempt starts at. $1 id, $2 first_seq */
export const RUN_SET_FIRST_SEQ = sql('run_set_first_seq', 'UPDATE runs SET first_seq = $2 WHERE id = $1');

// ---- run events

/** Adds to a run's history. $1 run_id, $2 at, $3 attempt, $4 kind, $5 detail */
export const EVENT_INSERT = sql('event_insert', 'INSERT INTO run_events (run_id, at, attempt, kind, detail) VALUES ($1, $2, $3, $4, $5)');

/** A run's history, oldest first. $1 run_id */
export const EVENTS_LIST = sql('events_list', 'SELECT at, attempt, kind, detail FROM run_events WHERE run_id = $1 ORDER BY id');

// ---- console

/**
 * Appends console lines, ignoring those already stored, and in the same statement (so delivered at
 * its commit) notifies the feed with each payload given (feed.ts consoleFeedPayloads). Sent twice
 * it announces twice, which readers (seq > what they have) ignore.
 * $1 run ids, $2 seqs, $3 timestamps, $4 texts as UTF-8 (parallel arrays), $5 feed payloads (text[]; empty: none)
 */
export const CONSOLE_APPEND = sql('console_append', `
  WITH appended AS (
    INSERT INTO console_lines (run_id, seq, ts, text) SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[])
    ON CONFLICT DO NOTHING)
  SELECT pg_notify(${FEED_CHANNEL_SQL}, p) FROM unnest($5::text[]) AS p`, true);

/** Notifies the feed (delivered at the transaction's commit) with each payload. $1 payloads (text[]) */
export const FEED_NOTIFY = sql('feed_notify', `SELECT pg_notify(${FEED_CHANNEL_SQL}, p) FROM unnest($1::text[]) AS p`, true);

/** The seq of a run's last line (null: none). $1 run_id */
export const CONSOLE_LAST_SEQ = sql('console_last_seq', 'SELECT MAX(seq) AS seq FROM console_lines WHERE run_id = $1');

/** Adds one line unless its seq is taken. $1 run_id, $2 seq, $3 ts, $4 text as UTF-8 */
export const CONSOLE_INSERT = sql('console_insert', 'INSERT INTO console_lines (run_id, seq, ts, text) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING');

/** A run's lines (text as UTF-8) after a seq, in order. $1 run_id, $2 after seq, $3 limit */
export const CONSOLE_READ = sql('console_read', 'SELECT seq, ts, text FROM console_lines WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3');

// ---- platforms

/** Whether a platform is dropped. $1 platform */
export const DROPPED_GET = sql('dropped_get', 'SELECT 1 FROM dropped_platforms WHERE platform = $1');

/** Drops a platform (again: no change). $1 platform, $2 dropped_at */
export const DROPPED_INSERT = sql('dropped_insert', 'INSERT INTO dropped_platforms (platform, dropped_at) VALUES ($1, $2) ON CONFLICT DO NOTHING');

/** Lifts a drop. $1 platform */
export const DROPPED_DELETE = sql('dropped_delete', 'DELETE FROM dropped_platforms WHERE platform = $1');

/** Dropped platforms, by name. (no parameters) */
export const DROPPED_LIST = sql('dropped_list', 'SELECT platform, dropped_at FROM dropped_platforms ORDER BY platform');

// ---- artifacts

/** Records (or replaces) an artifact. $1 run_id, $2 path, $3 size, $4 sha256, $5 mode */
export const ARTIFACT_UPSERT = sql('artifact_upsert', `
  INSERT INTO artifacts (run_id, path, size, sha256, mode) VALUES ($1, $2, $3, $4, $5)
  ON CONFLICT (run_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, mode = excluded.mode`, true);

/** A run's artifacts, by path. $1 run_id */
export const ARTIFACTS_LIST = sql('artifacts_list', 'SELECT path, size, sha256, mode FROM artifacts WHERE run_id = $1 ORDER BY path');

/** Ended runs whose artifacts retention lets go, oldest first. $1 keep runs (null: any number), $2 kept since (null: any age),
 * $3 the current upload target (its pending deliveries pin their runs) */
export const ARTIFACTS_EXPIRED = sql('artifacts_expired', `
  WITH per_run AS (
    SELECT a.run_id, r.job, r.finished_at, COUNT(*)::int AS files, SUM(a.size)::bigint AS bytes
    FROM artifacts a JOIN runs r ON r.id = a.run_id
    WHERE r.status NOT IN ('queued', 'running')
    GROUP BY a.run_id, r.job, r.finished_at
  ), ranked AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY job ORDER BY finished_at DESC, run_id DESC) AS newest FROM per_run
  )
  SELECT run_id, job, finished_at, files, bytes FROM ranked
  WHERE (($1::int IS NOT NULL AND newest > $1) OR ($2::bigint IS NOT NULL AND finished_at < $2))
    AND run_id NOT IN (SELECT run_id FROM deliveries WHERE state IN ('pending', 'sending') AND target = $3)
  ORDER BY finished_at, run_id`);

/** Forgets the artifacts of runs. $1 run ids (text[]) */
export const ARTIFACTS_DELETE = sql('artifacts_delete', 'DELETE FROM artifacts WHERE run_id = ANY($1::text[])');

/** Which of these blobs an artifact references, not counting some runs'. $1 sha256s (text[]), $2 ignored run ids (text[]) */
export const BLOBS_REFERENCED = sql('blobs_referenced', `
  SELECT DISTINCT sha256 FROM artifacts WHERE sha256 = ANY($1::text[]) AND NOT (run_id = ANY($2::text[]))`);

// ---- deliveries (the outbox)

/** A pending delivery of a run that ended. $1 run_id, $2 target, $3 at (due and created) */
export const DELIVERY_INSERT = sql('delivery_insert', 'INSERT INTO deliveries (run_id, target, next_at, created_at) VALUES ($1, $2, $3, $3)');

/** When the next pending delivery to a target is due (null: none). $1 target */
export const DELIVERIES_NEXT_AT = sql('deliveries_next_at', "SELECT MIN(next_at) AS at FROM deliveries WHERE state = 'pending' AND target = $1");

/** Queues a run's latest failed delivery again, to a target (null: its own). $1 run_id, $2 at, $3 target */
export const DELIVERY_REQUEUE_FAILED = sql('delivery_requeue_failed', `
  UPDATE deliveries SET state = 'pending', attempts = 0, next_at = $2, ended_at = NULL, target = COALESCE($3, target)
  WHERE id = (SELECT MAX(id) FROM deliveries WHERE run_id = $1 AND state = 'failed') RETURNING *`);

/** A run's deliveries. $1 run_id */
export const DELIVERIES_OF_RUN = sql('deliveries_of_run', 'SELECT * FROM deliveries WHERE run_id = $1 ORDER BY id');

/** Deliveries counted by state. (no parameters) */
export const DELIVERIES_COUNT = sql('deliveries_count', 'SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state');

/** When the oldest pending delivery (being sent or not) was created (null: none). (no parameters) */
export const DELIVERIES_OLDEST_PENDING = sql('deliveries_oldest_pending', "SELECT MIN(created_at) AS at FROM deliveries WHERE state IN ('pending', 'sending')");

/** The latest deliveries given up or still failing. (no parameters) */
export const DELIVERIES_TROUBLED = sql('deliveries_troubled', `
  SELECT * FROM deliveries WHERE state = 'failed' OR (state IN ('pending', 'sending') AND last_error IS NOT NULL) ORDER BY id DESC LIMIT 5`);

/**
 * Claims deliveries to a target for the outbox lease's epoch: pending ones due, and ones left
 * `sending` by an older epoch (their sender died or lost the lease) or by this one (a pass that
 * failed between its claim and its records: the outbox claims only between its sends, never while
 * one is in flight), sent again with the same id; oldest first, passing over rows another claim
 * holds. They become `sending` with this epoch; returns them. $1 target, $2 now, $3 limit, $4 epoch
 */
export const DELIVERY_CLAIM = sql('delivery_claim', `
  WITH due AS (
    SELECT id FROM deliveries
    WHERE target = $1 AND ((state = 'pending' AND next_at <= $2) OR (state = 'sending' AND (claim_epoch IS NULL OR claim_epoch <= $4)))
    ORDER BY next_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
  UPDATE deliveries d SET state = 'sending', claim_epoch = $4 FROM due WHERE d.id = due.id
  RETURNING d.*`);

/** Records an attempt of a delivery only while it is being sent under this epoch; returns its id when it did.
 * $1 id, $2 epoch, $3 state, $4 next_at, $5 last_error, $6 ended_at (null while pending) */
export const DELIVERY_RECORD_CLAIMED = sql('delivery_record_claimed', `
  UPDATE deliveries SET state = $3, attempts = attempts + 1, next_at = $4, last_error = $5, ended_at = $6
  WHERE id = $1 AND claim_epoch = $2 AND state = 'sending' RETURNING id`);

// ---- workers and their tokens

/**
 * Records a worker as it connects on a server's connection (WORKER_CLAIM, notes/issue16-plan.md
 * §3.2): its row is written unless the name is connected on another server that is still alive.
 * Returns the name when written, nothing when the name is taken. Without a server ($12 null: one
 * server, tests, tools) it always writes. Sent again after a lost connection it answers the same (its
 * own server holds the name then), so it is idempotent. $1 name, $2 platform, $3 labels, $4 capacity,
 * $5 hostname, $6 os, $7 arch, $8 version, $9 connected, $10 connected_at, $11 last_seen,
 * $12 server_id (null: none), $13 conn_id (null: none)
 */
export const WORKER_CLAIM = sql('worker_claim', `
  INSERT INTO workers (name, platform, labels, capacity, hostname, os, arch, version, connected, connected_at, last_seen, server_id, conn_id)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
  ON CONFLICT (name) DO UPDATE SET platform = excluded.platform, labels = excluded.labels, capacity = excluded.capacity,
    hostname = excluded.hostname, os = excluded.os, arch = excluded.arch, version = excluded.version,
    connected = excluded.connected, connected_at = excluded.connected_at, last_seen = excluded.last_seen,
    server_id = excluded.server_id, conn_id = excluded.conn_id
  WHERE excluded.server_id IS NULL OR NOT workers.connected OR workers.server_id IS NULL OR workers.server_id = excluded.server_id
    OR workers.server_id NOT IN (${LIVE_SERVER_IDS_SQL})
  RETURNING name`, true);

/** Marks a worker gone, while this connection holds it (null: whichever). $1 name, $2 now, $3 conn_id (null: any) */
export const WORKER_DISCONNECTED = sql('worker_disconnected', `
  UPDATE workers SET connected = FALSE, last_seen = $2 WHERE name = $1 AND ($3::text IS NULL OR conn_id = $3)`, true);

/** Removes a disconnected worker holding no running run. $1 name, $2 connId */
export const WORKER_FORGET = sql('worker_forget', `
  DELETE FROM workers WHERE name = $1 AND NOT connected AND ($2::text IS NULL OR conn_id = $2)
    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.status = 'running' AND r.worker = $1)`, true);

/**
 * Marks disconnected the workers held by servers no longer alive, last seen at their server's last
 * heartbeat (at their own last_seen when the server's row is gone); returns their names. (no parameters)
 */
export const WORKERS_OF_DEAD_SERVERS = sql('workers_of_dead_servers', `
  UPDATE workers w SET connected = FALSE,
    last_seen = COALESCE((SELECT s.heartbeat_at FROM servers s WHERE s.id = w.server_id), w.last_seen)
  WHERE w.connected AND w.server_id IS NOT NULL AND w.server_id NOT IN (${LIVE_SERVER_IDS_SQL})
  RETURNING w.name`, true);

/** Running runs whose worker is unknown, or disconnected and last seen at or before $1 - $2, oldest first. $1 now, $2 grace ms */
export const RUNS_LOST_WORKER = sql('runs_lost_worker', `
  SELECT r.id, r.worker, r.attempt, w.last_seen FROM runs r LEFT JOIN workers w ON w.name = r.worker
  WHERE r.status = 'running' AND (w.name IS NULL OR (NOT w.connected AND w.last_seen <= $1::bigint - $2::bigint))
  ORDER BY r.started_at, r.id`);

/** When the first disconnected worker holding a running run passes its grace (null: none). $1 grace ms */
export const NEXT_LOSS_AT = sql('next_loss_at', `
  SELECT MIN(w.last_seen) + $1::bigint AS at FROM workers w
  WHERE NOT w.connected AND EXISTS (SELECT 1 FROM runs r WHERE r.status = 'running' AND r.worker = w.name)`);

/** Every worker, connected first. (no parameters) */
export const WORKERS_LIST = sql('workers_list', 'SELECT * FROM workers ORDER BY connected DESC, name');

/** Adds a worker token unless the name has one; returns the name when added. $1 name, $2 token sha256, $3 created_at */
export const WORKER_TOKEN_INSERT = sql('worker_token_insert', `
  INSERT INTO worker_tokens (name, token_sha256, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING name`);

/** Worker tokens, by name. (no parameters) */
export const WORKER_TOKENS_LIST = sql('worker_tokens_list', 'SELECT name, created_at, last_used_at FROM worker_tokens ORDER BY name');

/** A worker token by name. $1 name */
export const WORKER_TOKEN_GET = sql('worker_token_get', 'SELECT name, created_at, last_used_at FROM worker_tokens WHERE name = $1');

/** The name a token hash is bound to. $1 token sha256 */
export const WORKER_TOKEN_FIND = sql('worker_token_find', 'SELECT name FROM worker_tokens WHERE token_sha256 = $1');

/** Notes a token's use. $1 name, $2 now */
export const WORKER_TOKEN_TOUCH = sql('worker_token_touch', 'UPDATE worker_tokens SET last_used_at = $2 WHERE name = $1', true);

/** Removes a worker token. $1 name */
export const WORKER_TOKEN_DELETE = sql('worker_token_delete', 'DELETE FROM worker_tokens WHERE name = $1');

// ---- tokens for people and browser sessions

/** The columns a TokenRecord is read from. */
const TOKEN_COLUMNS = 'name, role, created_at, expires_at, last_used_at, revoked_at';

/**
 * Adds a token, or replaces a revoked one of that name; returns the name when it did, nothing when
 * the name has a live one. $1 name, $2 role, $3 token sha256, $4 created_at, $5 expires_at
 */
export const TOKEN_UPSERT = sql('token_upsert', `
  INSERT INTO tokens (name, role, token_sha256, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
  ON CONFLICT (name) DO UPDATE SET role = excluded.role, token_sha256 = excluded.token_sha256, created_at = excluded.created_at,
    expires_at = excluded.expires_at, last_used_at = NULL, revoked_at = NULL
  WHERE tokens.revoked_at IS NOT NULL
  RETURNING name`);

/** Forgets revoked tokens whose name differs from a new one only in case (names are unique whatever their case). $1 name */
export const TOKEN_DELETE_REVOKED_VARIANTS = sql('token_delete_revoked_variants', 'DELETE FROM tokens WHERE lower(name) = lower($1) AND name <> $1 AND revoked_at IS NOT NULL', true);

/** The name of a token not revoked whose name differs from this one only in case. $1 name */
export const TOKEN_LIVE_VARIANT = sql('token_live_variant', 'SELECT name FROM tokens WHERE lower(name) = lower($1) AND name <> $1 AND revoked_at IS NULL');

/** The tokens not revoked, by name. (no parameters) */
export const TOKENS_LIST = sql('tokens_list', `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL ORDER BY name`);

/** A token by its hash, revoked or not. $1 token sha256 */
export const TOKEN_FIND = sql('token_find', `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE token_sha256 = $1`);

/** Notes a token's use. $1 name, $2 now */
export const TOKEN_TOUCH = sql('token_touch', 'UPDATE tokens SET last_used_at = $2 WHERE name = $1', true);

/** Revokes a live token; returns its name when it did. $1 name, $2 now */
export const TOKEN_REVOKE = sql('token_revoke', 'UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL RETURNING name');

/** Adds a session. $1 id sha256, $2 token name, $3 role, $4 created_at, $5 expires_at, $6 the token's sha256 */
export const SESSION_INSERT = sql('session_insert', `
  INSERT INTO sessions (id_sha256, token_name, role, created_at, expires_at, token_sha256) VALUES ($1, $2, $3, $4, $5, $6)`);

/**
 * A live session by its id's hash, only while the token it was signed in with is current: the admin
 * file's token as loaded now, or a stored token of its name neither revoked nor expired.
 * $1 id sha256, $2 now, $3 the admin.token's sha256
 */
export const SESSION_FIND_CURRENT = sql('session_find_current', `
  SELECT s.token_name, s.role, s.created_at, s.expires_at, s.token_sha256 FROM sessions s
  LEFT JOIN tokens t ON t.token_sha256 = s.token_sha256 AND t.name = s.token_name
  WHERE s.id_sha256 = $1 AND s.expires_at > $2
    AND (s.token_sha256 = $3 OR (t.name IS NOT NULL AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)))`);

/** Ends a session. $1 id sha256 */
export const SESSION_DELETE = sql('session_delete', 'DELETE FROM sessions WHERE id_sha256 = $1', true);

/** Ends every session of a token. $1 token name */
export const SESSIONS_DELETE_OF_TOKEN = sql('sessions_delete_of_token', 'DELETE FROM sessions WHERE token_name = $1', true);

/** Forgets sessions expired before a time. $1 now */
export const SESSIONS_DELETE_EXPIRED = sql('sessions_delete_expired', 'DELETE FROM sessions WHERE expires_at <= $1', true);

// ---- several servers (notes/issue16-plan.md)

/** The ids of the servers alive now. (no parameters) */
export const LIVE_SERVERS = sql('live_servers', LIVE_SERVER_IDS_SQL);

/** The farm's servers, alive first then newest, each with whether it is alive and the names of its unexpired leases. (no parameters) */
export const SERVERS_LIST = sql('servers_list', `
  SELECT s.*, s.id IN (${LIVE_SERVER_IDS_SQL}) AS alive,
    ARRAY(SELECT l.name FROM leases l WHERE l.holder = s.id AND l.expires_at > ${DB_NOW_SQL} ORDER BY l.name) AS leases
  FROM servers s ORDER BY alive DESC, s.started_at DESC, s.id`);

/** A farm secret, stored unless one is; returns the stored value (no row when another transaction stored one this statement cannot see
 * yet: ask again). $1 name, $2 proposed value, $3 created_at */
export const FARM_SECRET = sql('farm_secret', `
  WITH added AS (INSERT INTO farm_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING value)
  SELECT value FROM added UNION ALL SELECT value FROM farm_secrets WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM added)`, true);

/** A pool's kept state. $1 pool */
export const POOL_STATE_GET = sql('pool_state_get', 'SELECT failures, quarantines, quarantined_until, last_error FROM pool_state WHERE pool = $1');

/** Keeps a pool's state. $1 pool, $2 failures, $3 quarantines, $4 quarantined_until, $5 last_error */
export const POOL_STATE_UPSERT = sql('pool_state_upsert', `
  INSERT INTO pool_state (pool, failures, quarantines, quarantined_until, last_error) VALUES ($1, $2, $3, $4, $5)
  ON CONFLICT (pool) DO UPDATE SET failures = excluded.failures, quarantines = excluded.quarantines,
    quarantined_until = excluded.quarantined_until, last_error = excluded.last_error`, true);

/** Records a pool instance. $1 id, $2 pool, $3 name, $4 token_sha256, $5 state, $6 handle (JSON), $7 for_run, $8 adopted, $9 started_at */
export const POOL_INSTANCE_INSERT = sql('pool_instance_insert', `
  INSERT INTO pool_instances (id, pool, name, token_sha256, state, handle, for_run, adopted, started_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`);

/** Changes an instance's state, and its handle and adopted flag when given. $1 id, $2 state, $3 handle (JSON; null: unchanged),
 * $4 adopted (null: unchanged) */
export const POOL_INSTANCE_UPDATE = sql('pool_instance_update', `
  UPDATE pool_instances SET state = $2, handle = COALESCE($3::json, handle), adopted = COALESCE($4::boolean, adopted) WHERE id = $1`, true);

/** Forgets an instance. $1 id */
export const POOL_INSTANCE_DELETE = sql('pool_instance_delete', 'DELETE FROM pool_instances WHERE id = $1', true);

/** Instances of a pool (null: all), oldest first. $1 pool (null: all) */
export const POOL_INSTANCES_LIST = sql('pool_instances_list', `
  SELECT * FROM pool_instances WHERE ($1::text IS NULL OR pool = $1) ORDER BY started_at, id`);

/** The instance whose worker token has this sha256. $1 token_sha256 */
export const POOL_INSTANCE_BY_TOKEN = sql('pool_instance_by_token', 'SELECT * FROM pool_instances WHERE token_sha256 = $1');

/** Records a blob stored or reused (its touch never moves back); returns whether the row is new
 * (xmax is 0 only for a row this statement inserted). $1 sha256, $2 size, $3 now */
export const BLOB_TOUCH = sql('blob_touch', `
  INSERT INTO blobs (sha256, size, touched_at) VALUES ($1, $2, $3)
  ON CONFLICT (sha256) DO UPDATE SET size = excluded.size, touched_at = GREATEST(blobs.touched_at, excluded.touched_at)
  RETURNING (xmax = 0) AS inserted`, true);

/** Blobs last touched before a time, oldest first. $1 before, $2 limit */
export const BLOBS_STALE = sql('blobs_stale', 'SELECT sha256 FROM blobs WHERE touched_at < $1 ORDER BY touched_at, sha256 LIMIT $2');

/** Forgets a blob's row unless it was touched since a time; returns it when forgotten. $1 sha256, $2 before */
export const BLOB_FORGET = sql('blob_forget', 'DELETE FROM blobs WHERE sha256 = $1 AND touched_at < $2 RETURNING sha256');

// ---- presence and leases (notes/issue16-plan.md §2.2, §2.3): sent by presence.ts on its dedicated connection

/** Records this server as it joins (again, after a retake: the same id, heartbeat now, not stopped).
 * $1 id, $2 url, $3 hostname, $4 pid, $5 version, $6 config_digest */
export const SERVER_REGISTER = sql('server_register', `
  INSERT INTO servers (id, url, hostname, pid, version, config_digest, started_at, heartbeat_at)
  VALUES ($1, $2, $3, $4, $5, $6, ${DB_NOW_SQL}, ${DB_NOW_SQL})
  ON CONFLICT (id) DO UPDATE SET url = excluded.url, hostname = excluded.hostname, pid = excluded.pid, version = excluded.version,
    config_digest = excluded.config_digest, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL`, true);

/**
 * A presence tick, one statement: this server's heartbeat now, and the leases it holds of those
 * named renewed to now + ttl; returns the leases renewed (one missing is lost). $1 server id,
 * $2 lease ttl ms, $3 lease names (text[])
 */
export const PRESENCE_TICK = sql('presence_tick', `
  WITH hb AS (UPDATE servers SET heartbeat_at = ${DB_NOW_SQL} WHERE id = $1 RETURNING id)
  UPDATE leases SET expires_at = ${DB_NOW_SQL} + $2::bigint WHERE holder = $1 AND name = ANY($3::text[])
  RETURNING name, epoch, expires_at`, true);

/**
 * Takes a lease that is free: never held, expired, or held by a server no longer alive (so a dead
 * holder's lease is free at once), or still recorded as this server's though it counts it lost (its
 * presence came back before the lease expired: no wait for the TTL). Its epoch grows by one at each
 * taking, so writes fenced by the old epoch are refused. Returns the lease's epoch and deadline when
 * taken, nothing otherwise. $1 name, $2 server id, $3 ttl ms
 */
export const LEASE_ACQUIRE = sql('lease_acquire', `
  INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, ${DB_NOW_SQL} + $3::bigint)
  ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = leases.epoch + 1, expires_at = excluded.expires_at
  WHERE leases.expires_at < ${DB_NOW_SQL} OR leases.holder = excluded.holder OR leases.holder NOT IN (${LIVE_SERVER_IDS_SQL})
  RETURNING epoch, expires_at`);

/**
 * Lets a held lease go (a clean stop, a handover) and, at commit, tells the farm on the feed
 * (`lease.released` {name}) so another server takes it at once. Returns the name when it was held.
 * $1 name, $2 server id
 */
export const LEASE_RELEASE = sql('lease_release', `
  WITH released AS (UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 RETURNING name)
  SELECT name, pg_notify(${FEED_CHANNEL_SQL}, json_build_object('s', $2::text, 'k', 'lease.released', 'd', json_build_object('name', name))::text)
  FROM released`, true);

/** Marks this server stopped (a clean stop): dead to the others at once. $1 server id */
export const SERVER_STOP = sql('server_stop', `UPDATE servers SET stopped_at = ${DB_NOW_SQL} WHERE id = $1`, true);

/** Forgets servers not alive whose last heartbeat is older than a day (at each server's start). (no parameters) */
export const SERVERS_FORGET_OLD = sql('servers_forget_old', `
  DELETE FROM servers WHERE heartbeat_at < ${DB_NOW_SQL} - 86400000 AND id NOT IN (${LIVE_SERVER_IDS_SQL})`, true);

/** Takes this server's presence lock (presence.ts); true when taken. $1 server id */
export const PRESENCE_LOCK = sql('presence_lock', `SELECT pg_try_advisory_lock(${PRESENCE_LOCK_KEY}, hashtext($1)) AS got`);

/** Sets the URL this server is reached at (known once it listens). $1 server id, $2 url */
export const SERVER_SET_URL = sql('server_set_url', 'UPDATE servers SET url = $2 WHERE id = $1', true);

/** A file's import (kiln import-robur). $1 sha256 */
export const IMPORT_GET = sql('import_get', 'SELECT sha256, kind, imported_at, report FROM imports WHERE sha256 = $1');

/** Records a file's import unless it is recorded (no row returned then). $1 sha256, $2 kind, $3 imported_at, $4 report (JSON) */
export const IMPORT_INSERT = sql('import_insert', `
  INSERT INTO imports (sha256, kind, imported_at, report) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING RETURNING sha256`);

/** Sets the report of a file's import (written last, in the import's transaction). $1 sha256, $2 report (JSON) */
export const IMPORT_SET_REPORT = sql('import_set_report', 'UPDATE imports SET report = $2 WHERE sha256 = $1');
