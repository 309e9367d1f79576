-- 0005: per-worker tokens and the identity that holds each running run.
-- A worker token is kept only as its sha256 (hex): the token itself is shown once, at creation.
-- runs.worker_identity is the credential a run's worker connected with (`shared`, `token:NAME`,
-- `instance:NAME`): artifact uploads and re-attaching are allowed to that identity only. NULL on
-- runs dispatched before this migration.

CREATE TABLE worker_tokens (
  name         TEXT PRIMARY KEY,
  token_sha256 TEXT NOT NULL UNIQUE,
  created_at   INTEGER NOT NULL,
  last_used_at INTEGER
);

ALTER TABLE runs ADD COLUMN worker_identity TEXT;
