/**
 * `kiln server --config FILE`: the server's settings in YAML, validated at start with one clear
 * error. Command-line options override the file. Relative paths are taken from the file's folder.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import * as z from 'zod';
import { durationRangeProblem, formatDuration, MAX_DURATION_MS, MAX_TIMER_MS, parseDuration, parseSize } from '../core/index.js';
import { coerceError, ConfigError } from '../errors.js';
import { PROVIDER_NAMES, providerKind } from './latent/providers.js';
import { parseBlobStore } from './artifact-store.js';
import type { S3Settings } from './s3-url.js';

/** A duration, at most `max` (the message names the limit; the issue's path names the field). */
const boundedDuration = (max: number) => z.string()
  .refine((text) => parseDuration(text) !== undefined, { message: 'use a duration like 10s, 5m or 1h', abort: true })
  .refine((text) => durationRangeProblem(parseDuration(text)!, max) === undefined, { message: `at most ${formatDuration(max)}` });
/** A duration compared with times (retention): at most 3660d. */
const duration = boundedDuration(MAX_DURATION_MS);
/** A duration that becomes one timer: at most 24d (setTimeout fires at once past 24.8 days). */
const timerDuration = boundedDuration(MAX_TIMER_MS);
const size = z.union([z.number().int().min(0), z.string()])
  .transform((value) => String(value))
  .refine((text) => parseSize(text) !== undefined, { message: 'use a size like 512mb or 4gb' });

const artifactsSchema = z.strictObject({
  /** Largest artifact file. */
  max_file: size.optional(),
  /** Most artifact bytes one run keeps. */
  max_per_run: size.optional(),
  /** Keep the artifacts of the newest N runs of each job. */
  keep_runs: z.number().int().min(0).optional(),
  /** Keep artifacts this long after their run ended. */
  keep_for: duration.optional(),
  /** Time between retention sweeps. */
  sweep_every: duration.optional(),
  /** Unreferenced blobs younger than this stay (an upload may be about to reference them). */
  blob_grace: duration.optional(),
  /** Where blobs live: `dir:PATH` (shared storage for several servers) or `s3://BUCKET/PREFIX?endpoint=URL&region=R&force_path_style=true`. */
  store: z.string().min(1).optional(),
  /** Credentials of an s3:// store (else the AWS_* chain); never in the URL, which is logged. */
  access_key_id: z.string().optional(),
  secret_access_key: z.string().optional(),
});

const uploadSchema = z.strictObject({
  url: z.string().min(1),
  retry_min: timerDuration.optional(),
  retry_max: timerDuration.optional(),
  /** Attempts after which a delivery that keeps failing is given up (`failed`; `kiln redeliver` sends it again). */
  max_attempts: z.number().int().min(1).max(1_000_000).optional(),
  /** S3-compatible targets. */
  endpoint: z.string().optional(),
  region: z.string().optional(),
  access_key_id: z.string().optional(),
  secret_access_key: z.string().optional(),
  force_path_style: z.boolean().optional(),
});

/** A duration that may be negative (`-1`: never), for idle_timeout. */
const signedDuration = z.union([z.number().int(), z.string()]).transform((v) => String(v)).refine(
  (text) => /^-\d+$/.test(text) || text === '0' || parseDuration(text) !== undefined,
  { message: 'use a duration like 10m, 0 (one run per instance) or -1 (never)', abort: true },
).refine((text) => /^-\d+$/.test(text) || text === '0' || parseDuration(text)! <= MAX_TIMER_MS, { message: `at most ${formatDuration(MAX_TIMER_MS)}` });

const poolSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'pool names use letters, digits, - and _'),
  provider: z.string().refine((kind) => PROVIDER_NAMES.includes(kind), { message: `use one of ${PROVIDER_NAMES.join(', ')}` }),
  platform: z.string().min(1),
  labels: z.record(z.string(), z.string()).default({}),
  max: z.number().int().min(1).max(1000),
  min_idle: z.number().int().min(0).default(0),
  idle_timeout: signedDuration.optional(),
  start_timeout: timerDuration.default('10m'),
  check_interval: timerDuration.default('10s').refine((text) => parseDuration(text)! >= 100, { message: 'at least 100ms' }),
  options: z.record(z.string(), z.unknown()).default({}),
});
/** A pool as the file gives it; `options` checked by its provider's schema, relative paths from `baseDir`. */
export type PoolSettings = z.infer<typeof poolSchema> & { baseDir: string };

const tlsSchema = z.strictObject({
  /** PEM certificate (leaf first, then its chain). */
  cert: z.string().min(1),
  /** PEM private key (mode 0600 or 0640). */
  key: z.string().min(1),
  /** CA file the workers this server starts (pools) trust it by. */
  ca: z.string().min(1).optional(),
});

const configSchema = z.strictObject({
  /** HOST:PORT to listen on. */
  listen: z.string().optional(),
  /** The URL other servers, clients and workers reach this server at (several servers on one PostgreSQL; default the listen URL). */
  advertise: z.string().url().optional(),
  /** Data dir: the store and the tokens. */
  data: z.string().optional(),
  /** Where templates/ is (default: the data dir). */
  config_dir: z.string().optional(),
  /** Store URL (default: SQLite in the data dir). */
  store: z.string().optional(),
  heartbeat: timerDuration.optional(),
  reattach_grace: timerDuration.optional(),
  backstop: timerDuration.optional(),
  /** On PostgreSQL: how long a lost schema lock is tried again before the server stops. */
  lock_retake: timerDuration.optional(),
  artifacts: artifactsSchema.optional(),
  upload: z.union([z.string().min(1).transform((url): z.infer<typeof uploadSchema> => ({ url })), uploadSchema]).optional(),
  pools: z.array(poolSchema).optional(),
  /** Serve HTTPS and WSS. */
  tls: tlsSchema.optional(),
  /** Prometheus metrics: true (at /metrics on the main listener, a token of any role) or { listen: HOST:PORT } (a listener of their own, open). */
  metrics: z.union([z.boolean(), z.strictObject({ listen: z.string().min(1) })]).optional(),
  /** robur builder's protocol: { listen: HOST[:PORT] } (port default 1234); off when absent. */
  robur: z.strictObject({ listen: z.string().min(1) }).optional(),
});

/** The settings a config file gives, with paths resolved and durations as strings for the flags. */
export interface ConfigFileSettings {
  listen?: string;
  advertise?: string;
  data?: string;
  configDir?: string;
  store?: string;
  heartbeat?: string;
  reattachGrace?: string;
  backstop?: string;
  lockRetake?: string;
  maxArtifactFile?: string;
  maxArtifactsPerRun?: string;
  keepArtifactsRuns?: string;
  keepArtifactsFor?: string;
  /** Settings only the file gives. */
  sweepEvery?: string;
  blobGrace?: string;
  /** `artifacts.store`, a `dir:` path made absolute from the file's folder. */
  artifactStore?: string;
  /** The credentials of an s3:// `artifacts.store`. */
  artifactStoreS3?: S3Settings;
  upload?: string;
  uploadRetryMin?: string;
  uploadRetryMax?: string;
  uploadMaxAttempts?: number;
  s3?: S3Settings;
  pools?: PoolSettings[];
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  metrics?: boolean;
  metricsListen?: string;
  roburListen?: string;
}

/** Reads and checks a config file; throws ConfigError naming the problem. */
export async function readConfigFile(file: string): Promise<ConfigFileSettings> {
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
  const names = new Set<string>();
  for (const [i, pool] of (config.pools ?? []).entries()) {
    const options = (await providerKind(pool.provider)).options.safeParse(pool.options);
    if (!options.success) {
      const issue = options.error.issues[0]!;
      throw new ConfigError(`bad config file ${file}: ${['pools', i, 'options', ...issue.path].join('.')}: ${issue.message}`);
    }
    pool.options = options.data as Record<string, unknown>;
    if (names.has(pool.name)) throw new ConfigError(`bad config file ${file}: pools.${i}.name: '${pool.name}' is used twice`);
    names.add(pool.name);
    if (pool.min_idle > pool.max) throw new ConfigError(`bad config file ${file}: pools.${i}.min_idle: more than max`);
  }
  const here = (p: string | undefined) => (p === undefined ? undefined : path.resolve(path.dirname(file), p));
  return {
    listen: config.listen,
    advertise: config.advertise,
    data: here(config.data),
    configDir: here(config.config_dir),
    store: config.store,
    heartbeat: config.heartbeat,
    reattachGrace: config.reattach_grace,
    backstop: config.backstop,
    lockRetake: config.lock_retake,
    maxArtifactFile: config.artifacts?.max_file,
    maxArtifactsPerRun: config.artifacts?.max_per_run,
    keepArtifactsRuns: config.artifacts?.keep_runs?.toString(),
    keepArtifactsFor: config.artifacts?.keep_for,
    sweepEvery: config.artifacts?.sweep_every,
    blobGrace: config.artifacts?.blob_grace,
    ...artifactStore(file, config.artifacts),
    upload: config.upload?.url,
    uploadRetryMin: config.upload?.retry_min,
    uploadRetryMax: config.upload?.retry_max,
    uploadMaxAttempts: config.upload?.max_attempts,
    s3: config.upload && s3Settings(config.upload),
    pools: config.pools?.map((pool) => ({ ...pool, baseDir: path.dirname(path.resolve(file)) })),
    tlsCert: here(config.tls?.cert),
    tlsKey: here(config.tls?.key),
    tlsCa: here(config.tls?.ca),
    metrics: config.metrics === undefined ? undefined : config.metrics !== false,
    metricsListen: typeof config.metrics === 'object' ? config.metrics.listen : undefined,
    roburListen: config.robur?.listen,
  };
}

/** `artifacts.store`, checked now (a bad one stops the server before anything starts), with its credentials. */
function artifactStore(file: string, artifacts: z.infer<typeof artifactsSchema> | undefined): Pick<ConfigFileSettings, 'artifactStore' | 'artifactStoreS3'> {
  const s3: S3Settings = { accessKeyId: artifacts?.access_key_id, secretAccessKey: artifacts?.secret_access_key };
  const location = artifacts?.store === undefined ? undefined : parseBlobStore(artifacts.store, path.dirname(path.resolve(file)), s3, `config file ${file}: artifacts.store`);
  if (location?.kind !== 's3' && (s3.accessKeyId !== undefined || s3.secretAccessKey !== undefined)) {
    throw new ConfigError(`bad config file ${file}: artifacts.access_key_id: only for an s3:// artifacts.store`);
  }
  if (location === undefined) return {};
  return location.kind === 'dir' ? { artifactStore: `dir:${location.root}` } : { artifactStore: artifacts!.store, artifactStoreS3: s3 };
}

/** The S3 keys of an `upload:` block, as the S3 target takes them. */
function s3Settings(upload: z.infer<typeof uploadSchema>): ConfigFileSettings['s3'] {
  return {
    endpoint: upload.endpoint, region: upload.region, accessKeyId: upload.access_key_id,
    secretAccessKey: upload.secret_access_key, forcePathStyle: upload.force_path_style,
  };
}
