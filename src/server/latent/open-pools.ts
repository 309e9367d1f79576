/** Builds the pool manager from the config file's `pools:`. */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { parseDuration, templateNames } from '../../core/index.js';
import type { JobStore } from '../../store/index.js';
import type { PoolSettings } from '../config-file.js';
import { adoptFarmSecret } from '../tokens.js';
import { PoolManager, type PoolConfig, type PoolManagerParts } from './pool-manager.js';
import { ONE_RUN_BY_DEFAULT, providerKind } from './providers.js';

/** Buildbot's defaults: containers serve one run each, other instances wait 10 minutes for more. */
function idleTimeoutMs(pool: PoolSettings): number {
  if (pool.idle_timeout === undefined) return ONE_RUN_BY_DEFAULT.has(pool.provider) ? 0 : 600_000;
  if (/^-\d+$/.test(pool.idle_timeout)) return -1;
  return pool.idle_timeout === '0' ? 0 : parseDuration(pool.idle_timeout)!;
}

/**
 * A value kept in the data dir across lives, made on first use; farm-wide (several servers on one
 * database): the first server's wins, and a later server's file is overwritten with it.
 */
async function farmKept(store: JobStore, dataDir: string, name: string, bytes: number, log: Logger, now: () => number): Promise<string> {
  return adoptFarmSecret(store, name, kept(dataDir, name, bytes), { file: path.join(dataDir, name), log, now });
}

/** A value kept in the data dir across lives, made on first use. */
function kept(dataDir: string, name: string, bytes: number): string {
  const file = path.join(dataDir, name);
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    const value = randomBytes(bytes).toString('hex');
    writeFileSync(file, value + '\n', { mode: 0o600 });
    return value;
  }
}

/** Placeholders every instance can fill; any other (JOB, RUN, a job variable) makes instances per run. */
const POOL_PLACEHOLDERS = new Set(['PLATFORM', 'POOL', 'INSTANCE']);

function namesTheRun(options: unknown): boolean {
  return templateNames(JSON.stringify(options)).some((name) => !POOL_PLACEHOLDERS.has(name));
}

export async function openPools(
  pools: PoolSettings[],
  parts: Omit<PoolManagerParts, 'owner' | 'secret' | 'log'> & { log: Logger; dataDir: string },
): Promise<PoolManager> {
  const log = parts.log.child({ part: 'pools' });
  const configs = await Promise.all(pools.map(async (pool) => {
    const config: PoolConfig = {
      name: pool.name, provider: pool.provider, platform: pool.platform, labels: pool.labels, max: pool.max, minIdle: pool.min_idle,
      idleTimeoutMs: idleTimeoutMs(pool), startTimeoutMs: parseDuration(pool.start_timeout)!, checkIntervalMs: parseDuration(pool.check_interval)!,
      perRun: namesTheRun(pool.options),
    };
    const provider = (await providerKind(pool.provider)).create(pool.options, { pool: pool.name, baseDir: pool.baseDir, log: log.child({ pool: pool.name }) });
    return { config, provider };
  }));
  // The owner id marks every instance, so a later life (or the pool's next holder, on another
  // server) finds them; the secret derives their tokens. Both are the farm's.
  const owner = await farmKept(parts.store, parts.dataDir, 'pool-owner.id', 8, log, parts.now);
  const secret = Buffer.from(await farmKept(parts.store, parts.dataDir, 'pool-token.key', 32, log, parts.now), 'hex');
  return new PoolManager(configs, { ...parts, log, owner, secret });
}
