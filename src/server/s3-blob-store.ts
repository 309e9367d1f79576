/**
 * The S3 backend of the artifact blob store (`artifacts.store: s3://BUCKET/PREFIX?endpoint=...`),
 * in a module of its own so that the AWS SDK is loaded only by servers that use it.
 */
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BlobMissingError, BlobStoreError, coerceError } from '../errors.js';
import { CheckedBlobStore, type BlobStoreOptions, type StoredBlob } from './artifact-store.js';
import { describeS3, makeS3Client, s3Status, type S3Location, type S3Settings } from './s3-client.js';

/** Blobs as objects `<prefix>/ab/abcdef...` of a bucket; uploads are checked in `<data>/artifacts/tmp` first (S3 needs the length up front). */
export class S3BlobStore extends CheckedBlobStore {
  readonly description: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(location: S3Location & { settings: S3Settings }, options: BlobStoreOptions) {
    super(path.join(options.dataDir, 'artifacts', 'tmp'), options);
    this.client = makeS3Client(location.settings);
    this.bucket = location.bucket;
    this.prefix = location.prefix;
    this.description = describeS3(location, location.settings);
  }

  private key(sha256: string): string {
    return [this.prefix, sha256.slice(0, 2), sha256].filter(Boolean).join('/');
  }

  protected async keep(temp: string, sha256: string, size: number, isNew: boolean): Promise<void> {
    // Stored already (by any server): nothing to send. Unless the row is new: a sweep may have
    // forgotten it and be about to delete the object found now.
    if (!isNew && (await this.size(sha256)) !== undefined) return;
    const body = createReadStream(temp);
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(sha256), Body: body, ContentLength: size, ContentType: 'application/octet-stream' }));
    } catch (raw) {
      throw this.failure('PUT', sha256, raw);
    } finally {
      body.destroy();
    }
  }

  async open(sha256: string, range?: { start: number; end: number }): Promise<Readable> {
    try {
      const answer = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(sha256), Range: range && `bytes=${range.start}-${range.end}` }));
      // In Node the body is the response stream itself: read as it is sent, never buffered whole.
      return answer.Body as Readable;
    } catch (raw) {
      if (s3Status(raw) === 404) throw new BlobMissingError(sha256, this.description);
      throw this.failure('GET', sha256, raw);
    }
  }

  async size(sha256: string): Promise<number | undefined> {
    try {
      return (await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(sha256) }))).ContentLength ?? 0;
    } catch (raw) {
      if (s3Status(raw) === 404) return undefined;
      throw this.failure('HEAD', sha256, raw);
    }
  }

  async delete(sha256: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(sha256) }));
    } catch (raw) {
      throw this.failure('DELETE', sha256, raw);
    }
  }

  /**
   * An object written since `before` was PUT by an upload after the sweep forgot its row, and is
   * kept. Unlike a rename, a HEAD then a DELETE are not one step: a PUT landing between them is
   * deleted (a window of one request; the artifact then reads KILN_ERR_BLOB_MISSING).
   */
  async deleteIfSettled(sha256: string, before: number): Promise<boolean> {
    let modified: Date | undefined;
    try {
      modified = (await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(sha256) }))).LastModified;
    } catch (raw) {
      if (s3Status(raw) === 404) return true;
      throw this.failure('HEAD', sha256, raw);
    }
    if (modified && modified.getTime() >= before) return false;
    await this.delete(sha256);
    return true;
  }

  async *list(): AsyncGenerator<StoredBlob> {
    const base = this.prefix ? `${this.prefix}/` : '';
    for (let token: string | undefined, first = true; first || token; first = false) {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: base, ContinuationToken: token }));
      } catch (raw) {
        throw this.failure('LIST', base, raw);
      }
      for (const object of page.Contents ?? []) {
        const match = /^([0-9a-f]{2})\/([0-9a-f]{64})$/.exec((object.Key ?? '').slice(base.length));
        if (match && match[2]!.startsWith(match[1]!)) yield { sha256: match[2]!, size: object.Size ?? 0, modifiedAt: object.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    }
  }

  override close(): void {
    this.client.destroy();
  }

  private failure(operation: string, what: string, raw: unknown): BlobStoreError {
    const status = s3Status(raw);
    const err = coerceError(raw);
    const code = (raw as { code?: unknown } | null)?.code ?? (raw instanceof Error ? raw.name : err.code);
    return new BlobStoreError(`${operation} ${what} in ${this.description}: ${String(code)}${status ? ` (HTTP ${status})` : ''}`);
  }
}

