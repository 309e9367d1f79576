-- Kiln's SQLite schema after every migration in src/store/sqlite/migrations (sqlite_master, by kind
-- and name). Written by `npm run schema:dump`; DO NOT EDIT: a test compares it with what the migrations make.
-- application_id: 0x4b494c4e

-- table artifacts
CREATE TABLE artifacts (
  run_id  TEXT NOT NULL,
  path    TEXT NOT NULL,
  size    INTEGER NOT NULL,
  sha256  TEXT NOT NULL,
  mode    INTEGER NOT NULL,
  PRIMARY KEY (run_id, path)
) WITHOUT ROWID;

-- table blobs
CREATE TABLE blobs (
  sha256     TEXT PRIMARY KEY,
  size       INTEGER NOT NULL,
  touched_at INTEGER NOT NULL
);

-- table console_lines
CREATE TABLE console_lines (
  run_id  TEXT NOT NULL,
  seq     INTEGER NOT NULL,
  ts      INTEGER NOT NULL,
  text    TEXT NOT NULL,
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- table deliveries
CREATE TABLE deliveries (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id      TEXT NOT NULL,
  target      TEXT NOT NULL,
  state       TEXT NOT NULL DEFAULT 'pending',
  attempts    INTEGER NOT NULL DEFAULT 0,
  next_at     INTEGER NOT NULL,
  last_error  TEXT,
  created_at  INTEGER NOT NULL,
  ended_at    INTEGER
, claim_epoch INTEGER);

-- table dropped_platforms
CREATE TABLE dropped_platforms (
  platform    TEXT PRIMARY KEY,
  dropped_at  INTEGER NOT NULL
);

-- table farm_secrets
CREATE TABLE farm_secrets (
  name       TEXT PRIMARY KEY,
  value      TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

-- table imports
CREATE TABLE imports (
  sha256      TEXT PRIMARY KEY,
  kind        TEXT NOT NULL,
  imported_at INTEGER NOT NULL,
  report      TEXT NOT NULL
);

-- table jobs
CREATE TABLE jobs (
  name        TEXT PRIMARY KEY,
  -- NULL: a template job that runs on every platform with a template for it.
  platform    TEXT,
  -- NULL for a template job: its script is expanded from the template at dispatch.
  script      TEXT,
  template    TEXT,
  vars        TEXT NOT NULL DEFAULT '{}',
  env         TEXT NOT NULL DEFAULT '{}',
  labels      TEXT NOT NULL DEFAULT '{}',
  -- JSON: {"kind":"period","period":"daily"} | {"kind":"every","everyMs":N} | {"kind":"cron","expr":E,"tz":Z}
  schedule    TEXT NOT NULL,
  paused      INTEGER NOT NULL DEFAULT 0,
  -- What to do when the job is due while its previous run is queued or running.
  overlap     TEXT NOT NULL DEFAULT 'skip',
  catch_up    INTEGER NOT NULL DEFAULT 0,
  skipped     INTEGER NOT NULL DEFAULT 0,
  -- JSON {"at": ms, "reason": text} of the last due time that queued nothing.
  last_skip   TEXT,
  timeout_ms  INTEGER NOT NULL,
  idle_timeout_ms INTEGER,
  retries     INTEGER NOT NULL DEFAULT 1,
  failure_retries INTEGER NOT NULL DEFAULT 0,
  next_at     INTEGER,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
, artifacts TEXT NOT NULL DEFAULT '[]', artifacts_on_failure INTEGER NOT NULL DEFAULT 0, sandbox TEXT NOT NULL DEFAULT '{}');

-- table leases
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  epoch      INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);

-- table pool_instances
CREATE TABLE pool_instances (
  id           TEXT PRIMARY KEY,
  pool         TEXT NOT NULL,
  name         TEXT NOT NULL UNIQUE,
  token_sha256 TEXT NOT NULL UNIQUE,
  state        TEXT NOT NULL,
  handle       TEXT NOT NULL,
  for_run      TEXT,
  adopted      INTEGER NOT NULL DEFAULT 0,
  started_at   INTEGER NOT NULL
);

-- table pool_state
CREATE TABLE pool_state (
  pool              TEXT PRIMARY KEY,
  failures          INTEGER NOT NULL DEFAULT 0,
  quarantines       INTEGER NOT NULL DEFAULT 0,
  quarantined_until INTEGER NOT NULL DEFAULT 0,
  last_error        TEXT
);

-- table run_events
CREATE TABLE run_events (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id   TEXT NOT NULL,
  at       INTEGER NOT NULL,
  attempt  INTEGER NOT NULL,
  kind     TEXT NOT NULL,
  detail   TEXT NOT NULL DEFAULT '{}'
);

-- table runs
CREATE TABLE runs (
  id           TEXT PRIMARY KEY,
  job          TEXT NOT NULL,
  platform     TEXT NOT NULL,
  labels       TEXT NOT NULL DEFAULT '{}',
  status       TEXT NOT NULL,
  attempt      INTEGER NOT NULL DEFAULT 1,
  queue_pos    INTEGER,
  worker       TEXT,
  queued_at    INTEGER NOT NULL,
  started_at   INTEGER,
  finished_at  INTEGER,
  result       TEXT,
  script       TEXT,
  env          TEXT NOT NULL DEFAULT '{}',
  timeout_ms   INTEGER,
  idle_timeout_ms INTEGER,
  -- Retries left for a lost worker and for a failed job; each retry is a new attempt of this run.
  lost_retries_left    INTEGER NOT NULL DEFAULT 0,
  failure_retries_left INTEGER NOT NULL DEFAULT 0,
  -- The console seq the current attempt starts at (earlier attempts' lines come before it).
  first_seq    INTEGER NOT NULL DEFAULT 0,
  cancel_requested_by TEXT,
  -- The server's backstop: a running run still running then is ended by the server itself.
  deadline_at  INTEGER
, artifacts TEXT NOT NULL DEFAULT '[]', artifacts_on_failure INTEGER NOT NULL DEFAULT 0, sandbox TEXT NOT NULL DEFAULT '{}', worker_identity TEXT, worker_session TEXT);

-- table schema_migrations
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);

-- table servers
CREATE TABLE servers (
  id            TEXT PRIMARY KEY,
  url           TEXT NOT NULL,
  hostname      TEXT NOT NULL,
  pid           INTEGER NOT NULL,
  version       TEXT NOT NULL,
  config_digest TEXT NOT NULL,
  started_at    INTEGER NOT NULL,
  heartbeat_at  INTEGER NOT NULL,
  stopped_at    INTEGER
);

-- table sessions
CREATE TABLE sessions (
  id_sha256  TEXT PRIMARY KEY,
  token_name TEXT NOT NULL,
  role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
, token_sha256 TEXT);

-- table tokens
CREATE TABLE tokens (
  name         TEXT PRIMARY KEY,
  role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  token_sha256 TEXT NOT NULL UNIQUE,
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER,
  last_used_at INTEGER,
  revoked_at   INTEGER
);

-- table worker_tokens
CREATE TABLE worker_tokens (
  name         TEXT PRIMARY KEY,
  token_sha256 TEXT NOT NULL UNIQUE,
  created_at   INTEGER NOT NULL,
  last_used_at INTEGER
);

-- table workers
CREATE TABLE workers (
  name          TEXT PRIMARY KEY,
  platform      TEXT NOT NULL,
  labels        TEXT NOT NULL DEFAULT '{}',
  capacity      INTEGER NOT NULL,
  hostname      TEXT NOT NULL,
  os            TEXT NOT NULL,
  arch          TEXT NOT NULL,
  version       TEXT NOT NULL,
  connected     INTEGER NOT NULL,
  connected_at  INTEGER NOT NULL,
  last_seen     INTEGER NOT NULL
, server_id TEXT, conn_id TEXT);

-- index artifacts_by_blob
CREATE INDEX artifacts_by_blob ON artifacts (sha256);

-- index deliveries_by_run
CREATE INDEX deliveries_by_run ON deliveries (run_id);

-- index deliveries_due
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';

-- index jobs_next_at
CREATE INDEX jobs_next_at ON jobs (next_at) WHERE next_at IS NOT NULL;

-- index pool_instances_by_pool
CREATE INDEX pool_instances_by_pool ON pool_instances (pool);

-- index run_events_by_run
CREATE INDEX run_events_by_run ON run_events (run_id, id);

-- index runs_by_job
CREATE INDEX runs_by_job ON runs (job, queued_at);

-- index runs_by_time
CREATE INDEX runs_by_time ON runs (queued_at);

-- index runs_deadline
CREATE INDEX runs_deadline ON runs (deadline_at) WHERE status = 'running';

-- index runs_one_queued
CREATE UNIQUE INDEX runs_one_queued ON runs (job, platform) WHERE status = 'queued';

-- index runs_queue
CREATE INDEX runs_queue ON runs (platform, queue_pos) WHERE status = 'queued';

-- index runs_running
CREATE INDEX runs_running ON runs (worker) WHERE status = 'running';

-- index sessions_by_token
CREATE INDEX sessions_by_token ON sessions (token_name);

-- index tokens_name_nocase
CREATE UNIQUE INDEX tokens_name_nocase ON tokens (lower(name));
