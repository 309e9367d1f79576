/**
 * The Kiln server: the HTTP API for clients, the WebSocket gateway for workers, the scheduler
 * and the dispatcher, all around one store.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import path from 'node:path';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { BadHttpRequestError, coerceError, InvalidRequestError, KilnError, PayloadTooLargeError, RouteNotFoundError, UnauthorizedError } from '../errors.js';
import { hostPlatform } from '../host-info.js';
import { openStore, type JobStore } from '../store/index.js';
import { registerArtifactRoutes } from './api/artifact-routes.js';
import { registerRoutes } from './api/routes.js';
import { ArtifactStore, DEFAULT_ARTIFACT_LIMITS, type ArtifactLimits } from './artifact-store.js';
import { ArtifactSweeper, DEFAULT_BLOB_GRACE_MS, DEFAULT_SWEEP_EVERY_MS, type RetentionSettings } from './artifact-sweeper.js';
import { openUploadTarget, type UploadSettings } from './upload/open-target.js';
import { DEFAULT_OUTBOX_TIMINGS, Outbox, type OutboxTimings } from './upload/outbox.js';
import type { UploadTarget } from './upload/target.js';
import type { PoolSettings } from './config-file.js';
import { openPools } from './latent/open-pools.js';
import { ConsoleHub } from './console-hub.js';
import { Dispatcher } from './dispatcher.js';
import { registerWorkerGateway } from './gateway/worker-gateway.js';
import { KilnService } from './kiln-service.js';
import { Scheduler } from './scheduler.js';
import { Templates } from './templates.js';
import { bearerToken, ensureTokens, tokenMatches, type Tokens } from './tokens.js';

/** Options of a server. */
export interface ServerOptions {
  /** Host to listen on. */
  host: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Data dir: the SQLite store, the tokens. */
  dataDir: string;
  /** Store URL; SQLite in the data dir when absent. */
  store?: string;
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
  /** Clock, for tests. */
  now?: () => number;
}

/** A running server. */
export interface KilnServer {
  /** Base URL clients and workers use. */
  url: string;
  tokens: Tokens;
  /** Where runs are uploaded, without secrets, if anywhere. */
  uploadTarget: string | undefined;
  /** Every route the server answers, as registered (`url` with its `:params` and `*`). @internal For the fuzz suite. */
  routes: readonly { method: string; url: string }[];
  /** Fires what is due now. @internal For tests that drive the clock (`now`) themselves. */
  wakeScheduler(): Promise<void>;
  /** Stops accepting, flushes consoles and closes the store. */
  close(): Promise<void>;
}

/** Largest JSON body the API accepts. */
const BODY_LIMIT = 1024 * 1024;

/** Starts a server and resolves once it listens. */
export async function startServer(log: Logger, options: ServerOptions): Promise<KilnServer> {
  const now = options.now ?? Date.now;
  // Checked before anything is created: a bad upload URL stops the server with nothing written.
  const target = options.upload ? await openUploadTarget(options.upload) : undefined;
  const store = await openStore(options.dataDir, options.store);
  try {
    return await startOnStore(log, options, store, ensureTokens(options.dataDir), now, target);
  } catch (raw) {
    await store.close();
    throw raw;
  }
}

async function startOnStore(
  log: Logger, options: ServerOptions, store: JobStore, tokens: Tokens, now: () => number, target: UploadTarget | undefined,
): Promise<KilnServer> {
  const hub = new ConsoleHub(store, log.child({ part: 'console' }));
  const blobs = new ArtifactStore(path.join(options.dataDir, 'artifacts'), { ...DEFAULT_ARTIFACT_LIMITS, ...options.artifactLimits });
  const sweeper = new ArtifactSweeper(store, blobs, log.child({ part: 'retention' }), now, {
    sweepEveryMs: DEFAULT_SWEEP_EVERY_MS, graceMs: DEFAULT_BLOB_GRACE_MS, ...options.retention,
  });
  store.setUploadTarget(target?.description ?? null);
  const outbox = target && new Outbox(store, target, blobs, log.child({ part: 'outbox' }), now, { ...DEFAULT_OUTBOX_TIMINGS, ...options.upload });
  let service: KilnService | undefined;
  const backstopMs = options.backstopMs ?? 60_000;
  const dispatcher = new Dispatcher(
    store, log.child({ part: 'dispatcher' }), now, backstopMs,
    (run) => service!.prepare(run), (run) => service!.dispatched(run), (run) => service!.orphaned(run),
  );
  const scheduler = new Scheduler(store, log.child({ part: 'scheduler' }), now, (at) => service!.fireDue(at));
  const reattachGraceMs = options.reattachGraceMs ?? 30_000;
  const templates = new Templates(path.join(options.configDir ?? options.dataDir, 'templates'));
  service = new KilnService({
    store, hub, dispatcher, scheduler, templates, log, now, defaultPlatform: hostPlatform(), reattachGraceMs, backstopMs,
    onRunEnded: () => outbox?.wake(),
  });
  for (const { platform } of await store.listDroppedPlatforms()) dispatcher.setDropped(platform, true);

  let url = '';
  const pools = options.pools?.length
    ? openPools(options.pools, { store, dispatcher, log, now, server: () => url, dataDir: options.dataDir, note: (runId, text) => service!.noteWaiting(runId, text), reattachGraceMs })
    : undefined;
  if (pools) dispatcher.onChange = () => pools.evaluate();

  const waiting = await service.recover();
  if (waiting > 0) log.info({ runs: waiting, graceMs: reattachGraceMs }, 'runs left running: waiting for their workers to re-attach');

  const app = Fastify({ loggerInstance: log.child({ part: 'http' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: BODY_LIMIT, forceCloseConnections: true, frameworkErrors: answerFrameworkError, clientErrorHandler: answerClientError });
  await app.register(fastifyWebsocket, { options: { maxPayload: 8 * 1024 * 1024 } });
  // Recorded as registered, so that tests cover each route, including routes added later.
  const routes: { method: string; url: string }[] = [];
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, url: route.url });
  });
  installErrorHandling(app);
  installAuth(app, tokens, (token) => pools?.nameForToken(token), (name) => pools?.isInstanceName(name) ?? false);
  app.get('/healthz', async () => ({ ok: true }));
  const redeliver = async (runId: string) => {
    const delivery = await store.requeueFailedDelivery(runId, now());
    if (delivery) outbox?.wake();
    return delivery;
  };
  registerRoutes(app, { store, hub, dispatcher, service, templates, sweeper, uploadTarget: target?.description, pools: () => pools?.view() ?? [], redeliver });
  registerArtifactRoutes(app, store, blobs);
  const gateway = registerWorkerGateway(app, { store, hub, dispatcher, service, log: log.child({ part: 'gateway' }), now }, {
    heartbeatMs: options.heartbeatMs ?? 10_000,
    helloTimeoutMs: 10_000,
    artifactLimits: blobs.limits,
    refuseName: (token, name) => {
      const owner = token === undefined ? undefined : pools?.nameForToken(token);
      if (owner !== undefined && owner !== name) return `this token belongs to the pool instance '${owner}', not to '${name}'`;
      if (owner === undefined && pools?.isInstanceName(name)) return `'${name}' is a pool instance's name: only its own token may use it`;
      return undefined;
    },
  });

  // Instances an earlier life left are adopted before workers can come back to claim them.
  await pools?.recover();
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  url = `http://${host}:${port}`;
  await scheduler.wake();
  pools?.start();
  sweeper.start();
  outbox?.wake();
  log.info({ url, dataDir: options.dataDir, upload: target?.description }, 'kiln server listening');

  return {
    url,
    tokens,
    uploadTarget: target?.description,
    routes,
    wakeScheduler: () => scheduler.wake(),
    async close() {
      scheduler.stop();
      service!.stop();
      await outbox?.stop();
      await sweeper.stop();
      await pools?.stop();
      await gateway.shutdown();
      await app.close();
      await dispatcher.settled();
      await hub.close();
      await store.close();
    },
  };
}

/**
 * Every `/api` route needs a token: the worker token (or a pool instance's own token) for the worker
 * socket and artifact uploads, the admin token elsewhere.
 */
function installAuth(app: FastifyInstance, tokens: Tokens, instanceName: (token: string) => string | undefined, isInstance: (name: string) => boolean): void {
  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/api/')) return;
    // Workers hold the worker token: their socket, and the artifacts they upload (PUT).
    const fromWorker = request.url === '/api/worker' || request.url.startsWith('/api/worker?') || (request.method === 'PUT' && /^\/api\/runs\/[^/]+\/artifacts\//.test(request.url));
    const expected = fromWorker ? tokens.worker : tokens.admin;
    const presented = bearerToken(request.headers.authorization);
    const instance = fromWorker && presented !== undefined ? instanceName(presented) : undefined;
    if (instance !== undefined) {
      // An instance's token is good for that instance only.
      if (request.method === 'PUT' && request.headers['x-kiln-worker'] !== instance) throw new UnauthorizedError(`this token belongs to the pool instance '${instance}'`);
      return;
    }
    if (fromWorker && request.method === 'PUT' && isInstance(String(request.headers['x-kiln-worker'] ?? ''))) {
      throw new UnauthorizedError('uploads in the name of a pool instance need that instance\'s own token');
    }
    if (!tokenMatches(presented, expected)) {
      throw new UnauthorizedError(request.headers.authorization ? 'invalid token' : 'missing token: pass --token or set KILN_TOKEN');
    }
  });
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
