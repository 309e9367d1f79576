-- 0003: the upload outbox. A run that ran and ended gets a delivery row in the same transaction
-- when an upload target is configured; the server sends it, retrying with backoff, until the
-- target accepts it (delivered) or refuses it for good (failed, with the reason).

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
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_run ON deliveries (run_id);
