-- 0002: artifacts. Each file a run produced: its path in the work dir, size, sha256 (the blob's
-- name in the content-addressed store) and mode. Jobs say which files (globs) and whether failed
-- runs keep theirs; runs copy that when dispatched.

ALTER TABLE jobs ADD COLUMN artifacts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN artifacts_on_failure INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN artifacts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN artifacts_on_failure INTEGER NOT NULL DEFAULT 0;

CREATE TABLE artifacts (
  run_id  TEXT NOT NULL,
  path    TEXT NOT NULL,
  size    INTEGER NOT NULL,
  sha256  TEXT NOT NULL,
  mode    INTEGER NOT NULL,
  PRIMARY KEY (run_id, path)
) WITHOUT ROWID;
CREATE INDEX artifacts_by_blob ON artifacts (sha256);
