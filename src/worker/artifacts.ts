/**
 * A run's artifacts, on the worker: collected from the work dir once the job has ended (every
 * regular non-dot file but the script, or what the job's globs name; symlinks are never followed)
 * and streamed to the server one by one with their size, sha256 and mode.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import type { Log as Logger } from '../log.js';
import { backoffMs } from '../core/backoff.js';
import { coerceError } from '../errors.js';

/** A file to keep. */
export interface CollectedFile {
  /** Relative, `/`-separated. */
  path: string;
  absolute: string;
  size: number;
  mode: number;
}

/** Files of `workDir` to keep: regular, not under a dot name, not in `skip`, matching `globs` when given. */
export async function collectArtifacts(workDir: string, globs: string[], skip: Set<string>): Promise<CollectedFile[]> {
  // Loaded by the jobs that name globs only: not on every worker's start.
  const matches = globs.length > 0 ? (await import('picomatch')).default(globs, { dot: false }) : () => true;
  const found: CollectedFile[] = [];
  const walk = async (dir: string, prefix: string): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const relative = prefix + entry.name;
      const absolute = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(absolute, relative + '/');
      else if (entry.isFile() && !skip.has(relative) && matches(relative)) {
        const stats = await lstat(absolute);
        found.push({ path: relative, absolute, size: stats.size, mode: stats.mode & 0o7777 });
      }
    }
  };
  await walk(workDir, '');
  return found;
}

/** The sha256 of a file, streamed (reading it whole also proves it can be read). */
export async function hashFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** PUTs a file with node's HTTP client: read only as fast as the socket takes it. */
function putFile(url: URL, file: string, headers: Record<string, string>, ca: string | undefined): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // TLS is loaded for an https:// server only: an idle worker of an http one never holds it.
    const client: typeof http = url.protocol === 'https:' ? createRequire(import.meta.url)('node:https') : http;
    const request = client.request(url, { method: 'PUT', headers, ...(ca === undefined ? {} : { ca }) }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk.length < 65_536 ? chunk : ''));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      response.on('error', reject);
    });
    request.on('error', reject);
    // Node's fetch reads a streamed body ahead without limit; a pipe keeps memory flat.
    pipeline(createReadStream(file), request).catch(reject);
  });
}

/** Where and as whom to upload. */
export interface UploadTarget {
  /** The server to send to, asked at each attempt: a worker that failed over sends its retries to the server it is connected to now. */
  server: () => string;
  token: string;
  worker: string;
  runId: string;
  log: Logger;
  /** PEM CA certificates to trust an https:// server by. */
  ca?: string;
}

const ATTEMPTS = 4;
/** Waits between them: 1 s, 2 s, 4 s. */
const UPLOAD_RETRY = { retryMinMs: 1000, retryMaxMs: 8000 };

/** The server refused the file for good (too large, bad path, run not held). */
class RefusedUpload extends Error {}

/** Streams one file to the server; retries transient failures; throws with the server's reason otherwise. */
export async function uploadArtifact(file: CollectedFile, target: UploadTarget, knownSha256?: string): Promise<{ sha256: string }> {
  const sha256 = knownSha256 ?? (await hashFile(file.absolute));
  const route = `/api/runs/${target.runId}/artifacts/${file.path.split('/').map(encodeURIComponent).join('/')}`;
  let lastError = '';
  for (let attempt = 1; attempt <= ATTEMPTS; attempt += 1) {
    const url = new URL(route, target.server());
    target.log.info({ path: file.path, size: file.size, attempt }, 'uploading an artifact');
    try {
      const response = await putFile(url, file.absolute, {
        authorization: `Bearer ${target.token}`,
        'content-type': 'application/octet-stream',
        'content-length': String(file.size),
        'x-kiln-worker': target.worker,
        'x-kiln-sha256': sha256,
        'x-kiln-size': String(file.size),
        'x-kiln-mode': String(file.mode),
      }, target.ca);
      if (response.status >= 200 && response.status < 300) return { sha256 };
      let reason = `HTTP ${response.status}`;
      try {
        reason = (JSON.parse(response.body) as { error?: { message?: string } }).error?.message ?? reason;
      } catch {
        // Not a Kiln answer: the status says enough.
      }
      // 4xx is the server's final word about this file (too large, refused); 5xx may pass.
      if (response.status < 500) throw new RefusedUpload(reason);
      lastError = reason;
    } catch (raw) {
      if (raw instanceof RefusedUpload) throw raw;
      // Anything else is the connection: try again.
      lastError = coerceError(raw).message;
    }
    target.log.warn({ path: file.path, attempt, err: lastError }, 'artifact upload failed; retrying');
    if (attempt < ATTEMPTS) await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt, UPLOAD_RETRY)));
  }
  throw new Error(`gave up after ${ATTEMPTS} attempts: ${lastError}`);
}
