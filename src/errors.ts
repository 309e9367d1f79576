/**
 * The catalogue of Kiln's errors. Each has a stable code (never reused) and an HTTP status; the
 * CLI turns them into one line on stderr and an exit code. docs/errors.md lists every code and a
 * unit test keeps the two in step.
 */

/** Base of every error Kiln raises on purpose. */
export class KilnError extends Error {
  /** Stable machine-readable code, e.g. `KILN_ERR_JOB_NOT_FOUND`. */
  readonly code: string;
  /** HTTP status the API answers with. */
  readonly status: number;

  constructor(code: string, status: number, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }
}

/** No job has that name. */
export class JobNotFoundError extends KilnError {
  constructor(name: string) {
    super('KILN_ERR_JOB_NOT_FOUND', 404, `no job named '${name}'`);
  }
}

/** A job with that name already exists. */
export class JobExistsError extends KilnError {
  constructor(name: string) {
    super('KILN_ERR_JOB_EXISTS', 409, `a job named '${name}' already exists (use 'kiln modify' to change it)`);
  }
}

/** No run has that id or id prefix. */
export class RunNotFoundError extends KilnError {
  constructor(id: string) {
    super('KILN_ERR_RUN_NOT_FOUND', 404, `no run matches '${id}'`);
  }
}

/** An id prefix matches more than one run. */
export class RunAmbiguousError extends KilnError {
  constructor(prefix: string) {
    super('KILN_ERR_RUN_AMBIGUOUS', 400, `run id prefix '${prefix}' matches several runs; give more characters`);
  }
}

/** A request body, query or parameter is malformed. */
export class InvalidRequestError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_INVALID_REQUEST', 400, message);
  }
}

/** A request body is larger than the server accepts. */
export class PayloadTooLargeError extends KilnError {
  constructor(limit: number, message = `request body is larger than ${limit} bytes`) {
    super('KILN_ERR_PAYLOAD_TOO_LARGE', 413, message);
  }
}

/** Missing or wrong token. */
export class UnauthorizedError extends KilnError {
  constructor(message = 'missing or invalid token') {
    super('KILN_ERR_UNAUTHORIZED', 401, message);
  }
}

/** No such API route. */
export class RouteNotFoundError extends KilnError {
  constructor(method: string, url: string) {
    super('KILN_ERR_ROUTE_NOT_FOUND', 404, `no API route ${method} ${url}`);
  }
}

/** A worker message that does not follow the protocol. */
export class ProtocolError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_PROTOCOL', 400, message);
  }
}

/** Bytes that are not one of robur builder's DER values (a frame, an exec blob, a state file). */
export class RoburDecodeError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_ROBUR_DECODE', 400, message);
  }
}

/** The peer speaks a protocol version this side cannot. */
export class ProtocolVersionError extends KilnError {
  constructor(theirs: unknown, ours: readonly number[]) {
    super(
      'KILN_ERR_PROTOCOL_VERSION',
      400,
      `protocol version ${String(theirs)} is not supported (this server speaks ${ours.join(', ')}); upgrade the older side`,
    );
  }
}

/** Another connected worker already uses that name. */
export class WorkerNameTakenError extends KilnError {
  constructor(name: string) {
    super('KILN_ERR_WORKER_NAME_TAKEN', 409, `a worker named '${name}' is already connected`);
  }
}

/** The run has already ended, so it cannot be changed. */
export class RunFinishedError extends KilnError {
  constructor(id: string, status: string) {
    super('KILN_ERR_RUN_FINISHED', 409, `run ${id} has already ended (${status}); nothing to cancel`);
  }
}

/** The platform is dropped: no runs are queued for it. */
export class PlatformDroppedError extends KilnError {
  constructor(platform: string) {
    super('KILN_ERR_PLATFORM_DROPPED', 409, `platform '${platform}' is dropped (kiln undrop-platform ${platform} lifts that)`);
  }
}

/** A template job cannot be queued: no template for it exists. */
export class TemplateNotFoundError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_TEMPLATE_NOT_FOUND', 404, message);
  }
}

/** An artifact upload from a worker that does not hold the run. */
export class ArtifactRefusedError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_ARTIFACT_REFUSED', 409, message);
  }
}

/** The client cannot reach the server. */
export class ServerUnreachableError extends KilnError {
  constructor(url: string, cause: string) {
    super('KILN_ERR_SERVER_UNREACHABLE', 503, `cannot reach the Kiln server at ${url}: ${cause}`);
  }
}

/** Bad command-line usage. */
export class UsageError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_USAGE', 400, message);
  }
}

/** Bad server or worker configuration. */
export class ConfigError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_CONFIG', 400, message);
  }
}

/** Anything unexpected. */
export class InternalError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_INTERNAL', 500, message);
  }
}

/** A worker's credential does not allow what it asked: another name, another worker's run. */
export class WorkerIdentityError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_WORKER_IDENTITY', 403, message);
  }
}

/** A per-worker token already exists for that name. */
export class WorkerTokenExistsError extends KilnError {
  constructor(name: string) {
    super('KILN_ERR_WORKER_TOKEN_EXISTS', 409, `worker '${name}' already has a token (kiln worker-token revoke ${name} first to replace it)`);
  }
}

/** No per-worker token has that name. */
export class WorkerTokenNotFoundError extends KilnError {
  constructor(name: string) {
    super('KILN_ERR_WORKER_TOKEN_NOT_FOUND', 404, `no worker token named '${name}' (kiln worker-token list shows them)`);
  }
}

/** A valid credential whose role (or kind) may not use the route. */
export class ForbiddenError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_FORBIDDEN', 403, message);
  }
}

/** A state-changing request signed in by the session cookie alone, without the header a cross-site page cannot send. */
export class CsrfError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_CSRF', 403, message);
  }
}

/** A live token already has that name. */
export class TokenExistsError extends KilnError {
  constructor(name: string) {
    super('KILN_ERR_TOKEN_EXISTS', 409, `a token named '${name}' already exists (kiln token revoke ${name} first to replace it)`);
  }
}

/** No live token has that name. */
export class TokenNotFoundError extends KilnError {
  constructor(name: string) {
    super('KILN_ERR_TOKEN_NOT_FOUND', 404, `no token named '${name}' (kiln token list shows them)`);
  }
}

/** Turns anything thrown into a KilnError, so catch sites can branch on `code`. */
export function coerceError(raw: unknown): KilnError {
  if (raw instanceof KilnError) return raw;
  if (raw instanceof Error && DISK_FULL_CODES.has(String((raw as { code?: unknown }).code))) {
    const wrapped = new DiskFullError(raw.message);
    wrapped.stack = raw.stack;
    return wrapped;
  }
  if (raw instanceof Error) {
    const wrapped = new InternalError(raw.message);
    wrapped.stack = raw.stack;
    return wrapped;
  }
  return new InternalError(String(raw));
}

/** The server is shutting down: what was asked was stopped (or not started); ask again once it is back. */
export class ShuttingDownError extends KilnError {
  constructor(message = 'the server is shutting down') {
    super('KILN_ERR_SHUTTING_DOWN', 503, message);
  }
}

/** An artifact sweep with another policy is running; sweeps never queue behind each other. */
export class SweepBusyError extends KilnError {
  constructor() {
    super('KILN_ERR_SWEEP_BUSY', 409, 'an artifact sweep with another policy is running; try again when it has ended');
  }
}

/** An artifact the store lists whose blob is not in the blob store (deleted by hand, or a store not shared by every server). */
export class BlobMissingError extends KilnError {
  constructor(sha256: string, where: string) {
    super('KILN_ERR_BLOB_MISSING', 500, `the blob ${sha256} is missing from the artifact store ${where}`);
  }
}

/** The artifact blob store (S3) failed or did not answer. */
export class BlobStoreError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_BLOB_STORE', 502, `the artifact store failed: ${message}`);
  }
}

/** What SQLite (`SQLITE_FULL`) and the file system (`ENOSPC`, `EDQUOT`) say when there is no room left. */
const DISK_FULL_CODES = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT']);

/**
 * A disk is full (the server's store or artifacts, or a worker's work dir): someone must free space;
 * retrying later may succeed. The cause's own words lead, since this is raised wherever it happens.
 */
export class DiskFullError extends KilnError {
  constructor(cause: string) {
    super('KILN_ERR_DISK_FULL', 507, `${cause} (the disk is full: free some space, then try again)`);
  }
}

/** The database file belongs to another application, or is not an SQLite database at all. */
export class StoreForeignError extends KilnError {
  /** `remedy`: what to give instead (the default is for an SQLite file). */
  constructor(file: string, why: string, remedy = 'give --data a new dir or --store sqlite:ANOTHER.db') {
    super('KILN_ERR_STORE_FOREIGN', 500, `${file} is not a Kiln database (${why}); Kiln leaves it unchanged: ${remedy}`);
  }
}

/**
 * The PostgreSQL store cannot be reached: the connection was refused or lost, the database does not
 * exist, or the server refused the login. At start the server does not start; later, the request
 * fails (503) and the server's own loops try again. `where` is the URL without its password.
 */
export class StoreUnavailableError extends KilnError {
  constructor(where: string, cause: string) {
    super('KILN_ERR_STORE_UNAVAILABLE', 503, `the store ${where} cannot be used: ${cause}`);
  }
}

/**
 * The server lost its presence on its PostgreSQL schema for good (its connection ended, and it could
 * not be taken back in time, or `kiln migrate-store` holds the schema meanwhile), or migrate-store
 * lost its exclusive lock: it stops rather than act on what it may no longer hold. Exit 1.
 */
export class StoreLockLostError extends KilnError {
  constructor(where: string, why: string) {
    super('KILN_ERR_STORE_LOCK_LOST', 503, `this server's hold on the store ${where} was lost: ${why}; stopping rather than act on what it may no longer hold`);
  }
}

/** The database was written by a newer Kiln, whose schema this build does not know. */
export class StoreTooNewError extends KilnError {
  constructor(file: string, found: number, known: number) {
    super('KILN_ERR_STORE_TOO_NEW', 500, `${file} has schema version ${found}, newer than this Kiln knows (${known}): run the newer Kiln, or restore a backup made before the upgrade`);
  }
}

/** The database file is damaged (SQLite's integrity check failed). */
export class StoreDamagedError extends KilnError {
  constructor(file: string, detail: string) {
    super('KILN_ERR_STORE_DAMAGED', 500, `${file} is damaged (${detail}): restore a backup, or try the sqlite3 .recover command on a copy`);
  }
}

/** `kiln migrate-store` was given a target store that already holds a farm's data. */
export class StoreNotEmptyError extends KilnError {
  constructor(where: string, table: string) {
    super('KILN_ERR_STORE_NOT_EMPTY', 409, `the store ${where} already holds data (its table ${table} has rows): kiln migrate-store copies into an empty store only; give it a new database or schema`);
  }
}

/** Another server holds the data dir, or the SQLite file given as its store. */
export class DataDirInUseError extends KilnError {
  /** `what`: "the data dir DIR" or "the store FILE". */
  constructor(what: string, holder: string) {
    super('KILN_ERR_DATA_DIR_IN_USE', 409, `${what} is in use by ${holder}; stop that server first or give it another --data (or --store)`);
  }
}

/** The data dir is open to other users and Kiln cannot make it private. */
export class DataDirUnsafeError extends KilnError {
  constructor(dir: string, why: string) {
    super('KILN_ERR_DATA_DIR_UNSAFE', 400, `the data dir ${dir} ${why}: it holds the tokens and every job's script, so it must be private (chmod 700 it, or give --data another dir)`);
  }
}

/** `kiln redeliver` on a run that has no failed delivery, or on a server without an upload target. */
export class NotRedeliverableError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_NOT_REDELIVERABLE', 409, message);
  }
}

/** `kiln export` of a run that has no exec to write: it has not ended, or it never ran. */
export class NotExportableError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_NOT_EXPORTABLE', 409, message);
  }
}

/** `kiln inspect --output` of an exec blob whose artifact path would land outside the directory (`..`, absolute, a symlink). */
export class UnsafeArtifactPathError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_UNSAFE_ARTIFACT_PATH', 400, message);
  }
}

/** A request the HTTP parser cannot read: headers too large (431), too slow (408), not HTTP (400). */
export class BadHttpRequestError extends KilnError {
  constructor(status: 400 | 408 | 431, message: string) {
    super('KILN_ERR_BAD_HTTP_REQUEST', status, message);
  }
}

/** The server cannot listen on its address (the port is taken, the address is not this host's). */
export class ListenError extends KilnError {
  constructor(address: string, cause: string) {
    super('KILN_ERR_LISTEN', 500, `cannot listen on ${address}: ${cause}`);
  }
}

/** The server's TLS files cannot be used: unreadable, a key other users can read, a certificate that is not its key's. */
export class TlsConfigError extends KilnError {
  constructor(message: string) {
    super('KILN_ERR_TLS_CONFIG', 400, message);
  }
}

/** Client side: the server's certificate is not one this client trusts (or not for this host). */
export class ServerUntrustedError extends KilnError {
  constructor(url: string, why: string) {
    super('KILN_ERR_SERVER_UNTRUSTED', 503, `the server's certificate is not trusted (${why}) at ${url}: pass --ca FILE (env KILN_CA) with the CA that signed it`);
  }
}
