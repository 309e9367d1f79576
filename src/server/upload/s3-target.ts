/**
 * The S3-compatible upload target (`--upload s3://BUCKET/PREFIX`): AWS S3, MinIO, Ceph, Garage...
 * Each run becomes `PREFIX/<job>/<runId>/` holding `artifacts/<path>`, `console.txt` and, written
 * last so that its presence means the run is complete, `run.json`. Everything is streamed, so memory
 * stays bounded whatever the sizes of the artifacts and of the console.
 */
import { PutObjectCommand, type PutObjectCommandInput } from '@aws-sdk/client-s3';
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { coerceError } from '../../errors.js';
import { describeS3, makeS3Client, parseS3Url, s3Status, type S3Settings } from '../s3-client.js';
import { deliveryMetadata, type DeliveryOutcome, type RunDelivery, type UploadTarget } from './target.js';

export type { S3Settings } from '../s3-client.js';

/**
 * The target for `s3://BUCKET/PREFIX` (the prefix may be empty or nested; the URL's query may give
 * endpoint, region and force_path_style, which `settings` override). Throws ConfigError for a bad
 * URL or settings.
 */
export function s3Target(url: URL, given: S3Settings): UploadTarget {
  const { bucket, prefix, settings: fromUrl } = parseS3Url(url, 'upload URL');
  const settings = { ...fromUrl, ...withoutUndefined(given) };
  const client = makeS3Client(settings);
  const description = describeS3({ bucket, prefix }, settings);

  async function put(input: Omit<PutObjectCommandInput, 'Bucket'>, signal?: AbortSignal): Promise<void> {
    await client.send(new PutObjectCommand({ Bucket: bucket, ...input }), { abortSignal: signal });
  }

  /** Streams a body of known size to `key`; the caller's `open` fails at once for a missing blob. */
  async function putStream(key: string, body: Readable, size: number, extra: Omit<PutObjectCommandInput, 'Bucket' | 'Key' | 'Body'>, signal?: AbortSignal): Promise<void> {
    try {
      await put({ Key: key, Body: body, ContentLength: size, ...extra }, signal);
    } finally {
      body.destroy();
    }
  }

  return {
    description,

    async deliver(delivery: RunDelivery): Promise<DeliveryOutcome> {
      const base = [prefix, delivery.run.job, delivery.run.id].filter(Boolean).join('/');
      let key = base;
      // S3 has no length-less PUT without multipart, so the console goes to a temp file first.
      const consoleFile = path.join(os.tmpdir(), `kiln-console-${randomUUID()}.txt`);
      try {
        for (const artifact of delivery.artifacts) {
          key = `${base}/artifacts/${artifact.path}`;
          const Metadata = { sha256: artifact.sha256, mode: String(artifact.mode) };
          await putStream(key, await artifact.open(), artifact.size, { ContentType: 'application/octet-stream', Metadata }, delivery.signal);
        }
        key = `${base}/console.txt`;
        await pipeline(Readable.from(withNewlines(delivery.consoleLines())), createWriteStream(consoleFile, { mode: 0o600 }));
        const { size } = await stat(consoleFile);
        await putStream(key, createReadStream(consoleFile), size, { ContentType: 'text/plain; charset=utf-8' }, delivery.signal);
        key = `${base}/run.json`;
        const body = JSON.stringify(deliveryMetadata(delivery), null, 2) + '\n';
        await put({ Key: key, Body: body, ContentType: 'application/json' }, delivery.signal);
        return { kind: 'delivered' };
      } catch (raw) {
        return outcomeOf(raw, `s3://${bucket}/${key}`);
      } finally {
        await rm(consoleFile, { force: true });
      }
    },
  };
}

/**
 * What a failed attempt means. Service answers carry their HTTP status in `$metadata`; a failure
 * without one never got an answer (refused, reset, timed out, a local file error) and is retried.
 * @internal Exported for its table test.
 */
export function outcomeOf(raw: unknown, where: string): DeliveryOutcome {
  const status = s3Status(raw);
  const err = coerceError(raw);
  // Node's network errors carry their code in `code` (an AggregateError, every address refused,
  // has no message at all); SDK service errors are named after the S3 error code (NoSuchBucket).
  const code = (raw as { code?: unknown } | null)?.code ?? (raw instanceof Error ? raw.name : err.code);
  const reason = `PUT ${where}: ${String(code)}${status ? ` (HTTP ${status})` : ''}${err.message ? `: ${err.message}` : ''}`.replace(/\s+/g, ' ');
  // A blob missing from the server's own store will not come back: retrying cannot help.
  if (code === 'ENOENT' || code === 'KILN_ERR_BLOB_MISSING') return { kind: 'give-up', reason };
  if (status === undefined || status >= 500 || status === 408 || status === 429) return { kind: 'retry', reason };
  return { kind: 'give-up', reason };
}

/** The object without its undefined values, so the URL's settings survive the ones not given. */
function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The console as text, batched into chunks of about 64 KiB so millions of lines are not millions of writes. */
async function* withNewlines(lines: AsyncIterable<string>): AsyncGenerator<string> {
  let chunk = '';
  for await (const line of lines) {
    chunk += line + '\n';
    if (chunk.length >= 65536) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk) yield chunk;
}
