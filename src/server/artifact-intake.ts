/**
 * Keeping one artifact file of a running run: the per-run byte limit, the blob (content-addressed,
 * the per-file limit is the blob store's), the store's record and `artifact.stored`. One home for
 * the two ways files arrive: a Kiln worker's HTTP PUT (api/artifact-routes.ts) and a robur worker's
 * `Job_finished` (robur/robur-worker.ts).
 */
import type { Readable } from 'node:stream';
import { PayloadTooLargeError } from '../errors.js';
import type { JobStore } from '../store/index.js';
import type { BlobStore } from './artifact-store.js';
import type { EventBus } from './events.js';

/** What keeping an artifact writes to. */
export interface ArtifactIntakeParts {
  store: JobStore;
  blobs: BlobStore;
  events: EventBus;
}

/** One file to keep: its normalised path, size, sha256 and permission bits, and its bytes. */
export interface IncomingArtifact {
  path: string;
  size: number;
  sha256: string;
  mode: number;
}

/**
 * Keeps one file of `runId` (its worker is checked by the caller). Throws PayloadTooLargeError when
 * it would take the run over the per-run limit, or is over the per-file limit; the blob store's
 * errors (a sha256 or size that does not match) as they are.
 */
export async function keepArtifact(parts: ArtifactIntakeParts, runId: string, file: IncomingArtifact, content: Readable): Promise<void> {
  const { store, blobs, events } = parts;
  // Files of one run come one at a time from its worker, so this sum is not raced.
  const kept = (await store.listArtifacts(runId)).filter((a) => a.path !== file.path).reduce((sum, a) => sum + a.size, 0);
  if (kept + file.size > blobs.limits.runBytes) {
    throw new PayloadTooLargeError(blobs.limits.runBytes, `the file (${file.size} bytes) would take the run's artifacts to ${kept + file.size} bytes, over the per-run limit of ${blobs.limits.runBytes} bytes`);
  }
  await blobs.put(content, { size: file.size, sha256: file.sha256 });
  await store.addArtifact(runId, file);
  events.publish('artifact.stored', { runId, path: file.path, size: file.size });
}
