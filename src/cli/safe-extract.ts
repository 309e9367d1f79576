/**
 * Writing files named by someone else (an exec blob's artifact paths) into a directory without ever
 * landing outside it: every path is checked before anything is written (relative, no `..`, no two
 * files on one path), directories are walked one component at a time without following a symlink,
 * and each file is written through a fresh temp file (O_EXCL, O_NOFOLLOW) renamed onto its name, so
 * a symlink already there is replaced, never followed. What is written is job data: files 0600,
 * directories made 0700.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ArtifactPathError, normaliseArtifactPath } from '../core/index.js';
import { UnsafeArtifactPathError } from '../errors.js';

/**
 * The normalised form of every path, in order; throws UnsafeArtifactPathError for a path that
 * cannot be written inside a directory, for two files on one path, and for a file that another's
 * path needs as a directory.
 */
export function planExtraction(paths: readonly string[]): string[] {
  const planned = paths.map((raw) => {
    try {
      return normaliseArtifactPath(raw);
    } catch (raw2) {
      if (raw2 instanceof ArtifactPathError) throw new UnsafeArtifactPathError(raw2.message);
      throw raw2;
    }
  });
  const files = new Set<string>();
  for (const file of planned) {
    if (files.has(file)) throw new UnsafeArtifactPathError(`two artifacts have the path '${file}'`);
    files.add(file);
  }
  for (const file of planned) {
    const parts = file.split('/');
    for (let i = 1; i < parts.length; i += 1) {
      const dir = parts.slice(0, i).join('/');
      if (files.has(dir)) throw new UnsafeArtifactPathError(`artifact '${dir}' is a file, and artifact '${file}' needs it as a directory`);
    }
  }
  return planned;
}

/** Creates `dir` (0700, with its parents) unless it exists. */
export async function ensureOutputDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/** Makes sure `dir/relative`'s parent directories are real directories inside `dir`, creating the missing ones 0700. */
async function parentsOf(dir: string, relative: string): Promise<string> {
  let current = dir;
  for (const part of relative.split('/').slice(0, -1)) {
    current = path.join(current, part);
    for (;;) {
      const stat = await lstat(current).catch((raw: NodeJS.ErrnoException) => {
        if (raw.code === 'ENOENT') return undefined;
        throw raw;
      });
      if (stat?.isDirectory()) break;
      if (stat) throw new UnsafeArtifactPathError(`${current} is ${stat.isSymbolicLink() ? 'a symlink' : 'not a directory'}: '${relative}' is not written through it`);
      try {
        await mkdir(current, { mode: 0o700 });
        break;
      } catch (raw) {
        // Made meanwhile: looked at again.
        if ((raw as NodeJS.ErrnoException).code !== 'EEXIST') throw raw;
      }
    }
  }
  return current;
}

/** Streams `source` to `dir/relative` (a planned path), 0600; resolves with its size and sha256. */
export async function extractFile(dir: string, relative: string, source: Readable): Promise<{ size: number; sha256: string }> {
  const parent = await parentsOf(dir, relative);
  return writePrivateFile(path.join(parent, path.basename(relative)), source);
}

/**
 * Streams `source` into `target` (0600) through a fresh temp file beside it (O_EXCL, O_NOFOLLOW),
 * renamed onto `target` once whole: a cut stream leaves no partial file, and a symlink at `target`
 * is replaced, never followed. Resolves with what was written: its size and sha256.
 */
export async function writePrivateFile(target: string, source: Readable): Promise<{ size: number; sha256: string }> {
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.kiln-partial-${randomBytes(6).toString('hex')}`);
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  const hash = createHash('sha256');
  let size = 0;
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  try {
    // The stream closes the file once written.
    await pipeline(source, hashing, handle.createWriteStream());
    await rename(temp, target);
  } catch (raw) {
    await handle.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw raw;
  }
  return { size, sha256: hash.digest('hex') };
}
