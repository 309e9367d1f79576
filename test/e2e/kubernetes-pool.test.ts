/**
 * A `kubernetes` pool on the real Kiln server, against an HTTP fake of the Kubernetes API (written
 * from its public reference; no real cluster is involved) that runs each pod's container as a real
 * local `kiln worker` with the pod's environment: a queued run makes a pod whose worker runs it and
 * the pod is deleted after; a server SIGKILLed while a pod works adopts it when started again, and
 * removes the pods of a pool it no longer has.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test, type TestContext } from 'node:test';
import { startFakeKubernetes, type FakeKubernetes } from '../helpers/fake-kubernetes.js';
import { api, followRun, freePort, KILN_BIN, kiln, startServer, tempDir, type ServerProcess } from '../helpers/processes.js';

const TOKEN = 'fake-cluster-token';
const NAMESPACE = 'kiln-builds';
const IMAGE = 'registry.example/kiln-worker:kube';

const ownerOf = (dataDir: string) => readFileSync(path.join(dataDir, 'pool-owner.id'), 'utf8').trim();

/** A fake cluster whose pods of IMAGE run this checkout's `kiln` (their image's PATH and HOME, the pod's env). */
async function startCluster(t: TestContext): Promise<{ fake: FakeKubernetes; workerLog: string[] }> {
  const workerLog: string[] = [];
  const fake = await startFakeKubernetes(t, {
    token: TOKEN,
    namespaces: ['default', NAMESPACE],
    runnableImage: IMAGE,
    run: (command, env) => {
      assert.equal(command[0], 'kiln', 'the container runs kiln');
      const child = spawn(process.execPath, [KILN_BIN, ...command.slice(1)], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', LANG: 'C.UTF-8', KILN_LOG_LEVEL: 'info', ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      createInterface({ input: child.stderr! }).on('line', (line) => workerLog.push(line));
      return child;
    },
  });
  // (The fake stops every pod's process, by pid, when the test ends.)
  return { fake, workerLog };
}

/** Writes the config (and the kubeconfig beside it, found relative to it) and starts the server. */
async function withKubePool(t: TestContext, fake: FakeKubernetes, pool: string[], dataDir = tempDir(t), port?: number): Promise<ServerProcess> {
  fake.writeKubeconfig(path.join(dataDir, 'kubeconfig.yaml'));
  const config = path.join(dataDir, 'kiln.yaml');
  writeFileSync(config, ['pools:', ...pool.map((line) => `  ${line}`), ''].join('\n'));
  return startServer(t, { dataDir, port, args: ['--config', config] });
}

/** A kubernetes pool's config lines: its extra options, and extra settings of the pool itself. */
const kubePool = (name = 'kube', options: string[] = [], settings: string[] = []) => [
  `- name: ${name}`, '  provider: kubernetes', '  platform: kube', '  max: 1', '  check_interval: 200ms', ...settings.map((line) => `  ${line}`), '  options:',
  `    namespace: ${NAMESPACE}`, '    image: "registry.example/kiln-worker:%%PLATFORM%%"', '    kubeconfig: kubeconfig.yaml', ...options.map((line) => `    ${line}`),
];

test('a run on a kubernetes pool makes a pod whose worker runs it; the pod is deleted after', async (t) => {
  const { fake, workerLog } = await startCluster(t);
  const server = await withKubePool(t, fake, kubePool('kube', [
    'service_account: kiln-worker', 'node_selector: {kubernetes.io/arch: amd64}', 'resources: {requests: {cpu: 250m, memory: 256Mi}, limits: {memory: 1Gi}}',
    // Naming the run makes an instance per run.
    'env: {BUILD_OF: "%%JOB%%"}',
  ]));

  const script = 'echo "hello from $KILN_PLATFORM"; env | grep -c KILN_WORKER_TOKEN || true';
  assert.equal((await kiln(server, ['schedule', 'on-kube', '--command', script, '--platform', 'kube', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'on-kube'])).stdout.trim();
  const { lines, run: result } = await followRun(server, runId);
  assert.equal(result.status, 'succeeded', `${lines.join('\n')}\n${workerLog.join('\n')}`);
  assert.ok(lines.includes('hello from kube'), lines.join('\n'));
  assert.ok(lines.includes('0'), 'the job does not see the worker token');
  const worker = (await api<{ run: { worker: string } }>(server, 'GET', `/api/runs/${runId}`)).run.worker;
  assert.match(worker, /^kube-[0-9a-f]{12}$/);

  // idle_timeout is 0 for kubernetes: the worker exits after its run, a check finds the pod ended,
  // and the pod is deleted.
  const stopping = await server.waitFor(/"msg":"stopping a worker instance"/);
  assert.match(stopping, /"why":"its pod succeeded: Completed \(exit code 0\)"/);
  await server.waitFor(/"msg":"worker instance stopped"/);
  assert.deepEqual(fake.pods(), [], 'no pod is left');

  const owner = ownerOf(server.dataDir);
  const posts = fake.requests.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 1, 'one pod for one run');
  assert.equal(posts[0]!.path, `/api/v1/namespaces/${NAMESPACE}/pods`);
  const pod = posts[0]!.body as { metadata: { annotations: Record<string, string> }; spec: { containers: { env: { name: string; value: string }[] }[] } };
  const env = Object.fromEntries(pod.spec.containers[0]!.env.map((e) => [e.name, e.value]));
  const id = pod.metadata.annotations['kiln.dev/instance']!;
  assert.match(id, new RegExp(`^${owner}/[0-9a-f-]{36}$`));
  assert.ok(env.KILN_WORKER_TOKEN!.length >= 32, 'its own token');
  assert.notEqual(env.KILN_WORKER_TOKEN, server.workerToken);
  assert.deepEqual(pod, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: worker,
      namespace: NAMESPACE,
      labels: { 'kiln.dev/owner': owner, 'kiln.dev/pool': 'kube' },
      annotations: { 'kiln.dev/instance': id, 'kiln.dev/worker-name': worker, 'kiln.dev/pool': 'kube', 'kiln.dev/run': runId },
    },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 30,
      nodeSelector: { 'kubernetes.io/arch': 'amd64' },
      serviceAccountName: 'kiln-worker',
      containers: [{
        name: 'kiln-worker',
        image: IMAGE,
        command: ['kiln'],
        args: ['worker', '--platform', 'kube', '--drain-timeout', '10s', '--kill-grace', '3s', '--once'],
        env: [
          { name: 'KILN_SERVER', value: server.url },
          { name: 'KILN_WORKER_NAME', value: worker },
          { name: 'KILN_WORKER_TOKEN', value: env.KILN_WORKER_TOKEN },
          { name: 'KILN_POOL_INSTANCE', value: id },
          { name: 'KILN_POOL', value: 'kube' },
          { name: 'BUILD_OF', value: 'on-kube' },
        ],
        resources: { requests: { cpu: '250m', memory: '256Mi' }, limits: { memory: '1Gi' } },
      }],
    },
  });
  assert.deepEqual(fake.warnings, []);
  assert.ok(fake.requests.every((r) => r.headers.authorization === `Bearer ${TOKEN}` && r.status < 500), 'every call authenticated');
  const calls = fake.requests.map((r) => `${r.method} ${r.path} ${r.status}`);
  assert.ok(calls.includes(`DELETE /api/v1/namespaces/${NAMESPACE}/pods/${worker} 200`), calls.join('\n'));
  assert.equal(calls.at(-1), `GET /api/v1/namespaces/${NAMESPACE}/pods/${worker} 404`, 'the stop waited until the pod was gone');
  assert.equal(calls.filter((c) => c.startsWith('POST')).length, 1, 'the pod was made once');
});

test('a server SIGKILLed while a pod runs a job adopts the pod on restart: the job finishes there, then the pod goes', async (t) => {
  const { fake, workerLog } = await startCluster(t);
  const shared = tempDir(t);
  const dataDir = tempDir(t);
  const port = await freePort();
  const server = await withKubePool(t, fake, kubePool(), dataDir, port);
  const script = `echo started; while [ ! -e ${shared}/go ]; do sleep 0.05; done; echo finished`;
  assert.equal((await kiln(server, ['schedule', 'long', '--command', script, '--platform', 'kube', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'long'])).stdout.trim();
  await server.waitFor(/"msg":"run dispatched"/);
  const [pod] = fake.pods(NAMESPACE);
  assert.equal(pod?.status.phase, 'Running', 'a pod runs the job');
  const name = pod!.metadata.name;
  // Dispatched is not yet received: the server is killed only once the worker holds the run.
  await fake.until(() => fake.logs(NAMESPACE, name).some((line) => line.includes('"msg":"run started"')), 'the worker started the run');
  const pid = fake.pid(NAMESPACE, name);
  await server.kill('SIGKILL');

  // The next life (same data dir, same address) finds the pod by its owner and exact id, and its worker reconnects.
  const again = await withKubePool(t, fake, kubePool(), dataDir, port);
  const adopted = await again.waitFor(/"msg":"adopted a worker instance left by an earlier server"/);
  assert.match(adopted, new RegExp(`"instance":"${name}"`));
  writeFileSync(path.join(shared, 'go'), '');
  const { lines, run } = await followRun(again, runId);
  assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}\n${workerLog.join('\n')}\nserver:\n${again.stderr.join('\n')}`);
  assert.ok(lines.includes('finished'), lines.join('\n'));
  assert.equal((await api<{ run: { worker: string } }>(again, 'GET', `/api/runs/${runId}`)).run.worker, name, `the same worker finished it\n${workerLog.join('\n')}\nserver:\n${again.stderr.join('\n')}`);
  await again.waitFor(/"msg":"worker instance stopped"/);
  assert.deepEqual(fake.pods(), [], 'the adopted pod is deleted after its run');
  assert.equal(fake.requests.filter((r) => r.method === 'POST').length, 1, 'no second pod was made');
  assert.equal(fake.pid(NAMESPACE, name), undefined, `its worker (pid ${pid}) has exited`);
});

test('a restarted server removes the pods of a pool it no longer has, and leaves other owners\' pods alone', async (t) => {
  const { fake } = await startCluster(t);
  const dataDir = tempDir(t);
  const port = await freePort();
  // An idle instance kept ready (min_idle 1, never idle-stopped): a pod with nothing to do.
  const server = await withKubePool(t, fake, kubePool('old', [], ['min_idle: 1', 'idle_timeout: -1']), dataDir, port);
  await server.waitFor(/"msg":"worker connected"/);
  const [pod] = fake.pods(NAMESPACE);
  assert.ok(pod, 'an idle pod');
  fake.seed(NAMESPACE, { metadata: { name: 'someone-elses', labels: { 'kiln.dev/owner': 'another-server' }, annotations: { 'kiln.dev/instance': 'another-server/x' } } });
  await server.kill('SIGKILL');

  const again = await withKubePool(t, fake, kubePool('renamed'), dataDir, port);
  await again.waitFor(/"msg":"removed worker instances left by an earlier server"/);
  assert.deepEqual(fake.pods(NAMESPACE).map((p) => p.metadata.name), ['someone-elses'], 'ours is deleted (and gone), theirs kept');
  assert.equal(fake.requests.filter((r) => r.method === 'DELETE').length, 1);
});
