/**
 * The `docker` provider against a real Docker engine: the image is this checkout imported from a
 * root filesystem (no registry), the container runs `kiln worker` on the host's network and
 * connects back with its own token. Skipped, with the reason, only where no engine answers.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { PassThrough } from 'node:stream';
import tls from 'node:tls';
import path from 'node:path';
import { before, test, type TestContext } from 'node:test';
import { containersLabelled, kilnWorkerImage, removeContainers, removeImage } from '../helpers/docker-image.js';
import { api, followRun, freePort, kiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const unavailable = needs('docker');
let image = '';
before(async () => {
  if (!unavailable) image = await kilnWorkerImage();
});

const ownerOf = (dataDir: string) => readFileSync(path.join(dataDir, 'pool-owner.id'), 'utf8').trim();
const containersOf = (dataDir: string) => containersLabelled(`dev.kiln.owner=${ownerOf(dataDir)}`);

/** Resolves when the container's output (followed, not polled) has a line matching `pattern`. */
async function containerLogged(container: string, pattern: RegExp): Promise<void> {
  const logs = spawn('docker', ['logs', '--follow', container], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const lines = createInterface({ input: merge(logs.stdout, logs.stderr) });
    for await (const line of lines) if (pattern.test(line)) return;
    assert.fail(`the container's output ended without ${pattern}`);
  } finally {
    logs.kill();
  }
}

/** Both streams as one. */
function merge(a: NodeJS.ReadableStream, b: NodeJS.ReadableStream): PassThrough {
  const out = new PassThrough();
  let open = 2;
  for (const stream of [a, b]) {
    stream.on('end', () => (--open === 0 ? out.end() : undefined));
    stream.pipe(out, { end: false });
  }
  return out;
}

function poolConfig(options: string[], extra: string[] = []): string {
  return ['pools:', '  - name: dock', '    provider: docker', '    platform: container', '    max: 2', '    check_interval: 200ms', ...extra, '    options:', ...options.map((o) => `      ${o}`), ''].join('\n');
}

async function withDockerPool(t: TestContext, yaml: string, dataDir = tempDir(t), port?: number): Promise<ServerProcess> {
  writeFileSync(path.join(dataDir, 'kiln.yaml'), yaml);
  const server = await startServer(t, { dataDir, port, args: ['--config', path.join(dataDir, 'kiln.yaml')] });
  // Whatever happens, no container of this test outlives it (found by the exact owner label).
  const owner = ownerOf(dataDir);
  t.after(() => removeContainers(containersLabelled(`dev.kiln.owner=${owner}`)));
  return server;
}

test('a run on a docker pool starts a container whose worker runs it; the container is removed after', { skip: unavailable }, async (t) => {
  const shared = tempDir(t);
  const server = await withDockerPool(t, poolConfig([
    `image: "${image}"`, 'hostconfig: {network_mode: host, memory: 512mb}', `volumes: ["${shared}:/shared"]`, 'env: {GREETING: hello}',
  ]));
  const script = [
    'test -f /.dockerenv && echo "in a container"; echo "$KILN_PLATFORM"; echo made > /shared/out',
    'echo "token in my env: $(env | grep -c KILN_WORKER_TOKEN)"',
    // The worker is PID 1: its environment, and the file its token came in (removed once read).
    `echo "token in the worker's env: $(tr '\\0' '\\n' < /proc/1/environ | grep -c '^KILN_WORKER_TOKEN=')"`,
    'echo "token files left: $(ls -A /.kiln-token | wc -l)"',
  ].join('\n');
  assert.equal((await kiln(server, ['schedule', 'boxed', '--command', script, '--platform', 'container', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'boxed'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}`);
  assert.ok(lines.includes('in a container'), lines.join('\n'));
  assert.ok(lines.includes('container'), 'the platform');
  for (const said of ['token in my env: 0', "token in the worker's env: 0", 'token files left: 0']) assert.ok(lines.includes(said), `${said}\n${lines.join('\n')}`);
  assert.equal(readFileSync(path.join(shared, 'out'), 'utf8'), 'made\n', 'the volume is mounted');
  const worker = (await api<{ run: { worker: string } }>(server, 'GET', `/api/runs/${runId}`)).run.worker;
  assert.match(worker, /^dock-[0-9a-f]{12}$/);
  // idle_timeout defaults to 0 for docker: the worker exits after its run and the container goes.
  await server.waitFor(/"msg":"worker instance stopped"/);
  assert.deepEqual(containersOf(server.dataDir), [], 'no container left (removed, with its anonymous volumes)');
});

test('a missing image keeps the run queued with the reason on its console, quarantines the pool, and the run can be cancelled', { skip: unavailable }, async (t) => {
  const server = await withDockerPool(t, poolConfig(['image: "kiln-test-missing:%%PLATFORM%%"', 'hostconfig: {network_mode: host}']));
  assert.equal((await kiln(server, ['schedule', 'nowhere', '--command', 'true', '--platform', 'container', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'nowhere'])).stdout.trim();
  await server.waitFor(/"msg":"pool quarantined after repeated start failures"/);
  const shown = await kiln(server, ['workers']);
  assert.match(shown.stdout, /pool dock \(docker, container, max 2\).*quarantined until .*the image kiln-test-missing:container is not on the docker host \(set autopull, or dockerfile to build it\)/);
  assert.equal((await kiln(server, ['cancel', runId])).code, 0);
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'cancelled');
  assert.match(lines[0] ?? '', /^kiln: pool dock could not start a worker: could not start: the image kiln-test-missing:container is not on the docker host/);
  assert.deepEqual(containersOf(server.dataDir), []);
});

test("an image named by the job's variables: one container per run, a missing one built from the dockerfile", { skip: unavailable }, async (t) => {
  const built = `kiln-test-built:${Date.now()}`;
  t.after(() => removeImage(built));
  const server = await withDockerPool(t, poolConfig(['image: "%%IMAGE%%"', 'hostconfig: {network_mode: host}', `dockerfile: "FROM ${image}\\nRUN echo built > /etc/kiln-mark\\n"`]));
  const runIds: string[] = [];
  for (const [job, tag] of [['plain', image], ['custom', built]]) {
    assert.equal((await kiln(server, ['schedule', job!, '--command', 'echo "mark: $(cat /etc/kiln-mark 2>/dev/null || echo none)"', '--platform', 'container', '--period', 'never', '--var', `IMAGE=${tag}`])).code, 0);
    runIds.push((await kiln(server, ['execute', job!])).stdout.trim());
  }
  const marks = [];
  for (const runId of runIds) {
    const { lines, run } = await followRun(server, runId);
    assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}`);
    marks.push(lines.find((line) => line.startsWith('mark: ')));
  }
  assert.deepEqual(marks, ['mark: none', 'mark: built'], 'each run ran in the image its job named');
  await server.waitForCount(/"msg":"worker instance stopped"/, 2);
  assert.deepEqual(containersOf(server.dataDir), []);
});

test('a server SIGKILLed while a container runs a job adopts it on restart: the job finishes there, and the instance is still for its run', { skip: unavailable }, async (t) => {
  const shared = tempDir(t);
  const dataDir = tempDir(t);
  const port = await freePort();
  // The image comes from the job's variables: one container per run, which must remember its run across the restart.
  const yaml = poolConfig(['image: "%%IMAGE%%"', 'hostconfig: {network_mode: host}', `volumes: ["${shared}:/shared"]`]);
  const server = await withDockerPool(t, yaml, dataDir, port);
  const script = 'echo started; while [ ! -e /shared/go ]; do sleep 0.05; done; echo finished';
  assert.equal((await kiln(server, ['schedule', 'long', '--command', script, '--platform', 'container', '--period', 'never', '--var', `IMAGE=${image}`])).code, 0);
  const runId = (await kiln(server, ['execute', 'long'])).stdout.trim();
  await server.waitFor(/"msg":"run dispatched"/);
  const [container] = containersOf(dataDir);
  assert.ok(container, 'a container runs the job');
  // Killed once the worker in the container has the run (dispatched is not yet received).
  await containerLogged(container, /"msg":"run started"/);
  await server.kill('SIGKILL');
  const again = await withDockerPool(t, yaml, dataDir, port);
  await again.waitFor(/"msg":"adopted a worker instance left by an earlier server"/);
  const [pool] = (await api<{ pools: { instances: { forRun: string | null; adopted: boolean }[] }[] }>(again, 'GET', '/api/workers')).pools;
  assert.deepEqual(pool!.instances.map((i) => [i.forRun, i.adopted]), [[runId, true]], 'adopted, and still for its run');
  writeFileSync(path.join(shared, 'go'), '');
  const { lines, run } = await followRun(again, runId);
  assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}`);
  assert.ok(lines.includes('finished'));
  await again.waitFor(/"msg":"worker instance stopped"/);
  assert.deepEqual(containersOf(dataDir), [], 'the adopted container is removed after its run');
  assert.equal(again.stderr.filter((l) => /"msg":"starting a worker instance"/.test(l)).length, 0, 'no second instance for the same run');
});

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl in `dir`. */
function makeCertificates(dir: string): void {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=kiln test CA');
  writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName = IP:127.0.0.1\n');
  for (const [name, ext] of [['server', ['-extfile', 'server.ext']], ['client', []]] as const) {
    run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', ...ext);
  }
}

test('docker_host tcp:// with TLS client certificates (a TLS front to the real engine), a pinned API version and startup logs followed', { skip: needs('docker', 'openssl') }, async (t) => {
  const dataDir = tempDir(t);
  const certs = path.join(dataDir, 'certs');
  mkdirSync(certs);
  makeCertificates(certs);
  const read = (file: string) => readFileSync(path.join(certs, file));
  // The engine's own socket behind TLS that demands a client certificate signed by the CA.
  let authorized = 0;
  const front = tls.createServer({ key: read('server-key.pem'), cert: read('server.pem'), ca: read('ca.pem'), requestCert: true, rejectUnauthorized: true }, (socket) => {
    authorized += 1;
    const engine = net.connect('/var/run/docker.sock');
    socket.pipe(engine).pipe(socket);
    socket.on('error', () => engine.destroy());
    engine.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  t.after(() => front.close());
  const port = (front.address() as net.AddressInfo).port;
  const server = await withDockerPool(t, poolConfig([
    `image: "${image}"`, 'hostconfig: {network_mode: host}', `docker_host: "tcp://127.0.0.1:${port}"`,
    // Relative paths: from the config file's folder.
    'tls: {ca: certs/ca.pem, cert: certs/client.pem, key: certs/client-key.pem}', 'version: "1.41"', 'follow_startup_logs: true',
  ]), dataDir);
  assert.equal((await kiln(server, ['schedule', 'secure', '--command', 'echo over tls', '--platform', 'container', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'secure'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}`);
  assert.ok(lines.includes('over tls'));
  assert.ok(authorized > 0, 'the engine was reached through the TLS front only');
  assert.ok(server.stderr.some((line) => /"msg":"instance startup output"/.test(line)), 'the container output was followed into the server log');
  await server.waitFor(/"msg":"worker instance stopped"/);
  assert.deepEqual(containersOf(dataDir), []);
  // Without a client certificate the front refuses the handshake.
  await assert.rejects(new Promise((resolve, reject) => {
    const bare = tls.connect({ port, host: '127.0.0.1', ca: read('ca.pem') }, () => bare.write('GET /_ping HTTP/1.0\r\n\r\n'));
    bare.on('data', resolve);
    bare.on('error', reject);
    bare.on('close', () => reject(new Error('closed without an answer')));
  }));
});

/** A real registry (Debian's docker-registry) on a free loopback port, which dockerd trusts without TLS. */
async function startRegistry(t: TestContext): Promise<string> {
  const dir = tempDir(t);
  const port = await freePort();
  writeFileSync(path.join(dir, 'config.yml'), `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: 127.0.0.1:${port}\nlog:\n  level: info\n`);
  const registry = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => registry.kill('SIGKILL'));
  const lines = createInterface({ input: merge(registry.stdout!, registry.stderr!) });
  for await (const line of lines) if (/listening on/.test(line)) return `127.0.0.1:${port}`;
  throw new Error('docker-registry exited before listening');
}

const noRegistry = needs('docker', 'docker-registry');

test('autopull pulls a missing image from a registry, always_pull takes its newer version, and a pull that fails is a failed start', { skip: noRegistry }, async (t) => {
  const registry = await startRegistry(t);
  const name = `${registry}/kiln-pulled:${Date.now()}`;
  const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  // v1 is the test image; v2 adds a mark. Both pushed under the same name, the local copy removed.
  docker('tag', image, name);
  docker('push', name);
  docker('rmi', name);
  const server = await withDockerPool(t, poolConfig([`image: "${name}"`, 'hostconfig: {network_mode: host}', 'autopull: true']));
  const script = 'echo "mark: $(cat /etc/kiln-mark 2>/dev/null || echo none)"';
  assert.equal((await kiln(server, ['schedule', 'pulled', '--command', script, '--platform', 'container', '--period', 'never'])).code, 0);
  const markOf = async (target: ServerProcess) => {
    const runId = (await kiln(target, ['execute', 'pulled'])).stdout.trim();
    const { lines, run } = await followRun(target, runId);
    assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}`);
    return lines.find((line) => line.startsWith('mark: '));
  };
  t.after(() => spawnSync('docker', ['rmi', '-f', name]));
  assert.equal(await markOf(server), 'mark: none', 'v1, pulled because it was missing');
  const v1 = docker('image', 'inspect', '--format', '{{.Id}}', name);
  // Publish v2 under the same name, then point the local name back at v1.
  const v2Build = spawnSync('docker', ['build', '-q', '-t', name, '-'], { input: `FROM ${image}\nRUN echo v2 > /etc/kiln-mark\n`, encoding: 'utf8' });
  assert.equal(v2Build.status, 0, v2Build.stderr);
  docker('push', name);
  docker('tag', v1, name);
  assert.equal(await markOf(server), 'mark: none', 'autopull alone uses the image it has');
  await server.kill('SIGTERM');
  const always = await withDockerPool(t, poolConfig([`image: "${name}"`, 'hostconfig: {network_mode: host}', 'always_pull: true']), server.dataDir);
  assert.equal(await markOf(always), 'mark: v2', 'always_pull fetched the newer version');
  await always.kill('SIGTERM');
  const missing = await withDockerPool(t, poolConfig([`image: "${registry}/kiln-nowhere:1"`, 'hostconfig: {network_mode: host}', 'autopull: true']), server.dataDir);
  assert.equal((await kiln(missing, ['schedule', 'nowhere', '--command', 'true', '--platform', 'container', '--period', 'never'])).code, 0);
  const runId = (await kiln(missing, ['execute', 'nowhere'])).stdout.trim();
  await missing.waitFor(/"msg":"pool quarantined after repeated start failures"/);
  assert.equal((await kiln(missing, ['cancel', runId])).code, 0);
  const { lines } = await followRun(missing, runId);
  assert.match(lines[0] ?? '', new RegExp(`^kiln: pool dock could not start a worker: could not start: docker could not pull ${registry.replace(/\./g, '\\.')}/kiln-nowhere:1 \\(`));
});
