/**
 * Latent worker pools: the server starts workers itself when runs wait for a platform (and labels)
 * that a pool serves and no connected worker can take, and stops them when idle. Every start is
 * followed by exactly one stop. A start that fails, or whose worker does not connect within the
 * pool's start timeout, is stopped and counted; after repeated failures the pool is quarantined
 * (10 s, doubling to 1 h) while its runs stay queued. Each instance connects back with a name and a
 * single-use token that only it may use, revoked at stop.
 *
 * With several servers each pool is a singleton (lease `pool:NAME`): only the lease's holder looks
 * at it, starts and stops its instances. What the next holder needs is in the store: the instances
 * (pool_instances, with the sha256 of their token, so any server authenticates their workers) and the
 * failures and quarantine (pool_state); the owner id and the token key are farm-wide secrets, so the
 * next holder's recover() finds and adopts the instances. Losing the lease stops no instance.
 */
import { createHmac, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  backoffMs, formatDuration, idleStops, labelsMatch, perRunPoolStarts, quarantineAfter, sharedPoolStarts, type BackoffTimings,
} from '../../core/index.js';
import { coerceError } from '../../errors.js';
import type { JobStore, PoolState, WaitingRun } from '../../store/index.js';
import { LEASE, soloLeases, type Lease } from '../cluster/types.js';
import { hashToken } from '../tokens.js';
import type { Dispatcher } from '../dispatcher.js';
import type { EventBus } from '../events.js';
import { freeSlots, type WorkerRegistry } from '../worker-registry.js';
import { createWakeLoop, type WakeLoop } from '../wake-loop.js';
import type { InstanceHandle, OwnInstance, Provider } from './provider.js';

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
  /**
   * Its options name the run (`%%JOB%%`, a job variable...): each instance is made for one waiting
   * run and given that run only.
   */
  perRun: boolean;
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
  /** Made by an earlier life of this server and taken over; its failing to come back is not counted. */
  adopted?: boolean;
  /** The run it was made for (perRun pools). */
  forRun?: string;
  /** The runs that were waiting when it was started: told on their console if it fails. */
  waiting: string[];
  checking?: boolean;
  checkedAt: number;
  /** When its connected worker went away (it may come back). */
  lostAt?: number;
}

interface Pool {
  config: PoolConfig;
  provider: Provider;
  /** Its lease: only its holder looks at it. */
  lease: Lease;
  instances: Map<string, Instance>;
  /** Failed starts since an instance last connected. */
  failures: number;
  /** Quarantines since an instance last connected: each one rests twice as long. */
  quarantines: number;
  quarantinedUntil: number;
  lastError: string | null;
  /** Whether what an earlier life left has been listed (adopted or removed); tried again until it is. */
  listed: boolean;
  /** Whether its kept failures and quarantine were read since the lease was gained. */
  loaded: boolean;
}

/** A pool as `kiln workers` shows it. */
export interface PoolView {
  name: string;
  provider: string;
  platform: string;
  /** The labels its workers offer. */
  labels: Record<string, string>;
  max: number;
  instances: { name: string; state: InstanceState; startedAt: string; runs: string[]; forRun: string | null; adopted: boolean }[];
  quarantinedUntil: string | null;
  lastError: string | null;
}

/** A failed stop is tried again after 1 s, doubling up to a minute. */
const STOP_RETRY: BackoffTimings = { retryMinMs: 1000, retryMaxMs: 60_000 };
/** At server shutdown, instances get this long to stop; what is left is found by the next life. */
const SHUTDOWN_WAIT_MS = 30_000;

export interface PoolManagerParts {
  store: JobStore;
  /** Reservations (an instance made for one run gets only that run), and whether a pass is handing runs out. */
  dispatcher: Dispatcher;
  /** The connected workers (an instance's worker among them once it connects). */
  workers: WorkerRegistry;
  /** The pools look again on `run.queued`, `run.ended`, `worker.left` and `dispatch.idle`; instances' moves go out. */
  events: EventBus;
  log: Logger;
  now: () => number;
  /** The server's address, for instances to connect back to. */
  server: () => string;
  /** A CA file instances' workers trust the server by (KILN_CA), for a server with a private CA. */
  ca?: string;
  /** This server's owner id: the first part of every instance id. */
  owner: string;
  /** Instance tokens are derived from it, so a restarted server knows its adopted instances' tokens. */
  secret: Buffer;
  /** Writes a server line on a waiting run's console. */
  note: (runId: string, text: string) => Promise<void>;
  /** How long a disconnected worker may take to re-attach (the server's reattach grace, ms). */
  reattachGraceMs: number;
  /** Each pool's lease (`pool:NAME`); default: every pool held for good, as on a server alone on its store. */
  leases?: (pool: string) => Lease;
}

export class PoolManager {
  private readonly pools: Pool[];
  /** Instance ids already adopted or removed by recover(). */
  private readonly recovered = new Set<string>();
  /** Looks at the farm when something changes, and every check interval (instances' health, start timeouts). */
  private readonly loop: WakeLoop;
  private started = false;
  private stopped = false;

  constructor(configs: { config: PoolConfig; provider: Provider }[], private readonly parts: PoolManagerParts) {
    // Pools look at the farm only once start() has adopted or removed what an earlier life left.
    const solo = soloLeases();
    const leaseOf = parts.leases ?? ((pool: string) => solo.want(LEASE.pool(pool)));
    this.pools = configs.map(({ config, provider }) => ({
      config, provider, lease: leaseOf(config.name), instances: new Map(), failures: 0, quarantines: 0, quarantinedUntil: 0, lastError: null, listed: false, loaded: false,
    }));
    const interval = Math.min(...this.pools.map((p) => p.config.checkIntervalMs));
    this.loop = createWakeLoop(parts.log, {
      body: async () => {
        await this.pass();
        return this.parts.now() + interval;
      },
      now: parts.now,
      // A failed look is tried again at the next interval, as any look.
      retry: { retryMinMs: interval, retryMaxMs: interval },
      failureMessage: 'pool check failed',
      // Looks only while this server holds some pool's lease.
      gate: () => this.pools.some((pool) => pool.lease.held),
    });
    for (const pool of this.pools) pool.lease.onChange((held) => this.leaseChanged(pool, held));
    const look = () => this.evaluate();
    // Remote ones too: a run queued on another server, a worker leaving another server.
    for (const name of ['run.queued', 'run.retried', 'run.ended', 'worker.left', 'worker.elsewhere', 'dispatch.idle', 'feed.resync'] as const) parts.events.on(name, look);
  }

  /**
   * A pool's lease came or went. Gained: what the last holder left is listed again (with the farm's
   * owner id: its instances are adopted) and its failures and quarantine read back. Lost: this
   * server forgets the pool's instances without stopping them; the next holder adopts them.
   */
  private leaseChanged(pool: Pool, held: boolean): void {
    if (held) {
      pool.listed = false;
      pool.loaded = false;
      if (this.started && !this.stopped) void this.loop.open();
      return;
    }
    for (const instance of pool.instances.values()) {
      this.recovered.delete(instance.id);
      this.parts.dispatcher.reserve(instance.name, undefined);
    }
    pool.instances.clear();
    if (!this.pools.some((p) => p.lease.held)) this.loop.close();
  }

  /** The instance name a single-use token belongs to, if it is live (a store lookup by the token's sha256: any server's instance). */
  async nameForToken(token: string): Promise<string | undefined> {
    return (await this.parts.store.poolInstanceByToken(hashToken(token)))?.name;
  }

  /** True when `name` is a live instance's (only its own token may use it), whichever server started it. */
  async isInstanceName(name: string): Promise<boolean> {
    return (await this.parts.store.listPoolInstances()).some((instance) => instance.name === name);
  }

  /**
   * Finds what an earlier life of this server left (by the exact owner id set on each instance):
   * instances that outlive their server and whose pool still exists are adopted (their workers
   * reconnect with the same token), the rest removed. Called before the server listens, so a
   * returning worker's token is known when it comes; a pool whose backend cannot be asked now is
   * asked again on each later look.
   */
  async recover(): Promise<void> {
    const removals: Promise<void>[] = [];
    const adopted: Instance[] = [];
    for (const pool of this.pools) {
      if (pool.listed || !pool.lease.held) continue;
      let found: OwnInstance[];
      try {
        found = await pool.provider.listOwn(this.parts.owner);
      } catch (raw) {
        pool.lastError = `could not list its instances: ${coerceError(raw).message}`;
        this.parts.log.error({ pool: pool.config.name, err: coerceError(raw) }, 'could not look for instances left by an earlier server');
        continue;
      }
      pool.listed = true;
      for (const own of found) {
        const home = this.pools.find((p) => p.config.name === own.pool);
        // Another pool's instance on the same backend: that pool decides (it lists it too).
        if (this.recovered.has(own.handle.id) || (home && home !== pool && home.provider.kind === pool.provider.kind)) continue;
        this.recovered.add(own.handle.id);
        if (home === pool && pool.provider.adoptable) {
          adopted.push(this.adopt(pool, own));
        } else {
          removals.push(pool.provider.stop(own.handle).catch((raw) => {
            pool.lastError = `${own.name || own.handle.ref}: could not remove it: ${coerceError(raw).message}`;
          }));
        }
      }
    }
    // Said once recorded: its worker is known to every server from then on.
    await Promise.all([...removals, ...adopted.map(async (instance) => {
      await this.recordAdopted(instance);
      this.parts.events.publish('pool.instance.adopted', { pool: instance.pool.config.name, instance: instance.name });
    })]);
    if (removals.length > 0) this.parts.log.warn({ removed: removals.length }, 'removed worker instances left by an earlier server');
    if (adopted.length > 0) this.parts.log.info({ adopted: adopted.length }, 'adopted worker instances left by an earlier server');
  }

  /** Starts watching (after recover(), once the server listens). */
  start(): void {
    this.started = true;
    if (this.pools.some((pool) => pool.lease.held)) void this.loop.open();
  }

  /** Stops every instance (each exactly once) and the timer. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop.stop();
    const stops = Promise.all(this.pools.flatMap((pool) => [...pool.instances.values()].map((instance) => this.stopInstance(instance, 'server shutting down'))));
    let timer: NodeJS.Timeout | undefined;
    const waited = await Promise.race([stops.then(() => true), new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), SHUTDOWN_WAIT_MS)))]);
    clearTimeout(timer);
    if (!waited) {
      const left = this.pools.flatMap((pool) => [...pool.instances.values()].map((i) => i.name));
      this.parts.log.warn({ instances: left }, 'worker instances still stopping at shutdown; the next start finds them by their id');
    }
  }

  /** Something changed (a run queued or ended, a worker came or went): look again. */
  evaluate(): void {
    if (this.stopped || !this.started) return;
    void this.loop.kick();
  }

  view(): PoolView[] {
    const iso = (ms: number) => new Date(ms).toISOString();
    return this.pools.map((pool) => ({
      name: pool.config.name, provider: pool.config.provider, platform: pool.config.platform, labels: pool.config.labels, max: pool.config.max,
      instances: [...pool.instances.values()].map((i) => ({
        name: i.name, state: i.state, startedAt: iso(i.startedAt), runs: [...(this.parts.workers.session(i.name)?.running ?? [])],
        forRun: i.forRun ?? null, adopted: i.adopted ?? false,
      })),
      quarantinedUntil: pool.quarantinedUntil > this.parts.now() ? iso(pool.quarantinedUntil) : null,
      lastError: pool.lastError,
    }));
  }

  /**
   * The pools as the farm sees them: a pool this server holds as view() shows it; one another
   * server holds, from the store (its recorded instances, its kept quarantine and last error).
   */
  async farmView(): Promise<PoolView[]> {
    const iso = (ms: number) => new Date(ms).toISOString();
    const local = this.view();
    return Promise.all(this.pools.map(async (pool, index) => {
      if (pool.lease.held) return local[index]!;
      const [instances, kept] = await Promise.all([this.parts.store.listPoolInstances(pool.config.name), this.parts.store.poolState(pool.config.name)]);
      const running = await this.parts.store.listRunning();
      return {
        ...local[index]!,
        instances: instances.map((i) => ({
          name: i.name, state: (i.state === 'starting' ? 'starting' : running.some((r) => r.worker === i.name) ? 'busy' : 'idle') as InstanceState,
          startedAt: iso(i.startedAt), runs: running.filter((r) => r.worker === i.name).map((r) => r.id), forRun: i.forRun, adopted: i.adopted,
        })),
        quarantinedUntil: kept.quarantinedUntil > this.parts.now() ? iso(kept.quarantinedUntil) : null,
        lastError: kept.lastError,
      };
    }));
  }

  private async pass(): Promise<void> {
    // A dispatch pass is handing runs out: look once it is done (it calls back), not halfway.
    if (this.parts.dispatcher.busyNow()) return;
    if (this.pools.some((pool) => pool.lease.held && !pool.listed)) await this.recover();
    for (const pool of this.pools) if (pool.lease.held && !pool.loaded) await this.loadState(pool);
    const now = this.parts.now();
    const queued = await this.parts.store.listWaiting();
    // Instances' workers may be connected to another server: the store says which are connected, and what runs.
    const elsewhere = await this.workersElsewhere();
    if (this.stopped || this.parts.dispatcher.busyNow()) return;
    const queuedIds = new Set(queued.map((run) => run.id));
    // Runs already provided for (by a free worker or an instance) in this pass, across pools.
    const covered = new Set<string>();
    for (const pool of this.pools) {
      const { config } = pool;
      if (!pool.lease.held) continue;
      this.refreshStates(pool, now, elsewhere);
      const waiting = queued.filter((run) => !covered.has(run.id) && run.platform === config.platform && labelsMatch(run.labels, config.labels));
      // Free slots of connected workers (the pool's idle instances too) that can take any of these runs.
      const free = this.parts.workers.list()
        .filter((s) => s.platform === config.platform && this.parts.dispatcher.reservedFor(s.name) === undefined && waiting.some((run) => labelsMatch(run.labels, s.labels)))
        .reduce((n, s) => n + freeSlots(s), 0);
      const instances = [...pool.instances.values()];
      const live = instances.filter((i) => i.state !== 'stopping').length;
      const idle = instances.filter((i) => i.state === 'idle').length;
      const starting = instances.filter((i) => i.state === 'starting').length;
      let startFor: (string | undefined)[];
      if (config.perRun) {
        // Each run gets its own instance; one whose run went (taken, cancelled, done) is not needed.
        const provided = new Set(instances.filter((i) => i.state !== 'stopping').map((i) => i.forRun));
        for (const run of waiting) if (provided.has(run.id)) covered.add(run.id);
        const unprovided = waiting.filter((run) => !provided.has(run.id));
        const count = perRunPoolStarts({ unprovided: unprovided.length, free, live, max: config.max });
        startFor = unprovided.slice(free, free + count).map((run) => run.id);
        for (const run of unprovided.slice(0, free + count)) covered.add(run.id);
        for (const instance of instances) {
          // An adopted one may be finishing its run (running, not queued) while its worker comes back: it goes once idle.
          const unneeded = !queuedIds.has(instance.forRun ?? '');
          if (unneeded && (instance.state === 'idle' || (instance.state === 'starting' && !instance.adopted))) {
            void this.stopInstance(instance, instance.state === 'starting' ? 'its run no longer waits' : 'its run is done or taken');
          }
        }
      } else {
        const count = sharedPoolStarts({ waiting: waiting.length, free, starting, idle, live, max: config.max, minIdle: config.minIdle });
        startFor = new Array<undefined>(count).fill(undefined);
        for (const run of waiting.slice(0, free + starting + count)) covered.add(run.id);
        // Idle instances with nothing to do go after their idle timeout (0: at once), min_idle kept.
        for (const index of idleStops(instances, { waiting: waiting.length, minIdle: config.minIdle, idleTimeoutMs: config.idleTimeoutMs, now })) {
          const instance = instances[index]!;
          void this.stopInstance(instance, `idle for ${formatDuration(now - instance.idleSince)}`);
        }
      }
      for (const instance of instances) this.healthCheck(instance, now);
      if (startFor.length === 0 || now < pool.quarantinedUntil) continue;
      const runs = new Map(waiting.map((run) => [run.id, run]));
      for (const runId of startFor) this.startInstance(pool, waiting.map((r) => r.id), runId === undefined ? undefined : runs.get(runId));
    }
  }

  /** The workers the store says are connected that are not this server's, with how many runs each runs. */
  private async workersElsewhere(): Promise<Map<string, number>> {
    const instances = new Set(this.pools.flatMap((pool) => [...pool.instances.values()].map((i) => i.name)));
    const elsewhere = new Map<string, number>();
    if (instances.size === 0) return elsewhere;
    for (const worker of await this.parts.store.listWorkers()) {
      if (worker.connected && instances.has(worker.name) && !this.parts.workers.session(worker.name)?.open) elsewhere.set(worker.name, 0);
    }
    if (elsewhere.size === 0) return elsewhere;
    for (const run of await this.parts.store.listRunning()) {
      if (run.worker !== null && elsewhere.has(run.worker)) elsewhere.set(run.worker, elsewhere.get(run.worker)! + 1);
    }
    return elsewhere;
  }

  /** Reads a pool's kept failures and quarantine (after its lease was gained: the last holder's count). */
  private async loadState(pool: Pool): Promise<void> {
    const kept = await this.parts.store.poolState(pool.config.name);
    Object.assign(pool, { failures: kept.failures, quarantines: kept.quarantines, quarantinedUntil: kept.quarantinedUntil, lastError: kept.lastError ?? pool.lastError });
    pool.loaded = true;
  }

  /** Keeps a pool's failures and quarantine for its next holder; a store that refuses it is logged (the count stays here). */
  private saveState(pool: Pool): void {
    const state: PoolState = { failures: pool.failures, quarantines: pool.quarantines, quarantinedUntil: pool.quarantinedUntil, lastError: pool.lastError };
    this.parts.store.savePoolState(pool.config.name, state).catch((raw) => {
      this.parts.log.error({ pool: pool.config.name, err: coerceError(raw) }, 'could not keep the pool\'s failures and quarantine');
    });
  }

  /** Moves instances along: connected ones (here or on another server) are idle or busy; overdue starts fail. */
  private refreshStates(pool: Pool, now: number, elsewhere: Map<string, number>): void {
    for (const instance of pool.instances.values()) {
      if (instance.state === 'stopping') continue;
      const session = this.parts.workers.session(instance.name);
      const remoteRuns = elsewhere.get(instance.name);
      if (session?.open || remoteRuns !== undefined) {
        if (instance.state === 'starting' && (pool.failures !== 0 || pool.quarantines !== 0)) {
          pool.failures = 0;
          pool.quarantines = 0;
          this.saveState(pool);
        }
        instance.lostAt = undefined;
        const busy = session?.open ? session.running.size > 0 || (session.once && session.assigned > 0) : remoteRuns! > 0;
        if (!busy && instance.state !== 'idle') instance.idleSince = now;
        instance.state = busy ? 'busy' : 'idle';
      } else if (instance.state !== 'starting') {
        // A worker that lost its connection gets the time a worker has to re-attach, then its instance goes.
        instance.lostAt ??= now;
        if (now - instance.lostAt > this.parts.reattachGraceMs) void this.stopInstance(instance, `its worker has been disconnected for ${formatDuration(now - instance.lostAt)}`);
      } else if (now - instance.startedAt > pool.config.startTimeoutMs) {
        void this.failed(instance, `its worker did not connect within ${formatDuration(pool.config.startTimeoutMs)}`);
      }
    }
  }

  /** Asks the provider whether the instance still lives, every check_interval (one check at a time). */
  private healthCheck(instance: Instance, now: number): void {
    const { pool, handle } = instance;
    if (!handle || instance.checking || instance.state === 'stopping' || now - instance.checkedAt < pool.config.checkIntervalMs) return;
    instance.checking = true;
    instance.checkedAt = now;
    pool.provider.check(handle).then(
      (why) => {
        if (why !== null) void this.gone(instance, why);
      },
      (raw) => {
        // The backend could not be asked: that says nothing about the instance.
        pool.lastError = `${instance.name}: health check failed: ${coerceError(raw).message}`;
        this.parts.log.warn({ pool: pool.config.name, instance: instance.name, err: coerceError(raw) }, 'could not check a worker instance');
      },
    ).finally(() => (instance.checking = false));
  }

  /** True while this server manages the instance (its pool's lease held, and it not forgotten at a loss). */
  private owns(instance: Instance): boolean {
    return instance.pool.lease.held && instance.pool.instances.get(instance.id) === instance;
  }

  private instanceToken(id: string): string {
    return createHmac('sha256', this.parts.secret).update(id).digest('base64url');
  }

  /** An instance's worker name: its pool's and the end of its id (never taken from the backend, which could claim any name). */
  private instanceName(pool: Pool, id: string): string {
    return `${pool.config.name}-${id.slice(-12)}`;
  }

  private adopt(pool: Pool, own: OwnInstance): Instance {
    const now = this.parts.now();
    const { id } = own.handle;
    const name = this.instanceName(pool, id);
    const instance: Instance = { id, name, token: this.instanceToken(id), pool, state: 'starting', startedAt: now, idleSince: now, handle: own.handle, adopted: true, checkedAt: now, waiting: [] };
    pool.instances.set(id, instance);
    // An adopted instance of a per-run pool is still for its run (it may hold it, or it may still wait); none other.
    if (pool.config.perRun) {
      instance.forRun = own.forRun;
      this.parts.dispatcher.reserve(instance.name, own.forRun ?? '');
    }
    this.parts.log.info({ pool: pool.config.name, instance: instance.name, ref: own.handle.ref }, 'adopted a worker instance left by an earlier server');
    this.watch(instance, own.handle);
    return instance;
  }

  private startInstance(pool: Pool, waiting: string[], run: WaitingRun | undefined): void {
    if (this.stopped) return;
    const id = `${this.parts.owner}/${randomUUID()}`;
    const name = this.instanceName(pool, id);
    const token = this.instanceToken(id);
    const now = this.parts.now();
    const instance: Instance = { id, name, token, pool, state: 'starting', startedAt: now, idleSince: now, forRun: run?.id, checkedAt: now, waiting: run ? [run.id] : waiting };
    pool.instances.set(id, instance);
    if (run) this.parts.dispatcher.reserve(name, run.id);
    this.parts.log.info({ pool: pool.config.name, instance: name, ...(run ? { runId: run.id } : {}) }, 'starting a worker instance');
    this.parts.events.publish('pool.instance.starting', { pool: pool.config.name, instance: name, ...(run ? { runId: run.id } : {}) });
    const values: Record<string, string> = { PLATFORM: pool.config.platform, POOL: pool.config.name, INSTANCE: name };
    let startError = '';
    instance.starting = (async () => {
      // Recorded before it starts: its worker may connect to any server, which finds it by its token's hash.
      await this.parts.store.addPoolInstance({
        id, pool: pool.config.name, name, tokenSha256: hashToken(token), state: 'starting', handle: null, forRun: run?.id ?? null, adopted: false, startedAt: now,
      });
      if (run) Object.assign(values, (await this.parts.store.getJob(run.job))?.vars ?? {}, { JOB: run.job, RUN: run.id });
      const spec = {
        id, owner: this.parts.owner, pool: pool.config.name, name, token, server: this.parts.server(), platform: pool.config.platform,
        labels: pool.config.labels, once: pool.config.idleTimeoutMs === 0, values, forRun: run?.id, ca: this.parts.ca,
      };
      return pool.provider.start(spec);
    })().then(
      (handle) => (instance.handle = handle),
      (raw) => {
        startError = coerceError(raw).message;
        return undefined;
      },
    );
    void (async () => {
      const handle = await instance.starting;
      if (!handle) return this.failed(instance, `could not start: ${startError}`);
      await this.parts.store.updatePoolInstance(id, { state: 'started', handle: { id: handle.id, ref: handle.ref } }).catch((raw) => {
        this.parts.log.warn({ pool: pool.config.name, instance: name, err: coerceError(raw) }, 'could not record a started worker instance');
      });
      this.watch(instance, handle);
    })();
  }

  /** Records an adopted instance (its worker authenticates on any server); one recorded by the last holder is marked adopted. */
  private async recordAdopted(instance: Instance): Promise<void> {
    const { store } = this.parts;
    try {
      const known = (await store.listPoolInstances(instance.pool.config.name)).some((i) => i.id === instance.id);
      const handle = { id: instance.handle!.id, ref: instance.handle!.ref };
      if (known) await store.updatePoolInstance(instance.id, { state: 'adopted', handle, adopted: true });
      else {
        await store.addPoolInstance({
          id: instance.id, pool: instance.pool.config.name, name: instance.name, tokenSha256: hashToken(instance.token), state: 'adopted', handle,
          forRun: instance.forRun ?? null, adopted: true, startedAt: instance.startedAt,
        });
      }
    } catch (raw) {
      this.parts.log.error({ pool: instance.pool.config.name, instance: instance.name, err: coerceError(raw) }, 'could not record an adopted worker instance');
    }
  }

  /** Follows an instance's going by itself, for providers that hear of it. */
  private watch(instance: Instance, handle: InstanceHandle): void {
    // A provider's failure to follow its instance must not take the server down: checks go on.
    if (handle.gone) {
      handle.gone.then((why) => this.gone(instance, why)).catch((raw) => {
        this.parts.log.error({ pool: instance.pool.config.name, instance: instance.name, err: coerceError(raw) }, 'lost track of a worker instance');
      });
    }
  }

  /** The instance went by itself: a --once worker after its run, or one that died (a failure if it never connected). */
  private async gone(instance: Instance, why: string): Promise<void> {
    // Its pool's lease moved on: the next holder finds it gone itself.
    if (!this.owns(instance)) return;
    if (instance.state !== 'starting' || instance.adopted) return this.stopInstance(instance, why);
    const words = instance.handle?.lastWords();
    return this.failed(instance, `${why} before its worker connected${words ? ` (${words})` : ''}`);
  }

  /** A start that went wrong: stopped, said, counted; the pool rests after repeated failures. */
  private async failed(instance: Instance, error: string): Promise<void> {
    const pool = instance.pool;
    if (instance.state === 'stopping' || instance.failing || !this.owns(instance)) return;
    instance.failing = true;
    pool.lastError = `${instance.name}: ${error}`;
    this.parts.events.publish('pool.instance.failed', { pool: pool.config.name, instance: instance.name, error });
    if (instance.adopted) return this.stopInstance(instance, `adopted, but ${error}`);
    pool.failures += 1;
    const now = this.parts.now();
    let said = `kiln: pool ${pool.config.name} could not start a worker: ${error}`;
    // A batch of starts failing together rests the pool once, not once per instance.
    const rest = quarantineAfter(pool.failures, pool.quarantines, now, pool.quarantinedUntil);
    if (rest !== undefined) {
      pool.quarantines += 1;
      pool.quarantinedUntil = now + rest;
      said += `; the pool rests for ${formatDuration(rest)} after ${pool.failures} failures in a row, and this run stays queued`;
      this.parts.log.error({ pool: pool.config.name, failures: pool.failures, quarantineMs: rest, error }, 'pool quarantined after repeated start failures');
    } else {
      this.parts.log.error({ pool: pool.config.name, instance: instance.name, error }, 'a worker instance failed to start');
    }
    // Kept, so the pool's next holder (another server) rests it too.
    this.saveState(pool);
    for (const runId of instance.waiting.slice(0, 20)) {
      await this.parts.store.recordEvent(runId, { at: now, attempt: 1, kind: 'pool-start-failed', detail: { pool: pool.config.name, instance: instance.name, error } }).catch(() => undefined);
      await this.parts.note(runId, said).catch(() => undefined);
    }
    await this.stopInstance(instance, 'failed to start');
  }

  /**
   * Stops an instance exactly once; its token is revoked first. A stop the backend refuses is tried
   * again (1 s doubling to a minute) while the instance stays `stopping`, so nothing is forgotten
   * while it may still run; at shutdown, what is left is found by the next life.
   */
  private stopInstance(instance: Instance, why: string): Promise<void> {
    instance.stopped ??= (async () => {
      instance.state = 'stopping';
      const { pool } = instance;
      // Its token is revoked first: no server authenticates its worker from now on.
      await this.parts.store.removePoolInstance(instance.id).catch((raw) => {
        this.parts.log.error({ pool: pool.config.name, instance: instance.name, err: coerceError(raw) }, 'could not revoke a worker instance\'s token');
      });
      this.parts.log.info({ pool: pool.config.name, instance: instance.name, why }, 'stopping a worker instance');
      // A start still in flight is waited for, so what it started is stopped too.
      const handle = instance.handle ?? (await instance.starting);
      for (let failures = 1; handle; failures += 1) {
        const wait = backoffMs(failures, STOP_RETRY);
        try {
          await pool.provider.stop(handle);
          break;
        } catch (raw) {
          pool.lastError = `${instance.name}: could not stop: ${coerceError(raw).message}`;
          this.parts.log.error({ pool: pool.config.name, instance: instance.name, err: coerceError(raw), retryMs: wait }, 'could not stop a worker instance');
          if (this.stopped) return;
          await new Promise((resolve) => setTimeout(resolve, wait));
        }
      }
      pool.instances.delete(instance.id);
      this.parts.dispatcher.reserve(instance.name, undefined);
      this.parts.log.info({ pool: pool.config.name, instance: instance.name }, 'worker instance stopped');
      this.parts.events.publish('pool.instance.stopped', { pool: pool.config.name, instance: instance.name, why });
      this.evaluate();
    })();
    return instance.stopped;
  }
}
