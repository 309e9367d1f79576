/**
 * The dashboard's files: `GET /` (the page) and `GET /assets/NAME` (its script, styles and icon),
 * read from disk at each request (dist/web/, built by scripts/build.mjs), so an idle server holds
 * none of them in memory. Public: they are the same for everyone and hold no data; the page asks
 * for a token and reads everything through the API. Strict headers: the page runs only its own
 * script and talks only to this server.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { RouteNotFoundError } from '../../errors.js';
import { WEB_DIR } from '../../package-paths.js';
import { forPublic } from './auth.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json; charset=utf-8',
};

/** Asset names the build writes: a plain file name, no path, no dot files. */
const ASSET_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+$/;

/** Nothing but this server's own files and API; never framed by another site. */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/** Registers `/` and `/assets/*`. */
export function registerDashboardRoutes(app: FastifyInstance, dir = WEB_DIR): void {
  app.get('/', forPublic, async (request, reply) => sendFile(reply, dir, 'index.html', 'no-cache', request.method, request.url));
  app.get('/assets/:name', forPublic, async (request, reply) => {
    const { name } = request.params as { name: string };
    if (!ASSET_NAME.test(name) || !(path.extname(name) in TYPES)) throw new RouteNotFoundError(request.method, request.url);
    // Fixed names (app.js, app.css): revalidated at each load, a 304 when unchanged, so an upgrade shows at once.
    return sendFile(reply, dir, name, 'no-cache', request.method, request.url);
  });
}

async function sendFile(reply: FastifyReply, dir: string, name: string, cache: string, method: string, url: string) {
  const file = path.join(dir, name);
  const info = await stat(file).catch(() => undefined);
  // A checkout without a build has no dashboard: a 404 that says how to get one.
  if (!info?.isFile()) throw new RouteNotFoundError(method, `${url} (the dashboard is not built here: run npm run build)`);
  const modified = info.mtime.toUTCString();
  reply.headers({ ...SECURITY_HEADERS, 'content-type': TYPES[path.extname(name)]!, 'cache-control': cache, 'last-modified': modified });
  if (reply.request.headers['if-modified-since'] === modified) return reply.code(304).send();
  reply.header('content-length', info.size);
  return reply.send(createReadStream(file));
}
