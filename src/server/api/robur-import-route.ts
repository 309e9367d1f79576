/**
 * `POST /api/import/robur`: a robur builder `state` file, its raw bytes as the body
 * (application/octet-stream), moved into the store (see robur/state-import.ts). Admin only: it
 * adds jobs, queues runs and drops platforms.
 */
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { InvalidRequestError, PayloadTooLargeError } from '../../errors.js';
import { MAX_ROBUR_STATE_BYTES, type RoburStateImport } from '../robur/state-import.js';
import { forAdmin } from './auth.js';

/**
 * The request's body as bytes, at most `limit` of them. The octet-stream parser (artifact-routes.ts)
 * hands the body over as a stream, so the limit is this route's own: checked on Content-Length
 * before reading, and on the bytes as they come.
 */
async function bodyBytes(request: FastifyRequest, limit: number): Promise<Buffer> {
  if (!String(request.headers['content-type'] ?? '').startsWith('application/octet-stream')) {
    throw new InvalidRequestError('send the state file\'s bytes as application/octet-stream');
  }
  const tooLarge = () => new PayloadTooLargeError(limit, `the state file is larger than ${limit} bytes`);
  if (Number(request.headers['content-length'] ?? 0) > limit) throw tooLarge();
  const body = request.body;
  if (Buffer.isBuffer(body)) {
    if (body.length > limit) throw tooLarge();
    return body;
  }
  if (!(body instanceof Readable)) throw new InvalidRequestError('the state file is missing from the request body');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}

/** Registers `POST /api/import/robur`. */
export function registerRoburImportRoute(app: FastifyInstance, importer: RoburStateImport): void {
  app.post('/api/import/robur', forAdmin, async (request) => importer.importFile(await bodyBytes(request, MAX_ROBUR_STATE_BYTES)));
}
