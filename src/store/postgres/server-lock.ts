/**
 * The schema lock: a session advisory lock on the schema (`KSRV` + hashtext(schema)), held on a
 * connection of its own, so PostgreSQL releases it when that connection ends, however its holder
 * ends. Servers hold it SHARED while they run (presence.ts: several servers share one schema);
 * `kiln migrate-store` holds it EXCLUSIVE while it copies (holdSchemaExclusive): a copy cannot run
 * beside a live server, nor a server start during a copy.
 *
 * That connection can also end while the copy runs (PostgreSQL restarted, the network dropped, a
 * DBA's pg_terminate_backend): the lock is gone with it, and a server may take it. So the lock is
 * taken back at once on a new connection, tried again with the backoff while PostgreSQL cannot be
 * reached, and meanwhile `held` is false. The connection may only look lost from here (a keepalive
 * timeout) while its backend lives on, holding the lock: that backend, known by its pid, is ended
 * and the lock tried again. Found taken by another, or not retaken within the bound, it is lost for
 * good: `onLost` is told, and the copy stops.
 */
import pg from 'pg';
import { backoffMs, formatDuration, type BackoffTimings } from '../../core/index.js';
import { coerceError, DataDirInUseError, StoreLockLostError } from '../../errors.js';
import { APPLICATION_NAME, storeError, type StoreLog } from './connection.js';

/** The advisory lock's first key: ASCII 'KSRV' (migrations lock 'KILN'); the second is the schema's hashtext. */
export const SCHEMA_LOCK_KEY = 0x4b535256;

/** How long a start waits for the lock: a server just killed may still hold it until PostgreSQL notices. */
const LOCK_WAIT = '5s';

/** Waits between attempts to retake a lost lock: at once, then soon, since the server acts on nothing meanwhile. */
const RETAKE_RETRY: BackoffTimings = { retryMinMs: 250, retryMaxMs: 5000, jitter: 0.2 };

/** How long a lost lock is tried again by default before the server gives up (ms). */
export const DEFAULT_RETAKE_WITHIN_MS = 60_000;

/** What the exclusive schema lock does when its connection ends. */
export interface ServerLockOptions {
  /** Where the loss and the retake are logged. */
  log?: StoreLog;
  /** How long a lost lock is tried again before it is lost for good (ms; default 1 min). */
  retakeWithinMs?: number;
  /** Told once when the lock is lost for good (another server has it, or the bound passed); the server must stop. */
  onLost?: (err: StoreLockLostError) => void;
}

/** The lock held; `release` ends its connection. */
export interface ServerLock {
  /** False from the loss of the lock's connection until it is taken back (and for good once lost). */
  readonly held: boolean;
  release(): Promise<void>;
}

/** Takes the schema lock exclusive (migrate-store), or throws DataDirInUseError naming a server that holds it. */
export async function holdSchemaExclusive(url: string, where: string, options: ServerLockOptions = {}): Promise<ServerLock> {
  const client = newClient(url);
  // Listened to before connecting: unheard, an 'error' on this idle connection would end the process.
  const lock = new HeldLock(url, where, options);
  lock.watch(client);
  try {
    await client.connect();
    // A statement_timeout in the URL must not cut the wait short: LOCK_WAIT bounds it.
    await client.query(`SET statement_timeout = 0; SET lock_timeout = '${LOCK_WAIT}'`);
    try {
      await client.query('SELECT pg_advisory_lock($1, hashtext(current_schema()))', [SCHEMA_LOCK_KEY]);
    } catch (raw) {
      if ((raw as { code?: unknown }).code !== '55P03') throw raw;
      throw new DataDirInUseError(`the store ${where}`, await holder(client));
    }
    await client.query('RESET lock_timeout');
    lock.backendPid = backendPid(client);
  } catch (raw) {
    lock.released = true;
    await client.end().catch(() => undefined);
    throw storeError(raw, where);
  }
  lock.held = true;
  return lock;
}

/** The pid of the PostgreSQL backend serving `client` (pg sets it on connect; its types leave it out). */
function backendPid(client: pg.Client): number | undefined {
  return (client as unknown as { processID?: number | null }).processID ?? undefined;
}

function newClient(url: string): pg.Client {
  // keepAlive: a lock whose connection died silently is found out (and retaken) in seconds, not at the next write.
  return new pg.Client({ connectionString: url, application_name: APPLICATION_NAME, keepAlive: true, keepAliveInitialDelayMillis: 10_000, connectionTimeoutMillis: 10_000 });
}

class HeldLock implements ServerLock {
  held = false;
  released = false;
  /** The backend of the connection that held the lock: after a loss seen only here, it may hold it still. */
  backendPid: number | undefined;
  private client: pg.Client | undefined;
  private retry: NodeJS.Timeout | undefined;
  private lostAt = 0;
  private attempts = 0;

  constructor(private readonly url: string, private readonly where: string, private readonly options: ServerLockOptions) {}

  /** Listens for the end of `client`, the connection that holds (or is about to hold) the lock. */
  watch(client: pg.Client): void {
    this.client = client;
    let gone = false;
    const onGone = (err?: Error) => {
      if (gone || this.client !== client || this.released) return;
      gone = true;
      this.connectionLost(err);
    };
    client.on('error', onGone);
    client.on('end', () => onGone());
  }

  /** Bound: callers keep `release` alone (migrate-store does). */
  release = async (): Promise<void> => {
    this.released = true;
    this.held = false;
    clearTimeout(this.retry);
    await this.client?.end().catch(() => undefined);
  };

  private connectionLost(err: Error | undefined): void {
    // Until the first attempt resolves the server acts on nothing (the store checks `held`).
    const wasHeld = this.held;
    this.held = false;
    if (!wasHeld) return;
    this.lostAt = Date.now();
    this.attempts = 0;
    this.options.log?.warn({ store: this.where, err: err?.message ?? 'the connection ended' }, "the connection holding this server's lock on the store was lost; taking the lock back");
    void this.retake();
  }

  /** One attempt to take the lock back on a new connection; another is scheduled with the backoff if PostgreSQL cannot be reached. */
  private async retake(): Promise<void> {
    if (this.released) return;
    this.attempts += 1;
    const client = newClient(this.url);
    // Errors before it holds the lock are the attempt's; the listener only keeps them from ending the process.
    const quiet = () => undefined;
    client.on('error', quiet);
    try {
      await client.connect();
      const { rows } = await client.query('SELECT pg_try_advisory_lock($1, hashtext(current_schema())) AS got', [SCHEMA_LOCK_KEY]);
      if (this.released) {
        await client.end().catch(() => undefined);
        return;
      }
      if ((rows[0] as { got: boolean }).got) {
        client.removeListener('error', quiet);
        this.watch(client);
        this.held = true;
        this.backendPid = backendPid(client);
        this.options.log?.info?.({ store: this.where, attempts: this.attempts }, "took this server's lock on the store back");
        return;
      }
      const by = await lockHolder(client);
      if (by.pid !== undefined && by.pid === this.backendPid) {
        // Our own old connection's backend, alive though the connection looked lost from here: end it and try again.
        await client.query('SELECT pg_terminate_backend($1)', [by.pid]);
        await client.end().catch(() => undefined);
        throw new OwnBackendHoldsLock(by.pid);
      }
      await client.end().catch(() => undefined);
      // A clean shutdown meanwhile is not a lost lock.
      if (this.released) return;
      return this.lose(`${by.who} took it while this server's connection holding it was lost`);
    } catch (raw) {
      await client.end().catch(() => undefined);
      if (this.released) return;
      const why = raw instanceof OwnBackendHoldsLock ? raw.message : coerceError(storeError(raw, this.where)).message;
      const left = (this.options.retakeWithinMs ?? DEFAULT_RETAKE_WITHIN_MS) - (Date.now() - this.lostAt);
      const wait = backoffMs(this.attempts, RETAKE_RETRY);
      if (left <= 0) return this.lose(`it could not be taken back within ${formatDuration(this.options.retakeWithinMs ?? DEFAULT_RETAKE_WITHIN_MS)} (${why})`);
      this.options.log?.warn({ store: this.where, err: why, attempts: this.attempts, retryInMs: Math.min(wait, left) }, "could not take this server's lock on the store back; trying again");
      this.retry = setTimeout(() => void this.retake(), Math.min(wait, left));
    }
  }

  private lose(why: string): void {
    this.released = true;
    this.options.onLost?.(new StoreLockLostError(this.where, why));
  }
}

/** The lock's backend, held by this server's old connection, was ended: retried with the backoff like an unreachable store. */
class OwnBackendHoldsLock extends Error {
  constructor(pid: number) {
    super(`this server's old connection (backend ${pid}) still held it; that backend was ended`);
  }
}

/** "kiln server pid N on host H (since T)": who holds the lock, as pg_stat_activity shows it. */
async function holder(client: pg.Client): Promise<string> {
  return (await lockHolder(client)).who;
}

/** Who holds the lock (`who`, as `holder` says it), and its backend's pid when one holds it. */
export async function lockHolder(client: pg.Client): Promise<{ who: string; pid: number | undefined }> {
  const { rows } = await client.query(`
    SELECT a.application_name AS name, a.backend_start AS since, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid AND l.objsubid = 2
      AND l.objid = (hashtext(current_schema())::bigint & 4294967295)::oid`, [SCHEMA_LOCK_KEY]);
  const [row] = rows as { name: string; since: Date; pid: number }[];
  return row ? { who: `${row.name || 'another client'} (since ${row.since.toISOString()})`, pid: row.pid } : { who: 'another Kiln server', pid: undefined };
}
