-- 0007: tokens for people, by role (`kiln token create NAME --role R`), and browser sessions.
-- A token is kept only as its sha256 (hex); it is shown once, at creation. A revoked token keeps its
-- row (revoked_at set) so that it is refused as "revoked", not as unknown; `create` of that name
-- replaces it. A session is the dashboard's cookie: kept as the sha256 of its random id, with the
-- name and role of the token it was signed in with (`admin` for the data dir's admin.token).
-- Revoking a token deletes its sessions.

CREATE TABLE tokens (
  name         TEXT PRIMARY KEY,
  role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  token_sha256 TEXT NOT NULL UNIQUE,
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER,
  last_used_at INTEGER,
  revoked_at   INTEGER
);

CREATE TABLE sessions (
  id_sha256  TEXT PRIMARY KEY,
  token_name TEXT NOT NULL,
  role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);

CREATE INDEX sessions_by_token ON sessions (token_name);
