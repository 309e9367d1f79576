/** What the HTTP upload targets share (the multipart one and builder-web's): the client, its timeout, and what an answer means. */
import { createRequire } from 'node:module';
import type { DeliveryOutcome } from './target.js';

/** node:https, required at the first https delivery: a server that never makes one never loads TLS. */
export function httpsModule(): typeof import('node:https') {
  return createRequire(import.meta.url)('node:https') as typeof import('node:https');
}

/** A connection silent this long is given up (and the delivery retried). */
export const IDLE_TIMEOUT_MS = 60_000;

/** The status's verdict, with the body's first words as the reason: 2xx delivered; 408, 429, 5xx retried; the rest given up. */
export function judge(status: number, body: string, retryAfter: string | undefined): DeliveryOutcome {
  if (status >= 200 && status < 300) return { kind: 'delivered' };
  const reason = `HTTP ${status}${body.trim() ? `: ${body.trim().replace(/\s+/g, ' ').slice(0, 200)}` : ''}`;
  if (status === 408 || status === 429 || status >= 500) {
    const seconds = Number(retryAfter);
    return { kind: 'retry', reason, ...(Number.isFinite(seconds) && seconds > 0 ? { retryAfterMs: seconds * 1000 } : {}) };
  }
  if (status >= 300 && status < 400) return { kind: 'give-up', reason: `${reason} (redirects are not followed: give --upload the final URL)` };
  return { kind: 'give-up', reason };
}

/** A missing artifact blob will not come back: retrying cannot help. */
export function missingFile(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'KILN_ERR_BLOB_MISSING';
}
