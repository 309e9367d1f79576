/**
 * Which connection failures mean "the server's certificate is not trusted": retrying cannot help,
 * the user must give the CA (--ca) or fix the certificate. The codes are OpenSSL's verify results
 * as Node names them, and Node's own for a certificate of another host.
 */

const CERTIFICATE_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE', 'CERT_REVOKED', 'INVALID_CA', 'CERT_CHAIN_TOO_LONG', 'INVALID_PURPOSE', 'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
]);

/** Why the server's certificate was refused (Node's words, e.g. "self-signed certificate"), or undefined for any other failure. */
export function untrustedCertificateReason(error: { code?: unknown; message?: unknown } | undefined): string | undefined {
  if (!error || typeof error.code !== 'string' || !CERTIFICATE_CODES.has(error.code)) return undefined;
  if (typeof error.message !== 'string' || error.message === '') return error.code;
  // Node's altname message runs on ("Hostname/IP does not match certificate's altnames: IP: ... is not in the cert's list: ..."): kept, it names both.
  return error.message.charAt(0).toLowerCase() + error.message.slice(1);
}

/**
 * The hint for a connection an `http://` URL made that the server cut without answering: a TLS
 * server reading plain HTTP does exactly that.
 */
export function plainHttpHint(url: string, error: { code?: unknown } | undefined): string | undefined {
  if (!url.startsWith('http://') && !url.startsWith('ws://')) return undefined;
  const code = error?.code;
  if (code !== 'ECONNRESET' && code !== 'UND_ERR_SOCKET' && code !== 'EPIPE') return undefined;
  return `the server closed the connection without answering: if it serves HTTPS, use ${url.replace(/^(http|ws):/, (_, scheme: string) => `${scheme}s:`)}`;
}
