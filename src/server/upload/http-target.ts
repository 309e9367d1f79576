/**
 * `--upload http(s)://[user:password@]host/path`: each finished run is one multipart/form-data POST
 * (format in docs/upload.md): a `run` part (JSON metadata), a `console` part (text) and one
 * `artifact` part per file, streamed from disk. Basic auth comes from the URL's userinfo, as with
 * robur's builder. 2xx: delivered; 408, 429, 5xx or no answer: retry; any other status: give up.
 */
import http from 'node:http';
import { Readable } from 'node:stream';
import FormData from 'form-data';
import { coerceError } from '../../errors.js';
import { openLazily } from '../artifact-store.js';
import { describeUrl } from '../../url-for-humans.js';
import { httpsModule, IDLE_TIMEOUT_MS, judge, missingFile } from './http-delivery.js';
import { deliveryMetadata, type DeliveryOutcome, type RunDelivery, type UploadTarget } from './target.js';

/** @internal Re-exported for its table test. */
export { judge };

/** The multipart body of one delivery, and the files it reads (to close if the request fails). */
function formFor(delivery: RunDelivery): { form: FormData; files: Readable[] } {
  const form = new FormData();
  const files: Readable[] = [];
  form.append('run', JSON.stringify(deliveryMetadata(delivery)), { contentType: 'application/json', filename: 'run.json' });
  const lines = delivery.consoleLines();
  form.append('console', Readable.from((async function* () {
    for await (const line of lines) yield line + '\n';
  })()), { contentType: 'text/plain; charset=utf-8', filename: 'console.txt' });
  for (const artifact of delivery.artifacts) {
    // Opened when the form reaches it: one blob open at a time, whatever the number of artifacts.
    const file = openLazily(() => artifact.open());
    files.push(file);
    form.append('artifact', file, {
      filepath: artifact.path, contentType: 'application/octet-stream', knownLength: artifact.size,
      header: { 'x-kiln-sha256': artifact.sha256, 'x-kiln-mode': artifact.mode.toString(8) },
    });
  }
  return { form, files };
}

/** The HTTP(S) upload target. */
export function httpTarget(url: URL): UploadTarget {
  const endpoint = new URL(url.href);
  const authorization = endpoint.username || endpoint.password
    ? `Basic ${Buffer.from(`${decodeURIComponent(endpoint.username)}:${decodeURIComponent(endpoint.password)}`).toString('base64')}`
    : undefined;
  endpoint.username = '';
  endpoint.password = '';
  return {
    description: describeUrl(url),
    deliver: (delivery) => new Promise<DeliveryOutcome>((settle) => {
      const { form, files } = formFor(delivery);
      // Whatever happens, the files opened for this attempt are closed once it is decided.
      const resolve = (outcome: DeliveryOutcome) => {
        for (const file of files) file.destroy();
        settle(outcome);
      };
      const request = (endpoint.protocol === 'https:' ? httpsModule() : http).request(endpoint, {
        method: 'POST',
        headers: {
          ...form.getHeaders(),
          ...(authorization ? { authorization } : {}),
          'user-agent': 'kiln',
          'x-kiln-delivery': delivery.deliveryId,
          'x-kiln-run': delivery.run.id,
          'x-kiln-job': delivery.run.job,
        },
        signal: delivery.signal,
        timeout: IDLE_TIMEOUT_MS,
      }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body = (body + chunk).slice(0, 4096)));
        response.on('end', () => resolve(judge(response.statusCode ?? 0, body, response.headers['retry-after'])));
        response.on('error', (err) => resolve({ kind: 'retry', reason: err.message }));
      });
      request.on('timeout', () => request.destroy(new Error(`no answer for ${IDLE_TIMEOUT_MS / 1000}s`)));
      request.on('error', (err) => resolve({ kind: 'retry', reason: `${endpoint.host}: ${coerceError(err).message}` }));
      form.on('error', (err: Error) => {
        if (missingFile(err)) resolve({ kind: 'give-up', reason: `an artifact of the run is missing from the server's store: ${err.message}` });
        request.destroy(err);
      });
      // A pipe reads each file only as fast as the socket takes it.
      form.pipe(request);
    }),
  };
}
