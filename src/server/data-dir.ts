/**
 * The server's data dir: private to the user that runs the server (it holds the tokens, every
 * job's script and env, every console), and held by one server at a time.
 *
 * The hold is an SQLite exclusive lock on `<data>/server.lock` (a POSIX record lock underneath):
 * the kernel drops it when the process dies however it dies, SIGKILL included, so there is no
 * stale lock to clean up and no pid to trust after a reboot or a pid reuse. Who holds it is
 * written beside it in `server.owner`, only for the message a second server prints.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { DataDirInUseError, DataDirUnsafeError } from '../errors.js';
import { openDatabase } from '../store/sqlite/open-database.js';

/** The data dir, held until release(). */
export interface DataDirHold {
  /** Lets another server take the data dir (idempotent). */
  release(): void;
}

/** Who holds a data dir, as `server.owner` records it. */
interface Owner {
  pid: number;
  host: string;
  since: string;
}

/**
 * Makes `dir` (created if missing) private and takes it for this server; throws
 * DataDirInUseError, naming the holder, when another live server has it. A store file outside the
 * data dir (`--store sqlite:PATH`) is held too, beside it: two servers with their own data dirs
 * must not share one database either.
 */
export function holdDataDir(dir: string, log: Logger, storeFile?: string): DataDirHold {
  makePrivate(dir, log);
  const holds = [holdLock(path.join(dir, 'server.lock'), path.join(dir, 'server.owner'), `the data dir ${dir}`)];
  if (storeFile !== undefined) {
    try {
      mkdirSync(path.dirname(storeFile), { recursive: true, mode: 0o700 });
      holds.push(holdLock(`${storeFile}.lock`, `${storeFile}.owner`, `the store ${storeFile}`));
    } catch (raw) {
      holds[0]!.release();
      throw raw;
    }
  }
  return { release: () => holds.forEach((hold) => hold.release()) };
}

/**
 * Holds an SQLite store file as the servers that may use it do, for a command that must run while
 * none does (`kiln migrate-store`): `FILE.lock` (a server given `--store sqlite:FILE`) and, for a
 * data dir's own `kiln.db`, the data dir (a server given `--data DIR`). Throws DataDirInUseError
 * naming the server that holds either.
 */
export function holdSqliteStore(file: string): DataDirHold {
  const holds: DataDirHold[] = [];
  try {
    if (path.basename(file) === 'kiln.db') {
      const dir = path.dirname(file);
      holds.push(holdLock(path.join(dir, 'server.lock'), path.join(dir, 'server.owner'), `the data dir ${dir}`));
    }
    holds.push(holdLock(`${file}.lock`, `${file}.owner`, `the store ${file}`));
  } catch (raw) {
    holds.forEach((hold) => hold.release());
    throw raw;
  }
  return { release: () => holds.forEach((hold) => hold.release()) };
}

/** Takes the exclusive lock on `lockFile` (recording the holder in `ownerFile`), or throws naming the holder of `what`. */
function holdLock(lockFile: string, ownerFile: string, what: string): DataDirHold {
  // Created private when missing. Never opened and closed otherwise: closing any descriptor of a
  // file drops every POSIX lock this process holds on it.
  try {
    writeFileSync(lockFile, '', { flag: 'wx', mode: 0o600 });
  } catch (raw) {
    if ((raw as NodeJS.ErrnoException).code !== 'EEXIST') throw raw;
  }
  // timeout 0: a held lock answers SQLITE_BUSY at once instead of after the default 5 s wait.
  const db = openDatabase(lockFile, { timeout: 0 });
  try {
    // In exclusive locking mode SQLite keeps the lock a write took until the connection closes.
    db.pragma('locking_mode = EXCLUSIVE');
    // No journal file beside it: the table only exists to be written.
    db.pragma('journal_mode = MEMORY');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS holds (pid INTEGER NOT NULL, host TEXT NOT NULL, since TEXT NOT NULL)');
    db.exec('DELETE FROM holds');
    db.prepare('INSERT INTO holds (pid, host, since) VALUES (?, ?, ?)').run(process.pid, os.hostname(), new Date().toISOString());
    db.exec('COMMIT');
  } catch (raw) {
    db.close();
    if ((raw as { code?: unknown }).code === 'SQLITE_BUSY') throw new DataDirInUseError(what, describeHolder(ownerFile));
    throw raw;
  }
  const owner: Owner = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
  const temp = `${ownerFile}.${process.pid}`;
  writeFileSync(temp, JSON.stringify(owner) + '\n', { mode: 0o600 });
  renameSync(temp, ownerFile);
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      rmSync(ownerFile, { force: true });
      db.close();
    },
  };
}

/** "the server pid N on host H since T", from what the holder recorded. */
function describeHolder(ownerFile: string): string {
  try {
    const owner = JSON.parse(readFileSync(ownerFile, 'utf8')) as Owner;
    return `the server pid ${owner.pid} on host ${owner.host} (since ${owner.since})`;
  } catch {
    // The holder is between taking the lock and writing the file, or the file was removed by hand.
    return 'another server (it has not recorded its pid yet)';
  }
}

/**
 * Creates `dir` 0700, or tightens an existing looser one of ours to 0700: it is the server's own
 * dir, so making it private is friendlier than refusing to start. A dir of another user that we
 * cannot chmod is refused.
 */
function makePrivate(dir: string, log: Logger): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { mode, uid } = statSync(dir);
  if ((mode & 0o077) === 0) return;
  const was = (mode & 0o777).toString(8).padStart(4, '0');
  try {
    chmodSync(dir, 0o700);
  } catch (raw) {
    throw new DataDirUnsafeError(dir, `is mode ${was}, owned by uid ${uid}, and cannot be made private (${(raw as NodeJS.ErrnoException).code})`);
  }
  log.warn({ dataDir: dir, was }, 'the data dir was open to other users: made it private (0700)');
}
