/**
 * Artifact blobs, named by their sha256: each content is stored once whatever the runs that
 * produced it, in a store every server of the farm reaches (issue 16): a directory (`dir:PATH`,
 * on shared storage when there are several servers; `<data>/artifacts` by default) or an S3
 * bucket (`s3://BUCKET/PREFIX?endpoint=...`). An upload is streamed to a local temp file while its
 * size and hash are checked, and kept only when both match. Every upload of a blob, new or already
 * stored, is recorded in the store's `blobs` table (touchBlob) before the blob is kept: the sweeper
 * counts its grace from that record, on whichever server the upload came in.
 */
import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdirSync } from 'node:fs';
import { readdir, rename, rm, stat, unlink, utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isSha256 } from '../core/index.js';
import { BlobMissingError, ConfigError, InvalidRequestError, PayloadTooLargeError } from '../errors.js';
import type { JobStore } from '../store/index.js';
import { parseS3Url, type S3Location, type S3Settings } from './s3-url.js';

/** How much a run may keep. */
export interface ArtifactLimits {
  /** Largest single file (bytes). */
  fileBytes: number;
  /** Most bytes of artifacts one run may keep, all files together. */
  runBytes: number;
}

export const DEFAULT_ARTIFACT_LIMITS: ArtifactLimits = { fileBytes: 4 * 1024 ** 3, runBytes: 16 * 1024 ** 3 };

/** A blob as the store lists it (for the sweeper's backfill of blobs stored before the `blobs` table). */
export interface StoredBlob {
  sha256: string;
  size: number;
  /** When it was written (file mtime, object LastModified), ms. */
  modifiedAt: number;
}

/** Where the farm's artifact blobs live; every server of a farm must use the same one. */
export interface BlobStore {
  /** The store for logs and `kiln info`, without secrets. */
  readonly description: string;
  readonly limits: ArtifactLimits;
  /**
   * Streams `source` in, checking it is exactly `size` bytes with that `sha256`; nothing is kept
   * otherwise. A blob already stored is not stored again, but its use is recorded all the same.
   */
  put(source: Readable, expected: { size: number; sha256: string }): Promise<void>;
  /** The blob's content (bytes `start..end` inclusive when given), streamed. Throws BlobMissingError. */
  open(sha256: string, range?: { start: number; end: number }): Promise<Readable>;
  /** The blob's size, or undefined when it is not stored. */
  size(sha256: string): Promise<number | undefined>;
  /** Deletes the blob (nothing when it is not there). */
  delete(sha256: string): Promise<void>;
  /**
   * Deletes the blob unless it was written since `before` (an upload that stored it again after the
   * sweep forgot its row); true when it is gone. For the sweeper, after forgetBlob.
   */
  deleteIfSettled(sha256: string, before: number): Promise<boolean>;
  /** Every stored blob. */
  list(): AsyncIterable<StoredBlob>;
  /** Removes the local temp files of uploads not touched since `before` (counts them only when `dryRun`); how many. */
  sweepTemp(before: number, dryRun: boolean): Promise<number>;
  /** Lets the store's connections go (the server is stopping). */
  close(): void;
}

/** `artifacts.store`: a directory or an S3 bucket. */
export type BlobStoreLocation = { kind: 'dir'; root: string } | ({ kind: 's3'; settings: S3Settings } & S3Location);

/**
 * Parses `dir:PATH` (relative paths from `base`) or `s3://BUCKET/PREFIX?endpoint=URL&region=R&force_path_style=true`.
 * Credentials never come in the text (it is logged): `s3` gives them, else the AWS_* chain. `what`
 * names the option in errors. Throws ConfigError.
 */
export function parseBlobStore(text: string, base: string, s3: S3Settings = {}, what = 'artifacts.store'): BlobStoreLocation {
  if (text.startsWith('dir:')) {
    const dir = text.slice('dir:'.length);
    if (dir === '') throw new ConfigError(`bad ${what} '${text}': give the directory, e.g. dir:/shared/kiln-artifacts`);
    return { kind: 'dir', root: path.resolve(base, dir) };
  }
  if (text.startsWith('s3:')) {
    const { bucket, prefix, settings } = parseS3Url(text, what);
    const merged = { ...settings, ...withoutUndefined(s3) };
    if (!merged.accessKeyId !== !merged.secretAccessKey) throw new ConfigError(`${what}: S3 access key id and secret access key go together: give both or neither`);
    return { kind: 's3', bucket, prefix, settings: merged };
  }
  throw new ConfigError(`bad ${what} '${text.replace(/[?#].*$/, '')}': use dir:PATH or s3://BUCKET/PREFIX?endpoint=URL`);
}

/** What a blob store needs besides its location. */
export interface BlobStoreOptions {
  /** The server's data dir: the default root (`<data>/artifacts`), and local temp files of an S3 store. */
  dataDir: string;
  limits: ArtifactLimits;
  /** Where uses of blobs are recorded. */
  store: JobStore;
  now: () => number;
}

/** The blob store at `location` (`<data>/artifacts` when absent). Throws ConfigError for bad S3 settings. */
export async function openBlobStore(location: BlobStoreLocation | undefined, options: BlobStoreOptions): Promise<BlobStore> {
  const where = location ?? { kind: 'dir', root: path.join(options.dataDir, 'artifacts') };
  if (where.kind === 'dir') return new DirBlobStore(where.root, options);
  // The AWS SDK is large: loaded only by servers whose blobs are in S3. Its notice that future
  // releases will need Node 22 concerns upgrading the SDK, not running this server.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { S3BlobStore } = await import('./s3-blob-store.js');
  return new S3BlobStore(where, options);
}

/**
 * The warning to log at start, if any: several servers on PostgreSQL must share their blobs, and a
 * blob directory inside this server's data dir is most likely this server's alone.
 */
export function unsharedBlobWarning(postgres: boolean, location: BlobStoreLocation | undefined, dataDir: string): string | undefined {
  if (!postgres || location?.kind === 's3') return undefined;
  const root = location?.root ?? path.join(dataDir, 'artifacts');
  const inside = path.relative(path.resolve(dataDir), root);
  if (inside.startsWith('..') || path.isAbsolute(inside)) return undefined;
  return `artifact blobs are kept in ${root}, inside this server's data dir: other servers on this PostgreSQL store cannot serve them. Set artifacts.store to a shared directory (dir:PATH) or an S3 bucket (s3://BUCKET/PREFIX)`;
}

/**
 * A readable that opens its source at its first read: a multipart body of many artifacts then
 * holds one blob open at a time, not all of them from the start.
 */
export function openLazily(open: () => Promise<Readable>): Readable {
  let source: Readable | undefined;
  const out = new Readable({
    read() {
      if (source) {
        source.resume();
        return;
      }
      open().then((opened) => {
        source = opened;
        if (out.destroyed) return opened.destroy();
        opened.on('data', (chunk: Buffer) => {
          if (!out.push(chunk)) opened.pause();
        });
        opened.on('end', () => out.push(null));
        opened.on('error', (err) => out.destroy(err));
      }, (err: Error) => out.destroy(err));
    },
    destroy(err, done) {
      source?.destroy();
      done(err);
    },
  });
  return out;
}

/**
 * The common part of the backends: the upload checked into a local temp file, then the use
 * recorded, then the blob kept. @internal Exported for the S3 backend.
 */
export abstract class CheckedBlobStore implements BlobStore {
  abstract readonly description: string;

  constructor(
    /** Where uploads are received (its temp files are swept). */
    protected readonly tempDir: string,
    protected readonly options: BlobStoreOptions,
  ) {
    // Private like the rest of the data dir: artifacts are whatever jobs chose to keep.
    mkdirSync(tempDir, { recursive: true, mode: 0o700 });
  }

  get limits(): ArtifactLimits {
    return this.options.limits;
  }

  async put(source: Readable, expected: { size: number; sha256: string }): Promise<void> {
    const { limits } = this.options;
    if (expected.size > limits.fileBytes) throw new PayloadTooLargeError(limits.fileBytes, `the file (${expected.size} bytes) is larger than the per-file limit of ${limits.fileBytes} bytes`);
    const temp = path.join(this.tempDir, randomUUID());
    const hash = createHash('sha256');
    let size = 0;
    const check = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        if (size > expected.size) return done(new InvalidRequestError(`more bytes than the announced ${expected.size}`));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(source, check, createWriteStream(temp, { mode: 0o600 }));
      if (size !== expected.size) throw new InvalidRequestError(`got ${size} bytes, ${expected.size} were announced`);
      const actual = hash.digest('hex');
      if (actual !== expected.sha256) throw new InvalidRequestError(`sha256 mismatch: the content hashes to ${actual}`);
      // Recorded before the blob is kept: a sweep that has not yet forgotten the blob now cannot
      // (its forgetBlob sees this touch). A new row means the blob may be on its way out (a sweep
      // forgot it and deletes it next), so it is then stored whatever is there now.
      const isNew = await this.options.store.touchBlob(actual, size, this.options.now());
      await this.keep(temp, actual, size, isNew);
    } finally {
      await rm(temp, { force: true });
    }
  }

  /**
   * Keeps the checked temp file as the blob `sha256` (it may already be stored; `isNew`: its row is
   * new, so it must be stored again even if found); the temp file is removed after.
   */
  protected abstract keep(temp: string, sha256: string, size: number, isNew: boolean): Promise<void>;
  abstract open(sha256: string, range?: { start: number; end: number }): Promise<Readable>;
  abstract size(sha256: string): Promise<number | undefined>;
  abstract delete(sha256: string): Promise<void>;
  abstract deleteIfSettled(sha256: string, before: number): Promise<boolean>;
  abstract list(): AsyncIterable<StoredBlob>;

  close(): void {
    // Nothing held between calls by default.
  }

  async sweepTemp(before: number, dryRun: boolean): Promise<number> {
    let swept = 0;
    for (const name of await readdir(this.tempDir).catch(() => [])) {
      const file = path.join(this.tempDir, name);
      const stats = await stat(file).catch(() => undefined);
      // A temp file this old belongs to an upload that died with its server.
      if (!stats || stats.mtimeMs >= before) continue;
      if (dryRun || (await unlink(file).then(() => true, () => false))) swept += 1;
    }
    return swept;
  }
}

/** Blobs as files `<root>/ab/abcdef...`; `<root>/tmp` holds uploads in progress, so the rename into place is atomic on a shared file system too. */
export class DirBlobStore extends CheckedBlobStore {
  readonly description: string;

  constructor(
    readonly root: string,
    options: BlobStoreOptions,
  ) {
    super(path.join(root, 'tmp'), options);
    this.description = `dir:${root}`;
  }

  /** Where the blob of `sha256` lives. */
  blobPath(sha256: string): string {
    return path.join(this.root, sha256.slice(0, 2), sha256);
  }

  protected async keep(temp: string, sha256: string): Promise<void> {
    const blob = this.blobPath(sha256);
    mkdirSync(path.dirname(blob), { recursive: true, mode: 0o700 });
    // Renamed over a blob already there (same content) rather than checked for: a sweep that
    // forgot the blob just before this upload's touch and unlinks it just before this rename
    // then deletes nothing this upload needs. The file is dated now (the touch's clock): a sweep
    // unlinking after this rename finds it fresh (deleteIfSettled) and puts it back.
    const at = new Date(this.options.now());
    await utimes(temp, at, at);
    await rename(temp, blob);
  }

  async open(sha256: string, range?: { start: number; end: number }): Promise<Readable> {
    const stream = createReadStream(this.blobPath(sha256), { highWaterMark: 1024 * 1024, ...range });
    try {
      // Opened before anything is answered: a missing blob is an error, not a cut response.
      await once(stream, 'open');
    } catch (raw) {
      stream.destroy();
      if ((raw as NodeJS.ErrnoException).code === 'ENOENT') throw new BlobMissingError(sha256, this.description);
      throw raw;
    }
    return stream;
  }

  async size(sha256: string): Promise<number | undefined> {
    return stat(this.blobPath(sha256)).then((stats) => stats.size, () => undefined);
  }

  async delete(sha256: string): Promise<void> {
    await unlink(this.blobPath(sha256)).catch((raw: NodeJS.ErrnoException) => {
      if (raw.code !== 'ENOENT') throw raw;
    });
  }

  /**
   * The file is moved aside first and its date read there: an upload's rename after the move is not
   * touched, and a file renamed in by an upload after the sweep forgot the row (dated at that
   * upload, after `before`) is moved back. Meanwhile (two renames) the blob is missing for readers.
   */
  async deleteIfSettled(sha256: string, before: number): Promise<boolean> {
    const blob = this.blobPath(sha256);
    const aside = path.join(this.tempDir, `swept-${randomUUID()}`);
    try {
      await rename(blob, aside);
    } catch (raw) {
      if ((raw as NodeJS.ErrnoException).code === 'ENOENT') return true;
      throw raw;
    }
    const stats = await stat(aside).catch(() => undefined);
    if (stats && stats.mtimeMs >= before) {
      await rename(aside, blob);
      return false;
    }
    await rm(aside, { force: true });
    return true;
  }

  async *list(): AsyncGenerator<StoredBlob> {
    for (const shard of await readdir(this.root)) {
      if (!/^[0-9a-f]{2}$/.test(shard)) continue;
      for (const name of await readdir(path.join(this.root, shard)).catch(() => [])) {
        if (!isSha256(name)) continue;
        const stats = await stat(path.join(this.root, shard, name)).catch(() => undefined);
        if (stats) yield { sha256: name, size: stats.size, modifiedAt: stats.mtimeMs };
      }
    }
  }
}

/** The object without its undefined values, so the URL's settings survive the ones not given. */
function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
