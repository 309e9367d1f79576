/**
 * Headers every API answer carries, whichever way it is sent (a JSON reply, an error, or an event
 * stream that takes the reply over): `Cache-Control: no-store` (runs, consoles, tokens are not for
 * a shared cache or the browser's back button) and `X-Content-Type-Options: nosniff`; with TLS,
 * `Strict-Transport-Security` on every answer. Applied by the route the router matched (`/api/...`),
 * or to a 404 (a JSON refusal), never by reading the raw URL.
 */
import type { FastifyInstance } from 'fastify';

/** HSTS: a year, as browsers' preload lists expect; the server's own name only (no subdomains it does not serve). */
export const HSTS = 'max-age=31536000';

/**
 * Installs the hook. Call it before installAuth so that refusals carry the headers too. The headers
 * go on the raw response (`setHeader`), which Node merges into whatever status line is written
 * later: fastify's own replies and the event streams that write their head themselves alike.
 */
export function installResponseHeaders(app: FastifyInstance, options: { tls: boolean }): void {
  app.addHook('onRequest', async (request, reply) => {
    if (options.tls) reply.raw.setHeader('strict-transport-security', HSTS);
    const route = request.routeOptions.url;
    if (request.is404 || route === undefined || route.startsWith('/api/')) {
      reply.raw.setHeader('cache-control', 'no-store');
      reply.raw.setHeader('x-content-type-options', 'nosniff');
    }
  });
}
