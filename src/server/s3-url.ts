/**
 * S3 locations as Kiln's options give them (`--upload s3://...`, `artifacts.store: s3://...`): the
 * URL's parts, the settings, and their description without secrets. Free of the AWS SDK, so that
 * checking a config does not load it (s3-client.ts makes the client).
 */
import { coerceError, ConfigError } from '../errors.js';

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

/** A bucket and a key prefix (no leading or trailing slash; may be empty). */
export interface S3Location {
  bucket: string;
  prefix: string;
}

/**
 * `s3://BUCKET/PREFIX?endpoint=URL&region=R&force_path_style=true`: the location, and the settings
 * the query gives (credentials never come in the URL: it is logged and shown). `what` names the
 * option in the error. Throws ConfigError.
 */
export function parseS3Url(text: string | URL, what: string): S3Location & { settings: S3Settings } {
  let url: URL;
  try {
    url = typeof text === 'string' ? new URL(text) : text;
  } catch {
    throw new ConfigError(`bad ${what} '${String(text)}': use s3://BUCKET/PREFIX`);
  }
  if (url.protocol !== 's3:' || !url.hostname) throw new ConfigError(`${what} must read s3://BUCKET/PREFIX, got ${url.protocol}//${url.host}${url.pathname}`);
  if (url.username || url.password) throw new ConfigError(`${what}: give S3 credentials as access_key_id and secret_access_key (or AWS_* variables), not in the URL`);
  const settings: S3Settings = {};
  for (const [key, value] of url.searchParams) {
    if (key === 'endpoint') settings.endpoint = value;
    else if (key === 'region') settings.region = value;
    else if (key === 'force_path_style') {
      if (value !== 'true' && value !== 'false') throw new ConfigError(`${what}: force_path_style is true or false, got '${value}'`);
      settings.forcePathStyle = value === 'true';
    } else throw new ConfigError(`${what}: unknown setting '${key}' (use endpoint, region, force_path_style)`);
  }
  if (settings.endpoint !== undefined) describeEndpoint(settings.endpoint);
  return { bucket: url.hostname, prefix: decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, ''), settings };
}

/** The location for logs and `kiln info`: no credentials (the endpoint loses any user info). */
export function describeS3(location: S3Location, settings: S3Settings): string {
  const endpoint = settings.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  return `s3://${location.bucket}/${location.prefix} (endpoint ${endpoint ? describeEndpoint(endpoint) : 'from the AWS defaults'})`;
}

/** The HTTP status of a service's answer, undefined when none came (refused, reset, timed out). */
export function s3Status(raw: unknown): number | undefined {
  return (raw as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

/** The endpoint without any user info it may carry; throws ConfigError when it is no URL. */
export function describeEndpoint(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    return url.origin + url.pathname.replace(/\/$/, '');
  } catch (raw) {
    throw new ConfigError(`S3 endpoint is not a URL: ${coerceError(raw).message}`);
  }
}
