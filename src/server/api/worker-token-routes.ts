/**
 * Per-worker tokens, for the admin: create one bound to a worker name (shown once, stored as its
 * hash), list them (never the token), revoke one (its connected worker is disconnected).
 */
import type { FastifyInstance } from 'fastify';
import * as z from 'zod/mini';
import type { WorkerIdentity } from '../../core/index.js';
import { WorkerTokenNotFoundError } from '../../errors.js';
import { workerName } from '../../protocol/index.js';
import type { JobStore, WorkerTokenRecord } from '../../store/index.js';
import { hashToken, newToken } from '../tokens.js';
import { forAdmin } from './auth.js';
import { parse } from './schemas.js';

/** What the routes need. */
export interface WorkerTokenRouteParts {
  store: JobStore;
  now: () => number;
  /** Closes the connections of a revoked identity; returns how many there were. */
  disconnect: (identity: WorkerIdentity, reason: string) => number;
  /** Closes a connection under `name` with any other identity (the name now has its own token). */
  disconnectOthers: (name: string, identity: WorkerIdentity, reason: string) => number;
}

// A token's name is the worker name it binds: the hello's own rule.
const nameOnly = z.strictObject({ name: workerName });

const present = (record: WorkerTokenRecord) => ({
  name: record.name,
  createdAt: new Date(record.createdAt).toISOString(),
  lastUsedAt: record.lastUsedAt === null ? null : new Date(record.lastUsedAt).toISOString(),
});

/** Registers the worker-token routes. */
export function registerWorkerTokenRoutes(app: FastifyInstance, { store, now, disconnect, disconnectOthers }: WorkerTokenRouteParts): void {
  app.post('/api/worker-tokens', forAdmin, async (request, reply) => {
    const { name } = parse(nameOnly, request.body, 'worker token request');
    const token = newToken();
    const record = await store.createWorkerToken(name, hashToken(token), now());
    // From now on the name is the token's: a worker connected under it with another credential goes.
    const disconnected = disconnectOthers(name, { kind: 'token', name }, 'kiln worker-token create');
    request.log.info({ worker: name, disconnected }, 'worker token created');
    return reply.code(201).send({ ...present(record), token });
  });

  app.get('/api/worker-tokens', forAdmin, async () => ({ tokens: (await store.listWorkerTokens()).map(present) }));

  app.delete('/api/worker-tokens/:name', forAdmin, async (request) => {
    const { name } = parse(nameOnly, request.params, 'worker name');
    if (!(await store.revokeWorkerToken(name))) throw new WorkerTokenNotFoundError(name);
    const disconnected = disconnect({ kind: 'token', name }, 'kiln worker-token revoke');
    request.log.info({ worker: name, disconnected }, 'worker token revoked');
    return { name, revoked: true, disconnected };
  });
}
