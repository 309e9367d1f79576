/**
 * `kiln server --tls-cert FILE --tls-key FILE`: the certificate and key read and checked once at
 * start, so a wrong file stops the server with one line instead of failing every handshake later.
 * Node's tls is required here, only when TLS is configured: an idle plain-HTTP server never loads it.
 */
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { coerceError, TlsConfigError } from '../errors.js';

/** Where the server's TLS files are. */
export interface TlsSettings {
  /** PEM certificate (with its chain, leaf first). */
  cert: string;
  /** PEM private key: readable by its owner (and group) only. */
  key: string;
  /** A CA file for the workers the server starts itself (pools get it as KILN_CA); none: their default trust store. */
  ca?: string;
}

/** What fastify's `https` option takes. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
}

/**
 * Reads and checks the files. The key is refused when other users may read it (any "other"
 * permission bit), as PostgreSQL and ssh refuse theirs: a key the whole host can read is no secret.
 * Group read (0640) is allowed, for the usual ssl-cert group set-ups.
 */
export function readTlsFiles(settings: TlsSettings): TlsMaterial {
  const read = (what: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (raw) {
      throw new TlsConfigError(`cannot read the TLS ${what} ${file}: ${coerceError(raw).message}`);
    }
  };
  const cert = read('certificate', settings.cert);
  const key = read('key', settings.key);
  const mode = statSync(settings.key).mode & 0o777;
  if ((mode & 0o007) !== 0) {
    throw new TlsConfigError(`the TLS key ${settings.key} can be read by other users (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 it (640 for a group)`);
  }
  if (settings.ca !== undefined) read('CA file', settings.ca);
  const tls = createRequire(import.meta.url)('node:tls') as typeof import('node:tls');
  try {
    tls.createSecureContext({ cert, key });
  } catch (raw) {
    // OpenSSL's words ("key values mismatch", "no start line"): never the key's bytes.
    throw new TlsConfigError(`the TLS certificate ${settings.cert} and key ${settings.key} cannot be used: ${coerceError(raw).message}`);
  }
  return { cert, key };
}
