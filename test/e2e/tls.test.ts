/**
 * TLS with real processes and certificates made by openssl here: a CA, a server certificate it
 * signed (for 127.0.0.1 and localhost), and a second, unrelated CA. A server with --tls-cert and
 * --tls-key serves HTTPS and WSS: a worker and the CLI trusting the CA (--ca, KILN_CA) run a job
 * with an artifact; a process pool's instances get the CA (tls.ca) and run one too. A client or
 * worker trusting the wrong CA (or none) is refused with one line and exit 3, and plain http to a
 * TLS server says to use https. Bad TLS files stop the server with one line.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { followRun, freePort, kiln, spawnKiln, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const skip = needs('openssl');

interface Certificates {
  ca: string;
  otherCa: string;
  cert: string;
  key: string;
}

/** Makes the test's CA, its server certificate (127.0.0.1, localhost) and an unrelated CA in `dir`. */
function makeCertificates(dir: string): Certificates {
  const file = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=kiln test CA');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('other.key'), '-out', file('other.pem'), '-days', '2', '-subj', '/CN=another CA');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=localhost');
  writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file('server.pem'), '-days', '2', '-extfile', file('san.ext'));
  chmodSync(file('server.key'), 0o600);
  return { ca: file('ca.pem'), otherCa: file('other.pem'), cert: file('server.pem'), key: file('server.key') };
}

/** A TLS server on a free port (its https:// URL), with `args` added. */
async function startTlsServer(t: TestContext, certs: Certificates, args: string[] = []): Promise<ServerProcess> {
  const dataDir = tempDir(t);
  const port = await freePort();
  const owned = spawnKiln(t, ['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--tls-cert', certs.cert, '--tls-key', certs.key, ...args]);
  const listening = await owned.waitFor(/kiln server listening on/);
  assert.match(listening, new RegExp(`on https://127\\.0\\.0\\.1:${port} `), 'the server says its https:// URL');
  return {
    ...owned, url: `https://127.0.0.1:${port}`, dataDir,
    adminToken: readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim(),
    workerToken: readFileSync(path.join(dataDir, 'worker.token'), 'utf8').trim(),
  };
}

test('over HTTPS and WSS, a worker and the CLI that trust the CA run a job with an artifact', { skip }, async (t) => {
  const certs = makeCertificates(tempDir(t));
  const server = await startTlsServer(t, certs);
  const worker = spawnKiln(t, ['worker', '--server', server.url, '--name', 'tls-worker', '--platform', 'tlsos'], { KILN_WORKER_TOKEN: server.workerToken, KILN_CA: certs.ca });
  await worker.waitFor(/connected to the server/);
  const cli = (args: string[]) => kiln(server, ['--ca', certs.ca, ...args]);
  const scheduled = await cli(['schedule', 'secure', '--command', 'echo sealed > out.txt; echo over tls', '--platform', 'tlsos', '--period', 'never']);
  assert.equal(scheduled.code, 0, scheduled.stderr);
  const runId = (await cli(['execute', 'secure'])).stdout.trim();
  // observe follows the console over HTTPS, with the CA from the environment this time.
  const observed = await kiln(server, ['observe', runId], { env: { KILN_CA: certs.ca } });
  assert.equal(observed.code, 0, observed.stderr);
  assert.match(observed.stdout, /over tls/);
  const artifacts = JSON.parse((await cli(['artifacts', runId, '--json'])).stdout).artifacts;
  assert.deepEqual(artifacts.map((a: { path: string; size: number }) => [a.path, a.size]), [['out.txt', 7]], 'the worker uploaded its artifact over HTTPS');
  // A name the certificate also holds works the same.
  const byName = await kiln({ ...server, url: server.url.replace('127.0.0.1', 'localhost') }, ['--ca', certs.ca, 'jobs']);
  assert.equal(byName.code, 0, byName.stderr);
});

test('a wrong CA, or none, is refused with one line and exit 3, by the CLI and by a worker', { skip }, async (t) => {
  const certs = makeCertificates(tempDir(t));
  const server = await startTlsServer(t, certs);
  for (const args of [['--ca', certs.otherCa], []]) {
    const refused = await kiln(server, [...args, 'jobs']);
    assert.equal(refused.code, 3, refused.stderr);
    assert.equal(refused.stdout, '');
    assert.equal(refused.stderr.trimEnd().split('\n').length, 1, refused.stderr);
    assert.match(refused.stderr, /^kiln: the server's certificate is not trusted \(.+\) at https:\/\/127\.0\.0\.1:\d+: pass --ca FILE \(env KILN_CA\) with the CA that signed it\n$/);
  }
  const worker = spawnKiln(t, ['worker', '--ca', certs.otherCa, '--server', server.url, '--name', 'mistrusting', '--platform', 'tlsos'], { KILN_WORKER_TOKEN: server.workerToken });
  // Bounded: a worker that kept retrying would fail here saying what it printed.
  await worker.waitFor(/certificate is not trusted/);
  const { code } = await worker.exited;
  assert.equal(code, 3, worker.stderr.join('\n'));
  const said = worker.stderr.filter((line) => /certificate is not trusted/.test(line));
  assert.equal(said.length, 1, worker.stderr.join('\n'));
  assert.match(said[0]!, /pass --ca FILE/);
  // An unreadable --ca is a usage error, said as such.
  const missing = await kiln(server, ['--ca', path.join(tempDir(t), 'nope.pem'), 'jobs']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^kiln: cannot read the CA file .*nope\.pem \(--ca or KILN_CA\): /);
});

test('plain http to a TLS server fails with one line that says to use https', { skip }, async (t) => {
  const certs = makeCertificates(tempDir(t));
  const server = await startTlsServer(t, certs);
  const plain = server.url.replace('https:', 'http:');
  const result = await kiln({ ...server, url: plain }, ['jobs']);
  assert.equal(result.code, 3, result.stderr);
  assert.equal(result.stderr, `kiln: cannot reach the Kiln server at ${plain}: the server closed the connection without answering: if it serves HTTPS, use ${server.url}\n`);
});

test('a process pool over TLS gives its instances the CA (tls.ca in the config file)', { skip }, async (t) => {
  const dir = tempDir(t);
  const certs = makeCertificates(dir);
  const config = path.join(dir, 'kiln.yaml');
  writeFileSync(config, [
    'tls:', '  cert: server.pem', '  key: server.key', '  ca: ca.pem',
    'pools:', '  - name: local', '    provider: process', '    platform: pooled', '    max: 1', '    idle_timeout: 0', '',
  ].join('\n'));
  const dataDir = tempDir(t);
  const port = await freePort();
  const owned = spawnKiln(t, ['server', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--config', config]);
  await owned.waitFor(/kiln server listening on https:/);
  const server = { url: `https://127.0.0.1:${port}`, adminToken: readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim() };
  const env = { env: { KILN_CA: certs.ca } };
  assert.equal((await kiln(server, ['schedule', 'pooled', '--command', 'echo from the pool', '--platform', 'pooled', '--period', 'never'], env)).code, 0);
  const runId = (await kiln(server, ['execute', 'pooled'], env)).stdout.trim();
  // Bounded (an instance that cannot trust the server never runs it): fails saying what the server logged.
  await owned.waitFor(/"msg":"run ended"/);
  const observed = await kiln(server, ['observe', runId], env);
  assert.equal(observed.code, 0, `${observed.stderr}\n${owned.stderr.join('\n')}`);
  assert.match(observed.stdout, /from the pool/);
  await owned.waitFor(/"msg":"worker instance stopped"/);
});

test('TLS files that cannot be used stop the server with one line, exit 2', { skip }, async (t) => {
  const dir = tempDir(t);
  const certs = makeCertificates(dir);
  const start = async (args: string[]) => {
    const result = await kiln(undefined, ['server', '--listen', `127.0.0.1:${await freePort()}`, '--data', tempDir(t), ...args]);
    assert.equal(result.code, 2, result.stderr);
    const lines = result.stderr.trimEnd().split('\n').filter((line) => line.startsWith('kiln: '));
    assert.equal(lines.length, 1, result.stderr);
    return lines[0]!;
  };
  chmodSync(certs.key, 0o644);
  assert.match(await start(['--tls-cert', certs.cert, '--tls-key', certs.key]), /^kiln: the TLS key .*server\.key can be read by other users \(mode 0644\): chmod 600 it/);
  chmodSync(certs.key, 0o600);
  // The other CA's key does not go with the server's certificate; and the message never holds key bytes.
  chmodSync(path.join(dir, 'other.key'), 0o600);
  const mismatch = await start(['--tls-cert', certs.cert, '--tls-key', path.join(dir, 'other.key')]);
  assert.match(mismatch, /^kiln: the TLS certificate .*server\.pem and key .*other\.key cannot be used: /);
  assert.doesNotMatch(mismatch, /PRIVATE KEY/);
  assert.match(await start(['--tls-cert', certs.cert]), /^kiln: --tls-cert and --tls-key go together/);
  assert.match(await start(['--tls-cert', path.join(dir, 'missing.pem'), '--tls-key', certs.key]), /^kiln: cannot read the TLS certificate .*missing\.pem: /);
});

test('over HTTPS: every answer carries HSTS, and the session cookie is a __Host- one (Secure, Path=/, no Domain)', { skip }, async (t) => {
  const certs = makeCertificates(tempDir(t));
  const server = await startTlsServer(t, certs);
  const ca = readFileSync(certs.ca);
  const request = (method: string, route: string, headers: Record<string, string> = {}, body?: string) => new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = https.request(`${server.url}${route}`, { method, ca, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk) => (text += chunk)).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
  for (const route of ['/', '/healthz', '/api/jobs', '/api/nothing']) {
    const answer = await request('GET', route, { authorization: `Bearer ${server.adminToken}` });
    assert.equal(answer.headers['strict-transport-security'], 'max-age=31536000', route);
  }
  const signIn = await request('POST', '/api/session', { 'content-type': 'application/json' }, JSON.stringify({ token: server.adminToken }));
  assert.equal(signIn.status, 201, signIn.body);
  const [setCookie] = signIn.headers['set-cookie'] ?? [];
  assert.match(setCookie ?? '', /^__Host-kiln_session=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=43200; HttpOnly; SameSite=Strict; Secure$/);
  const cookie = setCookie!.split(';')[0]!;
  assert.equal((await request('GET', '/api/session', { cookie })).status, 200, 'the prefixed cookie signs the browser in');
  assert.equal((await request('GET', '/api/session', { cookie: cookie.replace('__Host-', '') })).status, 401, 'one without the prefix is not read over TLS');
});
