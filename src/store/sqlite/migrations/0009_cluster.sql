-- 0009: as PostgreSQL's 0004 (used trivially: one server per SQLite file): several servers on one database (notes/issue16-plan.md). Times are ms since the epoch; the
-- servers' heartbeats and the leases' deadlines are on the database's clock, so servers whose
-- clocks disagree still agree on who is alive and who holds what.
--
-- servers: one row per server process (a fresh id at each start); a clean stop sets stopped_at.
-- A server is alive while it heartbeats and holds its presence lock (see presence.ts).
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

-- leases: each singleton (scheduler, reaper, outbox, retention, gc, pool:NAME) is held by one server
-- until expires_at; epoch grows by one at each change of holder, and fences the holder's writes.
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  epoch      INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);

-- farm_secrets: what every server of the farm must share (admin.token, worker.token, the pool
-- token key and owner id); the first server's value wins.
CREATE TABLE farm_secrets (
  name       TEXT PRIMARY KEY,
  value      TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

-- pool_state: a pool's failures and quarantine, so a pool's next manager keeps them.
CREATE TABLE pool_state (
  pool              TEXT PRIMARY KEY,
  failures          INTEGER NOT NULL DEFAULT 0,
  quarantines       INTEGER NOT NULL DEFAULT 0,
  quarantined_until INTEGER NOT NULL DEFAULT 0,
  last_error        TEXT
);

-- pool_instances: the instances a pool started, so any server authenticates their workers (by the
-- sha256 of their token) and a pool's next manager adopts them.
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
CREATE INDEX pool_instances_by_pool ON pool_instances (pool);

-- blobs: when each artifact blob was last stored or reused, on any server (the sweeper's grace),
-- where a file's mtime served one server.
CREATE TABLE blobs (
  sha256     TEXT PRIMARY KEY,
  size       INTEGER NOT NULL,
  touched_at INTEGER NOT NULL
);

-- A worker's row says which server and which connection hold it: a name is taken while that
-- server lives, and only that connection's close marks it disconnected.
ALTER TABLE workers ADD COLUMN server_id TEXT;
ALTER TABLE workers ADD COLUMN conn_id TEXT;

-- A delivery being sent is claimed by the outbox lease's epoch; a later epoch may take it over.
ALTER TABLE deliveries ADD COLUMN claim_epoch INTEGER;
