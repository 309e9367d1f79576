/**
 * A robur `builder-worker` as a Kiln worker: one connection of the `--robur-listen` port past its
 * hello, one run in its life (reference §1.5, §1.7). `Job_requested P` lists it in the registry as a
 * `--once` worker of platform P with no labels; the run it is given goes out as `Job_schedule` (the
 * run's env exported at the top of the script: robur's worker knows no env), its `Output` lines
 * become console lines stamped on arrival, and `Job_finished` stores the files it carries and ends
 * the run.
 *
 * What robur's worker cannot do, the connection does: a cancel or a release closes it (its sender
 * dies of SIGPIPE on its next line; the script is not stopped, as with builder), and since it can
 * never re-attach, a connection that ends before `Job_finished` loses its run at once (retried with
 * the job's lost budget) instead of waiting out the re-attach grace.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { backoffMs, identityKey, isValidPlatform, normaliseArtifactPath, PLATFORM_RULE, type BackoffTimings, type RunResult } from '../../core/index.js';
import { coerceError, ProtocolError, StoreUnavailableError } from '../../errors.js';
import { runResultOf, type RoburCmd, type RoburFile } from '../../protocol/robur/index.js';
import type { SkippedArtifact } from '../../protocol/index.js';
import type { JobStore, Run, StoredLine } from '../../store/index.js';
import { keepArtifact } from '../artifact-intake.js';
import type { BlobStore } from '../artifact-store.js';
import type { EventBus } from '../events.js';
import type { RunLifecycle } from '../run-lifecycle.js';
import type { WorkerLink, WorkerRegistry, WorkerSession } from '../worker-registry.js';
import type { RoburConnection } from './connection.js';

/** The parts a robur worker session talks to. */
export interface RoburWorkerParts {
  store: JobStore;
  workers: WorkerRegistry;
  lifecycle: RunLifecycle;
  blobs: BlobStore;
  events: EventBus;
  log: Logger;
  now: () => number;
  /** This server's id among servers sharing the store (PostgreSQL): the worker is recorded with it and a connection id. */
  serverId?: string;
  /** Aborted when the server stops: a run's end held for the store is not tried again past it. */
  stopping?: AbortSignal;
}

/** What the listener does with a worker connection past its hello. */
export interface RoburPeerSession {
  /** The messages of one TCP read, in order. Throws (a ProtocolError) when the peer broke the protocol: the listener closes. */
  handle(cmds: RoburCmd[]): Promise<void>;
  /** The connection is closed (either side): what it held is let go. Never throws. */
  gone(): Promise<void>;
  /** True while it holds a run: only then may a large frame (its Job_finished with the files) be read. */
  readonly holdsRun: boolean;
  /** Its next frame declares `size` bytes, over `limit`: the run it holds ends `aborted` with that reason and the connection closes. Never throws. */
  tooLarge(size: number, limit: number): Promise<void>;
}

/** How a robur run's end the store refused is written again (the server holds the worker's result meanwhile). */
const END_RETRY: BackoffTimings = { retryMinMs: 100, retryMaxMs: 5_000, jitter: 0.2 };
/** How long it is tried at most before the run is left to the reaper. */
const END_RETRY_FOR_MS = 60_000;

/** Longest console line kept (the console's own limit); a longer one is cut there. */
const MAX_LINE_CHARS = 65_536;

/** A shell word for `value`: single-quoted, each `'` written `'\''`. */
function shellQuote(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

/** Interpreters that take `export` lines (a `#!` naming one, directly or through env, gets them inline). */
const SHELLS = new Set(['sh', 'bash', 'dash', 'ash', 'ksh', 'mksh', 'pdksh', 'zsh', 'yash', 'posh']);

/** Whether a `#!` line names a shell: `#!/bin/sh -e`, `#!/usr/bin/env bash`, `#!/usr/bin/env -S bash -e`. */
function namesAShell(shebang: string): boolean {
  const words = shebang.slice(2).trim().split(/\s+/);
  const program = (word: string | undefined) => word?.slice(word.lastIndexOf('/') + 1) ?? '';
  if (program(words[0]) !== 'env') return SHELLS.has(program(words[0]));
  return SHELLS.has(program(words.slice(1).find((word) => !word.startsWith('-') && !word.includes('='))));
}

/**
 * The script a robur worker runs for `run`: the run's env as `export K='V'` lines at the top (after
 * a `#!` line, so the shebang still picks the interpreter). A `#!` naming another interpreter (a
 * Python script, say) could not read those lines: the script is then a shell script that writes the
 * job's own to `.kiln-script` in the work dir (a dot-file: builder-worker sends none as an artifact,
 * and removes the dir) and execs it with the env exported. Names that are not shell names cannot be
 * exported and are left out (returned, for the log).
 */
export function roburScriptOf(script: string, env: Record<string, string>): { script: string; skipped: string[] } {
  const names = Object.keys(env);
  if (names.length === 0) return { script, skipped: [] };
  const skipped = names.filter((name) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name));
  const exports = names.filter((name) => !skipped.includes(name)).map((name) => `export ${name}=${shellQuote(env[name]!)}\n`).join('');
  if (exports === '') return { script, skipped };
  if (!script.startsWith('#!')) return { script: exports + script, skipped };
  const end = script.indexOf('\n');
  const shebang = end === -1 ? script : script.slice(0, end);
  if (!namesAShell(shebang)) return { script: interpreterScriptWithEnv(script, exports), skipped };
  if (end === -1) return { script: `${script}\n${exports}`, skipped };
  return { script: script.slice(0, end + 1) + exports + script.slice(end + 1), skipped };
}

/** A shell script that writes `script` (its own `#!` kept) to `.kiln-script` and execs it with `exports` applied. */
function interpreterScriptWithEnv(script: string, exports: string): string {
  const lines = script.split('\n');
  // A here-document delimiter that is no line of the script.
  let delimiter = 'KILN_SCRIPT_END';
  while (lines.includes(delimiter)) delimiter += '_';
  return [
    '#!/bin/sh',
    '# Kiln: the job\'s script names its own interpreter, which cannot read shell exports: it is written',
    '# to .kiln-script (a dot-file, never an artifact) and run with the job\'s environment.',
    'set -e',
    `cat > .kiln-script <<'${delimiter}'`,
    `${script.endsWith('\n') ? script : `${script}\n`}${delimiter}`,
    'chmod 700 .kiln-script',
    `${exports}exec ./.kiln-script`,
    '',
  ].join('\n');
}

/** What the session is doing. */
type Phase =
  | { kind: 'hello' }
  | { kind: 'waiting'; session: WorkerSession }
  /** `sent`: Job_schedule went out (false: the connection had closed before the run was handed over). */
  | { kind: 'running'; session: WorkerSession; run: Run; nextSeq: number; sent: boolean }
  /** Its run was ended or cut off (finished, cancelled, released): nothing more it sends counts. */
  | { kind: 'over'; session: WorkerSession };

/** The registry's view of a robur worker: sending is the connection's, everything else is closing it. */
class RoburLink implements WorkerLink {
  readonly identity: string;
  readonly session = undefined;
  readonly labels: Record<string, string> = {};
  readonly capacity = 1;
  readonly once = true;

  constructor(readonly name: string, readonly platform: string, readonly connId: string | undefined, private readonly owner: RoburWorkerSession) {
    this.identity = identityKey({ kind: 'robur', name });
  }

  assign(run: Run): void {
    this.owner.assigned(run);
  }

  cancel(runId: string, reason: string): void {
    this.owner.cancelled(runId, reason);
  }

  release(runId: string, reason: string): void {
    this.owner.released(runId, reason);
  }

  done(): void {
    // builder's worker is told nothing after Job_finished: it closes and exits.
  }

  notice(message: string): void {
    // Nothing on robur's wire carries it (a dropped platform's workers wait, as builder's do).
    this.owner.log.debug({ worker: this.name }, `not told the robur worker: ${message}`);
  }
}

/** One robur worker connection's session (see the module's comment). */
export class RoburWorkerSession implements RoburPeerSession {
  private phase: Phase = { kind: 'hello' };
  /** Store and lifecycle calls, one at a time in order: a cancel's end before the close's. */
  private chain: Promise<void> = Promise.resolve();
  readonly log: Logger;
  private warnedUuid = false;

  constructor(private readonly conn: RoburConnection, private readonly parts: RoburWorkerParts) {
    this.log = parts.log;
  }

  /** Queues `step` behind what is in hand; its failure is logged, never thrown. */
  private then(what: string, step: () => Promise<void>): Promise<void> {
    this.chain = this.chain.then(step).catch((raw) => this.log.error({ err: coerceError(raw), peer: this.conn.peer }, what));
    return this.chain;
  }

  async handle(cmds: RoburCmd[]): Promise<void> {
    const lines: StoredLine[] = [];
    for (const cmd of cmds) {
      if (cmd.type === 'output') {
        const line = this.line(cmd.uuid, cmd.line);
        if (line) lines.push(line);
        continue;
      }
      this.flushLines(lines);
      if (cmd.type === 'job-requested') await this.requested(cmd.platform);
      else if (cmd.type === 'job-finished') await this.finished(cmd.uuid, cmd.result, cmd.files);
      else throw new ProtocolError(`a robur worker may not send ${cmd.type} here`);
    }
    this.flushLines(lines);
  }

  /** One TCP read's lines go to the console in one call (the hub batches its writes anyway). */
  private flushLines(lines: StoredLine[]): void {
    if (lines.length === 0 || this.phase.kind !== 'running') return;
    const taken = lines.splice(0);
    try {
      this.parts.lifecycle.output(this.phase.session, this.phase.run.id, taken);
    } catch (raw) {
      // The run ended meanwhile (a deadline, say): its late lines have nowhere to go.
      this.log.debug({ err: coerceError(raw).message, peer: this.conn.peer }, 'robur worker output after its run ended');
    }
  }

  /** A console line for an `Output`, stamped now; undefined when no run is held (cancelled, released). */
  private line(uuid: string, text: string): StoredLine | undefined {
    if (this.phase.kind === 'over') return undefined;
    if (this.phase.kind !== 'running') throw new ProtocolError('Output before a job was scheduled');
    this.checkUuid(uuid);
    return { seq: this.phase.nextSeq++, ts: this.parts.now(), text: text.length > MAX_LINE_CHARS ? text.slice(0, MAX_LINE_CHARS) : text };
  }

  /** builder only warns about a uuid other than the one it dispatched, and uses its own. */
  private checkUuid(uuid: string): void {
    if (this.phase.kind !== 'running' || uuid === this.phase.run.id || this.warnedUuid) return;
    this.warnedUuid = true;
    this.log.warn({ peer: this.conn.peer, sent: uuid, runId: this.phase.run.id }, 'robur worker used another uuid than its job\'s; taken as its job\'s');
  }

  private async requested(platform: string): Promise<void> {
    if (this.phase.kind !== 'hello') throw new ProtocolError('a second Job_requested on one connection');
    // Kiln's rule, not only builder's: a platform names queues and template files (never a path).
    if (!isValidPlatform(platform)) throw new ProtocolError(`Job_requested: ${PLATFORM_RULE} (up to 64 characters)`);
    const { store, workers, now } = this.parts;
    const name = `robur-${platform}-${this.conn.peer}`;
    const connId = this.parts.serverId === undefined ? undefined : randomUUID();
    const at = now();
    const claimed = await store.recordWorker(
      { name, platform, labels: {}, capacity: 1, hostname: this.conn.peer, os: 'robur', arch: '', version: 'builder-worker (protocol 5)', connected: true, connectedAt: at, lastSeen: at },
      connId === undefined ? undefined : { serverId: this.parts.serverId!, connId },
    );
    if (!claimed || workers.session(name)) throw new ProtocolError(`worker name ${name} is connected already`);
    const session = workers.create(new RoburLink(name, platform, connId, this));
    this.phase = { kind: 'waiting', session };
    // Closed now, not when gone() gets its turn: no run may be handed to a connection already gone.
    void this.conn.closed.then(() => workers.close(session));
    // Closed while the name was recorded: gone() lets it go; it is never listed.
    if (this.conn.isClosed) return;
    workers.join(session);
    this.log.info({ worker: name, platform }, 'robur worker waiting for a job');
  }

  get holdsRun(): boolean {
    return this.phase.kind === 'running';
  }

  async tooLarge(size: number, limit: number): Promise<void> {
    const phase = this.phase;
    if (phase.kind === 'running') {
      this.phase = { kind: 'over', session: phase.session };
      // Ended here with the real reason: lost, it would be retried and fail the same way.
      const result: RunResult = { kind: 'aborted', reason: `the robur worker's Job_finished frame is ${size} bytes, over the robur port's limit of ${limit} bytes (the files are held whole in memory)` };
      await this.then('could not record a robur run\'s oversized end', () => this.parts.lifecycle.workerFinished(phase.session, phase.run.id, result, undefined));
    }
    this.conn.close(`a frame of ${size} bytes is over the limit of ${limit}`);
  }

  /** The dispatcher sent it a run: Job_schedule, with the env exported at the top. */
  assigned(run: Run): void {
    if (this.phase.kind !== 'waiting') {
      // Never happens (once, capacity 1); were it to, the run must not be held by a session that cannot run it.
      this.log.error({ runId: run.id, peer: this.conn.peer }, 'a second run for a robur worker; closing it');
      this.conn.close('a second run was given to a one-job robur worker');
      return;
    }
    const { script, skipped } = roburScriptOf(run.script ?? '', run.env);
    if (skipped.length > 0) this.log.warn({ runId: run.id, names: skipped }, 'env names that are not shell names are not exported to a robur worker');
    const sent = !this.conn.isClosed;
    this.phase = { kind: 'running', session: this.phase.session, run, nextSeq: run.firstSeq, sent };
    this.conn.send({ type: 'job-schedule', uuid: run.id, job: { name: run.job, script, platform: run.platform } });
  }

  /**
   * A cancel: robur's worker cannot be told, so its connection is closed and the run ends
   * `cancelled` here (stopped by the cancel) before the close lets go of the worker.
   */
  cancelled(runId: string, reason: string): void {
    const phase = this.phase;
    if (phase.kind !== 'running' || phase.run.id !== runId) return;
    this.phase = { kind: 'over', session: phase.session };
    const result: RunResult = { kind: 'aborted', reason: `${reason}; the robur worker's connection was closed (it cannot be told to stop)` };
    void this.then('could not record a cancelled robur run', () => this.parts.lifecycle.workerFinished(phase.session, runId, result, 'cancel'));
    this.conn.close(`run ${runId} ${reason}`);
  }

  /** The server ended the run itself (a deadline, say): the worker is cut off, its result would not count. */
  released(runId: string, reason: string): void {
    const phase = this.phase;
    if (phase.kind !== 'running' || phase.run.id !== runId) return;
    this.phase = { kind: 'over', session: phase.session };
    this.conn.close(`run ${runId} was ended by the server: ${reason}`);
  }

  private async finished(uuid: string, result: Parameters<typeof runResultOf>[0], files: RoburFile[]): Promise<void> {
    const phase = this.phase;
    if (phase.kind === 'over') return;
    if (phase.kind !== 'running') throw new ProtocolError('Job_finished before a job was scheduled');
    this.checkUuid(uuid);
    this.phase = { kind: 'over', session: phase.session };
    await this.then('could not record a robur run\'s end', () => this.recordEnd(phase.session, phase.run.id, runResultOf(result), files));
    // builder closes after Job_finished too; the worker exits.
    this.conn.close('job finished');
  }

  /**
   * Keeps the files and ends the run. builder's worker sends its result once and exits: while the
   * store is away the server holds it and writes it again with the backoff (the files are kept by
   * path, so a second pass stores nothing twice), for up to END_RETRY_FOR_MS or until the server
   * stops; past that, or on another error, the run is left to the reaper (lost, then retried), never
   * silently dropped.
   * gone() waits behind it on the chain, so the run is not lost meanwhile.
   */
  private async recordEnd(session: WorkerSession, runId: string, result: RunResult, files: RoburFile[]): Promise<void> {
    const since = Date.now();
    for (let attempts = 1; ; attempts += 1) {
      try {
        const skipped = await this.keepFiles(runId, files);
        await this.parts.lifecycle.workerFinished(session, runId, result, undefined, skipped);
        return;
      } catch (raw) {
        const err = coerceError(raw);
        if (!(err instanceof StoreUnavailableError) || this.parts.stopping?.aborted || Date.now() - since >= END_RETRY_FOR_MS) throw err;
        const wait = backoffMs(attempts, END_RETRY);
        this.log.warn({ runId, err: err.message, attempts, retryInMs: Math.round(wait) }, 'the store refused a robur run\'s end; the server holds it and tries again');
        // A server stopping meanwhile is not held up (the listener's stop waits for this session): one last try, then the reaper's.
        await delay(wait, undefined, { signal: this.parts.stopping, ref: false }).catch(() => undefined);
      }
    }
  }

  /** Stores each file as an artifact of the run; a file refused (a bad path, a limit) is a skipped artifact with the reason. */
  private async keepFiles(runId: string, files: RoburFile[]): Promise<SkippedArtifact[]> {
    const skipped: SkippedArtifact[] = [];
    for (const file of files) {
      const size = file.data.length;
      try {
        const path = normaliseArtifactPath(file.path);
        const sha256 = createHash('sha256').update(file.data).digest('hex');
        await keepArtifact(this.parts, runId, { path, size, sha256, mode: 0o644 }, Readable.from([file.data]));
      } catch (raw) {
        const err = coerceError(raw);
        // The store or the blob store failing is the server's trouble: the run's end must not be recorded without its files.
        if (err.status >= 500) throw err;
        skipped.push({ path: file.path.slice(0, 4096), size, reason: err.message.slice(0, 1000) });
      }
    }
    if (skipped.length > 0) this.log.info({ runId, skipped: skipped.length }, 'robur worker files not kept');
    return skipped;
  }

  async gone(): Promise<void> {
    const phase = this.phase;
    if (phase.kind === 'hello') return;
    const { workers, lifecycle } = this.parts;
    const { session } = phase;
    workers.close(session);
    await this.then('could not record a lost robur worker', async () => {
      const held = phase.kind === 'running' ? phase : undefined;
      this.log.info({ worker: session.name, running: held?.run.id }, 'robur worker disconnected');
      await lifecycle.workerGone(session);
      if (held && !held.sent) {
        // Handed over after the close: it never ran, so it goes back to its queue without using a retry.
        await lifecycle.orphaned(held.run, `robur worker ${session.name} closed its connection before the job was sent`);
      } else if (held) {
        // It can never re-attach (a new connection is a new worker): its run is lost now, not after the grace.
        await lifecycle.loseRun(held.run.id, session.name, held.run.attempt, `worker lost (robur worker ${session.name} closed its connection before Job_finished; it cannot re-attach)`);
      }
      // A connection is a worker of one job: its row would list it for ever (its runs keep the name as text).
      if (await this.parts.store.forgetWorker(session.name, session.connId)) this.log.info(`robur worker ${session.name} forgotten (its connection ended)`);
    });
  }
}
