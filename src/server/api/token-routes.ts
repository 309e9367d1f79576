/**
 * Tokens for people, for the admin: create one with a role and an optional expiry (shown once,
 * stored as its hash), list them (never the token), revoke one (refused from then on, its browser
 * sessions ended).
 */
import type { FastifyInstance } from 'fastify';
import { ADMIN_FILE_TOKEN_NAME } from '../../core/index.js';
import { InvalidRequestError, TokenNotFoundError } from '../../errors.js';
import type { JobStore, TokenRecord } from '../../store/index.js';
import { hashToken, newToken } from '../tokens.js';
import { forAdmin } from './auth.js';
import { createTokenBody, parse, tokenNameParam } from './schemas.js';

/** What the routes need. */
export interface TokenRouteParts {
  store: JobStore;
  now: () => number;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

const present = (record: TokenRecord, now: number) => ({
  name: record.name,
  role: record.role,
  createdAt: iso(record.createdAt),
  expiresAt: iso(record.expiresAt),
  expired: record.expiresAt !== null && record.expiresAt <= now,
  lastUsedAt: iso(record.lastUsedAt),
});

export type PresentedToken = ReturnType<typeof present>;

/** Registers the token routes. */
export function registerTokenRoutes(app: FastifyInstance, { store, now }: TokenRouteParts): void {
  app.post('/api/tokens', forAdmin, async (request, reply) => {
    const { name, role, expiresInMs } = parse(createTokenBody, request.body, 'token request');
    if (name.toLowerCase() === ADMIN_FILE_TOKEN_NAME) throw new InvalidRequestError(`the token name '${name}' is the data dir's admin.token's: choose another`);
    const token = newToken();
    const createdAt = now();
    const record = await store.createToken({ name, role, sha256: hashToken(token), createdAt, expiresAt: expiresInMs === undefined ? null : createdAt + expiresInMs });
    request.log.info({ token: name, role, expiresAt: iso(record.expiresAt) }, 'token created');
    return reply.code(201).send({ ...present(record, createdAt), token });
  });

  app.get('/api/tokens', forAdmin, async () => {
    const at = now();
    return { tokens: (await store.listTokens()).map((record) => present(record, at)) };
  });

  app.delete('/api/tokens/:name', forAdmin, async (request) => {
    const { name } = parse(tokenNameParam, request.params, 'token name');
    const sessions = await store.revokeToken(name, now());
    if (sessions === undefined) throw new TokenNotFoundError(name);
    request.log.info({ token: name, sessions }, 'token revoked');
    return { name, revoked: true, sessions };
  });
}
