/**
 * Artifact blobs on disk, named by their sha256 (`<data>/artifacts/ab/abcdef...`): each content is
 * stored once whatever the runs that produced it. An upload is streamed to a temp file while its
 * size and hash are checked, and renamed into place only when both match.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync } from 'node:fs';
import { rename, rm, utimes } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InvalidRequestError, PayloadTooLargeError } from '../errors.js';

/** How much a run may keep. */
export interface ArtifactLimits {
  /** Largest single file (bytes). */
  fileBytes: number;
  /** Most bytes of artifacts one run may keep, all files together. */
  runBytes: number;
}

export const DEFAULT_ARTIFACT_LIMITS: ArtifactLimits = { fileBytes: 4 * 1024 ** 3, runBytes: 16 * 1024 ** 3 };

/** The content-addressed blob store of one server. */
export class ArtifactStore {
  constructor(
    readonly dir: string,
    readonly limits: ArtifactLimits,
  ) {
    // Private like the rest of the data dir: artifacts are whatever jobs chose to keep.
    mkdirSync(path.join(dir, 'tmp'), { recursive: true, mode: 0o700 });
  }

  /** Where the blob of `sha256` lives. */
  blobPath(sha256: string): string {
    return path.join(this.dir, sha256.slice(0, 2), sha256);
  }

  /** Streams `source` in, checking it is exactly `size` bytes with that `sha256`; nothing is kept otherwise. */
  async receive(source: Readable, expected: { size: number; sha256: string }): Promise<void> {
    if (expected.size > this.limits.fileBytes) throw new PayloadTooLargeError(this.limits.fileBytes, `the file (${expected.size} bytes) is larger than the per-file limit of ${this.limits.fileBytes} bytes`);
    const temp = path.join(this.dir, 'tmp', randomUUID());
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
      const blob = this.blobPath(actual);
      mkdirSync(path.dirname(blob), { recursive: true, mode: 0o700 });
      // Touching an existing blob tells the sweeper it is in use again (it spares recent blobs).
      const now = new Date();
      const reused = await utimes(blob, now, now).then(() => true, () => false);
      if (reused) await rm(temp);
      else await rename(temp, blob);
    } catch (raw) {
      await rm(temp, { force: true });
      throw raw;
    }
  }
}
