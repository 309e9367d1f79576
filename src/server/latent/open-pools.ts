/** Builds the pool manager from the config file's `pools:`. */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { parseDuration } from '../../core/index.js';
import type { JobStore } from '../../store/index.js';
import type { PoolSettings } from '../config-file.js';
import type { Dispatcher } from '../dispatcher.js';
import { PoolManager, type PoolConfig } from './pool-manager.js';
import { ProcessProvider } from './process-provider.js';
import type { Provider } from './provider.js';

/** Buildbot's defaults: containers serve one run each, other instances wait 10 minutes for more. */
function idleTimeoutMs(pool: PoolSettings): number {
  if (pool.idle_timeout === undefined) return ['docker', 'kubernetes', 'marathon'].includes(pool.provider) ? 0 : 600_000;
  if (/^-\d+$/.test(pool.idle_timeout)) return -1;
  return pool.idle_timeout === '0' ? 0 : parseDuration(pool.idle_timeout)!;
}

/** This data dir's owner id: every instance id starts with it, so a later life finds its leftovers. */
function ownerId(dataDir: string): string {
  const file = path.join(dataDir, 'pool-owner.id');
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    const id = randomBytes(8).toString('hex');
    writeFileSync(file, id + '\n', { mode: 0o600 });
    return id;
  }
}

export function openPools(
  pools: PoolSettings[],
  parts: { store: JobStore; dispatcher: Dispatcher; log: Logger; now: () => number; server: () => string; dataDir: string },
): PoolManager {
  const configs = pools.map((pool) => {
    const config: PoolConfig = {
      name: pool.name, provider: pool.provider, platform: pool.platform, labels: pool.labels, max: pool.max, minIdle: pool.min_idle,
      idleTimeoutMs: idleTimeoutMs(pool), startTimeoutMs: parseDuration(pool.start_timeout)!, checkIntervalMs: parseDuration(pool.check_interval)!,
    };
    const args = Array.isArray(pool.options.args) ? pool.options.args.map(String) : [];
    const provider: Provider = new ProcessProvider(pool.provider as 'process' | 'bwrap', { args });
    return { config, provider };
  });
  return new PoolManager(configs, { ...parts, log: parts.log.child({ part: 'pools' }), owner: ownerId(parts.dataDir) });
}
