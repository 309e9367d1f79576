/** The server's tokens: created once in the data dir (mode 0600), compared in constant time. */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

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
