-- 0004: what a job asks of its sandbox (JSON {memoryBytes?, pids?, cpuSeconds?, network?}); runs
-- copy it when dispatched, as they copy the script.

ALTER TABLE jobs ADD COLUMN sandbox TEXT NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN sandbox TEXT NOT NULL DEFAULT '{}';
