/**
 * `kiln server --config FILE`: the server's settings in YAML, validated at start with one clear
 * error. Command-line options override the file. Relative paths are taken from the file's folder.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseDuration } from '../core/index.js';
import { coerceError, ConfigError } from '../errors.js';

const duration = z.string().refine((text) => parseDuration(text) !== undefined, { message: 'use a duration like 10s, 5m or 1h' });

const configSchema = z.strictObject({
  /** HOST:PORT to listen on. */
  listen: z.string().optional(),
  /** Data dir: the store and the tokens. */
  data: z.string().optional(),
  /** Where templates/ is (default: the data dir). */
  config_dir: z.string().optional(),
  /** Store URL (default: SQLite in the data dir). */
  store: z.string().optional(),
  heartbeat: duration.optional(),
  reattach_grace: duration.optional(),
  backstop: duration.optional(),
  pools: z.unknown().optional(),
});

/** The settings a config file gives, with paths resolved and durations as strings for the flags. */
export interface ConfigFileSettings {
  listen?: string;
  data?: string;
  configDir?: string;
  store?: string;
  heartbeat?: string;
  reattachGrace?: string;
  backstop?: string;
}

/** Reads and checks a config file; throws ConfigError naming the problem. */
export function readConfigFile(file: string): ConfigFileSettings {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8')) ?? {};
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${coerceError(err).message.split('\n')[0]}`);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`bad config file ${file}: ${issue.path.join('.') || 'top level'}: ${issue.message}`);
  }
  const config = parsed.data;
  if (config.pools !== undefined) {
    throw new ConfigError(`bad config file ${file}: pools: latent worker pools are not available in this version yet; remove the key`);
  }
  const here = (p: string | undefined) => (p === undefined ? undefined : path.resolve(path.dirname(file), p));
  return {
    listen: config.listen,
    data: here(config.data),
    configDir: here(config.config_dir),
    store: config.store,
    heartbeat: config.heartbeat,
    reattachGrace: config.reattach_grace,
    backstop: config.backstop,
  };
}
