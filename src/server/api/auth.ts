/**
 * Who may call which route. Every route declares its audience in its config: the roles of people
 * allowed (`forRoles('operator', 'admin')`), workers, or the public. The check reads it from the
 * route the router matched (`request.routeOptions.config`), never from the URL, so no spelling of a
 * path (`/%61pi`, `//api`, an absolute-form target, ...) reaches a route without its check. A route
 * registered without an audience is refused at registration: deny by default.
 *
 * A request is first identified (a bearer token, else the dashboard's session cookie): none, or one
 * not accepted (wrong, expired, revoked, signed out), is 401; then a credential the route's audience
 * does not admit is 403.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ADMIN_FILE_TOKEN_NAME, csrfRefusal, isRole, shouldNoteUse, tokenRefusal, type Role, type WorkerIdentity } from '../../core/index.js';
import { CsrfError, ForbiddenError, UnauthorizedError } from '../../errors.js';
import type { JobStore } from '../../store/index.js';
import { bearerToken, hashToken, tokenMatches, type Tokens } from '../tokens.js';
import { csrfFor, sessionCookie } from '../sessions.js';

/** Who a route is for: the roles of people allowed, workers, or anyone. */
export type Audience = readonly Role[] | 'worker' | 'public';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route; required on every route (see installAuth). */
    audience?: Audience;
  }
  interface FastifyRequest {
    /** Who the request's credential says it comes from; set by the auth hook before any handler runs. */
    credential: Credential;
  }
}

/** A person, as their token says. */
export interface Person {
  kind: 'person';
  /** The token's name (`admin` for the data dir's admin.token). */
  name: string;
  role: Role;
  /** When the token stops being accepted; null: never. */
  expiresAt: number | null;
  /** How the request carried it: the token itself, or the session cookie signed in with it. */
  via: 'token' | 'session';
  /** The session cookie's CSRF value (via a session only). */
  csrf?: string;
}

/** The caller as its credential says: a person with a role, a worker identity, or nobody (a public route). */
export type Credential = Person | { kind: 'worker'; identity: WorkerIdentity } | { kind: 'anonymous' };

/** Route options for an audience, to spread into a route's options. */
export function forRoles(...roles: Role[]) {
  return { config: { audience: roles as readonly Role[] } };
}
/** Reads: everything but secrets. */
export const forViewer = forRoles('viewer', 'operator', 'admin');
/** Acting on runs and the schedule's flow: execute, cancel, pause/resume, drop/undrop, redeliver. */
export const forOperator = forRoles('operator', 'admin');
/** Everything else: jobs, tokens, worker tokens, artifact collection. */
export const forAdmin = forRoles('admin');
export const forWorker = { config: { audience: 'worker' as Audience } };
export const forPublic = { config: { audience: 'public' as Audience } };

/** What the auth hook needs to recognise credentials. */
export interface AuthOptions {
  tokens: Tokens;
  /** The worker identity of a token other than the shared one (a per-worker or pool instance token), if any. */
  workerIdentity: (token: string) => Promise<WorkerIdentity | undefined>;
  /** Tokens for people and browser sessions. */
  store: Pick<JobStore, 'findToken' | 'touchToken' | 'findSession'>;
  now: () => number;
}

/** A route as registered, with its audience (for `kiln` tests that walk every route). */
export interface RouteEntry {
  method: string;
  url: string;
  audience: Audience;
}

function validAudience(audience: unknown): audience is Audience {
  if (audience === 'worker' || audience === 'public') return true;
  return Array.isArray(audience) && audience.length > 0 && audience.every(isRole);
}

/** The audience as one word, for messages: `operator or admin`. */
export function describeAudience(audience: Audience): string {
  return typeof audience === 'string' ? audience : audience.join(' or ');
}

/**
 * Installs the audience check. Call it before any route is registered: routes registered earlier
 * escape the registration check. Returns the table of routes registered from then on.
 */
export function installAuth(app: FastifyInstance, options: AuthOptions): RouteEntry[] {
  const routes: RouteEntry[] = [];
  // Every request gets its own value in the onRequest hook; the decoration only declares the field.
  app.decorateRequest('credential', null as never);
  app.addHook('onRoute', (route) => {
    const audience = route.config?.audience;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (!validAudience(audience)) {
      throw new Error(`route ${methods.join(',')} ${route.url} declares no audience (config.audience: roles of viewer, operator, admin | worker | public); routes are closed by default`);
    }
    for (const method of methods) routes.push({ method, url: route.url, audience });
  });
  // onRequest runs before the body is read and before a WebSocket upgrade is accepted.
  app.addHook('onRequest', async (request) => {
    request.credential = { kind: 'anonymous' };
    // Nothing matched: the not-found handler answers 404 and serves nothing.
    if (request.is404) return;
    const audience = request.routeOptions.config.audience;
    if (audience === 'public') return;
    // A matched route without an audience cannot be registered; should one slip through, it is closed.
    if (!validAudience(audience)) throw new UnauthorizedError('invalid token');
    const credential = await identify(request, options);
    if (!credential) throw new UnauthorizedError('missing token: pass --token or set KILN_TOKEN');
    admit(request, audience, credential);
    request.credential = credential;
  });
  return routes;
}

/** Throws ForbiddenError unless `audience` admits `credential`. */
function admit(request: FastifyRequest, audience: Audience, credential: Credential): void {
  const route = `${request.method} ${request.routeOptions.url ?? request.url}`;
  if (audience === 'worker') {
    if (credential.kind === 'worker') return;
    throw new ForbiddenError(`${describeCredential(credential)} cannot use ${route}: it takes a worker token`);
  }
  if (audience === 'public') return;
  if (credential.kind === 'person' && audience.includes(credential.role)) return;
  throw new ForbiddenError(`${describeCredential(credential)} may not ${route}: it needs ${describeAudience(audience)}`);
}

/** The credential in words: `the viewer token 'alice'`, `a worker token`. */
export function describeCredential(credential: Credential): string {
  if (credential.kind === 'person') return `the ${credential.role} token '${credential.name}'${credential.via === 'session' ? ' (signed in)' : ''}`;
  if (credential.kind === 'worker') return 'a worker token';
  return 'no token';
}

/**
 * Who the request comes from: its bearer token, else its session cookie; undefined when it carries
 * neither. Throws UnauthorizedError for one that is not accepted, CsrfError for a cookie-only request
 * a cross-site page could have sent.
 */
async function identify(request: FastifyRequest, options: AuthOptions): Promise<Credential | undefined> {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const presented = bearerToken(header);
    if (presented === undefined) throw new UnauthorizedError('invalid token: send Authorization: Bearer TOKEN');
    return identifyToken(presented, options);
  }
  const sessionId = sessionCookie(request.headers.cookie, request.protocol === 'https');
  if (sessionId === undefined) return undefined;
  // One lookup: the session, if live and its token still current (admin.token as loaded now, or a
  // stored token not revoked nor expired), so a replaced admin.token or a revoke ends it at once.
  const session = await options.store.findSession(hashToken(sessionId), { adminSha256: hashToken(options.tokens.admin), now: options.now() });
  if (!session) throw new UnauthorizedError('the session has ended (signed out, expired, or its token revoked or replaced): sign in again');
  const csrf = csrfFor(sessionId);
  const secFetchSite = request.headers['sec-fetch-site'];
  const presentedCsrf = request.headers['x-kiln-csrf'];
  const refusal = csrfRefusal(request.method, typeof secFetchSite === 'string' ? secFetchSite : undefined, typeof presentedCsrf === 'string' ? presentedCsrf : undefined, csrf);
  if (refusal !== undefined) throw new CsrfError(refusal);
  return { kind: 'person', name: session.tokenName, role: session.role, expiresAt: session.expiresAt, via: 'session', csrf };
}

/** Who a token is: the admin file's, the shared worker token, a person's, or a worker's own; throws UnauthorizedError otherwise. */
export async function identifyToken(presented: string, options: AuthOptions): Promise<Person | { kind: 'worker'; identity: WorkerIdentity }> {
  if (tokenMatches(presented, options.tokens.admin)) return { kind: 'person', name: ADMIN_FILE_TOKEN_NAME, role: 'admin', expiresAt: null, via: 'token' };
  if (tokenMatches(presented, options.tokens.worker)) return { kind: 'worker', identity: { kind: 'shared' } };
  // Tokens are stored as their hash; the lookup by hash leaks nothing about the token.
  const stored = await options.store.findToken(hashToken(presented));
  if (stored) {
    const now = options.now();
    const refusal = tokenRefusal(stored, now);
    if (refusal !== undefined) throw new UnauthorizedError(refusal);
    if (shouldNoteUse(stored.lastUsedAt, now)) await options.store.touchToken(stored.name, now);
    return { kind: 'person', name: stored.name, role: stored.role, expiresAt: stored.expiresAt, via: 'token' };
  }
  const identity = await options.workerIdentity(presented);
  if (identity) return { kind: 'worker', identity };
  throw new UnauthorizedError('invalid token');
}

/** Whether the request's credential may read secrets (a job's environment values): admins only. */
export function mayReadSecrets(request: FastifyRequest): boolean {
  return request.credential.kind === 'person' && request.credential.role === 'admin';
}
