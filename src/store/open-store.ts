/** Opens the store a server is configured with. */
import path from 'node:path';
import { ConfigError, type KilnError } from '../errors.js';
import { describeUrl } from '../url-for-humans.js';
import type { JobStore } from './job-store.js';
import type { StoreLog } from './postgres/connection.js';
import type { Presence, ServerInfo } from './postgres/presence.js';
import { openSqliteStore } from './sqlite/sqlite-store.js';

/**
 * How a server joins a PostgreSQL store that several servers may share, and what it does when its
 * presence's connection drops (see postgres/presence.ts). An SQLite store's lock is a file lock of
 * this process: it cannot be lost, and the server is alone on it.
 */
export interface StoreLockOptions {
  /** This server's id (fresh at each start) and what it records of itself. */
  server: { id: string; info: ServerInfo };
  /** How long lost presence is tried again before it is lost for good (ms; default 1 min). */
  retakeWithinMs?: number;
  /** Told once when it is lost for good: the server must stop. */
  onLost?: (err: KilnError) => void;
  /** Given the presence once joined (PostgreSQL only): the lease keeper and the feed bridge use it. */
  joined?: (presence: Presence) => void;
  /** Presence tick and lease TTL (ms). @internal For tests. */
  heartbeatMs?: number;
  leaseTtlMs?: number;
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
 * With `lock`, the server joins a PostgreSQL schema that other servers may share (presence.ts).
 */
export async function openStore(
  dataDir: string, store?: string, log?: StoreLog, lock?: StoreLockOptions, cluster: StoreClusterOptions = {},
): Promise<JobStore> {
  if (store === undefined || store === '') return openSqliteStore(path.join(dataDir, 'kiln.db'));
  if (store.startsWith('sqlite:')) return openSqliteStore(store.slice('sqlite:'.length));
  if (isPostgresUrl(store)) return (await import('./postgres/postgres-store.js')).openPostgresStore(store, {
    log,
    join: lock && {
      serverId: lock.server.id, info: lock.server.info, retakeWithinMs: lock.retakeWithinMs, onLost: lock.onLost, joined: lock.joined,
      heartbeatMs: lock.heartbeatMs, leaseTtlMs: lock.leaseTtlMs,
    },
    serverId: lock?.server.id ?? cluster.serverId,
  });
  throw new ConfigError(`unknown store '${describeUrl(store)}': use sqlite:PATH or postgres://USER@HOST:PORT/DATABASE`);
}
