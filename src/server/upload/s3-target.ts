/**
 * The S3-compatible upload target (`--upload s3://BUCKET/PREFIX`): AWS S3, MinIO, Ceph, Garage...
 * Each run becomes `PREFIX/<job>/<runId>/` holding `artifacts/<path>`, `console.txt` and, written
 * last so that its presence means the run is complete, `run.json`. Everything is streamed, so memory
 * stays bounded whatever the sizes of the artifacts and of the console.
 */
import { PutObjectCommand, S3Client, type PutObjectCommandInput } from '@aws-sdk/client-s3';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { coerceError, ConfigError } from '../../errors.js';
import { deliveryMetadata, type DeliveryOutcome, type RunDelivery, type UploadTarget } from './target.js';

/** How to reach the service. Anything not given comes from the AWS SDK's default chain (AWS_* env, ~/.aws). */
export interface S3Settings {
  /** Service URL, e.g. `http://127.0.0.1:9000`; default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS itself. */
  endpoint?: string;
  /** Default: AWS_REGION or the profile's, else `us-east-1`. */
  region?: string;
  /** Given together with `secretAccessKey`, or not at all. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (most self-hosted services need it). */
  forcePathStyle?: boolean;
}

/** The target for `s3://BUCKET/PREFIX` (the prefix may be empty or nested). Throws ConfigError for a bad URL or settings. */
export function s3Target(url: URL, settings: S3Settings): UploadTarget {
  if (url.protocol !== 's3:' || !url.hostname) throw new ConfigError(`upload URL must read s3://BUCKET/PREFIX, got ${url.protocol}//${url.host}${url.pathname}`);
  if (!settings.accessKeyId !== !settings.secretAccessKey) throw new ConfigError('S3 access key id and secret access key go together: give both or neither');
  const bucket = url.hostname;
  const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
  const endpoint = settings.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  const description = `s3://${bucket}/${prefix} (endpoint ${endpoint ? describeEndpoint(endpoint) : 'from the AWS defaults'})`;

  let region: Promise<string> | undefined;
  const client = new S3Client({
    endpoint: settings.endpoint,
    region: settings.region ?? (() => (region ??= defaultRegion())),
    credentials: settings.accessKeyId && settings.secretAccessKey ? { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey } : undefined,
    forcePathStyle: settings.forcePathStyle,
    // Recent SDKs add CRC checksums and aws-chunked bodies by default, which S3-compatible
    // services (s3rver, older MinIO and Ceph) reject; plain signed PUTs work everywhere.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // The SDK never retries a stream body (the outbox retries the whole delivery instead), and
    // says so on the console unless given a logger: our outcome already reports the failure.
    logger: { debug() {}, info() {}, warn() {}, error() {} },
    // Without timeouts, a service that stops answering would hold the delivery forever. The
    // socket timeout is an idle timeout, so large uploads that keep moving are not cut.
    requestHandler: { connectionTimeout: 10_000, socketTimeout: 60_000 },
  });

  async function put(input: Omit<PutObjectCommandInput, 'Bucket'>, signal?: AbortSignal): Promise<void> {
    await client.send(new PutObjectCommand({ Bucket: bucket, ...input }), { abortSignal: signal });
  }

  /** Streams a local file to `key`; the file is opened first so that a missing one fails at once. */
  async function putFile(key: string, file: string, size: number, extra: Omit<PutObjectCommandInput, 'Bucket' | 'Key' | 'Body'>, signal?: AbortSignal): Promise<void> {
    const body = createReadStream(file);
    try {
      await once(body, 'open');
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
          await putFile(key, artifact.file, artifact.size, { ContentType: 'application/octet-stream', Metadata }, delivery.signal);
        }
        key = `${base}/console.txt`;
        await pipeline(Readable.from(withNewlines(delivery.consoleLines())), createWriteStream(consoleFile, { mode: 0o600 }));
        const { size } = await stat(consoleFile);
        await putFile(key, consoleFile, size, { ContentType: 'text/plain; charset=utf-8' }, delivery.signal);
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
  const status = (raw as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  const err = coerceError(raw);
  // Node's network errors carry their code in `code` (an AggregateError, every address refused,
  // has no message at all); SDK service errors are named after the S3 error code (NoSuchBucket).
  const code = (raw as { code?: unknown } | null)?.code ?? (raw instanceof Error ? raw.name : err.code);
  const reason = `PUT ${where}: ${String(code)}${status ? ` (HTTP ${status})` : ''}${err.message ? `: ${err.message}` : ''}`.replace(/\s+/g, ' ');
  // A blob missing from the server's own store will not come back: retrying cannot help.
  if (code === 'ENOENT') return { kind: 'give-up', reason };
  if (status === undefined || status >= 500 || status === 408 || status === 429) return { kind: 'retry', reason };
  return { kind: 'give-up', reason };
}

/** The region from the SDK's chain (AWS_REGION, the profile), else us-east-1: self-hosted services rarely care. */
async function defaultRegion(): Promise<string> {
  const probe = new S3Client({});
  try {
    return await probe.config.region();
  } catch {
    // The chain throws when it finds no region at all; that is the case this default is for.
    return 'us-east-1';
  } finally {
    probe.destroy();
  }
}

/** The endpoint without any user info it may carry. */
function describeEndpoint(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    return url.origin + url.pathname.replace(/\/$/, '');
  } catch (raw) {
    throw new ConfigError(`S3 endpoint is not a URL: ${coerceError(raw).message}`);
  }
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
