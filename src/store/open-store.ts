/** Opens the store a server is configured with. */
import path from 'node:path';
import { ConfigError } from '../errors.js';
import type { JobStore } from './job-store.js';
import { openSqliteStore } from './sqlite/sqlite-store.js';

/**
 * `store` is undefined (SQLite in the data dir), a `sqlite:` path, or a `postgres://` URL (not
 * yet supported: it is refused with a clear error rather than silently using SQLite).
 */
/** The SQLite file a `--store sqlite:PATH` names (absolute), if it names one. */
export function sqliteStoreFile(store: string | undefined): string | undefined {
  return store?.startsWith('sqlite:') ? path.resolve(store.slice('sqlite:'.length)) : undefined;
}

export async function openStore(dataDir: string, store?: string): Promise<JobStore> {
  if (store === undefined || store === '') return openSqliteStore(path.join(dataDir, 'kiln.db'));
  if (store.startsWith('sqlite:')) return openSqliteStore(store.slice('sqlite:'.length));
  if (/^postgres(ql)?:\/\//.test(store)) throw new ConfigError('the PostgreSQL store is not available yet in this version; omit --store to use SQLite');
  throw new ConfigError(`unknown store '${store}': use sqlite:PATH or postgres://...`);
}
