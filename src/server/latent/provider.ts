import { expandTemplate } from '../../core/index.js';

/**
 * Latent worker providers: how a pool starts, checks, stops and finds its worker instances. One
 * module per provider behind this small interface; the pool manager owns the lifecycle (when to
 * start and stop, timeouts, quarantine, tokens), a provider only talks to its backend.
 */

/** What an instance needs to be made and to connect back. */
export interface InstanceSpec {
  /** Exact id, `<owner>/<uuid>`: set on the instance (label, annotation, environment) so it is found again by it. */
  id: string;
  /** The server's owner id (the part of `id` before the slash). */
  owner: string;
  /** The pool it belongs to (also set on the instance, so a later life can adopt it). */
  pool: string;
  /** The worker name it must use, with its single-use token. */
  name: string;
  token: string;
  /** The server's address as the pool is told to give it (providers may override it, e.g. `server_url`). */
  server: string;
  platform: string;
  labels: Record<string, string>;
  /** One run, then exit (idle_timeout 0). */
  once: boolean;
  /** The run it is made for (a pool whose options name the run): set on the instance too, so an adopting server knows it. */
  forRun?: string;
  /**
   * Values for `%%NAME%%` placeholders in provider options (expand with core's expandTemplate):
   * PLATFORM, POOL, INSTANCE (the worker name); for an instance made for one run (its pool's
   * options name the run), also JOB, RUN and the job's --var values.
   */
  values: Record<string, string>;
  /** The server's CA file (`tls.ca`), for providers whose instances run on this host (KILN_CA). */
  ca?: string;
}

/** The environment every instance's worker gets: how it connects back, and who it is. */
export function instanceEnvironment(spec: InstanceSpec, server = spec.server): Record<string, string> {
  return {
    KILN_SERVER: server,
    KILN_WORKER_NAME: spec.name,
    KILN_WORKER_TOKEN: spec.token,
    KILN_POOL_INSTANCE: spec.id,
    KILN_POOL: spec.pool,
  };
}

/** KILN_CA for an instance on this host, whose worker can read the server's CA file by its path. */
export function localCaEnvironment(spec: InstanceSpec): Record<string, string> {
  return spec.ca === undefined ? {} : { KILN_CA: spec.ca };
}

/** The `kiln worker` arguments every instance runs with (after the program itself). */
export function workerArguments(spec: InstanceSpec): string[] {
  const args = ['worker', '--platform', spec.platform, ...Object.entries(spec.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`])];
  // An instance asked to stop drains 10 s at most, then its jobs get 3 s before they are killed.
  args.push('--drain-timeout', '10s', '--kill-grace', '3s');
  if (spec.once) args.push('--once');
  return args;
}

/** A started (or adopted) instance. */
export interface InstanceHandle {
  /** The exact id (InstanceSpec.id). */
  id: string;
  /** The provider's own reference: a pid, a container id, a pod or app name. */
  ref: string;
  /**
   * Resolves when the instance has gone by itself, with why, for providers that hear of it (a
   * child's exit, a container's wait). Others leave it out and are found gone by `check`.
   */
  readonly gone?: Promise<string>;
  /** The instance's last words (its last log line), to explain a failure; '' when none. */
  lastWords(): string;
}

/** An instance found on the backend that this server (owner) made, maybe in an earlier life. */
export interface OwnInstance {
  handle: InstanceHandle;
  /** The pool and worker name it was made for. */
  pool: string;
  name: string;
  /** The run it was made for, when its pool makes one instance per run. */
  forRun?: string;
}

/** One kind of latent worker. */
export interface Provider {
  readonly kind: string;
  /**
   * Whether instances outlive their server, so a restarted server can adopt them (their workers
   * reconnect). Those that cannot (local processes, which stop with their server) are removed.
   */
  readonly adoptable: boolean;
  /** Makes an instance; rejects with a one-line reason when it cannot (what it made is cleaned up). */
  start(spec: InstanceSpec): Promise<InstanceHandle>;
  /**
   * Health check, every check_interval: resolves null while the instance lives, or why it is gone
   * (exited, deleted, failed). Rejects when the backend cannot be asked (that is not counted as gone).
   */
  check(handle: InstanceHandle): Promise<string | null>;
  /** Stops the instance and removes it and what it held (volumes, apps); resolves once it is gone. */
  stop(handle: InstanceHandle): Promise<void>;
  /** Every instance this owner made, found by the exact id set on it, never by name. */
  listOwn(owner: string): Promise<OwnInstance[]>;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Every string in a JSON-like value (objects and lists walked) replaced by `map(text, path)`, where
 * path names where it is (`env.FOO`, `command.0`), after `at` when given.
 */
export function mapStrings<T>(value: T, map: (text: string, path: string) => string, at = ''): T {
  const inside = (key: string | number) => (at ? `${at}.${key}` : String(key));
  if (typeof value === 'string') return map(value, at) as T;
  if (Array.isArray(value)) return value.map((item, i) => mapStrings(item, map, inside(i))) as T;
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, mapStrings(item, map, inside(key))])) as T;
  return value;
}

/** Every string in a JSON-like value with its `%%NAME%%` placeholders expanded (an unknown one is an error naming it). */
export function expandDeep<T>(value: T, values: Record<string, string>): T {
  return mapStrings(value, (text) => expandTemplate(text, values));
}

/** The message of a worker's JSON log line (with its error), or the line itself: an instance's last words. */
export function lastLogMessage(line: string): string {
  try {
    const parsed = JSON.parse(line) as { msg?: string; err?: string | { message?: string } };
    const err = typeof parsed.err === 'object' ? parsed.err?.message : parsed.err;
    return [parsed.msg, err].filter(Boolean).join(': ') || line;
  } catch {
    return line;
  }
}
