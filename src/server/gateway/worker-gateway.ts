/**
 * The worker endpoint: one WebSocket per worker. The first frame is the hello; after it the
 * worker streams console lines and results, and the server pushes runs. Every frame is
 * validated; a bad one is answered with an error frame, never a crash.
 *
 * With several servers on one database, a worker name is claimed in the store for this
 * connection (a name connected on another live server is taken), and a cut decided on any server
 * (a token revoked, a name given its own token) goes out as `worker.cut`: the server holding the
 * connection cuts it.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { describeIdentity, identityKey, nameRefusal, type NameOwner, type WorkerIdentity } from '../../core/index.js';
import { coerceError, InvalidRequestError, ProtocolError, ProtocolVersionError, UnauthorizedError, WorkerIdentityError, WorkerNameTakenError, type KilnError } from '../../errors.js';
import { forWorker } from '../api/auth.js';
import {
  CloseCode, describeIssues, helloMessage, PROTOCOL_VERSION, SUPPORTED_PROTOCOLS, versionProbe, workerMessage,
  type Hello, type ServerMessage, type WorkerMessage,
} from '../../protocol/index.js';
import type { Run } from '../../store/index.js';
import type { ArtifactLimits } from '../artifact-store.js';
import type { EventBus, KilnEvents } from '../events.js';
import { DEFAULT_TIMEOUT_MS, type RunLifecycle } from '../run-lifecycle.js';
import { HeartbeatSweep, type Beat } from './heartbeat.js';
import type { WorkerLink, WorkerRegistry, WorkerSession } from '../worker-registry.js';
import type { JobStore } from '../../store/index.js';

/** Options of the worker gateway. */
export interface WorkerGatewayOptions {
  /** How often the server pings each worker; a worker that misses a whole interval is dropped (ms). */
  heartbeatMs: number;
  /** How long a new connection may take to say hello (ms). */
  helloTimeoutMs: number;
  /** Artifact limits told to workers with each run. */
  artifactLimits: ArtifactLimits;
  /** Who else has a claim on a worker name (a per-worker token, a live pool instance), if anyone. */
  nameOwner?: (name: string) => Promise<NameOwner>;
  /** Told when a worker with a per-worker token connects (to note the token's last use). */
  tokenUsed?: (name: string) => Promise<void>;
  /**
   * This server's id among the servers sharing the store: each worker is recorded with it and a
   * connection id, and a name connected on another live server is refused. Absent (one server
   * alone, tests): workers are recorded without them.
   */
  serverId?: string;
}

/** The parts a gateway talks to. */
export interface WorkerGatewayParts {
  store: JobStore;
  /** Sessions are made, listed and let go there. */
  workers: WorkerRegistry;
  /** What workers report moves runs through it. */
  lifecycle: RunLifecycle;
  /** `worker.cut` goes out there, and comes in from other servers. */
  events: EventBus;
  log: Logger;
  now: () => number;
}

/** Parses a frame's JSON, or says why it is not JSON. */
function parseFrame(data: Buffer | ArrayBuffer | Buffer[]): unknown {
  const text = Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new ProtocolError('frame is not JSON');
  }
}

/** Validates a hello frame, refusing unknown protocol versions first. */
export function readHello(frame: unknown): Hello {
  const probe = versionProbe.safeParse(frame);
  if (!probe.success || probe.data.type !== 'hello') throw new ProtocolError('the first frame must be a hello');
  if (typeof probe.data.v !== 'number') throw new ProtocolError('bad hello: v must be the protocol version number');
  if (!SUPPORTED_PROTOCOLS.includes(probe.data.v)) throw new ProtocolVersionError(probe.data.v, SUPPORTED_PROTOCOLS);
  const hello = helloMessage.safeParse(frame);
  if (!hello.success) throw new ProtocolError(`bad hello: ${describeIssues(hello.error)}`);
  return hello.data;
}

/** Validates a frame that follows the hello. */
function readMessage(frame: unknown): WorkerMessage {
  const message = workerMessage.safeParse(frame);
  if (!message.success) throw new ProtocolError(`bad message: ${describeIssues(message.error)}`);
  return message.data;
}

/** A worker's connection: who it said it is, and how to send to it (its state is the registry's). */
class Link implements WorkerLink {
  readonly identity: string;
  /** False once the connection is gone: nothing more is sent. */
  open = true;

  constructor(
    private readonly socket: WebSocket,
    private readonly hello: Hello,
    private readonly artifactLimits: ArtifactLimits,
    identity: WorkerIdentity,
    readonly connId: string | undefined,
  ) {
    this.identity = identityKey(identity);
  }

  get name() { return this.hello.name; }
  get platform() { return this.hello.platform; }
  get labels() { return this.hello.labels; }
  get capacity() { return this.hello.capacity; }
  get once() { return this.hello.once; }
  get session() { return this.hello.session; }

  send(message: ServerMessage): void {
    // A connection cut off (refused, closing) gets nothing more.
    if (this.open && this.socket.readyState === this.socket.OPEN) this.socket.send(JSON.stringify(message));
  }

  assign(run: Run): void {
    this.send({
      v: PROTOCOL_VERSION,
      type: 'run.assign',
      run: {
        id: run.id, job: run.job, platform: run.platform, attempt: run.attempt,
        script: run.script ?? '', env: run.env, timeoutMs: run.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        ...(run.idleTimeoutMs ? { idleTimeoutMs: run.idleTimeoutMs } : {}), firstSeq: run.firstSeq,
        artifacts: run.artifacts, artifactsOnFailure: run.artifactsOnFailure, sandbox: run.sandbox, artifactLimits: this.artifactLimits,
      },
    });
  }

  cancel(runId: string, reason: string): void {
    this.send({ v: PROTOCOL_VERSION, type: 'run.cancel', runId, reason });
  }

  release(runId: string, reason: string): void {
    this.send({ v: PROTOCOL_VERSION, type: 'run.release', runId, reason });
  }

  done(runId: string, applied: boolean): void {
    this.send({ v: PROTOCOL_VERSION, type: 'run.done', runId, applied });
  }

  notice(message: string): void {
    this.send({ v: PROTOCOL_VERSION, type: 'notice', message });
  }
}

/**
 * How long a refused peer has to answer the close before its connection is cut (ms). The close
 * handshake is a courtesy: ws alone would wait 30 s, and a peer that never answers must not keep
 * its socket (and what the server holds for it) that long.
 */
export const REFUSED_CLOSE_WAIT_MS = 1000;

/** Refuses a connection with a reason the worker prints, then closes it (cut if the peer does not answer). */
function refuse(socket: WebSocket, err: KilnError, closeCode: number): void {
  if (socket.readyState !== socket.OPEN) return;
  socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'refused', code: err.code, message: err.message } satisfies ServerMessage));
  socket.close(closeCode, err.code);
  const cut = setTimeout(() => socket.terminate(), REFUSED_CLOSE_WAIT_MS);
  socket.once('close', () => clearTimeout(cut));
}

/** The gateway's handle for the server's shutdown. */
export interface WorkerGateway {
  /** Closes every worker connection with "server shutting down" and waits until each is recorded. */
  shutdown(): Promise<void>;
  /**
   * Closes every worker connection as a shutdown does, without waiting: this server lost its hold on
   * a shared store and can serve no worker, so they move to the next server in their list.
   */
  handOff(reason: string): void;
  /** Refuses and closes the connections of this identity (its token was revoked); returns how many. */
  disconnect(identity: WorkerIdentity, reason: string): number;
  /**
   * Closes the connection of a worker named `name` unless it has `identity` (a name just given its
   * own token: a shared-token worker that held it must not keep it). Returns how many.
   */
  disconnectOthers(name: string, identity: WorkerIdentity, reason: string): number;
}

/** Registers the `/api/worker` WebSocket route. */
export function registerWorkerGateway(app: FastifyInstance, parts: WorkerGatewayParts, options: WorkerGatewayOptions): WorkerGateway {
  const { log } = parts;
  /** Open connections, each with the promise of its last handled frame. */
  const connections = new Map<WebSocket, () => Promise<void>>();
  /** The identity each open connection authenticated with. */
  const identities = new Map<WebSocket, string>();
  /** The worker name each connection past its hello's checks has. */
  const names = new Map<WebSocket, string>();
  /** The session of each welcomed connection. */
  const sessions = new Map<WebSocket, WorkerSession>();
  /** Connections cut off: nothing they send counts any more (frames of a plain close still do). */
  const cut = new WeakSet<WebSocket>();
  /** Every connection's heartbeat, on one shared timer. */
  const heartbeats = new HeartbeatSweep(options.heartbeatMs);
  /** Each connection's id, recorded with its worker in the store (with several servers). */
  const connIds = new Map<WebSocket, string>();

  /**
   * Cuts a connection off at once, before its peer has answered the close: it is forgotten (so a
   * hello still being handled is not welcomed and no frame it sends from now on is applied), its
   * session takes no more runs and leaves the dispatcher, and it is refused and closed. Its runs are
   * let go by the close handler, as for any lost connection.
   */
  const cutOff = (socket: WebSocket, err: KilnError, closeCode: number): void => {
    cut.add(socket);
    identities.delete(socket);
    names.delete(socket);
    const session = sessions.get(socket);
    if (session) parts.workers.unlist(session);
    refuse(socket, err, closeCode);
  };

  /**
   * Cuts the connections here that a `worker.cut` names: those of `identity` (revoked), or else
   * those under `name`, sparing the identity `keep` (the name's own token) and the connection
   * `except`. Returns how many.
   */
  const cutWhere = ({ name, identity, keep, except, reason }: KilnEvents['worker.cut']): number => {
    let closed = 0;
    for (const socket of [...identities.keys()]) {
      const held = identities.get(socket);
      if (identity !== undefined ? held !== identity : names.get(socket) !== name) continue;
      if ((keep !== undefined && held === keep) || (except !== undefined && connIds.get(socket) === except)) continue;
      if (identity !== undefined) cutOff(socket, new UnauthorizedError(reason), CloseCode.revoked);
      else cutOff(socket, new WorkerIdentityError(reason), CloseCode.identity);
      closed += 1;
    }
    return closed;
  };
  // Decided on another server (its own connections were cut there at once).
  parts.events.on('worker.cut', (cutting) => {
    if (!cutting.remote) return;
    const closed = cutWhere(cutting);
    if (closed > 0) log.info({ worker: cutting.name, closed }, 'worker connection cut as another server asked');
  });

  // A plain HTTP request (no upgrade) gets a catalogued error, not the plugin's empty 404.
  const notAnUpgrade = async (): Promise<never> => {
    throw new InvalidRequestError('/api/worker takes a WebSocket upgrade: it is where kiln worker connects');
  };
  app.route({ method: 'GET', url: '/api/worker', ...forWorker, handler: notAnUpgrade, wsHandler: (socket, request) => {
    // The auth hook let only worker credentials through; what they say is who this worker is.
    const credential = request.credential;
    if (credential.kind !== 'worker') throw new UnauthorizedError('the worker socket needs a worker token');
    const identity = credential.identity;
    identities.set(socket, identityKey(identity));
    const connId = options.serverId === undefined ? undefined : randomUUID();
    if (connId !== undefined) connIds.set(socket, connId);
    let session: WorkerSession | undefined;
    let link: Link | undefined;
    /** The name this connection claimed in the store, once claimed. */
    let claimedName: string | undefined;
    // Frames are handled one at a time, in order: output before the result that follows it.
    let chain: Promise<void> = Promise.resolve();
    connections.set(socket, () => chain);

    const helloTimer = setTimeout(() => refuse(socket, new ProtocolError('no hello received in time'), CloseCode.protocolError), options.helloTimeoutMs);
    const heartbeat: Beat = {
      alive: true,
      ping: () => socket.ping(),
      missed: () => {
        log.info({ worker: session?.name }, 'worker missed its heartbeat; dropping the connection');
        socket.terminate();
      },
    };
    heartbeats.add(heartbeat);
    socket.on('pong', () => (heartbeat.alive = true));

    const handle = async (frame: unknown): Promise<void> => {
      // Cut off (its credential revoked, its name given to a token): nothing it sends counts any more.
      // Not so for a connection that merely closed: a result sent just before is still applied.
      if (cut.has(socket)) return;
      heartbeat.alive = true;
      if (!session) {
        clearTimeout(helloTimer);
        const hello = readHello(frame);
        const refusal = nameRefusal(identity, hello.name, identity.kind === 'instance' ? undefined : await options.nameOwner?.(hello.name));
        if (refusal) {
          log.info({ worker: hello.name, identity: identityKey(identity) }, 'worker refused: its credential does not allow the name');
          refuse(socket, new WorkerIdentityError(refusal), CloseCode.identity);
          return;
        }
        if (!identities.has(socket)) return; // revoked while the hello was checked
        if (parts.workers.session(hello.name)) {
          refuse(socket, new WorkerNameTakenError(hello.name), CloseCode.nameTaken);
          return;
        }
        // Named now, so a name given its own token while this hello is handled cuts it off too.
        names.set(socket, hello.name);
        const now = parts.now();
        const { runs, ...facts } = hello;
        const claimed = await parts.store.recordWorker(
          { ...facts, connected: true, connectedAt: now, lastSeen: now },
          connId === undefined ? undefined : { serverId: options.serverId!, connId },
        );
        // Connected under this name on another server that is alive: taken there, as it would be here.
        if (!claimed) {
          names.delete(socket);
          log.info({ worker: hello.name }, 'worker refused: its name is connected on another server');
          refuse(socket, new WorkerNameTakenError(hello.name), CloseCode.nameTaken);
          return;
        }
        claimedName = hello.name;
        if (identity.kind === 'token') await options.tokenUsed?.(identity.name);
        link = new Link(socket, hello, options.artifactLimits, identity, connId);
        const fresh = parts.workers.create(link);
        const { resume, release } = await parts.lifecycle.workerAttached(fresh, runs);
        session = fresh;
        sessions.set(socket, fresh);
        // Cut off during the awaits above: not welcomed; the close handler lets go of what it re-attached.
        if (!identities.has(socket)) {
          parts.workers.close(fresh);
          return;
        }
        link.send({ v: PROTOCOL_VERSION, type: 'welcome', name: hello.name, heartbeatMs: options.heartbeatMs, resume, release });
        log.info({ worker: hello.name, identity: fresh.identity, platform: hello.platform, capacity: hello.capacity, version: hello.version, resumed: resume.length }, 'worker connected');
        await parts.lifecycle.replayCancels(session, resume.map((r) => r.runId));
        // The last check before it can be given runs: a cut-off during the replay leaves it out.
        if (!identities.has(socket)) {
          parts.workers.close(fresh);
          return;
        }
        parts.workers.join(session);
        return;
      }
      const message = readMessage(frame);
      if (message.type === 'run.output') {
        parts.lifecycle.output(session, message.runId, message.lines);
      } else if (message.type === 'run.finished') {
        await parts.lifecycle.workerFinished(session, message.runId, message.result, message.stoppedBy, message.artifactsSkipped ?? []);
      } else {
        parts.workers.drain(session);
        log.info({ worker: session.name, running: session.running.size }, 'worker draining');
      }
    };

    socket.on('message', (data: Buffer) => {
      chain = chain.then(async () => {
        try {
          await handle(parseFrame(data));
        } catch (raw) {
          const err = coerceError(raw);
          if (err instanceof ProtocolVersionError) {
            log.info({ err: err.message }, 'worker refused: protocol version');
            refuse(socket, err, CloseCode.protocolVersion);
          } else if (!session) {
            log.info({ err: err.message }, 'worker refused: bad hello');
            refuse(socket, err, CloseCode.protocolError);
          } else {
            if (err.status >= 500) log.error({ err, worker: session.name }, 'failed to handle a worker message');
            else log.info({ worker: session.name, err: err.message }, 'protocol error from worker');
            link?.send({ v: PROTOCOL_VERSION, type: 'error', code: err.code, message: err.message });
          }
        }
      });
    });

    socket.on('close', () => {
      identities.delete(socket);
      names.delete(socket);
      connIds.delete(socket);
      sessions.delete(socket);
      clearTimeout(helloTimer);
      heartbeats.delete(heartbeat);
      if (link) link.open = false;
      if (session) parts.workers.close(session);
      // Queued behind the frame in hand: a hello still being handled (a token revoked meanwhile, a
      // worker gone mid-hello) makes its session first, which is then let go here, not left behind.
      chain = chain.then(async () => {
        if (!session) {
          // Claimed, then the hello failed before a session was made: the name is let go here, or
          // it would stay connected on this server (taken for every other one).
          if (claimedName !== undefined) {
            await parts.store.workerDisconnected(claimedName, parts.now(), connId).catch((raw) => log.error({ err: coerceError(raw) }, 'could not record a lost worker'));
          }
          connections.delete(socket);
          return;
        }
        const gone = session;
        parts.workers.close(gone);
        log.info({ worker: gone.name, running: gone.running.size }, 'worker disconnected');
        await parts.lifecycle.workerGone(gone).catch((raw) => log.error({ err: coerceError(raw) }, 'could not record a lost worker'));
        connections.delete(socket);
      });
    });
  } });

  return {
    disconnect(identity, reason) {
      const cutting = { name: identity.kind === 'shared' ? '' : identity.name, identity: identityKey(identity), reason: `${describeIdentity(identity)} was revoked: ${reason}` };
      // Here at once; the other servers cut theirs when the feed brings the event.
      const closed = cutWhere(cutting);
      parts.events.publish('worker.cut', cutting);
      return closed;
    },
    disconnectOthers(name, identity, reason) {
      const cutting = { name, keep: identityKey(identity), reason: `worker '${name}' now has its own token (${reason}): only that token may use the name` };
      const closed = cutWhere(cutting);
      parts.events.publish('worker.cut', cutting);
      return closed;
    },
    handOff(reason) {
      if (connections.size > 0) log.warn({ workers: connections.size, reason }, 'closing every worker connection: they move to another server');
      for (const socket of connections.keys()) socket.close(CloseCode.shutdown, 'server shutting down');
    },
    async shutdown() {
      for (const socket of connections.keys()) socket.close(CloseCode.shutdown, 'server shutting down');
      // Each close handler records its worker's runs before the store may close.
      await Promise.all([...connections].map(async ([socket, last]) => {
        if (socket.readyState !== socket.CLOSED) await new Promise((resolve) => socket.once('close', resolve));
        await last();
      }));
    },
  };
}
