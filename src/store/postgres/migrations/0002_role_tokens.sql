-- 0002: tokens for people, by role (`kiln token create NAME --role R`), and browser sessions.
-- As SQLite's 0007: a token kept as its sha256 (hex), a revoked one keeps its row (revoked_at) so
-- it is refused as "revoked"; a session is the dashboard's cookie, kept as the sha256 of its id,
-- with its token's name and role. Revoking a token deletes its sessions.

CREATE TABLE tokens (
  name         TEXT COLLATE "C" PRIMARY KEY,
  role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  token_sha256 TEXT NOT NULL UNIQUE,
  created_at   BIGINT NOT NULL,
  expires_at   BIGINT,
  last_used_at BIGINT,
  revoked_at   BIGINT
);

CREATE TABLE sessions (
  id_sha256  TEXT PRIMARY KEY,
  token_name TEXT COLLATE "C" NOT NULL,
  role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);

CREATE INDEX sessions_by_token ON sessions (token_name);
