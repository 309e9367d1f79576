/**
 * Latent worker providers: how a pool starts, checks, stops and finds its worker instances. One
 * module per provider behind this small interface; the pool manager owns the lifecycle.
 */

/** What an instance needs to connect back. */
export interface InstanceSpec {
  /** Exact id, also given to the instance (KILN_POOL_INSTANCE), so leftovers are found by it. */
  id: string;
  /** The worker name it must use, with its single-use token. */
  name: string;
  token: string;
  server: string;
  platform: string;
  labels: Record<string, string>;
  /** One run, then exit (idle_timeout 0). */
  once: boolean;
}

/** A started instance. */
export interface InstanceHandle {
  id: string;
  /** Resolves when the instance has gone by itself (exited), with why. */
  readonly gone: Promise<string>;
  /** The instance's last words (e.g. its last log lines), for errors. */
  lastWords(): string;
}

/** One kind of latent worker. */
export interface Provider {
  readonly kind: string;
  /** Starts an instance; rejects with a one-line reason when it cannot. */
  start(spec: InstanceSpec): Promise<InstanceHandle>;
  /** Stops an instance and releases what it held; resolves once it is gone. */
  stop(handle: InstanceHandle): Promise<void>;
  /** Removes every instance a previous life of this server left, found by `owner` in its id. */
  removeLeftovers(owner: string): Promise<number>;
}
