-- 0004: several servers on one database (notes/issue16-plan.md). Times are ms since the epoch; the
-- servers' heartbeats and the leases' deadlines are on the database's clock, so servers whose
-- clocks disagree still agree on who is alive and who holds what.
--
-- servers: one row per server process (a fresh id at each start); a clean stop sets stopped_at.
-- A server is alive while it heartbeats and holds its presence lock (see presence.ts).
CREATE TABLE servers (
  id            TEXT COLLATE "C" PRIMARY KEY,
  url           TEXT NOT NULL,
  hostname      TEXT NOT NULL,
  pid           INTEGER NOT NULL,
  version       TEXT NOT NULL,
  config_digest TEXT NOT NULL,
  started_at    BIGINT NOT NULL,
  heartbeat_at  BIGINT NOT NULL,
  stopped_at    BIGINT
);

-- leases: each singleton (scheduler, reaper, outbox, retention, gc, pool:NAME) is held by one server
-- until expires_at; epoch grows by one at each change of holder, and fences the holder's writes.
CREATE TABLE leases (
  name       TEXT COLLATE "C" PRIMARY KEY,
  holder     TEXT COLLATE "C" NOT NULL,
  epoch      BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);

-- farm_secrets: what every server of the farm must share (admin.token, worker.token, the pool
-- token key and owner id); the first server's value wins.
CREATE TABLE farm_secrets (
  name       TEXT COLLATE "C" PRIMARY KEY,
  value      TEXT NOT NULL,
  created_at BIGINT NOT NULL
);

-- pool_state: a pool's failures and quarantine, so a pool's next manager keeps them.
CREATE TABLE pool_state (
  pool              TEXT COLLATE "C" PRIMARY KEY,
  failures          INTEGER NOT NULL DEFAULT 0,
  quarantines       INTEGER NOT NULL DEFAULT 0,
  quarantined_until BIGINT NOT NULL DEFAULT 0,
  last_error        TEXT
);

-- pool_instances: the instances a pool started, so any server authenticates their workers (by the
-- sha256 of their token) and a pool's next manager adopts them.
CREATE TABLE pool_instances (
  id           TEXT COLLATE "C" PRIMARY KEY,
  pool         TEXT COLLATE "C" NOT NULL,
  name         TEXT COLLATE "C" NOT NULL UNIQUE,
  token_sha256 TEXT NOT NULL UNIQUE,
  state        TEXT NOT NULL,
  handle       JSON NOT NULL,
  for_run      TEXT COLLATE "C",
  adopted      BOOLEAN NOT NULL DEFAULT FALSE,
  started_at   BIGINT NOT NULL
);
CREATE INDEX pool_instances_by_pool ON pool_instances (pool);

-- blobs: when each artifact blob was last stored or reused, on any server (the sweeper's grace),
-- where a file's mtime served one server.
CREATE TABLE blobs (
  sha256     TEXT COLLATE "C" PRIMARY KEY,
  size       BIGINT NOT NULL,
  touched_at BIGINT NOT NULL
);

-- A worker's row says which server and which connection hold it: a name is taken while that
-- server lives, and only that connection's close marks it disconnected.
ALTER TABLE workers ADD COLUMN server_id TEXT COLLATE "C";
ALTER TABLE workers ADD COLUMN conn_id TEXT COLLATE "C";

-- A delivery being sent is claimed by the outbox lease's epoch; a later epoch may take it over.
ALTER TABLE deliveries ADD COLUMN claim_epoch BIGINT;
