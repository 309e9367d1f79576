/** Opens the store a server is configured with. */
import path from 'node:path';
import { ConfigError, type KilnError } from '../errors.js';
import { describeUrl } from '../url-for-humans.js';
import type { JobStore } from './job-store.js';
import type { StoreLog } from './postgres/connection.js';
import { openSqliteStore } from './sqlite/sqlite-store.js';

/**
 * What a server's hold on a PostgreSQL store does when its lock's connection drops (see
 * postgres/server-lock.ts). An SQLite store's lock is a file lock of this process: it cannot be lost.
 */
export interface StoreLockOptions {
  /** How long a lost lock is tried again before it is lost for good (ms; default 1 min). */
  retakeWithinMs?: number;
  /** Told once when it is lost for good: the server must stop. */
  onLost?: (err: KilnError) => void;
}

/** Who opens a store (several servers on one PostgreSQL database). */
export interface StoreClusterOptions {
  /** This server's id: a PostgreSQL store announces the console lines it writes on the feed under it (feed.ts). */
  serverId?: string;
}

/** The SQLite file a `--store sqlite:PATH` names (absolute), if it names one. */
export function sqliteStoreFile(store: string | undefined): string | undefined {
  return store?.startsWith('sqlite:') ? path.resolve(store.slice('sqlite:'.length)) : undefined;
}

/** Whether `store` names a PostgreSQL database. */
export function isPostgresUrl(store: string | undefined): boolean {
  return store !== undefined && /^postgres(ql)?:\/\//.test(store);
}

/**
 * `store` is undefined (SQLite in the data dir), a `sqlite:` path, or a `postgres://` URL. The
 * PostgreSQL store (and its driver) is loaded only for such a URL: a server on SQLite never loads it.
 * The server holds its PostgreSQL schema alone, as it holds its data dir (server-lock.ts).
 */
export async function openStore(
  dataDir: string, store?: string, log?: StoreLog, lock?: StoreLockOptions, cluster: StoreClusterOptions = {},
): Promise<JobStore> {
  if (store === undefined || store === '') return openSqliteStore(path.join(dataDir, 'kiln.db'));
  if (store.startsWith('sqlite:')) return openSqliteStore(store.slice('sqlite:'.length));
  if (isPostgresUrl(store)) return (await import('./postgres/postgres-store.js')).openPostgresStore(store, { log, exclusive: true, lock, serverId: cluster.serverId });
  throw new ConfigError(`unknown store '${describeUrl(store)}': use sqlite:PATH or postgres://USER@HOST:PORT/DATABASE`);
}
