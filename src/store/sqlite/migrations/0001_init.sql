-- 0001: jobs, runs (queue and history), run events, console lines, workers.
-- Times are ms since the epoch; JSON columns hold objects of strings.

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
);
CREATE INDEX jobs_next_at ON jobs (next_at) WHERE next_at IS NOT NULL;

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
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id   TEXT NOT NULL,
  at       INTEGER NOT NULL,
  attempt  INTEGER NOT NULL,
  kind     TEXT NOT NULL,
  detail   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX run_events_by_run ON run_events (run_id, id);

CREATE TABLE console_lines (
  run_id  TEXT NOT NULL,
  seq     INTEGER NOT NULL,
  ts      INTEGER NOT NULL,
  text    TEXT NOT NULL,
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE dropped_platforms (
  platform    TEXT PRIMARY KEY,
  dropped_at  INTEGER NOT NULL
);

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
);
