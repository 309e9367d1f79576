/**
 * Who may call which route. Every route declares its audience in its config; the check reads it
 * from the route the router matched (`request.routeOptions.config`), never from the URL, so no
 * spelling of a path (`/%61pi`, `//api`, an absolute-form target, ...) reaches a route without its
 * check. A route registered without an audience is refused at registration: deny by default.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WorkerIdentity } from '../../core/index.js';
import { UnauthorizedError } from '../../errors.js';
import { bearerToken, tokenMatches, type Tokens } from '../tokens.js';

/**
 * Who a route is for. A small closed set today; when roles come, an audience becomes the list of
 * roles allowed, checked at the same one place.
 */
export type Audience = 'admin' | 'worker' | 'public';

const AUDIENCES: readonly Audience[] = ['admin', 'worker', 'public'];

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route; required on every route (see installAuth). */
    audience?: Audience;
  }
  interface FastifyRequest {
    /** Who the request's token says it comes from; set by the auth hook before any handler runs. */
    credential: Credential;
  }
}

/** The caller as its token says: the admin, a worker identity, or nobody (a public route). */
export type Credential = { kind: 'admin' } | { kind: 'worker'; identity: WorkerIdentity } | { kind: 'anonymous' };

/** Route options for each audience, to spread into a route's options. */
export const forAdmin = { config: { audience: 'admin' } } as const;
export const forWorker = { config: { audience: 'worker' } } as const;
export const forPublic = { config: { audience: 'public' } } as const;

/** What the auth hook needs to recognise tokens. */
export interface AuthOptions {
  tokens: Tokens;
  /** The worker identity of a token other than the shared one (a per-worker or pool instance token), if any. */
  workerIdentity: (token: string) => Promise<WorkerIdentity | undefined>;
}

/** A route as registered, with its audience (for `kiln` tests that walk every route). */
export interface RouteEntry {
  method: string;
  url: string;
  audience: Audience;
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
    if (audience === undefined || !AUDIENCES.includes(audience)) {
      throw new Error(`route ${methods.join(',')} ${route.url} declares no audience (config.audience: ${AUDIENCES.join(' | ')}); routes are closed by default`);
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
    request.credential = await authenticate(request, audience, options);
  });
  return routes;
}

async function authenticate(request: FastifyRequest, audience: Audience | undefined, options: AuthOptions): Promise<Credential> {
  const presented = bearerToken(request.headers.authorization);
  const refusal = () => new UnauthorizedError(request.headers.authorization ? 'invalid token' : 'missing token: pass --token or set KILN_TOKEN');
  if (presented === undefined) throw refusal();
  if (audience === 'admin') {
    if (tokenMatches(presented, options.tokens.admin)) return { kind: 'admin' };
    throw refusal();
  }
  if (audience === 'worker') {
    if (tokenMatches(presented, options.tokens.worker)) return { kind: 'worker', identity: { kind: 'shared' } };
    const identity = await options.workerIdentity(presented);
    if (identity) return { kind: 'worker', identity };
    throw refusal();
  }
  // A matched route without an audience cannot be registered; should one slip through, it is closed.
  throw refusal();
}
