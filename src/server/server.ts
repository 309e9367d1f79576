/**
 * The Kiln server: the HTTP API for clients, the WebSocket gateway for workers, the scheduler
 * and the dispatcher, all around one store. Parts are built in dependency order and talk through
 * the event bus (events.ts): nothing is told by hand, and nothing closes over a part not built yet.
 */
import { createHash, randomBytes } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import os from 'node:os';
import type { Socket } from 'node:net';
import path from 'node:path';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { BadHttpRequestError, coerceError, InvalidRequestError, KilnError, PayloadTooLargeError, RouteNotFoundError, StoreUnavailableError } from '../errors.js';
import { hostPlatform } from '../host-info.js';
import { isPostgresUrl, openStore, sqliteStoreFile, type JobStore } from '../store/index.js';
import type { Presence } from '../store/postgres/presence.js';
import { createFarmUrls } from './cluster/farm-urls.js';
import { KILN_VERSION } from '../version.js';
import { FeedBridge } from './cluster/feed-bridge.js';
import { PgLeaseKeeper } from './cluster/lease-keeper.js';
import { LEASE, soloLeases, type LeaseKeeper } from './cluster/types.js';
import { presentServer } from './api/present.js';
import { registerArtifactRoutes } from './api/artifact-routes.js';
import { registerExportRoutes } from './api/export-routes.js';
import { registerRoutes } from './api/routes.js';
import { registerDashboardRoutes } from './api/dashboard-routes.js';
import { DEFAULT_ARTIFACT_LIMITS, openBlobStore, unsharedBlobWarning, type ArtifactLimits, type BlobStoreLocation } from './artifact-store.js';
import { ArtifactSweeper, DEFAULT_BLOB_GRACE_MS, DEFAULT_SWEEP_EVERY_MS, type RetentionSettings } from './artifact-sweeper.js';
import { openUploadTarget, type UploadSettings } from './upload/open-target.js';
import { DEFAULT_OUTBOX_TIMINGS, Outbox, type OutboxTimings } from './upload/outbox.js';
import type { UploadTarget } from './upload/target.js';
import type { PoolSettings } from './config-file.js';
import { openPools } from './latent/open-pools.js';
import { ConsoleHub } from './console-hub.js';
import { Dispatcher } from './dispatcher.js';
import { createEventBus, type EventBus } from './events.js';
import { registerWorkerGateway } from './gateway/worker-gateway.js';
import { JobService } from './job-service.js';
import { RunLifecycle } from './run-lifecycle.js';
import { Reaper } from './reaper.js';
import { Scheduler } from './scheduler.js';
import { WorkerRegistry } from './worker-registry.js';
import { Templates } from './templates.js';
import { registerRoburImportRoute } from './api/robur-import-route.js';
import { RoburStateImport } from './robur/state-import.js';
import { adoptFarmTokens, ensureTokens, hashToken, type Tokens } from './tokens.js';
import { registerWorkerTokenRoutes } from './api/worker-token-routes.js';
import { forPublic, forViewer, installAuth, type AuthOptions, type RouteEntry } from './api/auth.js';
import { registerSessionRoutes } from './api/session-routes.js';
import { registerTokenRoutes } from './api/token-routes.js';
import { holdDataDir } from './data-dir.js';
import { ListenError } from '../errors.js';
import { readTlsFiles, type TlsMaterial, type TlsSettings } from './tls-files.js';
import { installResponseHeaders } from './api/response-headers.js';
import { KilnMetrics } from './metrics/kiln-metrics.js';
import { listenForMetrics, type MetricsListener } from './metrics/metrics-listener.js';
import { serveRoburClient, type RoburClientParts } from './robur/client-commands.js';
import { listenForRobur, type RoburListener } from './robur/robur-listener.js';
import { RoburWorkerSession } from './robur/robur-worker.js';

/** Options of a server. */
export interface ServerOptions {
  /** Host to listen on. */
  host: string;
  /** The URL other servers, clients and workers reach this server at (`--advertise`); default the listen URL. */
  advertise?: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Data dir: the SQLite store, the tokens. */
  dataDir: string;
  /** Store URL; SQLite in the data dir when absent. */
  store?: string;
  /** Where artifact blobs live (`artifacts.store`, `--artifact-store`); default `<data>/artifacts`. Servers sharing a store share this. */
  artifactStore?: BlobStoreLocation;
  /** Largest artifact file, and most artifact bytes per run; default 4 GiB and 16 GiB. */
  artifactLimits?: Partial<ArtifactLimits>;
  /** Artifact retention; absent: artifacts are kept (unreferenced blobs are still swept). */
  retention?: Partial<RetentionSettings>;
  /** Forward each finished run there (`--upload`), with the outbox's backoff. */
  upload?: UploadSettings & Partial<OutboxTimings>;
  /** Latent worker pools the server starts and stops itself. */
  pools?: PoolSettings[];
  /** Config dir (templates live in its templates/); the data dir when absent. */
  configDir?: string;
  /** Worker heartbeat interval (ms); a worker silent for two of them is disconnected. */
  heartbeatMs?: number;
  /** How long a run whose worker went away waits for it to re-attach (ms). */
  reattachGraceMs?: number;
  /** How long past a run's timeout (or a cancel) the server waits for the worker's result (ms). */
  backstopMs?: number;
  /** On PostgreSQL: how long a server whose schema lock's connection dropped tries to take the lock back before it stops (ms; default 1 min). */
  lockRetakeMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  /** On PostgreSQL: the presence tick and the leases' TTL (ms; default 2 s and 8 s). @internal For tests. */
  cluster?: { heartbeatMs?: number; leaseTtlMs?: number };
  /** Serve HTTPS and WSS with this certificate and key (`--tls-cert`, `--tls-key`). */
  tls?: TlsSettings;
  /**
   * Prometheus metrics (off when absent): on a listener of their own, open (`listen`), or at
   * /metrics on the main listener for a token of any role (`{}`).
   */
  metrics?: { listen?: { host: string; port: number } };
  /** robur builder's protocol on its own port (`--robur-listen`), for builder-worker and builder-client; off when absent. */
  robur?: { host: string; port: number };
  /** Wraps the opened store. @internal For tests that make the store fail. */
  wrapStore?: (store: JobStore) => JobStore;
}

/** A running server. */
export interface KilnServer {
  /** Base URL clients and workers use. */
  url: string;
  /** This server's id in the farm (fresh at each start; `kiln info` lists it). */
  serverId: string;
  tokens: Tokens;
  /** Every route with its audience. @internal For tests that walk every route. */
  routes: readonly RouteEntry[];
  /** The server's event bus. @internal For tests that play the feed between servers. */
  events: EventBus;
  /** Where runs are uploaded, without secrets, if anywhere. */
  uploadTarget: string | undefined;
  /** Where Prometheus scrapes this server, when metrics are on. */
  metricsUrl: string | undefined;
  /** What a robur client session needs (robur/client-commands.ts). @internal For the robur listener and its tests. */
  roburClient: RoburClientParts;
  /** `HOST:PORT` of the robur port, when `--robur-listen` is on. */
  roburAddress: string | undefined;
  /** Fires what is due now. @internal For tests that drive the clock (`now`) themselves. */
  wakeScheduler(): Promise<void>;
  /**
   * Resolves (never rejects) once the server cannot go on safely: on PostgreSQL, its lock on the
   * schema was lost for good (store/postgres/server-lock.ts). Whoever runs the server then closes
   * it and exits with the error; until then the store refuses every statement.
   */
  failed: Promise<KilnError>;
  /** Stops accepting, flushes consoles and closes the store. */
  close(): Promise<void>;
}

/** Largest JSON body the API accepts. */
const BODY_LIMIT = 1024 * 1024;

/**
 * Routes validate with zod (api/schemas.ts) and declare no fastify schemas. Given compilers of its
 * own, fastify does not load ajv and fast-json-stringify at start (~0.2 s, BENCHMARKS.md); a route
 * that declared a schema would fail at start, loudly.
 */
const NO_ROUTE_SCHEMAS = {
  compilersFactory: {
    buildValidator: () => () => {
      throw new Error('Kiln routes validate with zod (api/schemas.ts), not fastify schemas');
    },
    buildSerializer: () => () => {
      throw new Error('Kiln routes serialize with JSON.stringify, not fastify response schemas');
    },
  },
};

/** Starts a server and resolves once it listens. */
export async function startServer(log: Logger, options: ServerOptions): Promise<KilnServer> {
  const now = options.now ?? Date.now;
  // Checked before anything is created: a bad upload URL stops the server with nothing written.
  const target = options.upload ? await openUploadTarget(options.upload) : undefined;
  const tls = options.tls ? readTlsFiles(options.tls) : undefined;
  // Made before the store opens: every store operation is timed through it.
  const metrics = options.metrics ? new KilnMetrics() : undefined;
  // Before the store opens: a second server on this data dir must not touch the first one's runs.
  const hold = holdDataDir(options.dataDir, log, sqliteStoreFile(options.store));
  let store: JobStore | undefined;
  let fail!: (err: KilnError) => void;
  const failed = new Promise<KilnError>((resolve) => (fail = resolve));
  const serverId = randomBytes(8).toString('hex');
  let presence: Presence | undefined;
  try {
    const opened = await openStore(options.dataDir, options.store, log.child({ part: 'store' }), {
      server: {
        id: serverId,
        // The listen URL is known once it listens (port 0): recorded again then.
        info: { url: options.advertise ?? listenUrl(options.host, options.port, tls !== undefined), hostname: os.hostname(), pid: process.pid, version: KILN_VERSION, configDigest: configDigest(options) },
      },
      retakeWithinMs: options.lockRetakeMs,
      onLost: (err) => {
        log.error({ code: err.code }, err.message);
        fail(err);
      },
      joined: (joined) => (presence = joined),
      ...options.cluster,
    });
    store = options.wrapStore ? options.wrapStore(opened) : opened;
    if (metrics) store = metrics.timedStore(store);
    // Farm-wide on a shared store (several servers on one database): the first server's tokens win,
    // this one's files follow. Alone on SQLite the files stay the truth (replacing one rotates it).
    const local = ensureTokens(options.dataDir);
    const tokens = !isPostgresUrl(options.store) ? local : await adoptFarmTokens(store, local, { dataDir: options.dataDir, log, now });
    const server = await startOnStore(log, options, store, tokens, now, target, tls, metrics, { id: serverId, presence });
    return { ...server, failed, close: () => server.close().finally(() => hold.release()) };
  } catch (raw) {
    await store?.close();
    hold.release();
    throw raw;
  }
}

/** The URL of a listener, as clients write it. */
function listenUrl(host: string, port: number, tls: boolean): string {
  return `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * A digest of the configuration every server of a farm should share (templates dir, pools, upload,
 * artifacts), recorded in `servers` so that differing servers can be told apart. Secrets enter
 * only hashed.
 */
function configDigest(options: ServerOptions): string {
  // The artifact store by where it is, without its credentials.
  const store = options.artifactStore?.kind === 's3'
    ? { bucket: options.artifactStore.bucket, prefix: options.artifactStore.prefix, endpoint: options.artifactStore.settings.endpoint ?? null }
    : options.artifactStore ?? null;
  const shared = {
    configDir: options.configDir ?? null, pools: options.pools ?? [], upload: options.upload ?? null, artifacts: options.artifactLimits ?? null, retention: options.retention ?? null,
    artifactStore: store,
  };
  return createHash('sha256').update(JSON.stringify(shared)).digest('hex');
}

/** This server in its farm: its id, and its presence when on PostgreSQL (absent on SQLite: alone). */
interface Membership {
  id: string;
  presence: Presence | undefined;
}

async function startOnStore(
  log: Logger, options: ServerOptions, store: JobStore, tokens: Tokens, now: () => number, target: UploadTarget | undefined, tls: TlsMaterial | undefined,
  metrics: KilnMetrics | undefined, member: Membership,
): Promise<Omit<KilnServer, 'failed'>> {
  const events = createEventBus(log.child({ part: 'events' }));
  const { presence } = member;
  // Several servers on one PostgreSQL: the bus's events go to the other servers and theirs come here (cluster/feed-bridge.ts);
  // each singleton runs on the server holding its lease. On SQLite the server is alone: the bus is the feed, every lease is held.
  const bridge = presence && new FeedBridge(presence, events, log.child({ part: 'feed' }));
  const leases: LeaseKeeper = presence
    ? new PgLeaseKeeper({ presence, log: log.child({ part: 'leases' }), events })
    : soloLeases();
  const singletonLeases = {
    scheduler: leases.want(LEASE.scheduler), reaper: leases.want(LEASE.reaper), outbox: leases.want(LEASE.outbox), retention: leases.want(LEASE.retention),
  };
  const registry = new WorkerRegistry(events, {
    droppedPlatforms: async () => (await store.listDroppedPlatforms()).map((d) => d.platform), log: log.child({ part: 'registry' }),
  });
  const hub = new ConsoleHub(store, log.child({ part: 'console' }), events);
  const blobs = await openBlobStore(options.artifactStore, { dataDir: options.dataDir, limits: { ...DEFAULT_ARTIFACT_LIMITS, ...options.artifactLimits }, store, now });
  const unshared = unsharedBlobWarning(isPostgresUrl(options.store), options.artifactStore, options.dataDir);
  if (unshared) log.warn(unshared);
  const sweeper = new ArtifactSweeper(store, blobs, log.child({ part: 'retention' }), {
    now, settings: { sweepEveryMs: DEFAULT_SWEEP_EVERY_MS, graceMs: DEFAULT_BLOB_GRACE_MS, ...options.retention }, lease: singletonLeases.retention,
  });
  store.setUploadTarget(target?.description ?? null);
  const outbox = target && new Outbox(log.child({ part: 'outbox' }), {
    store, target, blobs, events, now, timings: { ...DEFAULT_OUTBOX_TIMINGS, ...options.upload }, lease: singletonLeases.outbox,
  });
  const backstopMs = options.backstopMs ?? 60_000;
  const reattachGraceMs = options.reattachGraceMs ?? 30_000;
  // builder's orb-build.template.PLATFORM files are read from the config dir itself, as builder reads them.
  const templates = new Templates(path.join(options.configDir ?? options.dataDir, 'templates'), options.configDir ?? options.dataDir);
  const lifecycle = new RunLifecycle(log, { store, events, workers: registry, console: hub, templates, now, backstopMs });
  // SQLite: the store is this server's alone (one server per data dir).
  const reaper = new Reaper(log.child({ part: 'reaper' }), {
    store, events, lifecycle, now, reattachGraceMs, alone: !isPostgresUrl(options.store), lease: singletonLeases.reaper,
  });
  const dispatcher = new Dispatcher(log.child({ part: 'dispatcher' }), { lifecycle, workers: registry, events, now });
  const jobService = new JobService(log, { store, events, lifecycle, dispatcher, templates, now, defaultPlatform: hostPlatform() });
  const scheduler = new Scheduler(log.child({ part: 'scheduler' }), { store, events, jobs: jobService, now, lease: singletonLeases.scheduler });
  registry.restoreDropped((await store.listDroppedPlatforms()).map((d) => d.platform));

  let url = '';
  /** The URL the farm lists this server at (`--advertise`, default the listen URL). */
  let advertised = '';
  const startedAt = now();
  // An instance's worker is given every live server, this one first, so it fails over as any worker does.
  const farmUrls = presence ? createFarmUrls(log, { store, events, self: () => url, selfId: member.id }) : undefined;
  const pools = options.pools?.length
    ? await openPools(options.pools, {
      store, dispatcher, workers: registry, events, log, now, server: () => farmUrls?.current() ?? url, ca: options.tls?.ca, dataDir: options.dataDir,
      note: (runId, text) => lifecycle.noteWaiting(runId, text), reattachGraceMs, leases: (pool) => leases.want(LEASE.pool(pool)),
    })
    : undefined;

  metrics?.watch({ events, store, workers: registry, pools: () => pools?.view() ?? [], now });
  const waiting = await reaper.recover();
  if (waiting > 0) log.info({ runs: waiting, graceMs: reattachGraceMs }, 'runs left running: waiting for their workers to re-attach');

  const app = Fastify({
    loggerInstance: log.child({ part: 'http' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: BODY_LIMIT,
    forceCloseConnections: true, frameworkErrors: answerFrameworkError, clientErrorHandler: answerClientError, schemaController: NO_ROUTE_SCHEMAS,
    // fastify's https option: node:https and tls are loaded only then (scripts/build.mjs, LAZY_BUILTINS).
    ...(tls ? { https: tls } : {}),
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: 8 * 1024 * 1024 } });
  installErrorHandling(app);
  const auth: AuthOptions = {
    tokens, store, now,
    workerIdentity: async (token) => {
      const instance = await pools?.nameForToken(token);
      if (instance !== undefined) return { kind: 'instance', name: instance };
      // Per-worker tokens are stored as their hash; the lookup by hash leaks nothing about the token.
      const name = await store.findWorkerToken(hashToken(token));
      return name === undefined ? undefined : { kind: 'token', name };
    },
  };
  installResponseHeaders(app, { tls: tls !== undefined });
  const routes = installAuth(app, auth);
  app.get('/healthz', forPublic, async () => {
    // Presence lost (its connection dropped): this server acts on nothing until it is back, and says so.
    if (presence && !presence.held) throw new StoreUnavailableError('(PostgreSQL)', "this server's presence on it was lost and is being taken back");
    return { ok: true };
  });
  // On the main listener, metrics need a token (any role may read them: they hold no secret); on their own listener they are open.
  if (metrics && !options.metrics?.listen) {
    app.get('/metrics', forViewer, async (_request, reply) => {
      const { contentType, body } = await metrics.render();
      return reply.type(contentType).send(body);
    });
  }
  const redeliver = async (runId: string) => {
    const delivery = await store.requeueFailedDelivery(runId, now());
    // The outbox may be another server's (its lease): the bus, and the feed beyond it, tell whichever holds it.
    if (delivery) events.publish('delivery.queued', { runId });
    return delivery;
  };
  let roburListener: RoburListener | undefined;
  registerRoutes(app, {
    store, hub, registry, jobService, lifecycle, templates, sweeper, uploadTarget: target?.description, pools: async () => (await pools?.farmView()) ?? [], redeliver,
    events, reservedFor: (worker) => dispatcher.reservedFor(worker), now, serverId: member.id, roburAddress: () => roburListener?.address,
    servers: async () => presence
      ? (await store.listServers()).map((server) => presentServer(server, member.id))
      // Alone on SQLite: this server, holding every lease.
      : [presentServer({ id: member.id, url: advertised, startedAt, heartbeatAt: now(), alive: true, leases: leases.held().sort(), configDigest: configDigest(options) }, member.id)],
  });
  registerRoburImportRoute(app, new RoburStateImport(log.child({ part: 'import' }), { store, jobService, now }));
  registerDashboardRoutes(app);
  registerArtifactRoutes(app, store, blobs, events);
  registerExportRoutes(app, store, blobs);
  const gateway = registerWorkerGateway(app, { store, workers: registry, lifecycle, events, log: log.child({ part: 'gateway' }), now }, {
    heartbeatMs: options.heartbeatMs ?? 10_000,
    helloTimeoutMs: 10_000,
    artifactLimits: blobs.limits,
    // Several servers (PostgreSQL): names are claimed per connection. Alone (SQLite, no servers row):
    // none, or the reaper would count this server's own workers as a dead server's.
    serverId: presence ? member.id : undefined,
    nameOwner: async (name) => ((await pools?.isInstanceName(name)) ? 'instance' : (await store.getWorkerToken(name)) ? 'token' : undefined),
    tokenUsed: (name) => store.touchWorkerToken(name, now()),
  });
  // Cut off from the shared store, this server can serve no worker: they move to the next server in their list.
  const stopHandOff = presence?.onHeld((held) => {
    if (!held) gateway.handOff('this server lost its presence on the store');
  });

  registerTokenRoutes(app, { store, now });
  registerSessionRoutes(app, { store, now, auth });
  registerWorkerTokenRoutes(app, {
    store, now,
    disconnect: (identity, reason) => gateway.disconnect(identity, reason),
    disconnectOthers: (name, identity, reason) => gateway.disconnectOthers(name, identity, reason),
  });

  let metricsListener: MetricsListener | undefined;
  const stopping = new AbortController();
  const stopAll = async () => {
    stopping.abort();
    await metricsListener?.close();
    // Its workers' runs are lost here (they cannot re-attach), while the store is open.
    await roburListener?.close();
    await scheduler.stop();
    await reaper.stop();
    await lifecycle.stop();
    farmUrls?.stop();
    stopHandOff?.();
    dispatcher.stop();
    await outbox?.stop();
    await sweeper.stop();
    await pools?.stop();
    await gateway.shutdown();
    await app.close();
    // After the last request: an S3 download streams through the store's client.
    blobs.close();
    await dispatcher.settled();
    await hub.close();
    // Let the leases go and tell the farm (another server takes them at once), then leave: the store's close marks this server stopped.
    await leases.stop();
    await bridge?.stop(advertised);
    await store.close();
  };

  // Instances an earlier life left are adopted before workers can come back to claim them.
  await pools?.recover();
  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (raw) {
    // EADDRINUSE and the like: stop what is already going (re-attach timers, pools, the gateway's
    // heartbeat), or they would keep the process alive after it has said it failed.
    await stopAll().catch((err) => log.error({ err }, 'stopping after a failed listen'));
    throw new ListenError(options.host.includes(':') ? `[${options.host}]:${options.port}` : `${options.host}:${options.port}`, listenCause(raw));
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  url = `${tls ? 'https' : 'http'}://${host}:${port}`;
  advertised = options.advertise ?? url;
  if (presence) {
    await presence.setUrl(advertised);
    bridge!.start(advertised);
    await farmUrls?.refresh();
  }
  const metricsAt = options.metrics?.listen;
  if (metrics && metricsAt) {
    try {
      metricsListener = await listenForMetrics(log.child({ part: 'metrics' }), metrics, metricsAt.host, metricsAt.port);
    } catch (raw) {
      await stopAll().catch((err) => log.error({ err }, 'stopping after a failed listen'));
      const where = metricsAt.host.includes(':') ? `[${metricsAt.host}]:${metricsAt.port}` : `${metricsAt.host}:${metricsAt.port}`;
      throw new ListenError(`${where} (--metrics-listen)`, listenCause(raw, '--metrics-listen'));
    }
  }
  const roburLog = log.child({ part: 'robur' });
  const roburClient: RoburClientParts = {
    store, jobService, hub, events, pools: async () => (await pools?.farmView()) ?? [], log: roburLog,
    // Like builder's queues, a platform is known once a robur worker asked for it.
    roburWorkerPlatforms: () => registry.list().filter((session) => session.identity.startsWith('robur:')).map((session) => session.platform),
  };
  if (options.robur) {
    try {
      roburListener = await listenForRobur({
        log: roburLog,
        worker: (conn) => new RoburWorkerSession(conn, {
          store, workers: registry, lifecycle, blobs, events, log: roburLog, now, serverId: presence ? member.id : undefined, stopping: stopping.signal,
        }),
        serveClient: (conn, command) => serveRoburClient(conn, command, roburClient),
      }, options.robur);
    } catch (raw) {
      await stopAll().catch((err) => log.error({ err }, 'stopping after a failed listen'));
      const { host: roburHost, port: roburPort } = options.robur;
      throw new ListenError(`${roburHost.includes(':') ? `[${roburHost}]` : roburHost}:${roburPort} (--robur-listen)`, listenCause(raw, '--robur-listen'));
    }
  }
  const metricsUrl = metricsListener?.url ?? (metrics ? `${url}/metrics` : undefined);
  await scheduler.wake();
  pools?.start();
  sweeper.start();
  outbox?.wake();
  log.info({ url, dataDir: options.dataDir, artifacts: blobs.description, upload: target?.description, metrics: metricsUrl, robur: roburListener?.address }, 'kiln server listening');

  return {
    url,
    serverId: member.id,
    tokens,
    routes,
    events,
    uploadTarget: target?.description,
    metricsUrl,
    roburClient,
    roburAddress: roburListener?.address,
    wakeScheduler: () => scheduler.wake(),
    close: stopAll,
  };
}

/** Why listen failed, in words, for the one line the server exits with. */
function listenCause(raw: unknown, flag = '--listen'): string {
  const code = (raw as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return `the address is already in use (EADDRINUSE): stop what listens there or give ${flag} another port`;
  if (code === 'EADDRNOTAVAIL') return 'the address is not one of this host\'s (EADDRNOTAVAIL)';
  if (code === 'EACCES') return 'permission denied (EACCES): ports below 1024 need privileges';
  return coerceError(raw).message;
}

/**
 * Errors fastify meets before any route runs (a path that is not valid percent-encoding, `/api/runs/%`)
 * skip the error handler: without this they answer fastify's own shape, not a catalogued error.
 */
function answerFrameworkError(raw: Error, request: FastifyRequest, reply: FastifyReply): void {
  const err = new InvalidRequestError(raw.message);
  request.log.info({ code: err.code, url: request.url }, err.message);
  void reply.code(err.status).send({ error: { code: err.code, message: err.message } });
}

/**
 * A request Node's HTTP parser cannot read (headers and path over 16 KiB, bytes that are not HTTP)
 * never reaches fastify's routing: answered here in the catalogue's shape, then the connection closed.
 */
function answerClientError(this: FastifyInstance, raw: Error & { code?: string }, socket: Socket): void {
  // A reset connection has no one to answer.
  if (raw.code === 'ECONNRESET' || socket.destroyed) return;
  const err = raw.code === 'HPE_HEADER_OVERFLOW'
    ? new BadHttpRequestError(431, 'the request\'s headers (with its path) are larger than the server reads')
    : raw.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new BadHttpRequestError(408, 'the request\'s headers did not arrive in time')
      : new BadHttpRequestError(400, `the request is not valid HTTP (${raw.code ?? raw.message})`);
  this.log.debug({ code: err.code, err: raw.message }, err.message);
  const body = JSON.stringify({ error: { code: err.code, message: err.message } });
  // An answer to HEAD has no body (a client would read one as the next response's bytes).
  const head = (raw as { rawPacket?: Buffer }).rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${head ? '' : body}`);
  }
  socket.destroy();
}

/** Errors answer `{error: {code, message}}` with the error's status. */
function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((raw, request, reply) => {
    let err: KilnError;
    const fastifyError = raw as { code?: string; statusCode?: number; message: string };
    if (raw instanceof KilnError) err = raw;
    else if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE') err = new PayloadTooLargeError(BODY_LIMIT);
    else if (fastifyError.statusCode !== undefined && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
      err = new InvalidRequestError(fastifyError.message);
    } else err = coerceError(raw);
    if (err.status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ code: err.code, url: request.url }, err.message);
    return reply.code(err.status).send({ error: { code: err.code, message: err.message } });
  });
  app.setNotFoundHandler((request, reply) => {
    const err = new RouteNotFoundError(request.method, request.url.split('?')[0]!);
    return reply.code(err.status).send({ error: { code: err.code, message: err.message } });
  });
}
