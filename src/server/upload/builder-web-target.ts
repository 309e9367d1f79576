/**
 * `--upload builder-web+https://USER:PASS@HOST[:PORT]/upload` (or `builder-web+http`): each finished
 * run goes to robur's builder-web as builder itself sends it (shared/reference/robur-protocol.md
 * §2.1, §2.5): one `POST` whose whole body is the run's exec blob (DER), with its length up front,
 * `Authorization: Basic`, no content type, no multipart. The blob is streamed: artifacts flow from
 * the blob store into the request, never held whole.
 *
 * builder-web's answers (§2.2): 201 stored; 409 it already has that uuid (a resend after a lost 201:
 * delivered); 401 bad credentials, or a restricted user whose access list lacks the job; 500 it could
 * not decode the body or its database failed. Unlike the multipart target, a 401 and a 500 are given
 * up at once: retrying cannot change either, and `kiln redeliver RUN` sends the run again once
 * fixed. 408, 429, other 5xx and network errors are retried with the outbox's backoff.
 */
import http from 'node:http';
import type { Readable } from 'node:stream';
import { coerceError, ConfigError } from '../../errors.js';
import { describeUrl } from '../../url-for-humans.js';
import { httpsModule, IDLE_TIMEOUT_MS, judge, missingFile } from './http-delivery.js';
import { builderWebJobNameProblem, execUnavailable, hasExec, runExecStream } from './robur-exec-of-run.js';
import type { DeliveryOutcome, RunDelivery, UploadTarget } from './target.js';

/** The scheme prefix that selects this target. */
export const BUILDER_WEB_SCHEME = 'builder-web+';

/** Most of an answer's body kept for the reason. */
const MAX_BODY = 4096;

/** builder-web's answer to one upload, as a delivery outcome. @internal Exported for its table test. */
export function builderWebVerdict(status: number, body: string, retryAfter: string | undefined, job: string): DeliveryOutcome {
  const said = body.trim().replace(/\s+/g, ' ').slice(0, 200);
  const reason = `HTTP ${status}${said ? `: ${said}` : ''}`;
  if (status === 409) return { kind: 'delivered', note: `builder-web already has this run (${reason})` };
  if (status === 401) {
    return { kind: 'give-up', reason: `${reason} (builder-web refused the credentials of the --upload URL, or the user is restricted and job '${job}' is not on its access list: builder-db access-add)` };
  }
  if (status === 500) {
    return { kind: 'give-up', reason: `${reason} (builder-web could not decode the exec blob Kiln built, or its database failed: see builder-web's log; kiln redeliver RUN sends it again)` };
  }
  return judge(status, body, retryAfter);
}

/** Where and as whom to upload, from the `builder-web+http(s)://` URL; throws ConfigError for one that cannot work. */
export function builderWebEndpoint(raw: string): { endpoint: URL; authorization: string; description: string } {
  const bad = (why: string) => new ConfigError(`bad --upload '${describeUrl(raw)}': ${why}`);
  let endpoint: URL;
  try {
    endpoint = new URL(raw.slice(BUILDER_WEB_SCHEME.length));
  } catch {
    throw bad('use builder-web+https://USER:PASSWORD@HOST[:PORT]/upload');
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw bad('builder-web takes builder-web+http:// or builder-web+https://');
  // builder-web checks Basic auth on every upload: a URL without credentials could only be refused.
  if (!endpoint.username || !endpoint.password) throw bad("builder-web needs a user and a password (builder-db user-add): builder-web+https://USER:PASSWORD@HOST/upload");
  if (endpoint.pathname === '/') throw bad('give the path of the upload route, usually /upload');
  let user: string;
  let password: string;
  try {
    user = decodeURIComponent(endpoint.username);
    password = decodeURIComponent(endpoint.password);
  } catch {
    throw bad('the user or password has a bad %-escape');
  }
  // builder-web splits at the first ':' (a password may hold more), so a user cannot hold one.
  if (user.includes(':')) throw bad("a builder-web user name cannot contain ':'");
  const authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const description = describeUrl(raw);
  endpoint.username = '';
  endpoint.password = '';
  return { endpoint, authorization, description };
}

/** The builder-web upload target for a `builder-web+http(s)://` URL. */
export function builderWebTarget(url: string): UploadTarget {
  const { endpoint, authorization, description } = builderWebEndpoint(url);
  return {
    description,
    deliver: async (delivery) => {
      const { run } = delivery;
      // Checked before anything is sent: none of these can change by retrying.
      if (!hasExec(run)) return { kind: 'give-up', reason: execUnavailable(run)! };
      const nameProblem = builderWebJobNameProblem(run.job);
      if (nameProblem) return { kind: 'give-up', reason: nameProblem };
      const body = await runExecStream(run, delivery.readConsole, delivery.artifacts);
      return post(endpoint, authorization, delivery, body);
    },
  };
}

/** One POST of the exec blob; resolves with what builder-web's answer (or its absence) means. */
function post(endpoint: URL, authorization: string, delivery: RunDelivery, body: { length: number; stream: Readable }): Promise<DeliveryOutcome> {
  return new Promise<DeliveryOutcome>((settle) => {
    let settled = false;
    let answered = false;
    const resolve = (outcome: DeliveryOutcome) => {
      if (settled) return;
      settled = true;
      // Whatever ended the attempt, the blob being read for it is closed, and a request whose body
      // was not sent whole (an early answer) does not leave its socket to be reused.
      body.stream.destroy();
      if (!request.writableFinished) request.destroy();
      settle(outcome);
    };
    const request: http.ClientRequest = (endpoint.protocol === 'https:' ? httpsModule() : http).request(endpoint, {
      method: 'POST',
      // No content-type: builder-web takes any, and builder sends none (§2.1).
      headers: {
        'content-length': String(body.length),
        authorization,
        'user-agent': 'kiln',
        'x-kiln-delivery': delivery.deliveryId,
        'x-kiln-run': delivery.run.id,
      },
      signal: delivery.signal,
      timeout: IDLE_TIMEOUT_MS,
    }, (response) => {
      answered = true;
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text = (text + chunk).slice(0, MAX_BODY)));
      const judged = () => resolve(builderWebVerdict(response.statusCode ?? 0, text, response.headers['retry-after'], delivery.run.job));
      response.on('end', judged);
      // An answer cut after its status still says what the status says.
      response.on('error', judged);
      response.on('close', judged);
    });
    request.on('timeout', () => request.destroy(new Error(`no answer for ${IDLE_TIMEOUT_MS / 1000}s`)));
    // An error after the answer began (builder-web closing while the body still went out) is decided by the answer.
    request.on('error', (err) => {
      if (!answered) resolve({ kind: 'retry', reason: `${endpoint.host}: ${coerceError(err).message}` });
    });
    body.stream.on('error', (err: Error) => {
      if (missingFile(err)) resolve({ kind: 'give-up', reason: `an artifact of the run is missing from the server's store: ${err.message}` });
      else resolve({ kind: 'retry', reason: `reading the run's artifacts: ${coerceError(err).message}` });
      request.destroy(err);
    });
    // A pipe reads each artifact only as fast as the socket takes it.
    body.stream.pipe(request);
  });
}
