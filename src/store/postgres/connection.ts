/**
 * The connection pool of the PostgreSQL store: the URL checked where it enters, BIGINT read as a
 * number (times in ms fit in 2^53), driver failures that mean "PostgreSQL cannot be reached" turned
 * into StoreUnavailableError, and no driver event left to crash the process.
 */
import os from 'node:os';
import pg from 'pg';
import { ConfigError, InvalidRequestError, KilnError, StoreUnavailableError } from '../../errors.js';
import { describeUrl } from '../../url-for-humans.js';
import type { Statement } from './statements.js';

export { describeUrl };

/** What the store logs about its connections. */
export interface StoreLog {
  warn(fields: Record<string, unknown>, message: string): void;
  info?(fields: Record<string, unknown>, message: string): void;
}

/**
 * SQLSTATEs that say the database cannot be used now: connection (08), login (28), no such database
 * (3D), shutting down (57P0x), a statement cancelled (57014: past statement_timeout, stuck on a lock
 * held elsewhere, say), a session ended for sitting idle in a transaction (25P03).
 */
const UNAVAILABLE_SQLSTATE = /^(08|28|3D|57P0[1-3]|57014$|25P03$)/;

/** A statement PostgreSQL cancelled: its connection is still good, and it may have been slow, not lost. */
const CANCELLED_SQLSTATE = '57014';

/**
 * Longest a statement may run (ms) unless the URL says otherwise (`?statement_timeout=MS`, 0: no
 * limit). Kiln's statements take milliseconds: one that takes this long is waiting on a lock held
 * elsewhere (a forgotten psql session, a stuck server), and failing it lets the request answer 503
 * and the loops retry, instead of hanging the request and the connection.
 */
export const DEFAULT_STATEMENT_TIMEOUT_MS = 30_000;

/** A session idle inside a transaction this long is ended by PostgreSQL, which frees its locks (Kiln never waits inside one). */
const IDLE_IN_TRANSACTION_MS = 60_000;

/**
 * The driver's own bound, past the statement timeout: over a network that died silently, the
 * answer of a statement PostgreSQL cancelled never comes.
 */
const QUERY_TIMEOUT_SLACK_MS = 10_000;

/** TCP keepalive after this much silence: a connection whose peer vanished (a host down, a NAT that forgot it) is found dead and replaced. */
const KEEPALIVE_IDLE_MS = 10_000;

/** How the store's connections time out, from the URL (checked by checkUrl). */
export function connectionTimeouts(url: string): { statement_timeout: number; query_timeout: number | undefined; idle_in_transaction_session_timeout: number } {
  const given = new URL(url).searchParams.get('statement_timeout');
  const statement = given === null ? DEFAULT_STATEMENT_TIMEOUT_MS : Number(given);
  return {
    statement_timeout: statement,
    query_timeout: statement === 0 ? undefined : statement + QUERY_TIMEOUT_SLACK_MS,
    idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
  };
}

/**
 * Conflicts between concurrent transactions: serialization failure, deadlock, and a unique
 * violation (two transactions that each found a job's queue slot free, say: a retry putting its run
 * back and an enqueue). The transaction is run again, from its first read, and then sees the other's
 * work, as it would have had they run one after the other.
 */
export const RETRYABLE_SQLSTATES = new Set(['40001', '40P01', '23505']);

/** Checks a `postgres://USER@HOST:PORT/DB` URL; throws ConfigError naming what is wrong (the password never shown). */
export function checkUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`bad store URL ${describeUrl(url)}: not a URL; use postgres://USER@HOST:PORT/DATABASE`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') throw new ConfigError(`bad store URL ${describeUrl(url)}: use postgres://USER@HOST:PORT/DATABASE`);
  if (parsed.hostname === '') throw new ConfigError(`bad store URL ${describeUrl(url)}: it names no host; use postgres://USER@HOST:PORT/DATABASE`);
  if (parsed.pathname.length <= 1) throw new ConfigError(`bad store URL ${describeUrl(url)}: it names no database; use postgres://USER@HOST:PORT/DATABASE`);
  if (parsed.port !== '' && !/^\d+$/.test(parsed.port)) throw new ConfigError(`bad store URL ${describeUrl(url)}: bad port`);
  const timeout = parsed.searchParams.get('statement_timeout');
  if (timeout !== null && !(/^\d{1,10}$/.test(timeout) && Number(timeout) <= 2 ** 31 - 1)) {
    throw new ConfigError(`bad store URL ${describeUrl(url)}: statement_timeout must be a whole number of milliseconds (0: no limit)`);
  }
}

const INT8_OID = 20;
/** BIGINT columns as numbers (the driver's default is a string). */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === INT8_OID ? (text: string) => Number(text) : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser,
};

/**
 * The error to raise for a failed driver call: StoreUnavailableError when PostgreSQL cannot be
 * reached or used (system errors such as ECONNREFUSED, the driver's own plain errors for a dropped
 * or timed-out connection, and the SQLSTATEs above); anything else as it came.
 */
export function storeError(raw: unknown, where: string): unknown {
  if (raw instanceof KilnError) return raw;
  if (raw instanceof pg.DatabaseError) {
    // TEXT cannot hold NUL (SQLite's can): a request that carries one is refused, not a 500.
    if (raw.code === '22021') return new InvalidRequestError('a value contains the NUL character, which the PostgreSQL store cannot keep');
    if (!UNAVAILABLE_SQLSTATE.test(raw.code ?? '')) return raw;
    const hint = raw.code === '3D000' ? ' (create it, e.g. createdb -O USER DATABASE)'
      : raw.code === CANCELLED_SQLSTATE ? ' (a statement waited past the statement_timeout: a lock held by another session, or PostgreSQL overloaded)' : '';
    return new StoreUnavailableError(where, `${raw.message}${hint}`);
  }
  const code = (raw as { code?: unknown }).code;
  const systemError = typeof code === 'string' && /^E[A-Z]+$/.test(code);
  // pg's errors for a connection that ended or timed out are plain Errors; its own misuse errors
  // are TypeErrors and RangeErrors, which stay what they are.
  if (raw instanceof Error && (systemError || raw.constructor === Error)) {
    return new StoreUnavailableError(where, raw.message.split('\n')[0] ?? raw.message);
  }
  return raw;
}

/** What Kiln's connections call themselves in pg_stat_activity (where the URL names no application_name). */
export const APPLICATION_NAME = `kiln pid ${process.pid} on ${os.hostname()}`;

/** pg's error for a query past its query_timeout: a plain Error with no code, known only by this text. */
const DRIVER_TIMEOUT_MESSAGE = 'Query read timeout';

/** A query_timeout that is no bound (the driver takes 0 as "the connection's"). */
const LONGEST_QUERY_MS = 2 ** 31 - 1;

/** Most connections the store's pool opens. */
const POOL_SIZE = 10;

/** A first statement (BEGIN, or an idempotent one) failed on a connection lost while idle: nothing changed, it may take another. */
class StaleConnectionError extends Error {
  constructor(override readonly cause: StoreUnavailableError) {
    super(cause.message);
  }
}

/** A place statements run: the pool (each statement its own transaction) or one transaction's client. */
export interface Session {
  run<R = Record<string, unknown>>(statement: Statement, values?: unknown[]): Promise<pg.QueryResult<R & pg.QueryResultRow>>;
}

/** The store's pool of connections. */
export class Connections implements Session {
  readonly where: string;
  private readonly pool: pg.Pool;
  private ended = false;
  /** The server's presence on the schema (presence.ts), when this pool is a server's: no statement runs while it is not held. */
  private lock: { readonly held: boolean } | undefined;

  constructor(url: string, log?: StoreLog) {
    checkUrl(url);
    this.where = describeUrl(url);
    this.pool = new pg.Pool({
      connectionString: url, application_name: APPLICATION_NAME, types, max: POOL_SIZE, connectionTimeoutMillis: 10_000, idleTimeoutMillis: 30_000,
      keepAlive: true, keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS, ...connectionTimeouts(url),
    });
    // An idle connection that PostgreSQL (or the network) drops emits 'error' on the pool; unheard,
    // it would end the process. The pool discards that connection and the next query opens another.
    this.pool.on('error', (err) => log?.warn({ store: this.where, err: err.message }, 'a PostgreSQL connection was lost; the pool opens another at the next query'));
  }

  /**
   * Runs one statement (its own transaction). An idempotent one that finds its connection dead (see
   * `transaction`) is sent again on another; any other fails with StoreUnavailableError, as it may
   * have been applied before its connection went.
   */
  run<R>(statement: Statement, values: unknown[] = []): Promise<pg.QueryResult<R & pg.QueryResultRow>> {
    return this.onLiveConnection(() => this.withClient((query) => query<R & pg.QueryResultRow>({ name: statement.name, text: statement.text, values }), statement.idempotent));
  }

  /**
   * Runs `fn` in one transaction on one connection and commits; rolls back if it throws. A
   * conflict with a concurrent transaction (deadlock, serialization, a unique key both took) runs it
   * again, a few times.
   */
  async transaction<T>(fn: (session: Session) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.onLiveConnection(() => this.once(fn));
      } catch (raw) {
        const code = (raw as { code?: unknown }).code;
        if (attempt >= 5 || typeof code !== 'string' || !RETRYABLE_SQLSTATES.has(code)) throw raw;
      }
    }
  }

  /**
   * Runs `attempt` again while it fails with StaleConnectionError: a connection PostgreSQL dropped
   * while it sat idle in the pool fails its first statement, and when that statement was BEGIN or
   * idempotent nothing has changed. The pool discards the connection; the next try takes another,
   * until each the pool may hold (all of them, after a PostgreSQL restart) has been tried.
   */
  private async onLiveConnection<T>(attempt: () => Promise<T>): Promise<T> {
    for (let stale = 0; ; stale++) {
      try {
        return await attempt();
      } catch (raw) {
        if (!(raw instanceof StaleConnectionError)) throw raw;
        if (stale >= POOL_SIZE) throw raw.cause;
      }
    }
  }

  private once<T>(fn: (session: Session) => Promise<T>): Promise<T> {
    return this.withClient(async (query) => {
      const session: Session = { run: (statement, values = []) => query({ name: statement.name, text: statement.text, values }) };
      await query({ text: 'BEGIN' });
      try {
        const result = await fn(session);
        await query({ text: 'COMMIT' });
        return result;
      } catch (raw) {
        // On a lost connection this fails too; withClient then discards the connection.
        await query({ text: 'ROLLBACK' }).catch(() => undefined);
        throw raw;
      }
    }, true);
  }

  /**
   * Runs plain SQL text (several statements allowed) on one connection: migrations, checks, the
   * copy of migrate-store. No bound of the driver's own: a migration may rewrite a big table (it
   * lifts the statement_timeout for its transaction).
   */
  script<T>(fn: (query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>) => Promise<T>): Promise<T> {
    return this.withClient((query) => fn((text, values) => query({ text, values, query_timeout: LONGEST_QUERY_MS } as pg.QueryConfig)), false);
  }

  /**
   * Runs `fn` with one connection of the pool; driver failures come out as storeError says. When
   * `firstIsSafe` (`fn`'s first statement changes nothing if it fails), that statement failing on a
   * dead connection is a StaleConnectionError.
   */
  private async withClient<T>(
    fn: (query: <R extends pg.QueryResultRow>(config: pg.QueryConfig) => Promise<pg.QueryResult<R>>) => Promise<T>, firstIsSafe: boolean,
  ): Promise<T> {
    this.refuseEnded();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (raw) {
      throw storeError(raw, this.where);
    }
    // A checked-out connection has no pool listener: one lost while in use must not end the process
    // either. Its query fails, and release(err) discards the connection instead of reusing it.
    let lost: Error | undefined;
    const onError = (err: Error) => { lost = err; };
    client.on('error', onError);
    let first = true;
    try {
      return await fn(async (config) => {
        const safe = first && firstIsSafe;
        first = false;
        try {
          return await client.query(config);
        } catch (raw) {
          const err = storeError(raw, this.where);
          if (!(err instanceof StoreUnavailableError)) throw err;
          // Cancelled by the statement_timeout: the connection is fine, and sending the statement
          // again on another would only wait as long again.
          if ((raw as { code?: unknown }).code === CANCELLED_SQLSTATE) throw err;
          lost ??= raw as Error;
          // Past the driver's query_timeout: the connection is discarded (its answer may still
          // come), and the statement is not sent again, for the same reason.
          if ((raw as Error).message === DRIVER_TIMEOUT_MESSAGE) throw err;
          throw safe ? new StaleConnectionError(err) : err;
        }
      });
    } finally {
      client.removeListener('error', onError);
      client.release(lost);
    }
  }

  /**
   * From now on, statements are refused (StoreUnavailableError) while `lock` is not held: a
   * server whose lock's connection dropped acts on nothing until it has the lock back, as another
   * server may have taken it meanwhile.
   */
  guardWith(lock: { readonly held: boolean }): void {
    this.lock = lock;
  }

  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.pool.end();
  }

  private refuseEnded(): void {
    if (this.ended) throw new StoreUnavailableError(this.where, 'the store is closed');
    if (this.lock && !this.lock.held) throw new StoreUnavailableError(this.where, "this server's presence on it was lost and is being taken back");
  }
}
