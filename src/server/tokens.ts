/**
 * The server's tokens: created once in the data dir (mode 0600), compared in constant time. With
 * several servers on one database they are farm-wide (farm_secrets): the first server's win, and a
 * later server overwrites its local files with them so a CLI on its host keeps working.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { JobStore } from '../store/index.js';

/** The admin token (clients) and the worker token (workers). */
export interface Tokens {
  admin: string;
  worker: string;
}

/** Reads `<data>/admin.token` and `<data>/worker.token`, creating each that is missing. */
export function ensureTokens(dataDir: string): Tokens {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return { admin: ensureToken(path.join(dataDir, 'admin.token')), worker: ensureToken(path.join(dataDir, 'worker.token')) };
}

function ensureToken(file: string): string {
  try {
    const existing = readFileSync(file, 'utf8').trim();
    if (existing !== '') return existing;
  } catch (raw) {
    if ((raw as NodeJS.ErrnoException).code !== 'ENOENT') throw raw;
  }
  const token = randomBytes(32).toString('base64url');
  // 'wx' fails if another process created it meanwhile, rather than overwriting its token.
  writeFileSync(file, token + '\n', { mode: 0o600, flag: 'wx' });
  return token;
}

/** Where a farm-wide secret is kept locally, and whom to tell when the farm's replaces it. */
export interface FarmSecretFile {
  /** The local file holding it (one line). */
  file: string;
  log: Logger;
  now: () => number;
}

/**
 * The farm's value of the secret `name` (see JobStore.farmSecret): `local` is proposed, and when the
 * farm already has another value the local file is overwritten with it (mode 0600, through a temp
 * file and a rename, so a reader never sees half a secret) and that is logged, without the secret.
 */
export async function adoptFarmSecret(store: JobStore, name: string, local: string, { file, log, now }: FarmSecretFile): Promise<string> {
  const farm = await store.farmSecret(name, local, now());
  if (farm !== local) {
    const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(temp, farm + '\n', { mode: 0o600, flag: 'wx' });
    renameSync(temp, file);
    log.warn({ file }, `${name} replaced by the farm's`);
  }
  return farm;
}

/**
 * The farm-wide admin and worker tokens (several servers on one database): the first server's
 * win; a later server's local files are overwritten with them. Sessions keep working: they are
 * bound to the hash of the token they were opened with, which is the farm's.
 */
export async function adoptFarmTokens(store: JobStore, local: Tokens, where: { dataDir: string; log: Logger; now: () => number }): Promise<Tokens> {
  const admin = await adoptFarmSecret(store, 'admin.token', local.admin, { ...where, file: path.join(where.dataDir, 'admin.token') });
  const worker = await adoptFarmSecret(store, 'worker.token', local.worker, { ...where, file: path.join(where.dataDir, 'worker.token') });
  return { admin, worker };
}

const digest = (text: string) => createHash('sha256').update(text).digest();

/** A new random token (256 bits, base64url). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * How a per-worker token is stored: its sha256 in hex. The tokens are 256 random bits, so a fast
 * hash is enough; a stolen database gives no token.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Constant-time comparison of a presented token with the expected one. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  return timingSafeEqual(digest(presented), digest(expected));
}

/** The token of an `Authorization: Bearer TOKEN` header. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}
