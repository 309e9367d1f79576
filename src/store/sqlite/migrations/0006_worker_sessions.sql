-- 0006: the worker process that took each running run.
-- runs.worker_session is the random id a worker process sends in its hello (made once at its start,
-- kept across its reconnects). A worker that comes back under the same name without the run says
-- "never got it" only if it is the same process; another process under that name means the one
-- that held the run died, so the attempt is lost. NULL on runs dispatched before this migration
-- and on runs of workers that send no id (older builds).

ALTER TABLE runs ADD COLUMN worker_session TEXT;
