-- 0005: imports: each file moved into Kiln from another system (kiln import-robur: a robur builder
-- `state` file), by the sha256 of its bytes, with what its import took (report). A file imported
-- once is not imported again: its queue entries would queue runs again after the first ones finished.
CREATE TABLE imports (
  sha256      TEXT COLLATE "C" PRIMARY KEY,
  kind        TEXT NOT NULL,
  imported_at BIGINT NOT NULL,
  report      JSON NOT NULL
);
