/**
 * The worker's main loop: connect to the server, say hello (with the runs it still holds), run
 * what it assigns (up to the capacity), stream each run's console in small batches, report
 * results. Losing the server does not stop the jobs: their output goes on into each run's spool,
 * the worker reconnects (to the next of its servers at once, src/core/failover.ts; with backoff
 * once all have failed), re-attaches, resends what the server did not store, and reports the
 * results it kept.
 */
import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { rmdir } from 'node:fs/promises';
import type { Log as Logger } from '../log.js';
import { nameTakenIsFinal, nextAttempt, type FailoverPosition } from '../core/failover.js';
import { formatResult } from '../core/run.js';
import { plainHttpHint, untrustedCertificateReason } from '../core/tls-failure.js';
import { coerceError, ServerUntrustedError } from '../errors.js';
import { traceNow, traceStage, tracing } from '../latency-trace.js';
import { hostFacts } from '../host-info.js';
import { CloseCode, PROTOCOL_VERSION } from '../protocol/constants.js';
import type { ConsoleLine, Hello, RunAssignment, ServerMessage, SkippedArtifact, WorkerMessage } from '../protocol/messages.js';
import { decodeServerMessage } from '../protocol/server-message-decoder.js';
import { KILN_VERSION } from '../version.js';
import { collectArtifacts, hashFile, uploadArtifact, type CollectedFile } from './artifacts.js';
import { SCRIPT_NAME, startExecution, type Execution, type RunReport } from './executor.js';
import { OutputSpool } from './output-spool.js';
import { reconnectDelayMs } from './reconnect.js';
import { WsClient as WebSocket } from './ws-client.js';
import type { SandboxLauncher } from './sandbox/sandbox.js';
import { SpareWorkDirs } from './spare-work-dirs.js';

/** Options of a worker. */
export interface WorkerOptions {
  /**
   * Server base URLs (http:// or https://), tried in this order: several servers of one farm, or
   * one. A name with several addresses is tried address by address.
   */
  servers: string[];
  /** Worker token. */
  token: string;
  /** PEM CA certificates to trust an https:// server by (`--ca`); none: Node's trust store. */
  ca?: string;
  name: string;
  platform: string;
  labels: Record<string, string>;
  /** Runs at once. */
  capacity: number;
  /** Take one run, report it, exit. */
  once: boolean;
  /** Where work dirs are made. */
  workRoot: string;
  /** Where runs' output is kept until the server has their result. */
  spoolDir: string;
  sandbox: SandboxLauncher;
  /** Time between SIGTERM and SIGKILL when stopping a job (ms). */
  killGraceMs: number;
  /** On shutdown, how long running jobs may go on before they are cancelled (ms). */
  drainMs: number;
  log: Logger;
}

/** Console lines are sent at most this long after they are printed (ms). */
const OUTPUT_FLUSH_MS = 10;
/** ...or as soon as this many are waiting. */
const OUTPUT_BATCH_LINES = 500;
/** How long a stopping worker keeps trying to deliver results after its drain time. */
const DELIVERY_GRACE_MS = 60_000;

/** Exit codes of `kiln worker`. */
export const WorkerExit = { ok: 0, failed: 1, refused: 3 } as const;

/** One run held by this worker. */
interface Held {
  run: RunAssignment;
  execution: Execution;
  spool: OutputSpool;
  /** Lines printed but not sent yet. */
  pending: ConsoleLine[];
  timer: NodeJS.Timeout | undefined;
  /** While true, lines are only spooled: the spool is being resent in order. */
  resending: boolean;
  /** The seq of the last line sent on the current connection. */
  sentSeq: number;
  /** The result, once the job has ended (kept until the server acknowledges it). */
  report?: RunReport;
  /** The server released the run: stop it and report nothing. */
  released: boolean;
}

/** A connected (or reconnecting) worker. */
export class WorkerAgent {
  private socket: WebSocket | undefined;
  /** True between the server's welcome and the connection's end. */
  private ready = false;
  private readonly held = new Map<string, Held>();
  /** Work dirs still being removed (after their runs' reports): the worker exits once they are gone. */
  private readonly cleanups = new Set<Promise<void>>();
  /** Work dirs made ahead of the runs (off their way to the first command). */
  private readonly workDirs: SpareWorkDirs;
  /**
   * This process's id, sent in every hello: reconnects of this process keep it, a restart (even
   * under the same --name) makes a new one, so the server knows whether a run this worker does not
   * list was never received (same id) or held by a process that died (another id).
   */
  private readonly session = randomUUID();
  /** Where the next attempt goes; `failed` counts servers failed in a row (a welcome resets it). */
  private position: FailoverPosition = { server: 0, address: 0, failed: 0 };
  /** The current server's addresses (its name resolved before its first address is tried); none: connect by name. */
  private addresses: string[] = [];
  /** Since when every server has said this worker's name is taken (undefined: the last close was not that). */
  private nameTakenSince: number | undefined;
  private stopping = false;
  private closing = false;
  /** The server this worker belongs to is gone for good: nothing is reported any more. */
  private abandoned = false;
  private finishedOne = false;
  private exitCode: number = WorkerExit.ok;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private giveUpTimer: NodeJS.Timeout | undefined;
  private finished!: (code: number) => void;
  /** Resolves with the process exit code when the worker stops. */
  readonly exited = new Promise<number>((resolve) => (this.finished = resolve));

  constructor(private readonly options: WorkerOptions) {
    this.workDirs = new SpareWorkDirs(options.workRoot);
  }

  start(): Promise<number> {
    this.connect();
    return this.exited;
  }

  /**
   * Stops taking runs and lets the running ones finish, up to the drain time; then cancels them.
   * Called again (a second signal), it cancels them at once.
   */
  stop(reason = 'worker shutting down'): void {
    if (this.stopping) {
      this.cancelAll(reason);
      return;
    }
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    this.log.info({ running: this.held.size, drainMs: this.options.drainMs }, 'stopping: no more runs; letting running ones finish');
    this.sendFrame({ v: 1, type: 'drain' });
    if (this.held.size === 0) return this.close(this.exitCode);
    this.drainTimer = setTimeout(() => this.cancelAll(`${reason} (drain time over)`), this.options.drainMs);
    if (!this.ready) this.cancelAll(`${reason} (not connected)`);
    // A stopping worker waits for the server to take its results, but not forever: past this, the
    // server's grace window ends those runs `lost` (and retries them) instead.
    this.giveUpTimer = setTimeout(() => {
      this.log.error({ runs: [...this.held.keys()] }, 'stopping without delivering these results: the server did not take them in time');
      this.close(WorkerExit.failed);
    }, this.options.drainMs + DELIVERY_GRACE_MS);
  }

  /**
   * The server this worker belongs to is gone for good: the lifeline its starter holds has closed
   * (a pool instance whose server died, even by SIGKILL; the worker of a dead `kiln up`). Nobody
   * will take the results and no later server adopts this worker, so nothing drains: every job's
   * process tree is killed now, and the worker exits once they are gone, without reporting.
   */
  abandon(reason: string): void {
    if (this.closing || this.abandoned) return;
    this.abandoned = true;
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.drainTimer);
    clearTimeout(this.giveUpTimer);
    this.log.warn({ running: this.held.size, reason }, 'abandoned: killing the running jobs now and exiting without draining');
    const running = [...this.held.values()].map((held) => {
      // Released: its end is not reported and its spool is removed once the job is gone.
      held.released = true;
      clearTimeout(held.timer);
      held.execution.kill(reason);
      return held.execution.done;
    });
    void Promise.allSettled(running).then(() => {
      this.held.clear();
      this.close(WorkerExit.failed);
    });
  }

  private cancelAll(reason: string): void {
    for (const held of this.held.values()) held.execution.stop(reason, 'shutdown');
  }

  private get log() {
    return this.options.log;
  }

  /** The server this worker is connected to, or tries next. */
  private get server(): string {
    return this.options.servers[this.position.server]!;
  }

  /**
   * Connects to the current server. Before a name's first address, the name is resolved (all its
   * addresses); a name that does not resolve fails this attempt like a refused connection would.
   */
  private connect(): void {
    const host = new URL(this.server).hostname.replace(/^\[|\]$/g, '');
    if (this.position.address > 0 || isIP(host) !== 0) return this.open(this.addresses[this.position.address]);
    const server = this.server;
    lookup(host, { all: true }).then(
      (found) => {
        if (this.closing || this.abandoned || server !== this.server) return;
        this.addresses = found.map((entry) => entry.address);
        this.open(this.addresses[0]);
      },
      (err: NodeJS.ErrnoException) => {
        if (this.closing || this.abandoned) return;
        this.addresses = [];
        this.log.debug({ server, err: err.message }, 'cannot resolve the server name');
        this.retry(1006, `cannot resolve ${host}: ${err.code ?? err.message}`, false);
      },
    );
  }

  /** Opens the WebSocket to the current server, at `address` when its name was resolved. */
  private open(address: string | undefined): void {
    const url = new URL('/api/worker', this.server.replace(/^http/, 'ws'));
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${this.options.token}` }, maxPayload: 64 * 1024 * 1024, ca: this.options.ca, ...(address === undefined ? {} : { address }) });
    this.socket = socket;
    socket.on('open', () => {
      this.sendFrame({
        v: PROTOCOL_VERSION, type: 'hello', name: this.options.name, platform: this.options.platform, labels: this.options.labels,
        capacity: this.options.capacity, once: this.options.once, version: KILN_VERSION, ...hostFacts(), session: this.session,
        runs: [...this.held.values()].map((held) => ({ runId: held.run.id, attempt: held.run.attempt })),
      });
    });
    socket.on('unexpected-response', (_request: unknown, response: { statusCode?: number }) => {
      // 401: a token the server does not accept; 403: a person's token, which is not a worker's.
      if (response.statusCode === 401 || response.statusCode === 403) {
        const why = response.statusCode === 401 ? '' : ': it is not a worker token';
        this.log.error(`the server at ${this.server} rejected the worker token (${response.statusCode}${why}); pass --token or set KILN_WORKER_TOKEN`);
        this.exitCode = WorkerExit.refused;
        this.cancelAll('the server rejected the worker token');
        this.close(WorkerExit.refused);
      } else {
        this.log.warn({ status: response.statusCode }, 'the server refused the connection');
      }
      socket.terminate();
    });
    socket.on('message', (data: Buffer) => this.onMessage(data));
    // Nobody listening at the address (ECONNREFUSED): a shorter backoff.
    let refused = false;
    // A certificate this worker does not trust: retrying cannot help (as with a rejected token).
    let untrusted: string | undefined;
    let hint: string | undefined;
    socket.on('error', (err: Error) => {
      refused = (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
      untrusted = untrustedCertificateReason(err as NodeJS.ErrnoException);
      hint = plainHttpHint(this.server, err as NodeJS.ErrnoException);
      this.log.debug({ err: err.message }, 'connection error');
    });
    socket.on('close', (code: number, reason: Buffer) => {
      if (untrusted !== undefined && socket === this.socket) {
        this.socket = undefined;
        this.log.error(new ServerUntrustedError(this.server, untrusted).message);
        this.exitCode = WorkerExit.refused;
        this.cancelAll('the server\'s certificate is not trusted');
        return this.close(WorkerExit.refused);
      }
      this.onClose(socket, code, reason.toString(), refused, hint);
    });
  }

  private onMessage(data: Buffer): void {
    const receivedAt = tracing ? traceNow() : 0;
    let parsed;
    try {
      parsed = decodeServerMessage(JSON.parse(data.toString('utf8')));
    } catch {
      this.log.warn('the server sent a frame that is not JSON; ignored');
      return;
    }
    if (!parsed.ok) {
      this.log.warn({ issues: parsed.issue }, 'the server sent a frame this worker does not understand; ignored');
      return;
    }
    if (tracing && parsed.message.type === 'run.assign') traceStage(parsed.message.run.id, 'worker-received', receivedAt);
    this.handle(parsed.message);
  }

  private handle(message: ServerMessage): void {
    switch (message.type) {
      case 'welcome':
        this.ready = true;
        // Only a welcome resets the backoff: a server that refuses us at once must not be hammered.
        this.position = { ...this.position, failed: 0 };
        this.nameTakenSince = undefined;
        this.log.info({ server: this.server, ...(this.addresses.length > 1 ? { address: this.addresses[this.position.address] } : {}), name: message.name, platform: this.options.platform, session: this.session, resumed: message.resume.length }, 'connected to the server');
        for (const { runId, reason } of message.release) this.release(runId, reason);
        for (const { runId, afterSeq } of message.resume) void this.resume(runId, afterSeq);
        if (this.stopping) this.sendFrame({ v: 1, type: 'drain' });
        return;
      case 'refused':
        this.log.error(`the server refused this worker: ${message.message}`);
        return;
      case 'error':
        this.log.warn({ code: message.code }, `the server reported: ${message.message}`);
        return;
      case 'run.assign':
        this.run(message.run);
        return;
      case 'run.cancel':
        this.held.get(message.runId)?.execution.stop(message.reason, 'cancel');
        return;
      case 'run.release':
        this.release(message.runId, message.reason);
        return;
      case 'run.done':
        this.forget(message.runId);
        return;
      case 'notice':
        this.log.warn(`the server says: ${message.message}`);
        return;
    }
  }

  private run(run: RunAssignment): void {
    if (this.held.has(run.id)) return;
    if (this.stopping) {
      // Assigned just before the server saw our drain: say so at once rather than leave it hanging.
      this.sendFrame({ v: 1, type: 'run.finished', runId: run.id, result: { kind: 'aborted', reason: 'worker shutting down before the run started' }, stoppedBy: 'shutdown' });
      return;
    }
    traceStage(run.id, 'worker-parsed');
    const log = this.log.child({ runId: run.id, job: run.job, attempt: run.attempt });
    log.info('run started');
    const held: Held = {
      run,
      pending: [],
      timer: undefined,
      resending: false,
      sentSeq: run.firstSeq - 1,
      released: false,
      spool: new OutputSpool(this.options.spoolDir, `${run.id}.${run.attempt}`, (err) => {
        // Output that can be neither kept nor sent would be lost: stop the job (robur's rule) and
        // let the worker exit non-zero once the result is in.
        log.error({ err: err.message }, 'cannot keep the job output; stopping the job');
        this.exitCode = WorkerExit.failed;
        held.execution.stop(`cannot keep the job output: ${err.message}`, 'output');
      }),
      execution: startExecution(run, {
        workRoot: this.options.workRoot,
        workDirs: this.workDirs,
        sandbox: this.options.sandbox,
        killGraceMs: this.options.killGraceMs,
        jobPath: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
        log,
        keepArtifacts: (workDir, say) => this.keepArtifacts(run, workDir, say),
        onLine: (line) => {
          held.spool.append(line);
          if (held.resending || !this.ready) return;
          held.pending.push(line);
          if (held.pending.length >= OUTPUT_BATCH_LINES) this.flushOutput(held);
          else held.timer ??= setTimeout(() => this.flushOutput(held), OUTPUT_FLUSH_MS);
        },
      }),
    };
    this.held.set(run.id, held);
    const cleaned = held.execution.cleaned.finally(() => this.cleanups.delete(cleaned));
    this.cleanups.add(cleaned);
    void held.execution.done.then((report) => {
      held.report = report;
      if (held.released) return held.spool.remove();
      log.info({ result: formatResult(report.result) }, 'run ended');
      if (this.ready && !held.resending) this.report(held);
    });
  }

  /** Uploads the run's files within the server's limits; each one not kept is said in the console, with why. */
  private async keepArtifacts(run: RunAssignment, workDir: string, say: (text: string) => void): Promise<SkippedArtifact[]> {
    // No server will take them: uploading would only keep the worker alive.
    if (this.abandoned) return [];
    const files = await collectArtifacts(workDir, run.artifacts, new Set([SCRIPT_NAME]));
    const target = { server: () => this.server, token: this.options.token, ca: this.options.ca, worker: this.options.name, runId: run.id, log: this.log.child({ runId: run.id }) };
    const limits = run.artifactLimits ?? { fileBytes: Infinity, runBytes: Infinity };
    const skipped: SkippedArtifact[] = [];
    const skip = (file: CollectedFile, reason: string) => {
      skipped.push({ path: file.path, size: file.size, reason });
      say(`kiln: artifact ${file.path} not kept: ${reason}`);
    };
    let planned = 0;
    const within: CollectedFile[] = [];
    for (const file of files) {
      if (file.size > limits.fileBytes) {
        skip(file, `${file.size} bytes is over the per-file limit of ${limits.fileBytes} bytes`);
        continue;
      }
      if (planned + file.size > limits.runBytes) {
        skip(file, `it would take the run's artifacts to ${planned + file.size} bytes, over the per-run limit of ${limits.runBytes} bytes`);
        continue;
      }
      planned += file.size;
      within.push(file);
    }
    // Every file is read whole (hashed) before any is sent: output that cannot be read means the run
    // keeps no artifacts at all (robur's rule, SPEC), so none may have reached the server by then.
    const hashed: { file: CollectedFile; sha256: string }[] = [];
    for (const file of within) {
      try {
        hashed.push({ file, sha256: await hashFile(file.absolute) });
      } catch (raw) {
        const why = coerceError(raw).message;
        say(`kiln: output file ${file.path} cannot be read (${why}); no artifacts kept`);
        for (const other of within) skipped.push({ path: other.path, size: other.size, reason: other === file ? `cannot be read: ${why}` : `not kept: output file ${file.path} cannot be read` });
        return skipped;
      }
    }
    let kept = 0;
    let bytes = 0;
    for (const { file, sha256 } of hashed) {
      try {
        await uploadArtifact(file, target, sha256);
        kept += 1;
        bytes += file.size;
      } catch (raw) {
        skip(file, coerceError(raw).message);
      }
    }
    if (files.length > 0) say(`kiln: kept ${kept} of ${files.length} artifacts (${bytes} bytes)`);
    return skipped;
  }

  private flushOutput(held: Held): void {
    clearTimeout(held.timer);
    held.timer = undefined;
    if (held.pending.length === 0) return;
    const lines = held.pending;
    held.pending = [];
    if (this.sendFrame({ v: 1, type: 'run.output', runId: held.run.id, lines })) held.sentSeq = lines.at(-1)!.seq;
  }

  /** Sends the run's result (after the last of its lines). */
  private report(held: Held): void {
    this.flushOutput(held);
    const { result, stoppedBy, artifactsSkipped } = held.report!;
    this.sendFrame({ v: 1, type: 'run.finished', runId: held.run.id, result, ...(stoppedBy ? { stoppedBy } : {}), ...(artifactsSkipped ? { artifactsSkipped } : {}) });
  }

  /** After a reconnect: resends the lines the server lacks, in order, then the result if there is one. */
  private async resume(runId: string, afterSeq: number): Promise<void> {
    const held = this.held.get(runId);
    if (!held) return;
    held.resending = true;
    held.pending = [];
    held.sentSeq = afterSeq;
    try {
      // Loop until nothing was spooled behind the read: lines keep coming while we resend.
      while (held.spool.lastSeq > held.sentSeq && this.ready) {
        for await (const page of held.spool.readAfter(held.sentSeq, OUTPUT_BATCH_LINES)) {
          if (!this.sendFrame({ v: 1, type: 'run.output', runId, lines: page })) return;
          held.sentSeq = page.at(-1)!.seq;
        }
      }
    } catch (raw) {
      this.log.error({ runId, err: coerceError(raw).message }, 'cannot read back the job output');
    } finally {
      held.resending = false;
    }
    if (held.report && this.ready) this.report(held);
  }

  /** The server ended the run itself: stop the job and drop what it kept. */
  private release(runId: string, reason: string): void {
    const held = this.held.get(runId);
    if (!held) return;
    this.log.info({ runId, reason }, 'the server released the run; stopping it');
    held.released = true;
    // Out of the map now: the server may assign this run's next attempt to us right away.
    this.forget(runId);
    if (!held.report) held.execution.stop(reason, 'cancel');
  }

  /** The server has the run's result: forget the run. */
  private forget(runId: string): void {
    const held = this.held.get(runId);
    if (!held) return;
    clearTimeout(held.timer);
    held.spool.remove();
    this.held.delete(runId);
    this.finishedOne = true;
    if ((this.stopping || this.options.once) && this.held.size === 0) this.close(this.exitCode);
    else if (this.exitCode !== WorkerExit.ok && this.held.size === 0) this.close(this.exitCode);
  }

  private sendFrame(message: WorkerMessage | Hello): boolean {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  private onClose(socket: WebSocket, code: number, reason: string, refused: boolean, hint?: string): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.ready = false;
    if (code === 1000 && this.closing) return;
    if (this.abandoned) return;
    if (code === CloseCode.protocolVersion) return this.close(WorkerExit.refused);
    if (code === CloseCode.nameTaken) {
      // With several servers, the name may be held by a server that died (shown connected until it is
      // seen dead) or by a half-open socket: try the others for a while before calling it a duplicate.
      this.nameTakenSince ??= Date.now();
      if (nameTakenIsFinal(this.options.servers.length, this.held.size, this.nameTakenSince, Date.now())) return this.close(WorkerExit.refused);
    } else this.nameTakenSince = undefined;
    // Its credential will not do (another worker's name, a revoked token): retrying cannot help.
    if (code === CloseCode.identity || code === CloseCode.revoked) {
      this.exitCode = WorkerExit.refused;
      this.cancelAll('the server refused this worker\'s credential');
      return this.close(WorkerExit.refused);
    }
    if (this.options.once && this.finishedOne && this.held.size === 0) return this.close(this.exitCode);
    if (this.stopping && this.held.size === 0) return this.close(this.exitCode);
    // Nobody listening, or the server said it is shutting down: it is down or restarting.
    this.retry(code, reason, refused || code === CloseCode.shutdown, hint);
  }

  /**
   * After a failed attempt or a lost connection: the next address or server at once, or, after a
   * whole round of the list has failed, the same backoff as with one server (counted in rounds).
   */
  private retry(code: number, reason: string, serverDown: boolean, hint?: string): void {
    const from = this.server;
    const step = nextAttempt(this.position, Math.max(this.addresses.length, 1), this.options.servers.length);
    this.position = { server: step.server, address: step.address, failed: step.failed };
    if (step.address === 0) this.addresses = [];
    const delay = step.backoffRounds > 0 ? reconnectDelayMs(step.backoffRounds, serverDown) : 0;
    this.log.warn(
      { code, reason: reason || undefined, hint, server: from, next: this.server, retryInMs: Math.round(delay), holding: this.held.size, session: this.session },
      'not connected to the server; retrying (running jobs go on)',
    );
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Closes the connection once everything sent has gone out, then resolves `exited`. */
  private close(code: number): void {
    if (this.closing) return;
    this.closing = true;
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.drainTimer);
    clearTimeout(this.giveUpTimer);
    // The spool dir is per worker; leave nothing behind when it is empty.
    rmdir(this.options.spoolDir).catch(() => undefined);
    this.cleanups.add(this.workDirs.dispose());
    const socket = this.socket;
    const finish = () => void Promise.allSettled(this.cleanups).then(() => this.finished(code));
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      socket?.terminate();
      finish();
      return;
    }
    socket.once('close', finish);
    socket.close(1000, 'worker stopping');
  }
}
