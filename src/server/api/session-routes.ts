/**
 * Browser sessions for the dashboard: sign in once with a token (`POST /api/session`), then the
 * page holds an HttpOnly, SameSite=Strict cookie the auth hook accepts as that token's role, with
 * the CSRF value its state-changing requests must carry (auth.ts). `GET` says who, `DELETE` signs
 * out. Sessions live in the store (only the hash of their id), so a restart, or another server on
 * the same PostgreSQL database, keeps them.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { sameSecret, sessionExpiry } from '../../core/index.js';
import { CsrfError, ForbiddenError, UnauthorizedError } from '../../errors.js';
import type { JobStore } from '../../store/index.js';
import { csrfFor, sessionClearCookie, sessionCookie, sessionSetCookie } from '../sessions.js';
import { hashToken } from '../tokens.js';
import { forPublic, forViewer, identifyToken, type AuthOptions } from './auth.js';
import { parse, signInBody } from './schemas.js';

/** What the routes need. */
export interface SessionRouteParts {
  store: JobStore;
  now: () => number;
  /** How tokens are recognised (the auth hook's own options). */
  auth: AuthOptions;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const secure = (request: FastifyRequest) => request.protocol === 'https';

/** Registers the session routes. */
export function registerSessionRoutes(app: FastifyInstance, { store, now, auth }: SessionRouteParts): void {
  // Public: it is how a browser without a cookie gets one. The token is in the body, never a URL.
  app.post('/api/session', forPublic, async (request, reply) => {
    // A page of another site must not sign the browser in (as the attacker's own token, say).
    if (request.headers['sec-fetch-site'] === 'cross-site') throw new CsrfError('a cross-site page cannot sign in');
    const { token } = parse(signInBody, request.body, 'sign-in request');
    const who = await identifyToken(token, auth);
    if (who.kind !== 'person') throw new ForbiddenError('a worker token cannot sign in: use a token from kiln token create');
    // Signing in again replaces this browser's previous session rather than leaving it live.
    const previous = sessionCookie(request.headers.cookie, secure(request));
    if (previous !== undefined) await store.deleteSession(hashToken(previous));
    const id = randomBytes(32).toString('base64url');
    const createdAt = now();
    const expiresAt = sessionExpiry(createdAt, who.expiresAt);
    // The token's hash goes with the session: the lookup accepts it only while that token is current,
    // which also ends a session whose sign-in raced its token's revoke (insert after the revoke's delete).
    await store.createSession(hashToken(id), { tokenName: who.name, role: who.role, tokenSha256: hashToken(token), createdAt, expiresAt });
    request.log.info({ token: who.name, role: who.role }, 'signed in');
    reply.header('set-cookie', sessionSetCookie(id, expiresAt - createdAt, secure(request)));
    return reply.code(201).send({ name: who.name, role: who.role, expiresAt: iso(expiresAt), csrf: csrfFor(id) });
  });

  app.get('/api/session', forViewer, async (request) => {
    const who = request.credential;
    if (who.kind !== 'person') throw new UnauthorizedError('invalid token');
    return { name: who.name, role: who.role, via: who.via, expiresAt: iso(who.expiresAt), csrf: who.csrf ?? null };
  });

  // Public, so that a browser whose session already ended can still clear its cookie.
  app.delete('/api/session', forPublic, async (request, reply) => {
    const id = sessionCookie(request.headers.cookie, secure(request));
    let signedOut = false;
    if (id !== undefined) {
      if (!sameSecret(request.headers['x-kiln-csrf'], csrfFor(id))) throw new CsrfError('signing out by the session cookie needs the X-Kiln-CSRF header given at sign-in');
      signedOut = await store.deleteSession(hashToken(id));
    }
    reply.header('set-cookie', sessionClearCookie(secure(request)));
    return { signedOut };
  });
}
