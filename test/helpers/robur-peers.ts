/**
 * Stand-ins for robur's `builder-worker` and `builder-client`, written from
 * shared/reference/robur-protocol.md (§1.5, §1.7) as simply as possible: there is no OCaml on this
 * machine, so the real programs cannot run in the suite. They speak through Kiln's robur codec over
 * real TCP, one connection each, as the real ones do.
 *
 * The worker is usable in-process (`roburWorker`) and as a child process (bench, or a test that
 * kills it for real):
 *   node --import tsx test/helpers/robur-peers.ts worker PORT PLATFORM [HOST]
 * which prints `scheduled UUID` when it gets its job and exits 0 after Job_finished (1 on a
 * protocol error), as builder-worker does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync, lstatSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { decodeCmd, encodeCmd, frameOf, FrameReader, type RoburCmd, type RoburFile, type RoburResult } from '../../src/protocol/robur/index.js';

/** What a robur peer reads from the server, one message at a time. */
class Peer {
  private readonly reader = new FrameReader(1024 * 1024 * 1024);
  private readonly queue: RoburCmd[] = [];
  private waiter: ((cmd: RoburCmd | undefined) => void) | undefined;
  private ended = false;
  /** Resolves when the server closed the connection (or it failed). */
  readonly closed: Promise<void>;

  constructor(readonly socket: net.Socket, private readonly splitWrites: boolean) {
    socket.on('data', (chunk: Buffer) => {
      for (const body of this.reader.push(chunk)) this.deliver(decodeCmd(body));
    });
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.ended = true;
      this.deliver(undefined);
      resolve();
    }));
    socket.on('error', () => {});
  }

  private deliver(cmd: RoburCmd | undefined): void {
    if (cmd) this.queue.push(cmd);
    const waiter = this.waiter;
    if (waiter && (this.queue.length > 0 || this.ended)) {
      this.waiter = undefined;
      waiter(this.queue.shift());
    }
  }

  /** The next message, or undefined once the server closed. */
  next(): Promise<RoburCmd | undefined> {
    if (this.queue.length > 0 || this.ended) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /**
   * Sends one message; with splitWrites the 8-byte header and the body go as two writes with a
   * pause between, so they arrive in separate TCP segments (builder writes them so, without
   * TCP_NODELAY). Resolves once handed to the kernel; false when the connection is gone.
   */
  async send(cmd: RoburCmd): Promise<boolean> {
    if (this.socket.destroyed || !this.socket.writable) return false;
    const frame = frameOf(encodeCmd(cmd));
    const write = (bytes: Buffer) => new Promise<boolean>((resolve) => this.socket.write(bytes, (err) => resolve(!err)));
    if (!this.splitWrites) return write(frame);
    if (!(await write(frame.subarray(0, 8)))) return false;
    // A pause, so that the header is its own segment (TCP_NODELAY is set on this side).
    await new Promise((resolve) => setTimeout(resolve, 30));
    return write(frame.subarray(8));
  }
}

/** Connects to the robur port and says hello; resolves with the peer once Server_hello came. */
async function hello(port: number, host: string, role: 'client' | 'worker', splitWrites = false): Promise<Peer> {
  const socket = net.connect({ port, host });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.setNoDelay(true);
  const peer = new Peer(socket, splitWrites);
  await peer.send({ type: 'client-hello', peer: role, version: role === 'client' ? 13 : 5 });
  const reply = await peer.next();
  if (reply?.type !== 'server-hello') {
    socket.destroy();
    throw new Error(`robur server answered the hello with ${reply?.type ?? 'a close'}`);
  }
  return peer;
}

/** Options of the stand-in worker. */
export interface RoburWorkerOptions {
  host?: string;
  /** Send every frame as two writes (header, then body), in separate TCP segments. */
  splitWrites?: boolean;
}

/** A running stand-in worker. */
export interface RoburWorkerHandle {
  /** Resolves with the Job_schedule it got. */
  scheduled: Promise<Extract<RoburCmd, { type: 'job-schedule' }>>;
  /** Resolves when it is done: the result it sent, or `closed` when the server closed first. */
  done: Promise<{ sent?: RoburResult; closed: boolean; lines: string[] }>;
  /** Dies at once as a killed worker process does: its script is killed, the connection reset. */
  kill(): void;
}

/** Every non-dot regular file under `dir` except the top-level script.sh, paths relative with `/` (builder-worker's artifacts). */
function collectFiles(dir: string, prefix = ''): RoburFile[] {
  const files: RoburFile[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    const relative = prefix === '' ? name : `${prefix}/${name}`;
    if (relative === 'script.sh') continue;
    const full = path.join(dir, name);
    const stat = lstatSync(full);
    if (stat.isDirectory()) files.push(...collectFiles(full, relative));
    else if (stat.isFile()) files.push({ path: relative, data: readFileSync(full) });
  }
  return files;
}

/**
 * The signal number builder-worker reports for WSIGNALED: OCaml's own (negative) number for the
 * signals OCaml knows (Sys.sigkill = -7 ...; the few a test uses are here), else the POSIX one.
 */
const OCAML_SIGNALS: Partial<Record<NodeJS.Signals, number>> = { SIGABRT: -1, SIGHUP: -4, SIGINT: -6, SIGKILL: -7, SIGSEGV: -10, SIGTERM: -11 };
function signalNumber(signal: NodeJS.Signals): number {
  return OCAML_SIGNALS[signal] ?? os.constants.signals[signal];
}

/**
 * Does what builder-worker does (reference §1.7): hello, Job_requested PLATFORM, runs the script
 * with /bin/sh in a fresh temp work dir (without builder's `timeout 1h`, see below), sends each line of its merged stdout and stderr as
 * Output, then Job_finished with the result and every non-dot regular file except script.sh, and
 * closes. A failed send kills the script, as builder-worker's `kill 0 9`.
 */
export function roburWorker(port: number, platform: string, options: RoburWorkerOptions = {}): RoburWorkerHandle {
  let child: ChildProcess | undefined;
  let peer: Peer | undefined;
  let killed = false;
  let onScheduled!: (cmd: Extract<RoburCmd, { type: 'job-schedule' }>) => void;
  let onScheduleFailed!: (err: Error) => void;
  const scheduled = new Promise<Extract<RoburCmd, { type: 'job-schedule' }>>((resolve, reject) => {
    onScheduled = resolve;
    onScheduleFailed = reject;
  });
  scheduled.catch(() => {});
  const run = async (): Promise<{ sent?: RoburResult; closed: boolean; lines: string[] }> => {
    peer = await hello(port, options.host ?? '127.0.0.1', 'worker', options.splitWrites);
    await peer.send({ type: 'job-requested', platform });
    const job = await peer.next();
    if (job?.type !== 'job-schedule') {
      const err = new Error(`expected Job_schedule, got ${job?.type ?? 'a close'}`);
      onScheduleFailed(err);
      if (!job) return { closed: true, lines: [] };
      throw err;
    }
    onScheduled(job);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'builder-'));
    try {
      const script = path.join(dir, 'script.sh');
      writeFileSync(script, job.job.script, { mode: 0o764 });
      // builder-worker runs `timeout 1h SCRIPT`; timeout puts the script in a process group of its
      // own, which the stand-in could not kill with its own group, so it runs the script directly.
      child = spawn('/bin/sh', ['-ec', `${script} 2>&1`], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
      const lines: string[] = [];
      let partial = '';
      let sending: Promise<unknown> = Promise.resolve();
      let broken = false;
      const sendLine = (line: string) => {
        lines.push(line);
        sending = sending.then(async () => {
          if (broken) return;
          if (!(await peer!.send({ type: 'output', uuid: job.uuid, line }))) {
            broken = true;
            // builder-worker's sender: a failed send kills the whole job.
            if (child?.pid) try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
          }
        });
      };
      child.stdout!.on('data', (chunk: Buffer) => {
        const parts = (partial + chunk.toString('utf8')).split('\n');
        partial = parts.pop()!;
        for (const line of parts) sendLine(line);
      });
      const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child!.once('close', (code, signal) => resolve({ code, signal })));
      if (partial !== '') sendLine(partial);
      await sending;
      if (broken || killed) return { closed: true, lines };
      const result: RoburResult = exit.signal ? { kind: 'signalled', signal: signalNumber(exit.signal) } : { kind: 'exited', code: exit.code ?? 0 };
      const files = result.kind === 'exited' ? collectFiles(dir) : [];
      const sent = await peer.send({ type: 'job-finished', uuid: job.uuid, result, files });
      peer.socket.end();
      return sent ? { sent: result, closed: false, lines } : { closed: true, lines };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const done = run();
  // A failure before the job came (no connection, say) fails `scheduled` too.
  done.catch((err: Error) => onScheduleFailed(err));
  return {
    scheduled,
    done,
    kill() {
      killed = true;
      if (child?.pid) try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
      peer?.socket.resetAndDestroy();
    },
  };
}

/**
 * Does what builder-client does for one command (reference §1.5): hello, the command, then reads
 * every reply until Success or Failure (or the close). Resolves with the replies after the hello.
 */
export async function roburClient(port: number, command: RoburCmd, host = '127.0.0.1'): Promise<RoburCmd[]> {
  const peer = await hello(port, host, 'client');
  await peer.send(command);
  const replies: RoburCmd[] = [];
  for (;;) {
    const reply = await peer.next();
    if (!reply) break;
    replies.push(reply);
    if (reply.type === 'success' || reply.type === 'failure') break;
  }
  peer.socket.destroy();
  return replies;
}

// As a child process: `node --import tsx test/helpers/robur-peers.ts worker PORT PLATFORM [HOST]`.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [role, port, platform, host] = process.argv.slice(2);
  if (role !== 'worker' || !port || !platform) {
    process.stderr.write('usage: robur-peers.ts worker PORT PLATFORM [HOST]\n');
    process.exit(2);
  }
  const worker = roburWorker(Number(port), platform, { host });
  void worker.scheduled.then((job) => process.stdout.write(`scheduled ${job.uuid}\n`), () => {});
  worker.done.then(
    (outcome) => process.exit(outcome.closed ? 1 : 0),
    (err: Error) => {
      process.stderr.write(`robur worker: ${err.message}\n`);
      process.exit(1);
    },
  );
}
