/**
 * The dashboard's session cookie: a random id (256 bits) the browser holds HttpOnly; the store keeps
 * only its sha256. Its CSRF value is derived from the id, so the server keeps nothing more and a page
 * that cannot read the cookie cannot make the value. A few lines of header text: no cookie library
 * for one cookie of fixed shape.
 */
import { createHash } from 'node:crypto';

export const SESSION_COOKIE = 'kiln_session';
/**
 * Over TLS the cookie is named with the `__Host-` prefix: browsers then take it only when Secure,
 * with Path=/ and no Domain, so a sibling host or a plain-HTTP page cannot plant or shadow it. Over
 * plain HTTP a browser would refuse a `__Host-` cookie, so it keeps the plain name.
 */
export const SECURE_SESSION_COOKIE = `__Host-${SESSION_COOKIE}`;

/** The cookie's name as served over TLS (`secure`) or plain HTTP. */
export function sessionCookieName(secure: boolean): string {
  return secure ? SECURE_SESSION_COOKIE : SESSION_COOKIE;
}

/** The session id in a Cookie header, if it carries Kiln's for this scheme (a base64url value of a new token's shape). */
export function sessionCookie(header: string | undefined, secure = false): string | undefined {
  if (header === undefined) return undefined;
  const name = sessionCookieName(secure);
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== name) continue;
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
  return `${sessionCookieName(secure)}=${id}; Path=/; Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

/** The Set-Cookie value that makes the browser drop the session cookie. */
export function sessionClearCookie(secure: boolean): string {
  return `${sessionCookieName(secure)}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}
