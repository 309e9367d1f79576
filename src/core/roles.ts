/**
 * Who may do what: the roles of tokens for people, when a token or a browser session stops being
 * accepted, and which requests a session must prove come from Kiln's own page (pure rules; the
 * auth hook in src/server/api/auth.ts applies them to the route the router matched).
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** What a person's token may do: `viewer` reads, `operator` also acts on runs, `admin` does everything. */
export type Role = 'viewer' | 'operator' | 'admin';

/** Every role, least to most. */
export const ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** The name the data dir's admin.token goes by (in sessions, cancels, logs); no stored token may take it. */
export const ADMIN_FILE_TOKEN_NAME = 'admin';

/**
 * Who a cancel is recorded as: always the name of the credential that asked (the token's name,
 * `admin` for admin.token); what the client says about itself (`kiln cancel` sends the login name)
 * is only a note after it, never the name: `otto (as root)`.
 */
export function cancelledBy(credentialName: string, clientNote: string | undefined): string {
  return clientNote === undefined || clientNote === credentialName ? credentialName : `${credentialName} (as ${clientNote})`;
}

/** How long a browser session lasts at most: a working day; its token's own expiry cuts it shorter. */
export const SESSION_MS = 12 * 3_600_000;

/** A token's name: a person, a team or a script (`alice`, `ci-nightly`, `bob@example.org`). */
export const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

/** What matters of a stored token to accept it. */
export interface TokenStanding {
  name: string;
  expiresAt: number | null;
  revokedAt: number | null;
}

/** Why the token is refused at `now` (one line), or undefined when it is accepted. */
export function tokenRefusal(token: TokenStanding, now: number): string | undefined {
  if (token.revokedAt !== null) return `the token '${token.name}' was revoked at ${new Date(token.revokedAt).toISOString()}`;
  if (token.expiresAt !== null && token.expiresAt <= now) return `the token '${token.name}' expired at ${new Date(token.expiresAt).toISOString()}`;
  return undefined;
}

/** When a session signed in at `now` with a token that expires at `tokenExpiresAt` ends. */
export function sessionExpiry(now: number, tokenExpiresAt: number | null): number {
  return tokenExpiresAt === null ? now + SESSION_MS : Math.min(now + SESSION_MS, tokenExpiresAt);
}

/** Whether a last use noted at `lastUsedAt` is stale enough at `now` to write again (at most once a minute). */
export function shouldNoteUse(lastUsedAt: number | null, now: number): boolean {
  return lastUsedAt === null || now - lastUsedAt >= 60_000 || now < lastUsedAt;
}

/**
 * Whether a request authenticated by the session cookie alone is refused as possibly cross-site: a
 * method that changes state needs the `X-Kiln-CSRF` value given at sign-in (a page of another site
 * cannot set it without a CORS preflight, which Kiln never grants), and a browser that says the
 * request is cross-site (`Sec-Fetch-Site`) is believed. Reads (GET, HEAD) change nothing.
 */
export function csrfRefusal(method: string, secFetchSite: string | undefined, presented: string | undefined, expected: string): string | undefined {
  if (secFetchSite === 'cross-site') return 'a cross-site request cannot use the session cookie';
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return undefined;
  if (presented === undefined || presented === '') return 'a request signed in by the session cookie must carry the X-Kiln-CSRF header given at sign-in';
  if (!sameSecret(presented, expected)) return 'the X-Kiln-CSRF header does not match this session';
  return undefined;
}

/** Whether a presented secret equals the expected one, in constant time (compares their sha256, so lengths leak nothing). */
export function sameSecret(presented: unknown, expected: string): boolean {
  if (typeof presented !== 'string') return false;
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(presented), digest(expected));
}
