/**
 * Artifacts over HTTP: workers PUT each file of a run they hold (streamed, with its size, sha256
 * and mode); clients list a run's artifacts and GET single files (Content-Length, ETag = sha256,
 * Range, Content-Disposition: attachment).
 */
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { ArtifactPathError, attachmentDisposition, describeIdentity, holdsRun, isSha256, normaliseArtifactPath } from '../../core/index.js';
import { ArtifactRefusedError, InvalidRequestError, RunNotFoundError, UnauthorizedError, WorkerIdentityError } from '../../errors.js';
import type { JobStore } from '../../store/index.js';
import { keepArtifact } from '../artifact-intake.js';
import type { BlobStore } from '../artifact-store.js';
import type { EventBus } from '../events.js';
import { forViewer, forWorker } from './auth.js';

function artifactPath(params: unknown): string {
  try {
    return normaliseArtifactPath(decodeURIComponent((params as { '*': string })['*']));
  } catch (raw) {
    if (raw instanceof ArtifactPathError || raw instanceof URIError) throw new InvalidRequestError(raw.message);
    throw raw;
  }
}

/** Registers the artifact routes. */
export function registerArtifactRoutes(app: FastifyInstance, store: JobStore, blobs: BlobStore, events: EventBus): void {
  // Uploads are streams: the route reads the body itself, with its own limits.
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));

  app.put('/api/runs/:id/artifacts/*', forWorker, async (request, reply) => {
    const runId = (request.params as { id: string }).id;
    const relative = artifactPath(request.params);
    // The credential says who uploads; x-kiln-worker only names the worker under the shared token.
    const credential = request.credential;
    if (credential.kind !== 'worker') throw new UnauthorizedError('artifact uploads need a worker token');
    const { identity } = credential;
    const named = String(request.headers['x-kiln-worker'] ?? '');
    if (identity.kind !== 'shared' && named !== '' && named !== identity.name) {
      throw new WorkerIdentityError(`${describeIdentity(identity)} cannot upload as worker '${named}'`);
    }
    const worker = identity.kind === 'shared' ? named : identity.name;
    const sha256 = String(request.headers['x-kiln-sha256'] ?? '');
    const sizeHeader = String(request.headers['x-kiln-size'] ?? '');
    const size = /^\d{1,15}$/.test(sizeHeader) ? Number(sizeHeader) : NaN;
    const mode = Number(request.headers['x-kiln-mode'] ?? 0o644);
    if (!String(request.headers['content-type'] ?? '').startsWith('application/octet-stream')) {
      throw new InvalidRequestError('an artifact upload is sent as application/octet-stream');
    }
    if (!isSha256(sha256)) throw new InvalidRequestError('x-kiln-sha256 must be the file\'s sha256 in hex');
    if (!Number.isSafeInteger(size) || size < 0) throw new InvalidRequestError('an artifact upload needs its size in x-kiln-size');
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new InvalidRequestError('x-kiln-mode must be a file mode');
    // Kept as permission bits only: a worker must not make a downloader's file setuid, setgid or sticky.
    const permissions = mode & 0o777;
    const run = await store.findRun(runId).catch(() => undefined);
    if (!run || run.id !== runId) throw new RunNotFoundError(runId);
    // The store says who holds the run: a worker briefly disconnected (re-attaching) still does.
    if (run.status === 'running' && !holdsRun(run.workerIdentity, identity)) {
      throw new WorkerIdentityError(`${describeIdentity(identity)} does not hold run ${runId}: its worker connected with another credential`);
    }
    if (run.status !== 'running' || run.worker !== worker) {
      throw new ArtifactRefusedError(`worker '${worker}' does not hold run ${runId}; artifacts come from the run's worker while it runs`);
    }
    await keepArtifact({ store, blobs, events }, runId, { path: relative, size, sha256, mode: permissions }, request.body as Readable);
    return reply.code(201).send({ path: relative, size, sha256 });
  });

  app.get('/api/runs/:id/artifacts', forViewer, async (request) => {
    const run = await store.findRun((request.params as { id: string }).id);
    return { run: run.id, artifacts: await store.listArtifacts(run.id) };
  });

  app.get('/api/runs/:id/artifacts/*', forViewer, async (request, reply) => {
    const run = await store.findRun((request.params as { id: string }).id);
    const relative = artifactPath(request.params);
    const artifact = (await store.listArtifacts(run.id)).find((a) => a.path === relative);
    if (!artifact) throw new RunNotFoundError(`${run.id}: no artifact '${relative}'`);
    const range = /^bytes=(\d*)-(\d*)$/.exec(String(request.headers.range ?? ''));
    let part: { start: number; end: number } | undefined;
    if (range && (range[1] || range[2]) && artifact.size > 0) {
      const start = range[1] ? Number(range[1]) : Math.max(0, artifact.size - Number(range[2]));
      const end = range[1] && range[2] ? Math.min(Number(range[2]), artifact.size - 1) : artifact.size - 1;
      if (start > end || start >= artifact.size) {
        return reply.code(416).header('content-range', `bytes */${artifact.size}`).send();
      }
      part = { start, end };
    }
    // Opened before any header is set: a blob missing from the store is an error answer, not a cut file.
    const content = await blobs.open(artifact.sha256, part);
    reply.header('etag', `"${artifact.sha256}"`).header('accept-ranges', 'bytes').header('content-type', 'application/octet-stream');
    // Saved, never shown: a job's HTML must not run as this server's page.
    reply.header('content-disposition', attachmentDisposition(artifact.path));
    reply.header('x-kiln-mode', artifact.mode.toString(8)).header('x-kiln-sha256', artifact.sha256);
    if (part) {
      reply.code(206).header('content-range', `bytes ${part.start}-${part.end}/${artifact.size}`).header('content-length', part.end - part.start + 1);
    } else {
      reply.header('content-length', artifact.size);
    }
    return reply.send(content);
  });
}
