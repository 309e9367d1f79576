/**
 * One server per PostgreSQL schema, until several servers can share one (SPEC.md: each singleton on
 * one server at a time, not built yet): two servers on one schema would each take the other's
 * running runs for orphans. A server holds a session advisory lock on its schema on a connection of
 * its own for as long as it runs; PostgreSQL releases it when that connection ends, however the
 * server ends (SIGKILL included), so there is never a stale lock to remove.
 */
import pg from 'pg';
import { DataDirInUseError } from '../../errors.js';
import { APPLICATION_NAME, storeError, type StoreLog } from './connection.js';

/** The advisory lock's first key: ASCII 'KSRV' (migrations lock 'KILN'); the second is the schema's hashtext. */
const LOCK_KEY = 0x4b535256;

/** How long a start waits for the lock: a server just killed may still hold it until PostgreSQL notices. */
const LOCK_WAIT = '5s';

/** The lock held; `release` ends its connection. */
export interface ServerLock {
  release(): Promise<void>;
}

/** Takes the schema's server lock, or throws DataDirInUseError naming the server that holds it. */
export async function holdServerLock(url: string, where: string, log?: StoreLog): Promise<ServerLock> {
  const client = new pg.Client({ connectionString: url, application_name: APPLICATION_NAME });
  // Unheard, an 'error' on this idle connection would end the process.
  client.on('error', (err) => log?.warn({ store: where, err: err.message }, "the connection holding this server's lock on the store was lost"));
  try {
    await client.connect();
    await client.query(`SET lock_timeout = '${LOCK_WAIT}'`);
    try {
      await client.query('SELECT pg_advisory_lock($1, hashtext(current_schema()))', [LOCK_KEY]);
    } catch (raw) {
      if ((raw as { code?: unknown }).code !== '55P03') throw raw;
      throw new DataDirInUseError(`the store ${where}`, await holder(client));
    }
    await client.query('RESET lock_timeout');
  } catch (raw) {
    await client.end().catch(() => undefined);
    throw storeError(raw, where);
  }
  return { release: () => client.end() };
}

/** "kiln server pid N on host H (since T)": who holds the lock, as pg_stat_activity shows it. */
async function holder(client: pg.Client): Promise<string> {
  const { rows } = await client.query(`
    SELECT a.application_name AS name, a.backend_start AS since FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid AND l.objsubid = 2
      AND l.objid = (hashtext(current_schema())::bigint & 4294967295)::oid`, [LOCK_KEY]);
  const [row] = rows as { name: string; since: Date }[];
  return row ? `${row.name || 'another client'} (since ${row.since.toISOString()})` : 'another Kiln server';
}
