/**
 * `GET /api/runs/:id/export?format=robur-exec` (`kiln export`): a finished run as robur builder's
 * exec blob, the very bytes the builder-web upload target sends, streamed with its length known up
 * front (artifacts flow from the blob store, never held whole). Readers may read scripts, consoles
 * and artifacts, so viewers may export; a job's environment is not in the blob.
 */
import type { FastifyInstance } from 'fastify';
import { attachmentDisposition, isExportFormat, unknownExportFormat } from '../../core/index.js';
import { BlobMissingError, InvalidRequestError, NotExportableError } from '../../errors.js';
import type { JobStore } from '../../store/index.js';
import type { BlobStore } from '../artifact-store.js';
import { execUnavailable, hasExec, runExecStream } from '../upload/robur-exec-of-run.js';
import { forViewer } from './auth.js';

/** Registers the export route. */
export function registerExportRoutes(app: FastifyInstance, store: JobStore, blobs: BlobStore): void {
  app.get('/api/runs/:id/export', forViewer, async (request, reply) => {
    const format = String((request.query as { format?: unknown }).format ?? '');
    if (!isExportFormat(format)) throw new InvalidRequestError(format === '' ? unknownExportFormat('(none)') : unknownExportFormat(format));
    const run = await store.findRun((request.params as { id: string }).id);
    if (!hasExec(run)) throw new NotExportableError(execUnavailable(run)!);
    const artifacts = await store.listArtifacts(run.id);
    // Checked before the first byte: once the length is sent, a missing blob could only cut the body.
    for (const artifact of artifacts) {
      if ((await blobs.size(artifact.sha256)) === undefined) throw new BlobMissingError(artifact.sha256, `${blobs.description} (artifact ${artifact.path} of run ${run.id})`);
    }
    const { length, stream } = await runExecStream(
      run, (afterSeq, limit) => store.readConsole(run.id, afterSeq, limit), artifacts.map((a) => ({ ...a, open: () => blobs.open(a.sha256) })),
    );
    stream.on('error', (err) => request.log.error({ err, runId: run.id }, 'export cut short: the exec blob could not be read to its end'));
    reply.header('content-type', 'application/octet-stream').header('content-length', length).header('x-kiln-run', run.id);
    reply.header('content-disposition', attachmentDisposition(`${run.job}-${run.id}.full`));
    return reply.send(stream);
  });
}
