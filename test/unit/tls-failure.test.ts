/** Which connection failures are an untrusted certificate (one line, no retry), and the hint for plain http to a TLS server. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { plainHttpHint, untrustedCertificateReason } from '../../src/core/tls-failure.js';

test('certificate failures are told apart from other connection failures, in Node\'s words', () => {
  const table: [{ code?: unknown; message?: unknown } | undefined, string | undefined][] = [
    [{ code: 'SELF_SIGNED_CERT_IN_CHAIN', message: 'self-signed certificate in certificate chain' }, 'self-signed certificate in certificate chain'],
    [{ code: 'DEPTH_ZERO_SELF_SIGNED_CERT', message: 'self-signed certificate' }, 'self-signed certificate'],
    [{ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', message: 'unable to verify the first certificate' }, 'unable to verify the first certificate'],
    [{ code: 'CERT_HAS_EXPIRED', message: 'certificate has expired' }, 'certificate has expired'],
    [{ code: 'ERR_TLS_CERT_ALTNAME_INVALID', message: "Hostname/IP does not match certificate's altnames: IP: 10.0.0.1 is not in the cert's list: 127.0.0.1" },
      "hostname/IP does not match certificate's altnames: IP: 10.0.0.1 is not in the cert's list: 127.0.0.1"],
    [{ code: 'CERT_UNTRUSTED' }, 'CERT_UNTRUSTED'],
    [{ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:7420' }, undefined],
    [{ code: 'ECONNRESET' }, undefined],
    [{ code: 42 }, undefined],
    [{}, undefined],
    [undefined, undefined],
  ];
  for (const [error, expected] of table) assert.equal(untrustedCertificateReason(error), expected, JSON.stringify(error));
});

test('a connection cut without an answer on an http:// or ws:// URL hints at https', () => {
  assert.equal(plainHttpHint('http://build:7420', { code: 'ECONNRESET' }), 'the server closed the connection without answering: if it serves HTTPS, use https://build:7420');
  assert.equal(plainHttpHint('http://build:7420', { code: 'UND_ERR_SOCKET' }), 'the server closed the connection without answering: if it serves HTTPS, use https://build:7420');
  assert.equal(plainHttpHint('ws://build:7420/api/worker', { code: 'ECONNRESET' }), 'the server closed the connection without answering: if it serves HTTPS, use wss://build:7420/api/worker');
  assert.equal(plainHttpHint('https://build:7420', { code: 'ECONNRESET' }), undefined, 'already https');
  assert.equal(plainHttpHint('http://build:7420', { code: 'ECONNREFUSED' }), undefined, 'nobody listens: not a TLS server');
  assert.equal(plainHttpHint('http://build:7420', undefined), undefined);
});
