/**
 * The worker's main loop: connect to the server, say hello, run what it assigns (up to the
 * capacity), stream each run's console in small batches, report results, and reconnect with
 * backoff when the connection drops.
 */
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { formatResult } from '../core/index.js';
import { coerceError } from '../errors.js';
import { hostFacts } from '../host-info.js';
import { CloseCode, describeIssues, PROTOCOL_VERSION, serverMessage, type ConsoleLine, type Hello, type RunAssignment, type WorkerMessage } from '../protocol/index.js';
import { KILN_VERSION } from '../version.js';
import { startExecution, type Execution } from './executor.js';
import type { SandboxLauncher } from './sandbox/sandbox.js';

/** Options of a worker. */
export interface WorkerOptions {
  /** Server base URL (http:// or https://). */
  server: string;
  /** Worker token. */
  token: string;
  name: string;
  platform: string;
  labels: Record<string, string>;
  /** Runs at once. */
  capacity: number;
  /** Take one run, report it, exit. */
  once: boolean;
  /** Where work dirs are made. */
  workRoot: string;
  sandbox: SandboxLauncher;
  /** Time between SIGTERM and SIGKILL when stopping a job (ms). */
  killGraceMs: number;
  log: Logger;
}

/** Console lines are sent at most this long after they are printed (ms). */
const OUTPUT_FLUSH_MS = 10;
/** ...or as soon as this many are waiting. */
const OUTPUT_BATCH_LINES = 500;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 30_000;

/** Exit codes of `kiln worker`. */
export const WorkerExit = { ok: 0, failed: 1, refused: 3 } as const;

/** One run held by this worker, with its output waiting to be sent. */
interface Held {
  execution: Execution;
  pending: ConsoleLine[];
  timer: NodeJS.Timeout | undefined;
}

/** A connected (or reconnecting) worker. */
export class WorkerAgent {
  private socket: WebSocket | undefined;
  private readonly held = new Map<string, Held>();
  private attempts = 0;
  private stopping = false;
  private tookOne = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private finished!: (code: number) => void;
  /** Resolves with the process exit code when the worker stops. */
  readonly exited = new Promise<number>((resolve) => (this.finished = resolve));

  constructor(private readonly options: WorkerOptions) {}

  start(): Promise<number> {
    this.connect();
    return this.exited;
  }

  /** Stops taking runs, stops the running ones, reports them and exits. */
  async stop(reason = 'worker shutting down'): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    for (const held of this.held.values()) held.execution.stop(reason);
    await Promise.all([...this.held.values()].map((held) => held.execution.done));
    this.close(WorkerExit.ok);
  }

  private get log() {
    return this.options.log;
  }

  private connect(): void {
    const url = new URL('/api/worker', this.options.server.replace(/^http/, 'ws'));
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${this.options.token}` }, maxPayload: 64 * 1024 * 1024 });
    this.socket = socket;
    socket.on('open', () => {
      this.attempts = 0;
      this.send({
        v: PROTOCOL_VERSION, type: 'hello', name: this.options.name, platform: this.options.platform, labels: this.options.labels,
        capacity: this.options.capacity, once: this.options.once, version: KILN_VERSION, ...hostFacts(),
      });
    });
    socket.on('unexpected-response', (_request, response) => {
      if (response.statusCode === 401) {
        this.log.error(`the server at ${this.options.server} rejected the worker token (401); pass --token or set KILN_WORKER_TOKEN`);
        this.close(WorkerExit.refused);
      } else {
        this.log.warn({ status: response.statusCode }, 'the server refused the connection');
        socket.terminate();
      }
    });
    socket.on('message', (data: Buffer) => this.onMessage(data));
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'connection error'));
    socket.on('close', (code, reason) => this.onClose(socket, code, reason.toString()));
  }

  private onMessage(data: Buffer): void {
    let parsed;
    try {
      parsed = serverMessage.safeParse(JSON.parse(data.toString('utf8')));
    } catch {
      this.log.warn('the server sent a frame that is not JSON; ignored');
      return;
    }
    if (!parsed.success) {
      this.log.warn({ issues: describeIssues(parsed.error) }, 'the server sent a frame this worker does not understand; ignored');
      return;
    }
    const message = parsed.data;
    switch (message.type) {
      case 'welcome':
        this.log.info({ server: this.options.server, name: message.name, platform: this.options.platform }, 'connected to the server');
        return;
      case 'refused':
        this.log.error(`the server refused this worker: ${message.message}`);
        this.close(WorkerExit.refused);
        return;
      case 'error':
        this.log.warn({ code: message.code }, `the server reported: ${message.message}`);
        return;
      case 'run.assign':
        this.run(message.run);
        return;
    }
  }

  private run(run: RunAssignment): void {
    if (this.stopping || this.held.has(run.id)) return;
    this.tookOne = true;
    const log = this.log.child({ runId: run.id, job: run.job });
    log.info('run started');
    const held: Held = {
      pending: [],
      timer: undefined,
      execution: startExecution(run, {
        workRoot: this.options.workRoot,
        sandbox: this.options.sandbox,
        killGraceMs: this.options.killGraceMs,
        jobPath: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
        log,
        onLine: (line) => {
          held.pending.push(line);
          if (held.pending.length >= OUTPUT_BATCH_LINES) this.flushOutput(run.id, held);
          else held.timer ??= setTimeout(() => this.flushOutput(run.id, held), OUTPUT_FLUSH_MS);
        },
      }),
    };
    this.held.set(run.id, held);
    void held.execution.done.then((report) => {
      this.flushOutput(run.id, held);
      this.held.delete(run.id);
      log.info({ result: formatResult(report.result) }, 'run ended');
      this.send({ v: 1, type: 'run.finished', runId: run.id, result: report.result, ...(report.timedOut ? { timedOut: true } : {}) });
      if (this.options.once) this.close(WorkerExit.ok);
    });
  }

  private flushOutput(runId: string, held: Held): void {
    clearTimeout(held.timer);
    held.timer = undefined;
    if (held.pending.length === 0) return;
    const lines = held.pending;
    held.pending = [];
    if (!this.send({ v: 1, type: 'run.output', runId, lines })) {
      // Nowhere to send the console: the run cannot be observed or kept, so it stops (robur's rule).
      held.execution.stop('cannot send output to the server');
    }
  }

  private send(message: WorkerMessage | Hello): boolean {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  private onClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    if (this.stopping) return;
    if (code === CloseCode.protocolVersion || code === CloseCode.nameTaken) return this.close(WorkerExit.refused);
    for (const held of this.held.values()) held.execution.stop('lost the connection to the server');
    if (this.options.once && this.tookOne) return this.close(WorkerExit.failed);
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempts) * (0.8 + Math.random() * 0.4);
    this.attempts += 1;
    this.log.warn({ code, reason: reason || undefined, retryInMs: Math.round(delay) }, 'not connected to the server; retrying');
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Closes the connection once everything sent has gone out, then resolves `exited`. */
  private close(code: number): void {
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      socket?.terminate();
      this.finished(code);
      return;
    }
    socket.once('close', () => this.finished(code));
    socket.close(1000, 'worker stopping');
  }
}
