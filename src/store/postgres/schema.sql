-- Kiln's PostgreSQL schema after every migration in src/store/postgres/migrations (from the catalog:
-- tables, columns in order, constraints, indexes, sequences, each by name). Written by `npm run schema:dump`;
-- DO NOT EDIT: a test compares it with what the migrations make.

CREATE TABLE artifacts (
  run_id text COLLATE "C" NOT NULL,
  path text COLLATE "C" NOT NULL,
  size bigint NOT NULL,
  sha256 text NOT NULL,
  mode integer NOT NULL,
  CONSTRAINT artifacts_pkey PRIMARY KEY (run_id, path)
);

CREATE TABLE blobs (
  sha256 text COLLATE "C" NOT NULL,
  size bigint NOT NULL,
  touched_at bigint NOT NULL,
  CONSTRAINT blobs_pkey PRIMARY KEY (sha256)
);

CREATE TABLE console_lines (
  run_id text COLLATE "C" NOT NULL,
  seq integer NOT NULL,
  ts bigint NOT NULL,
  text bytea NOT NULL,
  CONSTRAINT console_lines_pkey PRIMARY KEY (run_id, seq)
);

CREATE TABLE deliveries (
  id bigint NOT NULL GENERATED ALWAYS AS IDENTITY,
  run_id text COLLATE "C" NOT NULL,
  target text NOT NULL,
  state text NOT NULL DEFAULT 'pending'::text,
  attempts integer NOT NULL DEFAULT 0,
  next_at bigint NOT NULL,
  last_error text,
  created_at bigint NOT NULL,
  ended_at bigint,
  claim_epoch bigint,
  CONSTRAINT deliveries_pkey PRIMARY KEY (id)
);

CREATE TABLE dropped_platforms (
  platform text COLLATE "C" NOT NULL,
  dropped_at bigint NOT NULL,
  CONSTRAINT dropped_platforms_pkey PRIMARY KEY (platform)
);

CREATE TABLE farm_secrets (
  name text COLLATE "C" NOT NULL,
  value text NOT NULL,
  created_at bigint NOT NULL,
  CONSTRAINT farm_secrets_pkey PRIMARY KEY (name)
);

CREATE TABLE imports (
  sha256 text COLLATE "C" NOT NULL,
  kind text NOT NULL,
  imported_at bigint NOT NULL,
  report json NOT NULL,
  CONSTRAINT imports_pkey PRIMARY KEY (sha256)
);

CREATE TABLE jobs (
  name text COLLATE "C" NOT NULL,
  platform text COLLATE "C",
  script text,
  template text,
  vars json NOT NULL DEFAULT '{}'::json,
  env json NOT NULL DEFAULT '{}'::json,
  labels json NOT NULL DEFAULT '{}'::json,
  schedule json NOT NULL,
  paused boolean NOT NULL DEFAULT false,
  overlap text NOT NULL DEFAULT 'skip'::text,
  catch_up boolean NOT NULL DEFAULT false,
  skipped integer NOT NULL DEFAULT 0,
  last_skip json,
  timeout_ms bigint NOT NULL,
  idle_timeout_ms bigint,
  retries integer NOT NULL DEFAULT 1,
  failure_retries integer NOT NULL DEFAULT 0,
  artifacts json NOT NULL DEFAULT '[]'::json,
  artifacts_on_failure boolean NOT NULL DEFAULT false,
  sandbox json NOT NULL DEFAULT '{}'::json,
  next_at bigint,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  CONSTRAINT jobs_pkey PRIMARY KEY (name)
);

CREATE TABLE kiln_schema_migrations (
  version integer NOT NULL,
  applied_at bigint NOT NULL,
  CONSTRAINT kiln_schema_migrations_pkey PRIMARY KEY (version)
);

CREATE TABLE leases (
  name text COLLATE "C" NOT NULL,
  holder text COLLATE "C" NOT NULL,
  epoch bigint NOT NULL,
  expires_at bigint NOT NULL,
  CONSTRAINT leases_pkey PRIMARY KEY (name)
);

CREATE TABLE pool_instances (
  id text COLLATE "C" NOT NULL,
  pool text COLLATE "C" NOT NULL,
  name text COLLATE "C" NOT NULL,
  token_sha256 text NOT NULL,
  state text NOT NULL,
  handle json NOT NULL,
  for_run text COLLATE "C",
  adopted boolean NOT NULL DEFAULT false,
  started_at bigint NOT NULL,
  CONSTRAINT pool_instances_name_key UNIQUE (name),
  CONSTRAINT pool_instances_pkey PRIMARY KEY (id),
  CONSTRAINT pool_instances_token_sha256_key UNIQUE (token_sha256)
);

CREATE TABLE pool_state (
  pool text COLLATE "C" NOT NULL,
  failures integer NOT NULL DEFAULT 0,
  quarantines integer NOT NULL DEFAULT 0,
  quarantined_until bigint NOT NULL DEFAULT 0,
  last_error text,
  CONSTRAINT pool_state_pkey PRIMARY KEY (pool)
);

CREATE TABLE run_events (
  id bigint NOT NULL GENERATED ALWAYS AS IDENTITY,
  run_id text COLLATE "C" NOT NULL,
  at bigint NOT NULL,
  attempt integer NOT NULL,
  kind text NOT NULL,
  detail json NOT NULL DEFAULT '{}'::json,
  CONSTRAINT run_events_pkey PRIMARY KEY (id)
);

CREATE TABLE runs (
  id text COLLATE "C" NOT NULL,
  job text COLLATE "C" NOT NULL,
  platform text COLLATE "C" NOT NULL,
  labels json NOT NULL DEFAULT '{}'::json,
  status text NOT NULL,
  attempt integer NOT NULL DEFAULT 1,
  queue_pos bigint,
  worker text COLLATE "C",
  worker_identity text,
  worker_session text,
  queued_at bigint NOT NULL,
  started_at bigint,
  finished_at bigint,
  result json,
  script text,
  env json NOT NULL DEFAULT '{}'::json,
  timeout_ms bigint,
  idle_timeout_ms bigint,
  lost_retries_left integer NOT NULL DEFAULT 0,
  failure_retries_left integer NOT NULL DEFAULT 0,
  first_seq integer NOT NULL DEFAULT 0,
  cancel_requested_by text,
  deadline_at bigint,
  artifacts json NOT NULL DEFAULT '[]'::json,
  artifacts_on_failure boolean NOT NULL DEFAULT false,
  sandbox json NOT NULL DEFAULT '{}'::json,
  CONSTRAINT runs_pkey PRIMARY KEY (id)
);

CREATE TABLE servers (
  id text COLLATE "C" NOT NULL,
  url text NOT NULL,
  hostname text NOT NULL,
  pid integer NOT NULL,
  version text NOT NULL,
  config_digest text NOT NULL,
  started_at bigint NOT NULL,
  heartbeat_at bigint NOT NULL,
  stopped_at bigint,
  CONSTRAINT servers_pkey PRIMARY KEY (id)
);

CREATE TABLE sessions (
  id_sha256 text NOT NULL,
  token_name text COLLATE "C" NOT NULL,
  role text NOT NULL,
  created_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  token_sha256 text,
  CONSTRAINT sessions_pkey PRIMARY KEY (id_sha256),
  CONSTRAINT sessions_role_check CHECK ((role = ANY (ARRAY['viewer'::text, 'operator'::text, 'admin'::text])))
);

CREATE TABLE tokens (
  name text COLLATE "C" NOT NULL,
  role text NOT NULL,
  token_sha256 text NOT NULL,
  created_at bigint NOT NULL,
  expires_at bigint,
  last_used_at bigint,
  revoked_at bigint,
  CONSTRAINT tokens_pkey PRIMARY KEY (name),
  CONSTRAINT tokens_role_check CHECK ((role = ANY (ARRAY['viewer'::text, 'operator'::text, 'admin'::text]))),
  CONSTRAINT tokens_token_sha256_key UNIQUE (token_sha256)
);

CREATE TABLE worker_tokens (
  name text COLLATE "C" NOT NULL,
  token_sha256 text NOT NULL,
  created_at bigint NOT NULL,
  last_used_at bigint,
  CONSTRAINT worker_tokens_pkey PRIMARY KEY (name),
  CONSTRAINT worker_tokens_token_sha256_key UNIQUE (token_sha256)
);

CREATE TABLE workers (
  name text COLLATE "C" NOT NULL,
  platform text NOT NULL,
  labels json NOT NULL DEFAULT '{}'::json,
  capacity integer NOT NULL,
  hostname text NOT NULL,
  os text NOT NULL,
  arch text NOT NULL,
  version text NOT NULL,
  connected boolean NOT NULL,
  connected_at bigint NOT NULL,
  last_seen bigint NOT NULL,
  server_id text COLLATE "C",
  conn_id text COLLATE "C",
  CONSTRAINT workers_pkey PRIMARY KEY (name)
);

CREATE INDEX artifacts_by_blob ON artifacts USING btree (sha256);
CREATE INDEX deliveries_by_run ON deliveries USING btree (run_id);
CREATE INDEX deliveries_due ON deliveries USING btree (next_at) WHERE (state = 'pending'::text);
CREATE INDEX jobs_next_at ON jobs USING btree (next_at) WHERE (next_at IS NOT NULL);
CREATE INDEX pool_instances_by_pool ON pool_instances USING btree (pool);
CREATE INDEX run_events_by_run ON run_events USING btree (run_id, id);
CREATE INDEX runs_by_job ON runs USING btree (job, queued_at);
CREATE INDEX runs_by_time ON runs USING btree (queued_at);
CREATE INDEX runs_deadline ON runs USING btree (deadline_at) WHERE (status = 'running'::text);
CREATE UNIQUE INDEX runs_one_queued ON runs USING btree (job, platform) WHERE (status = 'queued'::text);
CREATE INDEX runs_queue ON runs USING btree (platform, queue_pos) WHERE (status = 'queued'::text);
CREATE INDEX runs_running ON runs USING btree (worker) WHERE (status = 'running'::text);
CREATE INDEX sessions_by_token ON sessions USING btree (token_name);
CREATE UNIQUE INDEX tokens_name_nocase ON tokens USING btree (lower(name));

CREATE SEQUENCE queue_back;
CREATE SEQUENCE queue_front;
