/**
 * The one way Kiln talks to an S3-compatible service (AWS S3, MinIO, Ceph, Garage...): the upload
 * target (`--upload s3://...`) and the artifact blob store (`artifacts.store: s3://...`) both make
 * their client here, so both get the same compatibility settings, timeouts and credential rules.
 * Loaded only by servers that use S3 (the SDK is large); the URL parsing is in s3-url.ts.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { ConfigError } from '../errors.js';
import { describeEndpoint, type S3Settings } from './s3-url.js';

export { describeS3, parseS3Url, s3Status, type S3Location, type S3Settings } from './s3-url.js';

/** A client for `settings`; throws ConfigError when only half the credentials are given or the endpoint is no URL. */
export function makeS3Client(settings: S3Settings): S3Client {
  if (!settings.accessKeyId !== !settings.secretAccessKey) throw new ConfigError('S3 access key id and secret access key go together: give both or neither');
  if (settings.endpoint !== undefined) describeEndpoint(settings.endpoint);
  let region: Promise<string> | undefined;
  return new S3Client({
    endpoint: settings.endpoint,
    region: settings.region ?? (() => (region ??= defaultRegion())),
    credentials: settings.accessKeyId && settings.secretAccessKey ? { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey } : undefined,
    forcePathStyle: settings.forcePathStyle,
    // Recent SDKs add CRC checksums and aws-chunked bodies by default, which S3-compatible
    // services (s3rver, older MinIO and Ceph) reject; plain signed PUTs work everywhere.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // The SDK never retries a stream body (callers retry the whole operation instead), and says
    // so on the console unless given a logger: callers report their failures themselves.
    logger: { debug() {}, info() {}, warn() {}, error() {} },
    // Without timeouts, a service that stops answering would hold a delivery or an upload forever.
    // The socket timeout is an idle timeout, so large transfers that keep moving are not cut.
    requestHandler: { connectionTimeout: 10_000, socketTimeout: 60_000 },
  });
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

