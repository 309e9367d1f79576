/**
 * The `--robur-listen` port: robur builder's TCP protocol (reference §1), so that an unchanged
 * `builder-worker` and `builder-client` work against Kiln. Frames are an 8-byte length and one
 * strict-DER message; the first must be `Client_hello` (client 13: one command, served by the
 * client commands; worker 5: a worker session). Anything else, a version builder would refuse, a
 * frame that does not decode or is over the bound, closes that connection with one log line and no
 * reply, as builder does (builder itself dies on some of them; Kiln never does).
 *
 * Like builder's, the port has no authentication: whoever reaches it can queue and cancel work
 * and run as a worker. It is off unless asked, and bound beyond loopback it is warned about once.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { coerceError } from '../../errors.js';
import {
  decodeCmd, describeCmd, encodeCmd, frameOf, FrameReader, MAX_ROBUR_FRAME_BYTES, ROBUR_CLIENT_VERSION, ROBUR_WORKER_VERSION, type RoburCmd,
} from '../../protocol/robur/index.js';
import type { RoburConnection } from './connection.js';
import type { RoburPeerSession } from './robur-worker.js';

/** Where and how the port listens. */
export interface RoburListenerOptions {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** How long a new connection may take to say hello (ms; default 10 s). */
  helloTimeoutMs?: number;
  /** Most connections at once (default 1024); more are refused by the kernel's accept and closed. */
  maxConnections?: number;
  /**
   * Largest frame body read from a worker holding a run (default MAX_ROBUR_FRAME_BYTES: a
   * Job_finished carries its files inline and is held whole, so this is a memory cap, not the
   * artifact limits). A larger one ends that run `aborted` with the sizes (RoburPeerSession.tooLarge).
   */
  maxFrameBytes?: number;
}

/** What the port serves with. */
export interface RoburListenerParts {
  log: Logger;
  /** A worker's session, made at its hello. */
  worker(conn: RoburConnection): RoburPeerSession;
  /** Answers a client's one command (data replies, then Success or Failure). */
  serveClient(conn: RoburConnection, command: RoburCmd): Promise<void>;
}

/** The listening port. */
export interface RoburListener {
  /** `HOST:PORT` it is bound to (`[::1]:1234` for IPv6). */
  readonly address: string;
  /** Stops accepting, closes every connection and waits until each is let go. */
  close(): Promise<void>;
}

/**
 * Most bytes of a frame a peer may send unless it is a worker holding a run: a hello, a
 * Job_requested or an Output line is small and a client's command a job with its script, while only
 * a worker's Job_finished carries files (up to maxFrameBytes). Without this, every connection could
 * make the server hold 256 MiB without ever having been given a run.
 */
const PENDING_LIMIT = { hello: 4096, client: 16 * 1024 * 1024 } as const;

/** How long a closing connection may take to flush what was sent before it is cut (ms). */
const CLOSE_FLUSH_MS = 5000;
/** TCP keepalive probes after this much silence: a worker waiting for a job for days is still noticed gone. */
const KEEPALIVE_MS = 60_000;

/** True for a host that only this machine reaches. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** `HOST:PORT`, IPv6 in brackets. */
function hostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? '?';
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? '?'}`;
}

/** One socket as a RoburConnection. */
class SocketConnection implements RoburConnection {
  readonly closed: Promise<void>;
  private ended = false;

  constructor(private readonly socket: net.Socket, readonly peer: string, private readonly log: Logger) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  get isClosed(): boolean {
    return this.ended || this.socket.destroyed;
  }

  send(cmd: RoburCmd): void {
    if (this.isClosed) return;
    this.socket.write(frameOf(encodeCmd(cmd)));
  }

  drained(): Promise<void> {
    if (this.isClosed || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        resolve();
      };
      this.socket.once('drain', done);
      void this.closed.then(done);
    });
  }

  close(reason: string): void {
    if (this.isClosed) return;
    this.ended = true;
    this.log.info({ peer: this.peer, reason }, 'robur connection closed');
    // What was sent goes out first; then the socket is closed for good, so a peer still writing
    // (a worker's sender after a cancel) gets a reset and dies of SIGPIPE, as with builder.
    const cut = setTimeout(() => this.socket.destroy(), CLOSE_FLUSH_MS);
    cut.unref();
    this.socket.end(() => {
      clearTimeout(cut);
      this.socket.destroy();
    });
  }

  /** Cuts the connection at once (bad input): nothing more is read or sent. */
  cut(): void {
    this.ended = true;
    this.socket.destroy();
  }
}

/** Starts the port; resolves once it listens. Throws the socket's error (EADDRINUSE...) when it cannot. */
export async function listenForRobur(parts: RoburListenerParts, options: RoburListenerOptions): Promise<RoburListener> {
  const { log } = parts;
  const maxFrameBytes = options.maxFrameBytes ?? MAX_ROBUR_FRAME_BYTES;
  const helloTimeoutMs = options.helloTimeoutMs ?? 10_000;
  /** Every open connection, with a promise that resolves once it is closed and let go. */
  const open = new Map<SocketConnection, Promise<void>>();

  const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_MS }, (socket) => {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    const peer = hostPort(socket.remoteAddress, socket.remotePort);
    const conn = new SocketConnection(socket, peer, log);
    // No limit of its own: the listener checks each frame's declared length against what the peer may send now.
    const reader = new FrameReader(Number.MAX_SAFE_INTEGER);
    let role: 'hello' | 'client' | 'served' | 'worker' = 'hello';
    /**
     * What the bytes read so far say, ahead of the chain that acts on them: the bounds below go by
     * it (a hello and a large command in one write are read as a client's). `worker` is a worker
     * before its Job_requested; `over`: nothing more is read (a client's one command is in hand, or
     * a worker's oversized frame ended its run).
     */
    let seen: 'hello' | 'client' | 'worker' | 'requested' | 'over' = 'hello';
    let worker: RoburPeerSession | undefined;
    // Reads are handled one at a time, in order: a worker's lines before its Job_finished.
    let chain: Promise<void> = Promise.resolve();
    let letGo!: () => void;
    open.set(conn, new Promise((resolve) => (letGo = resolve)));

    const refuse = (why: string) => {
      log.info({ peer }, `robur connection refused: ${why}`);
      conn.cut();
    };
    // Until the hello, then until a client's command or a worker's Job_requested: a slot of the
    // port is never held by a peer that says nothing.
    let timer = setTimeout(() => refuse('no hello in time'), helloTimeoutMs);
    const cutOnBadInput = (why: string) => {
      log.info({ peer }, `robur connection closed on bad input: ${why}`);
      clearTimeout(timer);
      conn.cut();
    };

    /** The messages of one read, by role. */
    const handle = async (cmds: RoburCmd[]): Promise<void> => {
      for (let i = 0; i < cmds.length && !conn.isClosed; i += 1) {
        const cmd = cmds[i]!;
        if (role === 'hello') {
          if (cmd.type !== 'client-hello') return refuse(`the first message was ${describeCmd(cmd)}, not Client_hello`);
          const wanted = cmd.peer === 'client' ? ROBUR_CLIENT_VERSION : ROBUR_WORKER_VERSION;
          if (cmd.version !== wanted) return refuse(`${cmd.peer} protocol version ${cmd.version} (this port speaks ${wanted})`);
          conn.send({ type: 'server-hello' });
          role = cmd.peer;
          if (cmd.peer === 'worker') worker = parts.worker(conn);
        } else if (role === 'client') {
          role = 'served';
          log.debug({ peer, command: describeCmd(cmd) }, 'robur client command');
          await parts.serveClient(conn, cmd);
          await conn.drained();
          conn.close('command answered');
        } else if (role === 'worker') {
          // The rest of this read goes to the session in one call (its lines in one batch).
          await worker!.handle(cmds.slice(i));
          return;
        }
        // 'served': builder reads one command per connection; what follows it is not read.
      }
    };

    /** Moves `seen` past the messages just decoded; the timer runs while a hello, a command or a Job_requested is awaited. */
    const advance = (cmds: RoburCmd[]): RoburCmd[] => {
      for (let i = 0; i < cmds.length; i += 1) {
        const cmd = cmds[i]!;
        if (seen === 'hello') {
          // A bad hello is refused by the chain; what follows it is never acted on.
          seen = cmd.type === 'client-hello' ? cmd.peer : 'over';
          clearTimeout(timer);
          if (seen !== 'over') timer = setTimeout(() => refuse(`no ${seen === 'client' ? 'command' : 'Job_requested'} in time after the hello`), helloTimeoutMs);
        } else if (seen === 'client') {
          seen = 'over';
          clearTimeout(timer);
          return cmds.slice(0, i + 1);
        } else if (seen === 'worker' && cmd.type === 'job-requested') {
          seen = 'requested';
          clearTimeout(timer);
        }
      }
      return cmds;
    };

    /** Most bytes of the frame in hand this peer may send now (see PENDING_LIMIT). */
    const limitNow = (): number => {
      if (seen === 'client') return PENDING_LIMIT.client;
      if (seen === 'requested' && worker?.holdsRun) return maxFrameBytes;
      return PENDING_LIMIT.hello;
    };

    socket.on('data', (chunk: Buffer) => {
      // A client's one command is in hand (or the connection is being closed): what follows is not read.
      if (seen === 'over' || conn.isClosed) return;
      let cmds: RoburCmd[];
      try {
        cmds = advance(reader.push(chunk).map((body) => decodeCmd(body)));
      } catch (raw) {
        // One line, and that connection only: builder-server dies here (reference §7).
        const err = coerceError(raw);
        cutOnBadInput(`${err.message} (${err.code})`);
        return;
      }
      const limit = limitNow();
      const over = (): boolean => seen === 'over';
      const declared = over() ? undefined : reader.expecting;
      let tooLarge: RoburPeerSession | undefined;
      if (declared !== undefined && declared > limit && seen === 'requested' && worker?.holdsRun) {
        // Its Job_finished cannot be held: the run ends with the reason instead of being lost (and retried to fail again).
        seen = 'over';
        tooLarge = worker;
        log.info({ peer, declared, limit }, 'robur worker frame over the limit; its run is ended');
      } else if (!over() && (reader.pending > limit || (declared !== undefined && declared > limit))) {
        cutOnBadInput(`a frame of ${declared ?? `over ${reader.pending}`} bytes, over the ${limit} bytes allowed ${seen === 'hello' ? 'before a hello' : seen === 'client' ? 'for a command' : 'to a worker holding no run'}`);
        return;
      }
      if (cmds.length > 0) {
        // While the chain is busy nothing more is read: a fast sender waits in TCP, not in memory. A
        // client past its command is not paused, so its hang-up is still seen during a long Observe.
        const pause = !over();
        if (pause) socket.pause();
        chain = chain.then(async () => {
          if (conn.isClosed && role !== 'worker') return;
          try {
            await handle(cmds);
          } catch (raw) {
            const err = coerceError(raw);
            if (err.status >= 500) log.error({ err, peer }, 'failed to handle a robur message');
            else log.info({ peer, code: err.code }, `robur connection closed: ${err.message}`);
            conn.cut();
          } finally {
            if (pause && !socket.destroyed) socket.resume();
          }
        });
      }
      // After the lines read before it.
      if (tooLarge) chain = chain.then(() => tooLarge.tooLarge(declared!, limit));
    });
    socket.on('error', (err) => log.debug({ peer, err: err.message }, 'robur connection error'));
    socket.on('close', () => {
      clearTimeout(timer);
      chain = chain.then(async () => {
        await worker?.gone();
        open.delete(conn);
        letGo();
      });
    });
  });
  server.maxConnections = options.maxConnections ?? 1024;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host, port: options.port, backlog: 128 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'robur listener error'));
  const bound = server.address() as net.AddressInfo;
  const address = hostPort(bound.address, bound.port);
  log.info({ robur: address }, 'robur builder protocol listening');
  if (!isLoopback(bound.address)) {
    log.warn({ robur: address }, 'the robur port has no authentication (as builder\'s): anyone who reaches it can queue, cancel and take runs; keep it on a private network');
  }

  return {
    address,
    async close() {
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const conn of open.keys()) conn.cut();
      await stopped;
      // Each close handler lets its worker go (its run lost: it cannot re-attach) before the store closes.
      await Promise.all(open.values());
    },
  };
}
