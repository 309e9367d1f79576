-- 0003: as SQLite's 0008: token names unique whatever their case, and a session keeps the sha256 of the token it was signed in with, and is
-- accepted only while that token is current (admin.token as loaded now, or a live stored token).
-- Sessions from before have none and are refused: their browsers sign in again.

ALTER TABLE sessions ADD COLUMN token_sha256 TEXT;

CREATE UNIQUE INDEX tokens_name_nocase ON tokens (lower(name));
