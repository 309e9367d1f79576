/**
 * Latent worker pools: the server starts workers itself when runs wait for a platform (and labels)
 * that a pool serves and no connected worker can take, and stops them when idle. Every start is
 * followed by exactly one stop. A start that fails, or whose worker does not connect within the
 * pool's start timeout, is stopped and counted; after repeated failures the pool is quarantined
 * (10 s, doubling to 1 h) while its runs stay queued. Each instance connects back with a name and a
 * single-use token that only it may use, revoked at stop.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { formatDuration, labelsMatch } from '../../core/index.js';
import { coerceError } from '../../errors.js';
import type { JobStore } from '../../store/index.js';
import { freeSlots, type Dispatcher } from '../dispatcher.js';
import type { InstanceHandle, Provider } from './provider.js';

/** A pool as configured. */
export interface PoolConfig {
  name: string;
  provider: string;
  platform: string;
  labels: Record<string, string>;
  max: number;
  minIdle: number;
  /** 0: one run per instance; < 0: never stopped for idleness (ms). */
  idleTimeoutMs: number;
  startTimeoutMs: number;
  checkIntervalMs: number;
}

type InstanceState = 'starting' | 'idle' | 'busy' | 'stopping';

interface Instance {
  id: string;
  name: string;
  token: string;
  pool: Pool;
  state: InstanceState;
  startedAt: number;
  idleSince: number;
  handle?: InstanceHandle;
  /** The provider's start, while it runs: a stop waits for it, so nothing started is left. */
  starting?: Promise<InstanceHandle | undefined>;
  failing?: boolean;
  stopped?: Promise<void>;
}

interface Pool {
  config: PoolConfig;
  provider: Provider;
  instances: Map<string, Instance>;
  failures: number;
  quarantinedUntil: number;
  lastError: string | null;
}

/** A pool as `kiln workers` shows it. */
export interface PoolView {
  name: string;
  provider: string;
  platform: string;
  max: number;
  instances: { name: string; state: InstanceState; startedAt: string; runs: string[] }[];
  quarantinedUntil: string | null;
  lastError: string | null;
}

const QUARANTINE_FIRST_MS = 10_000;
const QUARANTINE_MAX_MS = 3_600_000;

export class PoolManager {
  private readonly pools: Pool[];
  private readonly tokens = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private evaluation: Promise<void> | undefined;
  private again = false;
  private started = false;
  private stopped = false;

  constructor(
    configs: { config: PoolConfig; provider: Provider }[],
    private readonly parts: { store: JobStore; dispatcher: Dispatcher; log: Logger; now: () => number; server: () => string; owner: string },
  ) {
    // Pools look at the farm only once start() has removed what an earlier life left.
    this.pools = configs.map(({ config, provider }) => ({ config, provider, instances: new Map(), failures: 0, quarantinedUntil: 0, lastError: null }));
  }

  /** The instance name a single-use token belongs to, if it is live. */
  nameForToken(token: string): string | undefined {
    return this.tokens.get(token);
  }

  /** True when `name` is a live instance's (only its own token may use it). */
  isInstanceName(name: string): boolean {
    return [...this.tokens.values()].includes(name);
  }

  /** Removes what an earlier life of this server left, then starts watching. */
  async start(): Promise<void> {
    const kinds = new Map(this.pools.map((pool) => [pool.provider.kind, pool.provider]));
    for (const provider of kinds.values()) {
      const removed = await provider.removeLeftovers(this.parts.owner);
      if (removed > 0) this.parts.log.warn({ provider: provider.kind, removed }, 'removed worker instances left by an earlier server');
    }
    const interval = Math.min(...this.pools.map((p) => p.config.checkIntervalMs));
    this.timer = setInterval(() => this.evaluate(), interval);
    this.started = true;
    this.evaluate();
  }

  /** Stops every instance (each exactly once) and the timer. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.evaluation;
    await Promise.all(this.pools.flatMap((pool) => [...pool.instances.values()].map((instance) => this.stopInstance(instance, 'server shutting down'))));
  }

  /** Something changed (a run queued or ended, a worker came or went): look again. */
  evaluate(): void {
    if (this.stopped || !this.started) return;
    if (this.evaluation) {
      this.again = true;
      return;
    }
    this.evaluation = (async () => {
      do {
        this.again = false;
        try {
          await this.pass();
        } catch (raw) {
          this.parts.log.error({ err: coerceError(raw) }, 'pool check failed');
        }
      } while (this.again && !this.stopped);
      this.evaluation = undefined;
    })();
  }

  view(): PoolView[] {
    const iso = (ms: number) => new Date(ms).toISOString();
    return this.pools.map((pool) => ({
      name: pool.config.name, provider: pool.config.provider, platform: pool.config.platform, max: pool.config.max,
      instances: [...pool.instances.values()].map((i) => ({
        name: i.name, state: i.state, startedAt: iso(i.startedAt), runs: [...(this.parts.dispatcher.session(i.name)?.running ?? [])],
      })),
      quarantinedUntil: pool.quarantinedUntil > this.parts.now() ? iso(pool.quarantinedUntil) : null,
      lastError: pool.lastError,
    }));
  }

  private async pass(): Promise<void> {
    // A dispatch pass is handing runs out: look once it is done (it calls back), not halfway.
    if (this.parts.dispatcher.busyNow()) return;
    const now = this.parts.now();
    const queued = await this.parts.store.listQueued();
    if (this.stopped || this.parts.dispatcher.busyNow()) return;
    // Runs already provided for (by a free worker or an instance) in this pass, across pools.
    const covered = new Set<string>();
    for (const pool of this.pools) {
      const { config } = pool;
      this.refreshStates(pool, now);
      const waiting = queued.filter((run) => !covered.has(run.id) && run.platform === config.platform && labelsMatch(run.labels, config.labels));
      // Free slots of connected workers (the pool's idle instances too) that can take these runs.
      const free = this.parts.dispatcher.list()
        .filter((s) => s.platform === config.platform && waiting.some((run) => labelsMatch(run.labels, s.labels)))
        .reduce((n, s) => n + freeSlots(s), 0);
      const instances = [...pool.instances.values()];
      const starting = instances.filter((i) => i.state === 'starting').length;
      const idle = instances.filter((i) => i.state === 'idle').length;
      const live = instances.filter((i) => i.state !== 'stopping').length;
      const toStart = Math.min(Math.max(waiting.length - free - starting, config.minIdle - idle - starting, 0), config.max - live);
      for (const run of waiting.slice(0, free + starting + toStart)) covered.add(run.id);
      // Idle instances with nothing to do go after their idle timeout (0: at once), min_idle kept.
      if (waiting.length === 0) {
        let surplus = idle - config.minIdle;
        for (const instance of instances) {
          if (surplus > 0 && instance.state === 'idle' && config.idleTimeoutMs >= 0 && now - instance.idleSince >= config.idleTimeoutMs) {
            surplus -= 1;
            void this.stopInstance(instance, `idle for ${formatDuration(now - instance.idleSince)}`);
          }
        }
      }
      if (toStart <= 0 || now < pool.quarantinedUntil) continue;
      for (let i = 0; i < toStart; i += 1) this.startInstance(pool, waiting.map((r) => r.id));
    }
  }

  /** Moves instances along: connected ones are idle or busy; overdue starts fail. */
  private refreshStates(pool: Pool, now: number): void {
    for (const instance of pool.instances.values()) {
      if (instance.state === 'stopping') continue;
      const session = this.parts.dispatcher.session(instance.name);
      if (session?.open) {
        if (instance.state === 'starting') pool.failures = 0;
        const busy = session.running.size > 0 || (session.once && session.assigned > 0);
        if (!busy && instance.state !== 'idle') instance.idleSince = now;
        instance.state = busy ? 'busy' : 'idle';
      } else if (instance.state === 'starting' && now - instance.startedAt > pool.config.startTimeoutMs) {
        this.failed(instance, `its worker did not connect within ${formatDuration(pool.config.startTimeoutMs)}`);
      }
    }
  }

  private startInstance(pool: Pool, waiting: string[]): void {
    if (this.stopped) return;
    const id = `${this.parts.owner}/${randomUUID()}`;
    const name = `${pool.config.name}-${id.slice(-12)}`;
    const token = randomBytes(32).toString('base64url');
    const now = this.parts.now();
    const instance: Instance = { id, name, token, pool, state: 'starting', startedAt: now, idleSince: now };
    pool.instances.set(id, instance);
    this.tokens.set(token, name);
    this.parts.log.info({ pool: pool.config.name, instance: name }, 'starting a worker instance');
    const spec = { id, name, token, server: this.parts.server(), platform: pool.config.platform, labels: pool.config.labels, once: pool.config.idleTimeoutMs === 0 };
    let startError = '';
    instance.starting = pool.provider.start(spec).then(
      (handle) => (instance.handle = handle),
      (raw) => {
        startError = coerceError(raw).message;
        return undefined;
      },
    );
    void (async () => {
      const handle = await instance.starting;
      if (!handle) return this.failed(instance, `could not start: ${startError}`, waiting);
      const why = await handle.gone;
      // Gone by itself: a --once worker after its run, or one that died.
      if (instance.state === 'starting') await this.failed(instance, `${why} before its worker connected${handle.lastWords() ? ` (${handle.lastWords()})` : ''}`, waiting);
      else await this.stopInstance(instance, why);
    })();
  }

  /** A start that went wrong: stopped, said, counted; the pool rests after repeated failures. */
  private async failed(instance: Instance, error: string, waiting: string[] = []): Promise<void> {
    const pool = instance.pool;
    if (instance.state === 'stopping' || instance.failing) return;
    instance.failing = true;
    pool.failures += 1;
    pool.lastError = `${instance.name}: ${error}`;
    if (pool.failures >= 2) {
      const rest = Math.min(QUARANTINE_FIRST_MS * 2 ** (pool.failures - 2), QUARANTINE_MAX_MS);
      pool.quarantinedUntil = this.parts.now() + rest;
      this.parts.log.error({ pool: pool.config.name, failures: pool.failures, quarantineMs: rest, error }, 'pool quarantined after repeated start failures');
    } else {
      this.parts.log.error({ pool: pool.config.name, instance: instance.name, error }, 'a worker instance failed to start');
    }
    const now = this.parts.now();
    for (const runId of waiting.slice(0, 20)) {
      await this.parts.store.recordEvent(runId, { at: now, attempt: 1, kind: 'pool-start-failed', detail: { pool: pool.config.name, instance: instance.name, error } }).catch(() => undefined);
    }
    await this.stopInstance(instance, 'failed to start');
  }

  /** Stops an instance exactly once; its token is revoked first. */
  private stopInstance(instance: Instance, why: string): Promise<void> {
    instance.stopped ??= (async () => {
      instance.state = 'stopping';
      this.tokens.delete(instance.token);
      this.parts.log.info({ pool: instance.pool.config.name, instance: instance.name, why }, 'stopping a worker instance');
      try {
        // A start still in flight is waited for, so what it started is stopped too.
        const handle = instance.handle ?? (await instance.starting);
        if (handle) await instance.pool.provider.stop(handle);
      } catch (raw) {
        instance.pool.lastError = `${instance.name}: could not stop: ${coerceError(raw).message}`;
      }
      instance.pool.instances.delete(instance.id);
      this.parts.log.info({ pool: instance.pool.config.name, instance: instance.name }, 'worker instance stopped');
      this.evaluate();
    })();
    return instance.stopped;
  }
}
