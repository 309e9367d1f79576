/**
 * The dashboard's session cookie: a random id (256 bits) the browser holds HttpOnly; the store keeps
 * only its sha256. Its CSRF value is derived from the id, so the server keeps nothing more and a page
 * that cannot read the cookie cannot make the value. A few lines of header text: no cookie library
 * for one cookie of fixed shape.
 */
import { createHash } from 'node:crypto';

export const SESSION_COOKIE = 'kiln_session';

/** The session id in a Cookie header, if it carries Kiln's (a base64url value of a new token's shape). */
export function sessionCookie(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    const value = part.slice(eq + 1).trim();
    if (/^[A-Za-z0-9_-]{16,128}$/.test(value)) return value;
  }
  return undefined;
}

/** The value a session's state-changing requests carry in X-Kiln-CSRF. */
export function csrfFor(sessionId: string): string {
  return createHash('sha256').update(`kiln-csrf:${sessionId}`).digest('base64url');
}

/** The Set-Cookie value that holds `id` for `maxAgeMs` (Secure when the request came over TLS). */
export function sessionSetCookie(id: string, maxAgeMs: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${id}; Path=/; Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

/** The Set-Cookie value that makes the browser drop the session cookie. */
export function sessionClearCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}
