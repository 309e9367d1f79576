/**
 * The addresses a pool's instance is given to connect back to (KILN_SERVER): this server's first,
 * then every other live server's advertised URL, so an instance's worker fails over like any other
 * (`kiln worker --server A,B,C`) when the server that started it dies. Kept from the servers table,
 * read again when a server joins or leaves and at each feed resync, never on the start path.
 */
import type { Logger } from 'pino';
import { coerceError } from '../../errors.js';
import type { JobStore } from '../../store/index.js';
import type { EventBus } from '../events.js';

/** The farm's server list as KILN_SERVER takes it. */
export interface FarmUrls {
  /** `self,other1,other2` (only `self` until the first read, or alone on SQLite). */
  current(): string;
  /** Reads the live servers again. */
  refresh(): Promise<void>;
  stop(): void;
}

/** Follows the servers table; `self()` is this server's own address for its instances (its listen URL). */
export function createFarmUrls(log: Logger, options: { store: JobStore; events: EventBus; self: () => string; selfId: string }): FarmUrls {
  let others: string[] = [];
  const refresh = async () => {
    try {
      const servers = await options.store.listServers();
      others = servers.filter((s) => s.alive && s.id !== options.selfId && s.url).map((s) => s.url);
    } catch (raw) {
      log.warn({ err: coerceError(raw) }, 'could not read the farm\'s servers for pool instances (kept the last list)');
    }
  };
  const stops = [
    options.events.on('server.joined', () => void refresh()),
    options.events.on('server.left', () => void refresh()),
    options.events.on('feed.resync', () => void refresh()),
  ];
  return {
    current: () => [options.self(), ...others.filter((u) => u !== options.self())].join(','),
    refresh,
    stop: () => stops.forEach((stop) => stop()),
  };
}
