/**
 * A server's presence on a PostgreSQL schema that several servers share (notes/issue16-plan.md
 * §2.2). Each server holds, on one dedicated connection of its own:
 * - the schema lock SHARED (server-lock.ts): servers run beside each other, while `kiln
 *   migrate-store`, which takes it exclusive, cannot copy beside a live server;
 * - its presence lock (`KPRS` + hashtext(server id)): other servers see it alive in pg_locks, and
 *   dead at once when PostgreSQL ends its connection (SIGKILL, pg_terminate_backend);
 * - a LISTEN on the schema's feed channel (store/feed.ts);
 * - a heartbeat every 2 s, one statement that also renews the leases the server holds.
 *
 * That connection can end while the server runs (PostgreSQL restarted, the network dropped, a
 * DBA's pg_terminate_backend), or hang (its heartbeats failing past the cut-off): then `held` is
 * false, the store refuses statements (this server acts on nothing it may no longer hold), every
 * lease is dropped locally, and the locks are taken back on a new connection with the backoff.
 * Once back, a resync is told (the feed may have missed messages). Not back within the bound, it is
 * lost for good: `onLost` is told, and the server stops.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { backoffMs, formatDuration, type BackoffTimings } from '../../core/index.js';
import { coerceError, DataDirInUseError, StoreLockLostError } from '../../errors.js';
import { PRESENCE_LOCK_KEY } from '../cluster-constants.js';
import { FEED_CHANNEL_SQL } from '../feed.js';
import { APPLICATION_NAME, storeError, type Connections, type StoreLog } from './connection.js';
import { lockHolder, SCHEMA_LOCK_KEY } from './server-lock.js';
import * as S from './statements.js';

/** How long a start waits for the shared schema lock: a `kiln migrate-store` may be finishing. */
const LOCK_WAIT = '5s';

/** Waits between attempts to retake lost presence: at once, then soon, since the server acts on nothing meanwhile. */
const RETAKE_RETRY: BackoffTimings = { retryMinMs: 250, retryMaxMs: 5000, jitter: 0.2 };

/** How long lost presence is tried again by default before the server gives up (ms). */
export const DEFAULT_RETAKE_WITHIN_MS = 60_000;

/** The presence tick (heartbeat and lease renewal), ms. */
export const DEFAULT_HEARTBEAT_MS = 2_000;

/** A lease's time to live (ms): renewed at every tick, so a server has three ticks to renew it. */
export const DEFAULT_LEASE_TTL_MS = 8_000;

/** How far before a lease's TTL its holder counts it lost unless renewed (ms): covers the clocks' drift and the tick's trip. */
export const LEASE_MARGIN_MS = 2_000;

/** The margin for a TTL: 2 s, or a quarter of shorter TTLs (tests). */
export function leaseMarginMs(ttlMs: number): number {
  return Math.min(LEASE_MARGIN_MS, ttlMs / 4);
}

/** What a server records of itself in `servers`. */
export interface ServerInfo {
  /** The URL clients and workers use for it (`--advertise`, default the listen URL). */
  url: string;
  hostname: string;
  pid: number;
  version: string;
  /** sha256 of the configuration every server should share (templates, pools, upload, artifacts). */
  configDigest: string;
}

/** How a server joins its schema. */
export interface PresenceOptions {
  /** This server's id (fresh at each start). */
  serverId: string;
  info: ServerInfo;
  log?: StoreLog;
  /** How long lost presence is tried again before it is lost for good (ms; default 1 min). */
  retakeWithinMs?: number;
  /** Told once when presence is lost for good; the server must stop. */
  onLost?: (err: StoreLockLostError) => void;
  /** The tick (ms; default 2 s). */
  heartbeatMs?: number;
  /** The leases' TTL (ms; default 8 s). Heartbeats failing for TTL - 2 s cut the connection off. */
  leaseTtlMs?: number;
}

/** What the lease keeper plugs into the tick. */
export interface LeaseTicker {
  /** The names of the leases held now, to renew. */
  renewing(): string[];
  /**
   * The tick's answer: of the leases `sent` for renewal, those renewed (one missing is lost); the tick
   * was sent at `sentAt` (performance.now()). A lease taken meanwhile was not sent, and is not judged.
   */
  renewed(sent: string[], rows: { name: string; epoch: number }[], sentAt: number): void;
  /** Presence is lost: every lease is dropped, synchronously. */
  loseAll(): void;
  /** After each tick, and once presence is back: try for the leases not held. */
  afterTick(): void;
}

/** A server's presence on its schema. */
export interface Presence {
  readonly serverId: string;
  /** False from the loss of the dedicated connection until it is taken back (and for good once lost). */
  readonly held: boolean;
  readonly leaseTtlMs: number;
  /** How long before the TTL a lease not renewed counts as lost here (ms). */
  readonly leaseMarginMs: number;
  /** Registers this server (`servers`), LISTENs and starts the ticks; called once the schema is migrated. */
  start(): Promise<void>;
  /** Each feed message's payload, as it arrives (keep it cheap: parse and publish). */
  onMessage(listener: (payload: string) => void): () => void;
  /** Told each time presence is taken back: the feed may have missed messages meanwhile. */
  onResync(listener: () => void): () => void;
  /**
   * Told at each loss (false; after the leases were dropped) and retake (true) of presence: on a
   * loss the gateway closes its workers' sockets, so they move to another server.
   */
  onHeld(listener: (held: boolean) => void): () => void;
  /** The lease keeper's hooks (one). */
  attach(ticker: LeaseTicker): void;
  /** Takes a lease if it is free, expired or its holder dead; its epoch, or undefined when not taken. */
  acquireLease(name: string): Promise<number | undefined>;
  /** Lets leases go (a clean stop), each announced on the feed (`lease.released`) at its commit; the names let go. */
  releaseLeases(names: string[]): Promise<string[]>;
  /** Sends a message on the feed (after commit, through the pool). */
  notify(payload: string): Promise<void>;
  /** Records the URL this server is reached at, once it listens (it registered with the one it was given, maybe port 0). */
  setUrl(url: string): Promise<void>;
  /** A clean stop: marks this server stopped and ends the connection (its locks with it). */
  leave(): Promise<void>;
}

/**
 * Takes the schema lock shared and this server's presence lock on a connection of its own; throws
 * DataDirInUseError naming the holder when `kiln migrate-store` holds the schema. `start()` once
 * the schema is migrated.
 */
export async function joinCluster(url: string, db: Connections, options: PresenceOptions): Promise<Presence> {
  const presence = new HeldPresence(url, db, options);
  const client = presence.newClient();
  // Listened to before connecting: unheard, an 'error' on this idle connection would end the process.
  presence.watch(client);
  try {
    await client.connect();
    await client.query(`SET statement_timeout = 0; SET lock_timeout = '${LOCK_WAIT}'`);
    try {
      await client.query('SELECT pg_advisory_lock_shared($1, hashtext(current_schema()))', [SCHEMA_LOCK_KEY]);
    } catch (raw) {
      if ((raw as { code?: unknown }).code !== '55P03') throw raw;
      throw new DataDirInUseError(`the store ${db.where}`, (await lockHolder(client)).who);
    }
    await client.query(`RESET lock_timeout; SET statement_timeout = ${presence.cutOffMs}`);
    const { rows } = await client.query({ name: S.PRESENCE_LOCK.name, text: S.PRESENCE_LOCK.text, values: [options.serverId] });
    // The id is fresh: only a server started with the same id (never) could hold it.
    if (!(rows[0] as { got: boolean }).got) throw new DataDirInUseError(`the store ${db.where}`, `another server with the id ${options.serverId}`);
  } catch (raw) {
    presence.stopped = true;
    await client.end().catch(() => undefined);
    throw storeError(raw, db.where);
  }
  presence.held = true;
  return presence;
}

/** The pid of the PostgreSQL backend serving `client` (pg sets it on connect; its types leave it out). */
function backendPid(client: pg.Client): number | undefined {
  return (client as unknown as { processID?: number | null }).processID ?? undefined;
}

class HeldPresence implements Presence {
  held = false;
  stopped = false;
  readonly serverId: string;
  readonly leaseTtlMs: number;
  readonly leaseMarginMs: number;
  readonly cutOffMs: number;
  private readonly heartbeatMs: number;
  private client: pg.Client | undefined;
  private channel = '';
  private ticker: LeaseTicker | undefined;
  private readonly messageListeners = new Set<(payload: string) => void>();
  private readonly resyncListeners = new Set<() => void>();
  private readonly heldListeners = new Set<(held: boolean) => void>();
  private tickTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private ticking = false;
  /** performance.now() when the last tick that succeeded was sent. */
  private lastOk = 0;
  private lostAt = 0;
  private attempts = 0;

  constructor(private readonly url: string, private readonly db: Connections, private readonly options: PresenceOptions) {
    this.serverId = options.serverId;
    this.heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.leaseMarginMs = leaseMarginMs(this.leaseTtlMs);
    this.cutOffMs = Math.max(this.leaseTtlMs - this.leaseMarginMs, this.heartbeatMs);
  }

  newClient(): pg.Client {
    // keepAlive: a connection that died silently is found out in seconds, not at the next tick's cut-off.
    return new pg.Client({
      connectionString: this.url, application_name: `${APPLICATION_NAME} server ${this.serverId}`, keepAlive: true, keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
    });
  }

  /** Listens for the end of `client`, the connection that holds (or is about to hold) the locks, and for its notifications. */
  watch(client: pg.Client): void {
    this.client = client;
    let gone = false;
    const onGone = (err?: Error) => {
      if (gone || this.client !== client || this.stopped) return;
      gone = true;
      this.connectionLost(err?.message ?? 'the connection ended');
    };
    client.on('error', onGone);
    client.on('end', () => onGone());
    client.on('notification', (message) => {
      if (message.channel !== this.channel || message.payload === undefined || this.client !== client) return;
      for (const listener of [...this.messageListeners]) listener(message.payload);
    });
  }

  async start(): Promise<void> {
    const client = this.client!;
    await this.register(client);
    this.lastOk = performance.now();
    this.scheduleTick();
  }

  /** Records this server in `servers` and LISTENs on the feed, on `client`. */
  private async register(client: pg.Client): Promise<void> {
    const { info } = this.options;
    await client.query({ name: S.SERVER_REGISTER.name, text: S.SERVER_REGISTER.text, values: [this.serverId, info.url, info.hostname, info.pid, info.version, info.configDigest] });
    // Each start adds a row (a fresh id): those of servers long gone go here, so the table stays the farm's size.
    await client.query({ name: S.SERVERS_FORGET_OLD.name, text: S.SERVERS_FORGET_OLD.text });
    const { rows } = await client.query(`SELECT ${FEED_CHANNEL_SQL} AS channel`);
    this.channel = (rows[0] as { channel: string }).channel;
    // The channel is 'kiln_' and hex digits: safe as an identifier.
    await client.query(`LISTEN ${this.channel}`);
  }

  onMessage(listener: (payload: string) => void): () => void {
    this.messageListeners.add(listener);
    return () => this.messageListeners.delete(listener);
  }

  onResync(listener: () => void): () => void {
    this.resyncListeners.add(listener);
    return () => this.resyncListeners.delete(listener);
  }

  onHeld(listener: (held: boolean) => void): () => void {
    this.heldListeners.add(listener);
    return () => this.heldListeners.delete(listener);
  }

  private tellHeld(held: boolean): void {
    for (const listener of [...this.heldListeners]) {
      try {
        listener(held);
      } catch (raw) {
        this.options.log?.warn({ err: coerceError(raw).message }, 'a presence listener failed');
      }
    }
  }

  attach(ticker: LeaseTicker): void {
    this.ticker = ticker;
  }

  async acquireLease(name: string): Promise<number | undefined> {
    const client = this.client;
    if (!this.held || !client) return undefined;
    const { rows } = await client.query({ name: S.LEASE_ACQUIRE.name, text: S.LEASE_ACQUIRE.text, values: [name, this.serverId, this.leaseTtlMs] });
    // Taken on a connection since lost: the loss already dropped every lease; the next tick tries again.
    if (this.client !== client || !this.held) return undefined;
    const row = rows[0] as { epoch: string | number } | undefined;
    return row === undefined ? undefined : Number(row.epoch);
  }

  async releaseLeases(names: string[]): Promise<string[]> {
    const client = this.client;
    if (!this.held || !client || names.length === 0) return [];
    const released: string[] = [];
    for (const name of names) {
      const { rows } = await client.query({ name: S.LEASE_RELEASE.name, text: S.LEASE_RELEASE.text, values: [name, this.serverId] });
      if (rows.length > 0) released.push(name);
    }
    return released;
  }

  async notify(payload: string): Promise<void> {
    await this.db.run(S.FEED_NOTIFY, [[payload]]);
  }

  async setUrl(url: string): Promise<void> {
    this.options.info.url = url;
    await this.db.run(S.SERVER_SET_URL, [this.serverId, url]);
  }

  async leave(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.tickTimer);
    clearTimeout(this.retryTimer);
    // An attempt to retake presence in flight may be taking the lock now: it sees `stopped` and lets go; waited for,
    // so that once left this server is not briefly alive again on a connection nobody ends. Its connection is
    // ended too, and the wait bounded by the cut-off: a retake stalled on a silent network does not hold up a stop.
    if (this.retaking) {
      void this.retakeClient?.end().catch(() => undefined);
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([this.retaking, new Promise<void>((resolve) => (bound = setTimeout(resolve, this.cutOffMs).unref()))]);
      clearTimeout(bound);
    }
    const client = this.client;
    const wasHeld = this.held;
    this.held = false;
    if (client && wasHeld) await client.query({ name: S.SERVER_STOP.name, text: S.SERVER_STOP.text, values: [this.serverId] }).catch(() => undefined);
    await client?.end().catch(() => undefined);
  }

  private scheduleTick(): void {
    if (this.stopped) return;
    clearTimeout(this.tickTimer);
    this.tickTimer = setTimeout(() => void this.tick(), this.heartbeatMs);
  }

  /** One heartbeat (with the renewal of the leases held); a connection whose ticks fail past the cut-off is given up. */
  private async tick(): Promise<void> {
    const client = this.client;
    if (this.stopped || !this.held || !client) return;
    if (this.ticking) {
      // The last tick hangs: past the cut-off the connection is given up (its leases may be others' soon).
      if (performance.now() - this.lastOk > this.cutOffMs) this.cut(client, `its heartbeat has not come back for ${formatDuration(this.cutOffMs)}`);
      else this.scheduleTick();
      return;
    }
    this.ticking = true;
    const sentAt = performance.now();
    // A tick that hangs (the backend stopped, the network silent: no error, no answer, and no next
    // tick is armed until this one ends) is cut off when the cut-off passes, not minutes later by keepalive.
    const watchdog = setTimeout(
      () => this.cut(client, `its heartbeat has not come back for ${formatDuration(this.cutOffMs)}`),
      Math.max(0, this.cutOffMs - (performance.now() - this.lastOk)),
    );
    try {
      const names = this.ticker?.renewing() ?? [];
      const { rows } = await client.query({ name: S.PRESENCE_TICK.name, text: S.PRESENCE_TICK.text, values: [this.serverId, this.leaseTtlMs, names] });
      if (this.client !== client || !this.held) return;
      this.lastOk = sentAt;
      this.ticker?.renewed(names, (rows as { name: string; epoch: string | number }[]).map((row) => ({ name: row.name, epoch: Number(row.epoch) })), sentAt);
      this.ticker?.afterTick();
    } catch (raw) {
      if (this.client !== client || this.stopped) return;
      const why = coerceError(storeError(raw, this.db.where)).message;
      if (performance.now() - this.lastOk > this.cutOffMs) return this.cut(client, `its heartbeat failed for ${formatDuration(this.cutOffMs)} (${why})`);
      this.options.log?.warn({ store: this.db.where, err: why }, "this server's heartbeat failed; trying again at the next tick");
    } finally {
      clearTimeout(watchdog);
      this.ticking = false;
      if (this.client === client) this.scheduleTick();
    }
  }

  /** Gives up a connection that still looks open (its ticks fail or hang): lost as if it had ended. */
  private cut(client: pg.Client, why: string): void {
    if (this.client !== client) return;
    this.connectionLost(why);
    void client.end().catch(() => undefined);
  }

  private connectionLost(why: string): void {
    const old = this.client;
    this.client = undefined;
    clearTimeout(this.tickTimer);
    this.ticking = false;
    // Until it is back the server acts on nothing (the store checks `held`), and holds no lease.
    const wasHeld = this.held;
    this.held = false;
    if (!wasHeld) return;
    this.ticker?.loseAll();
    this.tellHeld(false);
    this.lostAt = Date.now();
    this.attempts = 0;
    this.options.log?.warn({ store: this.db.where, err: why }, "the connection holding this server's presence on the store was lost; taking it back");
    this.oldBackend = old ? backendPid(old) : undefined;
    this.startRetake();
  }

  /** The backend of the connection last lost: seen lost here, it may live on holding the presence lock. */
  private oldBackend: number | undefined;

  /** The attempt to retake presence under way, if any (leave() waits for it), and its connection. */
  private retaking: Promise<void> | undefined;
  private retakeClient: pg.Client | undefined;

  private startRetake(): void {
    const attempt = this.retake().finally(() => {
      if (this.retaking !== attempt) return;
      this.retaking = undefined;
      this.retakeClient = undefined;
    });
    this.retaking = attempt;
  }

  /** One attempt to take presence back on a new connection; another is scheduled with the backoff if PostgreSQL cannot be reached. */
  private async retake(): Promise<void> {
    if (this.stopped) return;
    this.attempts += 1;
    const client = this.newClient();
    this.retakeClient = client;
    // Errors before it holds the locks are the attempt's; the listener only keeps them from ending the process.
    const quiet = () => undefined;
    client.on('error', quiet);
    try {
      await client.connect();
      await client.query(`SET statement_timeout = ${this.cutOffMs}`);
      const shared = await client.query('SELECT pg_try_advisory_lock_shared($1, hashtext(current_schema())) AS got', [SCHEMA_LOCK_KEY]);
      if (!(shared.rows[0] as { got: boolean }).got) {
        const by = await lockHolder(client);
        await client.end().catch(() => undefined);
        if (this.stopped) return;
        return this.lose(`${by.who} holds the store exclusively (kiln migrate-store)`);
      }
      const own = await client.query({ name: S.PRESENCE_LOCK.name, text: S.PRESENCE_LOCK.text, values: [this.serverId] });
      if (!(own.rows[0] as { got: boolean }).got) {
        // Only this server's old backend can hold its own id's lock: alive, though its connection looked lost from here. End it and try again.
        await client.query(`SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid
          AND l.objid = (hashtext($2)::bigint & 4294967295)::oid AND l.objsubid = 2`, [PRESENCE_LOCK_KEY, this.serverId]);
        throw new OwnBackendHoldsLock(this.oldBackend);
      }
      if (this.stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      await this.register(client);
      if (this.stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      client.removeListener('error', quiet);
      this.watch(client);
      this.held = true;
      this.lastOk = performance.now();
      this.options.log?.info?.({ store: this.db.where, attempts: this.attempts }, "took this server's presence on the store back");
      this.scheduleTick();
      this.tellHeld(true);
      for (const listener of [...this.resyncListeners]) listener();
      this.ticker?.afterTick();
    } catch (raw) {
      await client.end().catch(() => undefined);
      if (this.stopped) return;
      const why = raw instanceof OwnBackendHoldsLock ? raw.message : coerceError(storeError(raw, this.db.where)).message;
      const within = this.options.retakeWithinMs ?? DEFAULT_RETAKE_WITHIN_MS;
      const left = within - (Date.now() - this.lostAt);
      const wait = backoffMs(this.attempts, RETAKE_RETRY);
      if (left <= 0) return this.lose(`it could not be taken back within ${formatDuration(within)} (${why})`);
      this.options.log?.warn({ store: this.db.where, err: why, attempts: this.attempts, retryInMs: Math.min(wait, left) }, "could not take this server's presence on the store back; trying again");
      this.retryTimer = setTimeout(() => this.startRetake(), Math.min(wait, left));
    }
  }

  private lose(why: string): void {
    this.stopped = true;
    this.options.onLost?.(new StoreLockLostError(this.db.where, why));
  }
}

/** This server's old backend still held its presence lock; it was ended: retried with the backoff like an unreachable store. */
class OwnBackendHoldsLock extends Error {
  constructor(pid: number | undefined) {
    super(`this server's old connection${pid === undefined ? '' : ` (backend ${pid})`} still held its presence lock; that backend was ended`);
  }
}
