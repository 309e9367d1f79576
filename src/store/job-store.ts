/**
 * The Store interface: the single source of truth of a Kiln server. Asynchronous and
 * dialect-neutral, so the embedded SQLite store and a PostgreSQL store are interchangeable and
 * pass the same contract tests (test/store/job-store.suite.ts). Times are ms since the epoch.
 */
import type { JobSandbox, Overlap, Role, RunResult, RunStatus, Schedule, WorkerStop } from '../core/index.js';
import type { ConsoleLine } from '../protocol/index.js';

/** A job as stored. */
export interface Job {
  name: string;
  /** Platform its runs are queued for; null for a template job that runs on every platform with a template. */
  platform: string | null;
  /** Shell script, run with `/bin/sh -e`; null for a template job. */
  script: string | null;
  /** Template name, expanded at dispatch (`<config dir>/templates/NAME[.PLATFORM]`). */
  template: string | null;
  /** Variables for the template's `%%NAME%%` placeholders. */
  vars: Record<string, string>;
  env: Record<string, string>;
  /** Labels a worker must have to take its runs. */
  labels: Record<string, string>;
  schedule: Schedule;
  /** A paused job is not queued by its schedule (execute still runs it). */
  paused: boolean;
  /** What happens when it is due while its previous run is queued or running. */
  overlap: Overlap;
  /** Run every missed slot after downtime instead of once. */
  catchUp: boolean;
  timeoutMs: number;
  /** A run printing nothing for this long is stopped; null: no limit. */
  idleTimeoutMs: number | null;
  /** Times a run lost with its worker is tried again. */
  retries: number;
  /** Times a failed run (non-zero exit, signal, timeout) is tried again. */
  failureRetries: number;
  /** Globs of the files kept as artifacts; empty: every non-dot file left in the work dir. */
  artifacts: string[];
  /** Keep artifacts of runs killed by a signal, timed out or cancelled too. */
  artifactsOnFailure: boolean;
  /** Resource limits and network its runs ask of the worker's sandbox. */
  sandbox: JobSandbox;
  /** Next scheduled time, or null when the schedule has none. */
  nextAt: number | null;
  /** Due times that queued nothing (overlap, dropped platform, no template), and the last one. */
  skipped: number;
  lastSkip: { at: number; reason: string } | null;
  createdAt: number;
  updatedAt: number;
}

/** The fields `modify` may change. */
export type JobPatch = Partial<
  Pick<
    Job,
    | 'platform' | 'script' | 'template' | 'vars' | 'env' | 'labels' | 'schedule' | 'paused' | 'overlap' | 'catchUp'
    | 'timeoutMs' | 'idleTimeoutMs' | 'retries' | 'failureRetries' | 'artifacts' | 'artifactsOnFailure' | 'sandbox' | 'nextAt'
  >
>;

/** What firing a schedule did. */
export type FireOutcome =
  | { outcome: 'queued'; runs: Run[]; cancelRequested: Run[]; cancelled: string[] }
  | { outcome: 'skipped'; reason: string; cancelled?: string[] }
  | { outcome: 'stale' };

/** A run as stored. */
export interface Run {
  id: string;
  job: string;
  platform: string;
  labels: Record<string, string>;
  status: RunStatus;
  attempt: number;
  worker: string | null;
  /**
   * The credential identity its worker connected with when it took this attempt (`shared`,
   * `token:NAME`, `instance:NAME`); only that identity may upload its artifacts or re-attach it.
   * Null for runs dispatched before identities were recorded.
   */
  workerIdentity: string | null;
  /**
   * The worker process that took this attempt (the random id of its hello, the same across its
   * reconnects): a worker back under that name without the run is the same process only if its id
   * matches. Null for runs dispatched before it was recorded, or to workers that send none.
   */
  workerSession: string | null;
  queuedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  result: RunResult | null;
  /** What the run executed: copied from the job when it was dispatched. */
  script: string | null;
  env: Record<string, string>;
  timeoutMs: number | null;
  idleTimeoutMs: number | null;
  lostRetriesLeft: number;
  failureRetriesLeft: number;
  /** Console seq the current attempt's lines start at. */
  firstSeq: number;
  /** Who asked to cancel this running run, if anyone. */
  cancelRequestedBy: string | null;
  /** When the server ends the run itself if no result came (timeout or cancel backstop). */
  deadlineAt: number | null;
  /** Artifact globs and policy, copied from the job when dispatched. */
  artifacts: string[];
  artifactsOnFailure: boolean;
  /** The job's sandbox settings, copied when dispatched. */
  sandbox: JobSandbox;
}

/** A file a run produced, stored by content. */
export interface Artifact {
  /** Relative path in the work dir, normalised, `/`-separated. */
  path: string;
  size: number;
  sha256: string;
  mode: number;
}

/** A finished run on its way to the upload target (the outbox). */
export interface Delivery {
  id: number;
  runId: string;
  /** The target it was meant for, as described (no secrets). */
  target: string;
  /**
   * pending: not yet accepted; sending: claimed by the outbox lease's holder (claimEpoch) and being
   * sent; delivered: accepted (2xx); failed: refused for good.
   */
  state: 'pending' | 'sending' | 'delivered' | 'failed';
  /** The outbox lease's epoch that claimed it last (null: never claimed). */
  claimEpoch?: number | null;
  attempts: number;
  /** When the next attempt is due (pending). */
  nextAt: number;
  lastError: string | null;
  createdAt: number;
  endedAt: number | null;
}

/** The outbox at a glance. */
export interface OutboxSummary {
  pending: number;
  delivered: number;
  failed: number;
  /** When the oldest pending delivery was created. */
  oldestPendingAt: number | null;
  /** The most recent deliveries given up or still failing, newest first (a few). */
  troubled: Delivery[];
}

/** Which runs' artifacts retention lets go. */
export interface RetentionPolicy {
  /** Keep the artifacts of the newest N ended runs (that have artifacts) of each job. */
  keepRuns?: number;
  /** Keep the artifacts of runs that ended at or after this time. */
  keptSince?: number;
}

/** A run whose artifacts retention lets go. */
export interface ExpiredArtifacts {
  runId: string;
  job: string;
  finishedAt: number;
  files: number;
  bytes: number;
}

/** One entry of a run's history. */
export interface RunEvent {
  at: number;
  attempt: number;
  /** queued, dispatched, ended, retried, cancel-requested, ignored, ... */
  kind: string;
  detail: Record<string, unknown>;
}

/** How an attempt ended and what to do about it. */
export interface AttemptEnd extends RunEnd {
  /**
   * Which retry budget may give the run another attempt, if any. `unstarted`: the attempt never
   * reached its worker, so the run goes back to the queue as the same attempt, using no budget.
   */
  retry?: 'lost' | 'failure' | 'unstarted';
}

/** What `endAttempt` did. */
export type AttemptOutcome = 'ended' | 'retried' | 'stale';

/**
 * An attempt's end as its worker reported it: the store makes it an AttemptEnd with core's
 * endOfReport, reading the run's cancel request in the same transaction (a cancel asked meanwhile
 * makes an aborted run `cancelled`).
 */
export interface ReportedEnd {
  report: { result: RunResult; stoppedBy?: WorkerStop };
  finishedAt: number;
}

/** What is written in the same transaction as an attempt's end. */
export interface EndWrites {
  /** The run's console lines not yet stored (its last ones): written first, whatever the outcome; a line already stored is ignored. */
  lines?: StoredLine[];
  /** History entries that come with the end (e.g. `artifacts-skipped`), stamped with the run's attempt, written before its end, whatever the outcome. */
  events?: Omit<RunEvent, 'attempt'>[];
  /** An entry recorded only when the end is stale (a result that changed nothing is kept as `ignored`). */
  ifStale?: Omit<RunEvent, 'attempt'>;
}

/** What `endAttempt` did, and what it wrote that the caller tells others about. */
export interface AttemptEndResult {
  outcome: AttemptOutcome;
  /** The run as recorded after the call. */
  run: Run;
  /** The end as applied (a report made into one); absent when stale. */
  end?: AttemptEnd;
  /** The console line saying why the run went back to its queue (outcome `retried`). */
  note?: StoredLine;
}

/** What it takes to queue a run. */
export interface NewRun {
  id: string;
  job: string;
  platform: string;
  labels: Record<string, string>;
  queuedAt: number;
}

/** How a run ends. */
export interface RunEnd {
  status: RunStatus;
  result: RunResult;
  finishedAt: number;
}

/** A worker as last seen. */
export interface WorkerRecord {
  name: string;
  platform: string;
  labels: Record<string, string>;
  capacity: number;
  hostname: string;
  os: string;
  arch: string;
  version: string;
  connected: boolean;
  connectedAt: number;
  lastSeen: number;
  /** The id of the server whose connection holds it (several servers on PostgreSQL); null when none recorded. */
  server?: string | null;
}

/** Where a worker's connection lives: the server (its id) and the connection (an id per socket). */
export interface WorkerConnection {
  serverId: string;
  connId: string;
}

/** A running run whose worker has been away longer than the re-attach grace (or is unknown). */
export interface LostWorkerRun {
  id: string;
  worker: string | null;
  attempt: number;
  /** When its worker was last seen (null: no such worker recorded). */
  lastSeen: number | null;
}

/** A server of the farm as recorded (the `servers` table; times on the database's clock). */
export interface ServerRecord {
  id: string;
  url: string;
  hostname: string;
  pid: number;
  version: string;
  configDigest: string;
  startedAt: number;
  heartbeatAt: number;
  stoppedAt: number | null;
  /** Heartbeating and holding its presence lock now. */
  alive: boolean;
  /** The leases it holds (unexpired), by name. */
  leases: string[];
}

/** A pool's failures and quarantine, kept so the pool's next manager (another server) keeps them. */
export interface PoolState {
  failures: number;
  quarantines: number;
  quarantinedUntil: number;
  lastError: string | null;
}

/** An instance a pool started (the pool_instances table): any server authenticates its worker by the token's sha256. */
export interface PoolInstanceRecord {
  id: string;
  pool: string;
  /** Its worker's name. */
  name: string;
  tokenSha256: string;
  state: string;
  /** The provider's handle (JSON). */
  handle: unknown;
  forRun: string | null;
  adopted: boolean;
  startedAt: number;
}

/** Filters for listing runs, newest first. */
export interface RunFilter {
  job?: string;
  status?: RunStatus;
  platform?: string;
  /** Runs given to this worker (the last attempt's). */
  worker?: string;
  limit: number;
}

/** A queued run as the pools see it. */
export type WaitingRun = Pick<Run, 'id' | 'job' | 'platform' | 'labels'>;

/** A worker asking for its next run. */
export interface ClaimingWorker {
  name: string;
  platform: string;
  labels: Record<string, string>;
  /** Only this run (a pool instance made for one run). */
  onlyRun?: string;
  /** The identity of its credential, recorded on the run it takes (see Run.workerIdentity). */
  identity?: string;
  /** The worker process's id from its hello, recorded on the run it takes (see Run.workerSession). */
  session?: string;
}

/**
 * Expands a template job's script for a run being claimed: the store calls it (synchronously, in the
 * claim's transaction) for a run whose job has no script, with the job's template and variables as
 * they are now, and saves what it returns as the run's script. Undefined when it cannot: the run is
 * claimed without a script, for the caller to end with the reason.
 */
export type ScriptFor = (run: Run, job: { template: string | null; vars: Record<string, string> }) => string | undefined;

/** A per-worker token as listed: never the token itself, which is stored only as its hash. */
export interface WorkerTokenRecord {
  /** The worker name the token is bound to. */
  name: string;
  createdAt: number;
  /** When a worker last connected with it; null if never. */
  lastUsedAt: number | null;
}

/** What a person's token may do (see src/core/roles.ts, and src/server/api/auth.ts for the routes of each). */
export type { Role } from '../core/roles.js';

/** A token for people as stored: never the token itself, which is stored only as its hash. */
export interface TokenRecord {
  name: string;
  role: Role;
  createdAt: number;
  /** When it stops being accepted; null: never. */
  expiresAt: number | null;
  /** When it was last presented (noted at most once a minute); null if never. */
  lastUsedAt: number | null;
  /** When it was revoked; null while live. Revoked tokens are kept to be refused by name, not listed. */
  revokedAt: number | null;
}

/** A browser session: the dashboard's cookie, signed in with a token. */
export interface SessionRecord {
  /** The name of the token it was signed in with (`admin` for the data dir's admin.token). */
  tokenName: string;
  role: Role;
  /** The sha256 (hex) of the token it was signed in with: the session ends when that token stops being current. */
  tokenSha256: string;
  createdAt: number;
  expiresAt: number;
}

/** What a session's token must be to be current: the admin.token loaded now (its sha256), and the time for expiry. */
export interface CurrentTokens {
  adminSha256: string;
  now: number;
}

/** A console line stored for a run. */
export type StoredLine = ConsoleLine;

/** Lines to append for one run. */
export interface ConsoleBatch {
  runId: string;
  lines: StoredLine[];
}

/** The store every server component talks to. Every method commits before it resolves. */
/**
 * A file moved into Kiln from another system (`kiln import-robur`: a robur builder `state` file),
 * recorded by the sha256 of its bytes so that importing it again takes nothing.
 */
export interface ImportRecord {
  /** The sha256 of the file's bytes, hex. */
  sha256: string;
  /** What the file was: `robur-state`. */
  kind: string;
  importedAt: number;
  /** What its import took and kept, as the API reported it (JSON). */
  report: unknown;
}

/** What became of a job an import asked for (ImportPlan.jobs), decided in its transaction. */
export type ImportJobOutcome =
  /** `added`: stored now; `present`: a job of that name was in the store already, left as it is (the stored one). */
  | { outcome: 'added' | 'present'; job: Job }
  /** Only looked up (no job given), and none of that name is stored. */
  | { outcome: 'absent' }
  /** Not added: its platform is dropped. */
  | { outcome: 'dropped'; platform: string };

/** What became of a run an import asked to queue, decided in its transaction. */
export type ImportRunOutcome = { asked: NewRun } & (
  /** `queued`: at the back of its queue now; `alreadyQueued`: the job's run queued on that platform already (that run). */
  | { outcome: 'queued' | 'alreadyQueued'; run: Run }
  /** Not queued: its platform is dropped. */
  | { outcome: 'dropped' }
);

/** What an import's transaction wrote, for its report and for the events told after the commit. */
export interface ImportWrites {
  /** Each of the plan's drops, in order: dropped now (its queued runs cancelled, listed) or dropped already. */
  drops: { platform: string; dropped: boolean; cancelled: string[] }[];
  /** Each of the plan's jobs, by name. */
  jobs: Map<string, ImportJobOutcome>;
  /** Each run the plan's `queue` asked for, in its order. */
  runs: ImportRunOutcome[];
}

/**
 * A file's import (`kiln import-robur`) as one transaction: its record, the platforms it drops, the
 * jobs it adds and the runs it queues. The callbacks are the importer's decisions on what the store
 * holds in that transaction: synchronous, and safe to call again (a retried transaction does; `queue`
 * makes new run ids each time, which is fine: only the committed attempt's are kept); one that
 * throws rolls everything back.
 */
export interface ImportPlan {
  /** The file's record, but its report (`report` makes it). */
  record: Omit<ImportRecord, 'report'>;
  /** Platforms to drop first, in order; their queued runs end cancelled (at `record.importedAt`). One dropped already is left as it is. */
  drops: string[];
  /** Jobs to add, in order, unless one of that name is stored (then it is `present`); without `job`, the name is only looked up. */
  jobs: { name: string; job?: Job }[];
  /** The runs to queue at the back, in order, given what became of the jobs (a run of a job not stored fails the import). */
  queue(jobs: ReadonlyMap<string, ImportJobOutcome>): NewRun[];
  /** The report recorded with the file, from what the transaction wrote. */
  report(writes: ImportWrites): unknown;
}

/** What importState did: everything, recorded with its report; or nothing, the file's import being recorded already (`previous`). */
export type ImportResult = { recorded: true; writes: ImportWrites; report: unknown } | { recorded: false; previous: ImportRecord };

export interface JobStore {
  /** Closes the connection; further calls fail. */
  close(): Promise<void>;

  /** The import of the file whose bytes have `sha256`, if it was imported. */
  findImport(sha256: string): Promise<ImportRecord | undefined>;
  /** Records a file's import; false (nothing changed) when that file's import is recorded already. */
  recordImport(record: ImportRecord): Promise<boolean>;
  /**
   * Imports a file in one transaction (see ImportPlan): all of it with its record, or nothing. When
   * the file's import is recorded already (before, or by a concurrent import that committed first)
   * nothing is written and the record found is returned.
   */
  importState(plan: ImportPlan): Promise<ImportResult>;

  /** Adds a job, and its first runs when given, in one transaction. Throws JobExistsError, PlatformDroppedError. */
  createJob(job: Job, firstRuns?: NewRun[]): Promise<Run[]>;
  /** Changes a job. Throws JobNotFoundError. */
  updateJob(name: string, patch: JobPatch, now: number): Promise<Job>;
  /** Removes a job and cancels its queued runs (history stays). Returns the cancelled run ids. */
  deleteJob(name: string, now: number): Promise<string[]>;
  getJob(name: string): Promise<Job | undefined>;
  listJobs(): Promise<Job[]>;

  /**
   * Queues a run at the back or the front of its platform's queue. A job is queued at most once
   * per platform: if it already is, `front` moves that run to the front, and either way the
   * existing run is returned with `created: false`. Throws JobNotFoundError.
   */
  enqueue(run: NewRun, position: 'back' | 'front'): Promise<{ run: Run; created: boolean }>;
  /**
   * Takes the first queued run of the worker's platform whose labels the worker has, marks it
   * running on that worker, copies the job's script, env and timeouts into it, and sets its
   * backstop deadline to `now + timeout + backstopMs`. A template job's run gets the script
   * `scriptFor` expands for it, in the same transaction.
   */
  claimNext(worker: ClaimingWorker, now: number, backstopMs?: number, scriptFor?: ScriptFor): Promise<Run | undefined>;
  /**
   * `enqueue`, then `claimNext` for `worker`, in one transaction: a run queued next to an idle
   * worker costs one commit (one fsync) instead of two. `claimed` is what claimNext would have
   * returned (usually the run just queued; undefined when nothing matches the worker).
   */
  enqueueAndClaim(
    run: NewRun, position: 'back' | 'front', worker: ClaimingWorker, now: number, backstopMs?: number, scriptFor?: ScriptFor,
  ): Promise<{ run: Run; created: boolean; claimed: Run | undefined }>;
  /** Queued runs, per platform in queue order. */
  listQueued(): Promise<Run[]>;
  /** The same runs, with only what matching them to workers needs (read often: much lighter). */
  listWaiting(): Promise<WaitingRun[]>;
  /** Runs that are running now (on `worker` only, when given: a hello looks at its own, not the farm's). */
  listRunning(worker?: string): Promise<Run[]>;
  /** A run by id or unique id prefix. Throws RunNotFoundError or RunAmbiguousError. */
  findRun(idOrPrefix: string): Promise<Run>;
  /** Runs, newest first. */
  listRuns(filter: RunFilter): Promise<Run[]>;
  /** The last run of each job (the one `listRuns({ job, limit: 1 })` gives), by job name; jobs never run are absent. One statement. */
  lastRuns(): Promise<Map<string, Run>>;
  /**
   * Ends a queued or running run, guarded: it applies only when the run is still in one of
   * `from` (and on `worker`, when given). Returns whether it applied.
   */
  finishRun(id: string, end: RunEnd, guard: { from: RunStatus[]; worker?: string }): Promise<boolean>;

  /**
   * Ends the current attempt of a running run, guarded on `worker` and `attempt` when given, in one
   * transaction with `writes` (its last console lines, the events that come with it). When the end's
   * `retry` names a budget with retries left (and no other run of the job is queued), the run goes
   * back to the front of its queue as its next attempt, with a console line saying why (returned as
   * `note`); otherwise it ends as the end says. `stale`: the run was no longer running (on that
   * worker); its state did not change. Throws RunNotFoundError.
   */
  endAttempt(id: string, end: AttemptEnd | ReportedEnd, guard: { worker?: string; attempt?: number }, writes?: EndWrites): Promise<AttemptEndResult>;
  /**
   * Cancels a run: a queued one ends `cancelled` at once; a running one is marked (its worker
   * stops it) and its deadline brought to `deadlineAt`. Throws RunFinishedError for a run that
   * has already ended.
   */
  requestCancel(id: string, by: string, now: number, deadlineAt: number): Promise<{ run: Run; state: 'cancelled' | 'requested' }>;
  /** Running runs whose deadline has passed. */
  overdueRuns(now: number): Promise<Run[]>;
  /** The earliest deadline of any running run (of those after `after`, when given). */
  earliestDeadline(after?: number): Promise<number | undefined>;
  /** Adds an entry to a run's history (for what is not a state change, e.g. an ignored message). */
  recordEvent(runId: string, event: RunEvent): Promise<void>;
  /** The same, stamped with the run's current attempt, in one statement; false (nothing written) when there is no run `runId` (an exact id). */
  noteRunEvent(runId: string, event: Omit<RunEvent, 'attempt'>): Promise<boolean>;
  /** A run's history, oldest first. */
  listEvents(runId: string): Promise<RunEvent[]>;

  /**
   * Appends console lines of several runs in one transaction; a line already stored is ignored. On
   * PostgreSQL the same transaction notifies the feed of the ranges written (feed.ts), as endAttempt
   * does for the lines it writes.
   */
  appendConsole(batches: ConsoleBatch[]): Promise<void>;
  /**
   * Writes a server's line on a queued run's console (e.g. why no worker could be started for it)
   * and moves the seq its attempt starts at past it. Returns the line; undefined when the run is
   * no longer queued (nothing written).
   */
  noteQueuedRun(runId: string, text: string, at: number): Promise<StoredLine | undefined>;
  /** The seq of a run's last stored console line, or -1. */
  lastConsoleSeq(runId: string): Promise<number>;
  /** A run's console from the line after `afterSeq`, in order. */
  readConsole(runId: string, afterSeq?: number, limit?: number): Promise<StoredLine[]>;

  /** Unpaused jobs whose next time is at or before `now`. */
  dueJobs(now: number): Promise<Job[]>;
  /** The earliest next time of any unpaused job, if any. */
  earliestNextAt(): Promise<number | undefined>;
  /**
   * Fires a due job in one transaction: moves its next time from `expectedNextAt` to `nextAt`,
   * then queues `runs` (one per platform) as its overlap policy says: `skip` queues nothing while
   * a run of the job is queued or running (and records the skip), `queue` queues unless already
   * queued, `cancel-previous` cancels the queued ones, asks for the running ones to be cancelled
   * (returned, for their workers to be told), and queues. Runs for a dropped platform are skipped.
   * `stale`, changing nothing, when the job's next time is no longer `expectedNextAt`.
   * `missed`, when given, is recorded in the same transaction as `missed.count` more skips with
   * its reason (a catch-up's slots that queued nothing): one record, whatever the count.
   */
  fireSchedule(
    name: string, expectedNextAt: number, nextAt: number | null, runs: NewRun[], now: number, cancelBackstopMs?: number,
    missed?: { count: number; reason: string },
  ): Promise<FireOutcome>;
  /** Records a due time that queued nothing, with the reason. */
  recordSkip(name: string, at: number, reason: string): Promise<void>;

  /** Retires a platform: its queued runs end cancelled. Returns them. */
  dropPlatform(platform: string, now: number): Promise<string[]>;
  /** Lifts a drop; false when the platform was not dropped. */
  undropPlatform(platform: string): Promise<boolean>;
  /** Dropped platforms, by name. */
  listDroppedPlatforms(): Promise<{ platform: string; droppedAt: number }[]>;
  /** Records (or replaces) an artifact of a run. */
  addArtifact(runId: string, artifact: Artifact): Promise<void>;
  /** A run's artifacts, by path. */
  listArtifacts(runId: string): Promise<Artifact[]>;
  /**
   * Runs whose artifacts `policy` lets go, oldest first: ended runs past the newest `keepRuns`
   * (with artifacts) of their job, or ended before `keptSince`; never a run still queued, running
   * or waiting to be delivered to the current upload target. An empty policy lets nothing go.
   */
  expiredArtifacts(policy: RetentionPolicy): Promise<ExpiredArtifacts[]>;
  /** Forgets the artifacts of these runs (their blobs stay until no run references them). */
  deleteArtifacts(runIds: string[]): Promise<number>;
  /** Those of `sha256s` that no artifact references (not counting the artifacts of `ignoringRuns`). */
  unreferencedBlobs(sha256s: string[], ignoringRuns?: string[]): Promise<string[]>;

  /**
   * From now on, each run that ran and ends gets a pending delivery to `target` (null: none), and
   * only deliveries to `target` are due; those to an earlier target stay pending until it is back.
   */
  setUploadTarget(target: string | null): void;
  /** When the next pending delivery to the current target is due. */
  nextDeliveryAt(): Promise<number | undefined>;
  /** The deliveries of a run. */
  listDeliveries(runId: string): Promise<Delivery[]>;
  /**
   * Queues the run's latest `failed` delivery again, due at `at`, to the current target, with its
   * attempts counted afresh (`kiln redeliver`). Returns it, or undefined when the run has none failed.
   */
  requeueFailedDelivery(runId: string, at: number): Promise<Delivery | undefined>;
  /** Counts by state, and the latest troubles. */
  outboxSummary(): Promise<OutboxSummary>;

  /** Saves the script a run executes (expanded from a template at dispatch). */
  setRunScript(id: string, script: string): Promise<void>;

  /**
   * Records a worker that connected (or reconnected) on `conn`. Returns false, writing nothing, when
   * the name is connected on another server that is still alive (the name is taken). Without
   * `conn` (one server, tests) it always records.
   */
  recordWorker(worker: WorkerRecord, conn?: WorkerConnection): Promise<boolean>;
  /**
   * Marks a worker as gone at `now`; with `connId`, only while that connection still holds it (the
   * late close of an old socket does not undo a newer connection, on this server or another).
   */
  workerDisconnected(name: string, now: number, connId?: string): Promise<void>;
  /**
   * Removes a disconnected worker's row (with `connId`, only while that connection held it last),
   * unless a running run is still held by it: a one-connection worker (robur's) is not listed for
   * ever. Its runs keep its name as text. Returns true when the row went.
   */
  forgetWorker(name: string, connId?: string): Promise<boolean>;
  /** Marks disconnected (last seen at their server's last heartbeat) the workers of servers that are no longer alive; returns their names. */
  disconnectWorkersOfDeadServers(): Promise<string[]>;
  /** Running runs whose worker is unknown, or disconnected and last seen at or before `now - graceMs`. */
  runsOfLostWorkers(now: number, graceMs: number): Promise<LostWorkerRun[]>;
  /** When the next running run's worker passes its grace (last seen + graceMs), if one is disconnected. */
  nextLossAt(graceMs: number): Promise<number | undefined>;

  /** The farm's servers, alive first, with the leases each holds (one entry, this server, on SQLite). */
  listServers(): Promise<ServerRecord[]>;
  /**
   * The farm-wide value of a secret (admin.token, worker.token, pool-token.key, pool-owner.id):
   * `proposed` is stored if none is yet (the first server's wins), and the stored value returned.
   */
  farmSecret(name: string, proposed: string, now: number): Promise<string>;

  /** A pool's kept failures and quarantine (zeros when none kept). */
  poolState(pool: string): Promise<PoolState>;
  /** Keeps a pool's failures and quarantine. */
  savePoolState(pool: string, state: PoolState): Promise<void>;
  /** Records an instance a pool is starting (before the provider starts it). */
  addPoolInstance(instance: PoolInstanceRecord): Promise<void>;
  /** Changes an instance's state (and handle, once the provider gave one). */
  updatePoolInstance(id: string, change: { state: string; handle?: unknown; adopted?: boolean }): Promise<void>;
  /** Forgets an instance (stopped or gone). */
  removePoolInstance(id: string): Promise<void>;
  /** The recorded instances, of one pool or all. */
  listPoolInstances(pool?: string): Promise<PoolInstanceRecord[]>;
  /** The instance whose worker token has this sha256 (hex). */
  poolInstanceByToken(sha256: string): Promise<PoolInstanceRecord | undefined>;

  /**
   * Records that a blob was stored or reused at `now` (the sweeper's grace counts from the latest).
   * True when the row is new: no row, or a sweep forgot it and may be deleting the blob, so the
   * caller must store the blob again rather than trust that it is there.
   */
  touchBlob(sha256: string, size: number, now: number): Promise<boolean>;
  /** Blobs last touched before `before`, oldest first. */
  staleBlobs(before: number, limit: number): Promise<string[]>;
  /** Forgets a blob's row if it was not touched since `before`; true when forgotten (the caller may then delete the blob). */
  forgetBlob(sha256: string, before: number): Promise<boolean>;

  /**
   * Claims up to `limit` deliveries due at `now` for the outbox lease's `epoch`: pending ones, and
   * `sending` ones claimed by an older epoch (their sender died or was deposed) or by this one (cut
   * by a stop or a failed pass: the outbox claims only between its sends); they are sent again with
   * the same delivery id. They become `sending` with this epoch.
   */
  claimDeliveries(now: number, limit: number, epoch: number): Promise<Delivery[]>;
  /**
   * Records an attempt of a delivery claimed by `epoch`: still pending (retry at `nextAt`), delivered,
   * or failed for good; false (nothing written) when a newer epoch took it over, or it has ended.
   */
  recordClaimedDeliveryAttempt(
    id: number,
    epoch: number,
    outcome: { state: Delivery['state']; nextAt: number; error: string | null; at: number },
  ): Promise<boolean>;
  /** Every worker ever seen, connected first. */
  listWorkers(): Promise<WorkerRecord[]>;

  /** Stores a per-worker token (its sha256, hex) bound to `name`. Throws WorkerTokenExistsError if `name` has one. */
  createWorkerToken(name: string, sha256: string, now: number): Promise<WorkerTokenRecord>;
  /** The per-worker tokens, by name. */
  listWorkerTokens(): Promise<WorkerTokenRecord[]>;
  /** The per-worker token bound to `name`, if any. */
  getWorkerToken(name: string): Promise<WorkerTokenRecord | undefined>;
  /** The name a token (by its sha256, hex) is bound to, if it is a live per-worker token. */
  findWorkerToken(sha256: string): Promise<string | undefined>;
  /** Notes that a worker connected with `name`'s token. */
  touchWorkerToken(name: string, now: number): Promise<void>;
  /** Removes `name`'s token; false when it had none. */
  revokeWorkerToken(name: string): Promise<boolean>;

  /**
   * Stores a token for people (its sha256, hex). Replaces a revoked token of that name; throws
   * TokenExistsError if `name` has a live (or expired, not revoked) one.
   */
  createToken(token: { name: string; role: Role; sha256: string; createdAt: number; expiresAt: number | null }): Promise<TokenRecord>;
  /** The tokens not revoked (expired ones too), by name. */
  listTokens(): Promise<TokenRecord[]>;
  /** The token with that sha256 (hex), revoked or not. */
  findToken(sha256: string): Promise<TokenRecord | undefined>;
  /** Notes that `name`'s token was used. */
  touchToken(name: string, now: number): Promise<void>;
  /** Revokes `name`'s live token and deletes its sessions; returns how many sessions ended, or undefined when it had no live token. */
  revokeToken(name: string, now: number): Promise<number | undefined>;
  /** Stores a session (the sha256 of its id, hex), and deletes the sessions that expired before `session.createdAt`. */
  createSession(sha256: string, session: SessionRecord): Promise<void>;
  /**
   * The session with that sha256 (hex) if it is live at `current.now` and its token is still current:
   * the admin.token of `current.adminSha256`, or a stored token of its name neither revoked nor expired.
   */
  findSession(sha256: string, current: CurrentTokens): Promise<SessionRecord | undefined>;
  /** Ends a session; false when there was none. */
  deleteSession(sha256: string): Promise<boolean>;
}
