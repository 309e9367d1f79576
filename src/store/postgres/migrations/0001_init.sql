-- 0001: Kiln's schema on PostgreSQL, as SQLite's migrations 0001-0006 leave theirs (one file: this
-- dialect starts here). Times are ms since the epoch (BIGINT); JSON columns hold what the SQLite
-- store holds as TEXT (json keeps the text as given, so key order reads back the same).
-- Keys and names compare by bytes (COLLATE "C"), as SQLite's do: run id prefixes are found by
-- range, and listings order the same on every server's locale.

CREATE TABLE jobs (
  name        TEXT COLLATE "C" PRIMARY KEY,
  -- NULL: a template job that runs on every platform with a template for it.
  platform    TEXT COLLATE "C",
  -- NULL for a template job: its script is expanded from the template at dispatch.
  script      TEXT,
  template    TEXT,
  vars        JSON NOT NULL DEFAULT '{}',
  env         JSON NOT NULL DEFAULT '{}',
  labels      JSON NOT NULL DEFAULT '{}',
  -- {"kind":"period","period":"daily"} | {"kind":"every","everyMs":N} | {"kind":"cron","expr":E,"tz":Z}
  schedule    JSON NOT NULL,
  paused      BOOLEAN NOT NULL DEFAULT FALSE,
  -- What to do when the job is due while its previous run is queued or running.
  overlap     TEXT NOT NULL DEFAULT 'skip',
  catch_up    BOOLEAN NOT NULL DEFAULT FALSE,
  skipped     INTEGER NOT NULL DEFAULT 0,
  -- {"at": ms, "reason": text} of the last due time that queued nothing.
  last_skip   JSON,
  timeout_ms  BIGINT NOT NULL,
  idle_timeout_ms BIGINT,
  retries     INTEGER NOT NULL DEFAULT 1,
  failure_retries INTEGER NOT NULL DEFAULT 0,
  artifacts   JSON NOT NULL DEFAULT '[]',
  artifacts_on_failure BOOLEAN NOT NULL DEFAULT FALSE,
  sandbox     JSON NOT NULL DEFAULT '{}',
  next_at     BIGINT,
  created_at  BIGINT NOT NULL,
  updated_at  BIGINT NOT NULL
);
CREATE INDEX jobs_next_at ON jobs (next_at) WHERE next_at IS NOT NULL;

-- Queue positions: a run queued at the back takes the next of queue_back, one queued at the front
-- the negated next of queue_front. Both only grow, so concurrent transactions never tie.
CREATE SEQUENCE queue_back;
CREATE SEQUENCE queue_front;

CREATE TABLE runs (
  id           TEXT COLLATE "C" PRIMARY KEY,
  job          TEXT COLLATE "C" NOT NULL,
  platform     TEXT COLLATE "C" NOT NULL,
  labels       JSON NOT NULL DEFAULT '{}',
  status       TEXT NOT NULL,
  attempt      INTEGER NOT NULL DEFAULT 1,
  queue_pos    BIGINT,
  worker       TEXT COLLATE "C",
  -- The credential identity (`shared`, `token:NAME`, `instance:NAME`) and the worker process (its
  -- hello's id) that took the current attempt.
  worker_identity TEXT,
  worker_session  TEXT,
  queued_at    BIGINT NOT NULL,
  started_at   BIGINT,
  finished_at  BIGINT,
  result       JSON,
  script       TEXT,
  env          JSON NOT NULL DEFAULT '{}',
  timeout_ms   BIGINT,
  idle_timeout_ms BIGINT,
  -- Retries left for a lost worker and for a failed job; each retry is a new attempt of this run.
  lost_retries_left    INTEGER NOT NULL DEFAULT 0,
  failure_retries_left INTEGER NOT NULL DEFAULT 0,
  -- The console seq the current attempt starts at (earlier attempts' lines come before it).
  first_seq    INTEGER NOT NULL DEFAULT 0,
  cancel_requested_by TEXT,
  -- The server's backstop: a running run still running then is ended by the server itself.
  deadline_at  BIGINT,
  artifacts    JSON NOT NULL DEFAULT '[]',
  artifacts_on_failure BOOLEAN NOT NULL DEFAULT FALSE,
  sandbox      JSON NOT NULL DEFAULT '{}'
);
-- A job is queued at most once per platform.
CREATE UNIQUE INDEX runs_one_queued ON runs (job, platform) WHERE status = 'queued';
CREATE INDEX runs_queue ON runs (platform, queue_pos) WHERE status = 'queued';
CREATE INDEX runs_running ON runs (worker) WHERE status = 'running';
CREATE INDEX runs_by_job ON runs (job, queued_at);
CREATE INDEX runs_by_time ON runs (queued_at);
CREATE INDEX runs_deadline ON runs (deadline_at) WHERE status = 'running';

-- Everything that happened to a run, including messages that were answered but not applied.
CREATE TABLE run_events (
  id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id   TEXT COLLATE "C" NOT NULL,
  at       BIGINT NOT NULL,
  attempt  INTEGER NOT NULL,
  kind     TEXT NOT NULL,
  detail   JSON NOT NULL DEFAULT '{}'
);
CREATE INDEX run_events_by_run ON run_events (run_id, id);

-- A line's text as UTF-8 bytes: a job may print NUL, which PostgreSQL's TEXT cannot hold.
CREATE TABLE console_lines (
  run_id  TEXT COLLATE "C" NOT NULL,
  seq     INTEGER NOT NULL,
  ts      BIGINT NOT NULL,
  text    BYTEA NOT NULL,
  PRIMARY KEY (run_id, seq)
);

CREATE TABLE dropped_platforms (
  platform    TEXT COLLATE "C" PRIMARY KEY,
  dropped_at  BIGINT NOT NULL
);

CREATE TABLE workers (
  name          TEXT COLLATE "C" PRIMARY KEY,
  platform      TEXT NOT NULL,
  labels        JSON NOT NULL DEFAULT '{}',
  capacity      INTEGER NOT NULL,
  hostname      TEXT NOT NULL,
  os            TEXT NOT NULL,
  arch          TEXT NOT NULL,
  version       TEXT NOT NULL,
  connected     BOOLEAN NOT NULL,
  connected_at  BIGINT NOT NULL,
  last_seen     BIGINT NOT NULL
);

-- Each file a run produced: its path in the work dir, size, sha256 (the blob's name in the
-- content-addressed store) and mode.
CREATE TABLE artifacts (
  run_id  TEXT COLLATE "C" NOT NULL,
  path    TEXT COLLATE "C" NOT NULL,
  size    BIGINT NOT NULL,
  sha256  TEXT NOT NULL,
  mode    INTEGER NOT NULL,
  PRIMARY KEY (run_id, path)
);
CREATE INDEX artifacts_by_blob ON artifacts (sha256);

-- The upload outbox: a run that ran and ended gets a delivery row in the same transaction when an
-- upload target is configured.
CREATE TABLE deliveries (
  id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id      TEXT COLLATE "C" NOT NULL,
  target      TEXT NOT NULL,
  state       TEXT NOT NULL DEFAULT 'pending',
  attempts    INTEGER NOT NULL DEFAULT 0,
  next_at     BIGINT NOT NULL,
  last_error  TEXT,
  created_at  BIGINT NOT NULL,
  ended_at    BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_run ON deliveries (run_id);

-- Per-worker tokens, kept only as their sha256 (hex).
CREATE TABLE worker_tokens (
  name         TEXT COLLATE "C" PRIMARY KEY,
  token_sha256 TEXT NOT NULL UNIQUE,
  created_at   BIGINT NOT NULL,
  last_used_at BIGINT
);
