-- 0008: token names are unique whatever their case (`Alice` is `alice`: names are ASCII), and a
-- session keeps the sha256 of the token it was signed in with, so that it ends with that
-- token: the lookup accepts it only while the token is still current (the data dir's admin.token
-- as loaded now, or a stored token neither revoked nor expired). Sessions from before have none and
-- are refused: their browsers sign in again.

ALTER TABLE sessions ADD COLUMN token_sha256 TEXT;

CREATE UNIQUE INDEX tokens_name_nocase ON tokens (lower(name));
