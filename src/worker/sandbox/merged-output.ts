/**
 * One stream for a job's stdout and stderr together, in the order they were written, without a
 * shell to say `2>&1`. Node cannot make a socket pair, so the worker listens on a Linux abstract
 * unix socket (no file to leave behind) and, per job, connects to itself: the connected end goes
 * to the child as both fd 1 and fd 2 (a socket, as with stdio 'pipe', whose ends libuv also makes
 * as a socket pair; libuv makes the child's stdio blocking), the accepted end is what the worker
 * reads. The first bytes on each connection are a random token that pairs the two ends; anything
 * else that connects is dropped.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

const TOKEN_BYTES = 16;

/** A job's output channel: give `writer` to the child, then close it; read `reader`. */
export interface MergedOutput {
  writer: net.Socket;
  reader: net.Socket;
}

let listening: Promise<{ path: string; waiting: Map<string, (reader: net.Socket) => void> }> | undefined;

/** The worker's listener, made on first use; it never keeps the process alive. */
function listener() {
  listening ??= new Promise((resolve, reject) => {
    const waiting = new Map<string, (reader: net.Socket) => void>();
    const path = `\0kiln-output-${process.pid}-${randomBytes(8).toString('hex')}`;
    const server = net.createServer((socket) => {
      const drop = () => socket.destroy();
      // A connection that never says its token is dropped; it does not keep the worker alive meanwhile.
      const timer = setTimeout(drop, 5000).unref();
      socket.once('error', drop);
      socket.once('readable', function pair() {
        const token = socket.read(TOKEN_BYTES) as Buffer | null;
        if (token === null) return void (socket.readableEnded ? drop() : socket.once('readable', pair));
        clearTimeout(timer);
        socket.removeListener('error', drop);
        const deliver = waiting.get(token.toString('hex'));
        if (!deliver) return drop();
        waiting.delete(token.toString('hex'));
        deliver(socket);
      });
    });
    server.once('error', (err) => {
      listening = undefined;
      reject(err);
    });
    server.listen(path, () => {
      server.unref();
      resolve({ path, waiting });
    });
  });
  return listening;
}

/** A channel opened ahead of the run that takes it; its sockets do not keep the worker alive meanwhile. */
let spare: Promise<MergedOutput> | undefined;

/**
 * A channel for the next job: the one opened ahead if there is one, and the next one is opened
 * now, off the run's way (a connect and an accept with its token take a few loop turns). Rejects
 * as openMergedOutput does.
 */
export async function takeMergedOutput(): Promise<MergedOutput> {
  const ready = spare;
  spare = undefined;
  const channel = (await ready?.catch(() => undefined)) ?? (await openMergedOutput());
  channel.writer.ref();
  channel.reader.ref();
  if (!spare) {
    const next = openMergedOutput().then((opened) => {
      opened.writer.unref();
      opened.reader.unref();
      return opened;
    });
    spare = next;
    // A spare that cannot be opened is opened again by the run that takes it, which hears why.
    next.catch(() => {
      if (spare === next) spare = undefined;
    });
  }
  return channel;
}

/** The channel opened ahead, if any. @internal for tests */
export function spareMergedOutput(): Promise<MergedOutput> | undefined {
  return spare;
}

/** Opens a channel; rejects where abstract sockets do not exist (the caller then merges with a shell). */
export async function openMergedOutput(): Promise<MergedOutput> {
  const { path, waiting } = await listener();
  const token = randomBytes(TOKEN_BYTES);
  const accepted = new Promise<net.Socket>((resolve) => waiting.set(token.toString('hex'), resolve));
  const writer = net.connect(path);
  try {
    await new Promise<void>((resolve, reject) => {
      writer.once('error', reject);
      writer.once('connect', () => {
        writer.removeListener('error', reject);
        resolve();
      });
    });
    // Only the child writes from here on: the worker never reads this end.
    writer.pause();
    writer.write(token);
    let timer: NodeJS.Timeout | undefined;
    const reader = await Promise.race([
      accepted,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('the output channel was not accepted')), 5000))),
    ]).finally(() => clearTimeout(timer));
    return { writer, reader };
  } catch (raw) {
    waiting.delete(token.toString('hex'));
    writer.destroy();
    throw raw;
  }
}
