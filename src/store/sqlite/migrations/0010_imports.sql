-- 0010: as PostgreSQL's 0005. imports: each file moved into Kiln from another system (kiln
-- import-robur: a robur builder `state` file), by the sha256 of its bytes, with what its import
-- took (report, JSON). A file imported once is not imported again: its queue entries would queue
-- runs again after the first ones finished.
CREATE TABLE imports (
  sha256      TEXT PRIMARY KEY,
  kind        TEXT NOT NULL,
  imported_at INTEGER NOT NULL,
  report      TEXT NOT NULL
);
