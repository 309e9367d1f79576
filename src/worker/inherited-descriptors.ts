/**
 * Descriptors a worker inherited from whoever started it (a supervisor's leaked pipe, a shell's
 * `200<file`, a token pipe it did not read) stay open across exec, so every job would inherit them
 * too and could read what they hold. Node itself marks only the unbroken run of descriptors from 0
 * close-on-exec at start (one past a gap stays inheritable), and opens its own close-on-exec, so
 * every descriptor above stdio still without that flag is an inherited one: the worker closes them
 * before any job starts.
 */
import { closeSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';

/** O_CLOEXEC as /proc/PID/fdinfo's octal `flags` line shows it on Linux. */
const O_CLOEXEC = 0o2000000;

/**
 * Closes every inherited descriptor above stdio, except `keep` (Node's own IPC channel, if any);
 * returns the numbers closed. Where /proc is not there to say which they are, closes nothing.
 */
export function closeInheritedDescriptors(keep: ReadonlySet<number> = ipcChannel()): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc/self/fd');
  } catch {
    return []; // No /proc (not Linux): nothing can tell an inherited descriptor from Node's.
  }
  const closed: number[] = [];
  for (const entry of entries) {
    const fd = Number(entry);
    if (!Number.isInteger(fd) || fd <= 2 || keep.has(fd) || closeOnExec(fd) || readByOpenssl(fd)) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {
      // Gone meanwhile (the listing's own descriptor, say): nothing left to close.
    }
  }
  return closed;
}

/** Whether `fd` is close-on-exec; a descriptor that is gone counts as such (there is nothing to close). */
function closeOnExec(fd: number): boolean {
  try {
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    return flags !== null && (parseInt(flags[1]!, 8) & O_CLOEXEC) !== 0;
  } catch {
    return true;
  }
}

/**
 * Directories of OpenSSL's own files on Debian and in OpenSSL's default build (its config and CA
 * certificates), and the files the environment points it at.
 */
const OPENSSL_DIRS = ['/etc/ssl/', '/usr/lib/ssl/', '/usr/local/ssl/'];
const OPENSSL_ENV = ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'OPENSSL_CONF'];

/**
 * Whether `fd` is a file OpenSSL is reading on one of Node's own threads. It opens them with fopen,
 * so without close-on-exec, and Node 24 reads NODE_EXTRA_CA_CERTS off the main thread while the
 * worker starts: closing that descriptor under it failed the read and aborted the worker (SIGABRT,
 * about 1 start in 15). They are public certificates and configuration, so a job that inherited one
 * would learn nothing: left alone.
 */
function readByOpenssl(fd: number): boolean {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return false;
  }
  if (OPENSSL_DIRS.some((dir) => target.startsWith(dir))) return true;
  return OPENSSL_ENV.some((name) => {
    const file = process.env[name];
    if (!file) return false;
    try {
      return realpathSync(file) === target;
    } catch {
      return false;
    }
  });
}

/** The descriptor of Node's IPC channel with its parent, when it was started with one. */
function ipcChannel(): Set<number> {
  const fd = Number(process.env.NODE_CHANNEL_FD);
  return new Set(Number.isInteger(fd) ? [fd] : []);
}
