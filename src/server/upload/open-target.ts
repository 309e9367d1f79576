/**
 * Picks the upload target for `--upload URL`: http(s):// posts each run, s3:// puts it in a bucket,
 * builder-web+http(s):// sends it to robur's builder-web as builder's exec blob.
 */
import { ConfigError } from '../../errors.js';
import { describeUrl } from '../../url-for-humans.js';
import type { S3Settings } from './s3-target.js';
import type { UploadTarget } from './target.js';

/** Where to upload, and how. */
export interface UploadSettings {
  url: string;
  /** For s3:// URLs; what is not given comes from the AWS_* environment. */
  s3?: S3Settings;
}

/** The target for `settings.url`; throws ConfigError for a URL it cannot use. */
export async function openUploadTarget(settings: UploadSettings): Promise<UploadTarget> {
  if (settings.url.startsWith('builder-web+')) {
    const { builderWebTarget } = await import('./builder-web-target.js');
    return builderWebTarget(settings.url);
  }
  let url: URL;
  try {
    url = new URL(settings.url);
  } catch {
    throw new ConfigError(`bad --upload '${describeUrl(settings.url)}': use http(s)://[user:password@]host/path, builder-web+https://user:password@host/upload or s3://bucket/prefix`);
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') {
    // form-data (with mime-db) is loaded only by servers that upload.
    const { httpTarget } = await import('./http-target.js');
    return httpTarget(url);
  }
  if (url.protocol === 's3:') {
    if (!url.hostname) throw new ConfigError(`bad --upload '${describeUrl(settings.url)}': an s3:// URL names a bucket, e.g. s3://builds/kiln`);
    // The AWS SDK is large: loaded only by servers that upload to S3. Its notice that future
    // releases will need Node 22 concerns upgrading the SDK, not running this server.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const { s3Target } = await import('./s3-target.js');
    return s3Target(url, settings.s3 ?? {});
  }
  throw new ConfigError(`bad --upload '${describeUrl(settings.url)}': unsupported scheme ${url.protocol} (use http, https, builder-web+http, builder-web+https or s3)`);
}
