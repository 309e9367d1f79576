/**
 * The kubernetes provider against a fake Kubernetes API over real HTTP (test/helpers/fake-kubernetes):
 * the pod it makes, its checks, stops and listing, and its one-line errors. Pods of the runnable
 * image run a small stand-in process (the e2e test runs real `kiln worker`s).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { KubernetesProvider, kubernetesOptionsSchema, podName, type KubernetesTiming } from '../../src/server/latent/kubernetes-provider.js';
import type { InstanceSpec } from '../../src/server/latent/provider.js';
import { startFakeKubernetes, type FakeKubernetes, type FakeKubernetesOptions, type FakePod } from '../helpers/fake-kubernetes.js';
import { freePort, isAlive } from '../helpers/processes.js';

const TOKEN = 'fake-cluster-token';
const NAMESPACE = 'builds';
const IMAGE = 'registry.example/kiln-worker:linux-x64';

/**
 * The container of the runnable image: prints its command line and environment, then lives until
 * SIGTERM (it takes 300 ms to stop, as a draining worker would) or exits by itself with
 * $STAND_IN_EXIT.
 */
const STAND_IN = `
  const [command, ...args] = process.argv.slice(1);
  // The handler first: its output reaches the fake only later (a write to the pipe is not synchronous).
  const alive = setInterval(() => {}, 1000);
  process.on('SIGTERM', () => { console.log('stand-in: SIGTERM'); setTimeout(() => { clearInterval(alive); process.exit(0); }, 300); });
  console.log(JSON.stringify({ command, args, env: process.env }));
  if (process.env.STAND_IN_EXIT) { console.error('stand-in: leaving with ' + process.env.STAND_IN_EXIT); clearInterval(alive); process.exitCode = Number(process.env.STAND_IN_EXIT); }
`;

interface Setup {
  fake: FakeKubernetes;
  provider: KubernetesProvider;
  dir: string;
  owner: string;
  spec(overrides?: Partial<InstanceSpec>): InstanceSpec;
}

async function setup(t: TestContext, options: Record<string, unknown> = {}, fakeOptions: Partial<FakeKubernetesOptions> = {}, timing: Partial<KubernetesTiming> = {}): Promise<Setup> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-kube-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fake = await startFakeKubernetes(t, {
    token: TOKEN, namespaces: ['default', NAMESPACE], runnableImage: IMAGE,
    run: (command, env) => spawn(process.execPath, ['-e', STAND_IN, ...command], { env, stdio: ['ignore', 'pipe', 'pipe'] }),
    ...fakeOptions,
  });
  fake.writeKubeconfig(path.join(dir, 'kubeconfig.yaml'));
  const parsed = kubernetesOptionsSchema.parse({ namespace: NAMESPACE, image: 'registry.example/kiln-worker:%%PLATFORM%%', kubeconfig: 'kubeconfig.yaml', ...options });
  const provider = new KubernetesProvider(parsed, { baseDir: dir }, { pollMaxMs: 50, ...timing });
  const owner = randomUUID().replaceAll('-', '').slice(0, 16);
  const spec = (overrides: Partial<InstanceSpec> = {}): InstanceSpec => {
    const id = `${owner}/${randomUUID()}`;
    const name = `kube-${id.slice(-12)}`;
    return {
      id, owner, pool: 'kube', name, token: `token-${randomUUID()}`, server: 'http://127.0.0.1:7070', platform: 'linux-x64', labels: { arch: 'x64' }, once: true,
      values: { PLATFORM: 'linux-x64', POOL: 'kube', INSTANCE: name }, ...overrides,
    };
  };
  return { fake, provider, dir, owner, spec };
}

const phaseOf = (fake: FakeKubernetes, name: string, phase: FakePod['status']['phase']) => () => fake.pod(NAMESPACE, name)?.status.phase === phase;

/** What the stand-in printed first: the command line and environment it was started with. */
async function standInSaw(fake: FakeKubernetes, name: string): Promise<{ command: string; args: string[]; env: Record<string, string> }> {
  return JSON.parse(await fake.until(() => fake.logs(NAMESPACE, name).find((l) => l.startsWith('{')), `${name} printed its command line`));
}

test('start makes a pod of the exact expected shape, in the namespace, and it runs', async (t) => {
  const { fake, provider, spec } = await setup(t, {
    server_url: 'http://kiln.internal:8080',
    resources: { requests: { cpu: '500m', memory: '1Gi' }, limits: { cpu: 2, memory: '2Gi' } },
    node_selector: { 'kubernetes.io/arch': 'amd64', pool: 'builders' },
    service_account: 'kiln-worker',
    image_pull_policy: 'IfNotPresent',
    env: { EXTRA: 'yes', RETRIES: 3 },
  });
  const instance = spec();
  const handle = await provider.start(instance);
  const name = instance.name;
  assert.deepEqual({ id: handle.id, ref: handle.ref, gone: handle.gone }, { id: instance.id, ref: name, gone: undefined });

  const posts = fake.requests.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 1);
  const [post] = posts;
  assert.equal(post!.path, `/api/v1/namespaces/${NAMESPACE}/pods`);
  assert.equal(post!.status, 201);
  assert.equal(post!.headers.authorization, `Bearer ${TOKEN}`);
  assert.match(post!.headers['content-type'] ?? '', /^application\/json/);
  assert.deepEqual(post!.body, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: NAMESPACE,
      labels: { 'kiln.dev/owner': instance.owner, 'kiln.dev/pool': 'kube' },
      annotations: { 'kiln.dev/instance': instance.id, 'kiln.dev/worker-name': name, 'kiln.dev/pool': 'kube' },
    },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 30,
      nodeSelector: { 'kubernetes.io/arch': 'amd64', pool: 'builders' },
      serviceAccountName: 'kiln-worker',
      containers: [{
        name: 'kiln-worker',
        image: IMAGE,
        imagePullPolicy: 'IfNotPresent',
        command: ['kiln'],
        args: ['worker', '--platform', 'linux-x64', '--label', 'arch=x64', '--drain-timeout', '10s', '--kill-grace', '3s', '--once'],
        env: [
          { name: 'KILN_SERVER', value: 'http://kiln.internal:8080' },
          { name: 'KILN_WORKER_NAME', value: name },
          { name: 'KILN_WORKER_TOKEN', value: instance.token },
          { name: 'KILN_POOL_INSTANCE', value: instance.id },
          { name: 'KILN_POOL', value: 'kube' },
          { name: 'EXTRA', value: 'yes' },
          { name: 'RETRIES', value: '3' },
        ],
        resources: { requests: { cpu: '500m', memory: '1Gi' }, limits: { cpu: '2', memory: '2Gi' } },
      }],
    },
  });
  assert.deepEqual(fake.warnings, [], 'no field the API does not know');

  // The fake ran the container with that command line and environment.
  await fake.until(phaseOf(fake, name, 'Running'), 'the pod runs');
  const saw = await standInSaw(fake, name);
  assert.deepEqual([saw.command, ...saw.args], ['kiln', 'worker', '--platform', 'linux-x64', '--label', 'arch=x64', '--drain-timeout', '10s', '--kill-grace', '3s', '--once']);
  assert.equal(saw.env.KILN_WORKER_TOKEN, instance.token);
  assert.equal(saw.env.KILN_SERVER, 'http://kiln.internal:8080');
  assert.equal(await provider.check(handle), null, 'a running pod is alive');
  assert.equal(handle.lastWords(), '');
  await provider.stop(handle);
});

test('the server address defaults to the one the pool gives; a command and pod_overrides change the pod', async (t) => {
  const { fake, provider, spec } = await setup(t, {
    image: 'registry.example/%%POOL%%:%%PLATFORM%%',
    command: ['/opt/kiln/bin/kiln'],
    pod_overrides: {
      containers: [{ name: 'kiln-worker', securityContext: { runAsNonRoot: true }, env: [{ name: 'KILN_POOL', value: 'kube' }, { name: 'TZ', value: 'UTC' }] }],
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'ci', effect: 'NoSchedule' }],
      activeDeadlineSeconds: 7200,
      hostname: '%%INSTANCE%%',
    },
    env: { WHO: 'worker %%INSTANCE%% of %%POOL%%' },
  });
  const instance = spec({ once: false, labels: {} });
  const handle = await provider.start(instance);
  const body = fake.requests.find((r) => r.method === 'POST')!.body as { spec: Record<string, unknown> & { containers: Record<string, unknown>[] } };
  assert.equal(body.spec.restartPolicy, 'Never');
  assert.equal(body.spec.activeDeadlineSeconds, 7200);
  assert.deepEqual(body.spec.tolerations, [{ key: 'dedicated', operator: 'Equal', value: 'ci', effect: 'NoSchedule' }]);
  assert.equal(body.spec.containers.length, 1, 'the container is merged by name, not added');
  const [container] = body.spec.containers;
  assert.equal(container!.image, 'registry.example/kube:linux-x64');
  assert.deepEqual(container!.command, ['/opt/kiln/bin/kiln']);
  assert.deepEqual(container!.args, ['worker', '--platform', 'linux-x64', '--drain-timeout', '10s', '--kill-grace', '3s']);
  assert.deepEqual(container!.securityContext, { runAsNonRoot: true });
  assert.deepEqual((container!.env as { name: string; value: string }[]).map((e) => `${e.name}=${e.value}`), [
    'KILN_SERVER=http://127.0.0.1:7070', `KILN_WORKER_NAME=${instance.name}`, `KILN_WORKER_TOKEN=${instance.token}`, `KILN_POOL_INSTANCE=${instance.id}`,
    'KILN_POOL=kube', `WHO=worker ${instance.name} of kube`, 'TZ=UTC',
  ]);
  assert.equal(body.spec.hostname, instance.name, 'placeholders in pod_overrides are expanded too');
  assert.equal(body.spec.nodeSelector, undefined, 'no empty node selector');
  assert.equal(body.spec.serviceAccountName, undefined);
  await provider.stop(handle);
});

test('check says null while the pod runs and why once it ended by itself', async (t) => {
  const { fake, provider, spec } = await setup(t, { env: { STAND_IN_EXIT: '3' } });
  const instance = spec();
  const handle = await provider.start(instance);
  await fake.until(phaseOf(fake, instance.name, 'Failed'), 'the pod fails');
  assert.equal(await provider.check(handle), 'its pod failed: Error (exit code 3)');
  assert.equal(handle.lastWords(), 'Error (exit code 3)');
  await fake.until(() => fake.logs(NAMESPACE, instance.name).includes('stand-in: leaving with 3'), 'the pod printed why it left');
  await provider.stop(handle);
  assert.equal(fake.pod(NAMESPACE, instance.name), undefined, 'an ended pod is removed at once');
});

test('check follows a pod the cluster does not run: pending, waiting on its image, succeeded, deleted by someone', async (t) => {
  const { fake, provider, spec } = await setup(t, { image: 'registry.example/not-run:%%PLATFORM%%' });
  const first = spec();
  const handle = await provider.start(first);
  assert.equal(fake.pod(NAMESPACE, first.name)!.status.phase, 'Pending');
  assert.equal(await provider.check(handle), null, 'pending is not gone');
  assert.equal(handle.lastWords(), '', 'ContainerCreating says nothing');
  fake.update(NAMESPACE, first.name, (pod) => {
    pod.status.containerStatuses![0]!.state = { waiting: { reason: 'ErrImagePull', message: 'rpc error: code = NotFound\n desc = manifest unknown' } };
  });
  assert.equal(await provider.check(handle), null, 'a pod waiting on its image is not gone (start_timeout covers it)');
  assert.equal(handle.lastWords(), 'ErrImagePull: rpc error: code = NotFound desc = manifest unknown', 'one line');
  fake.end(NAMESPACE, first.name, 0);
  assert.equal(await provider.check(handle), 'its pod succeeded: Completed (exit code 0)');

  const second = spec();
  const other = await provider.start(second);
  // Someone deletes it (kubectl delete pod): the fake removes a pod that runs nothing at once.
  const response = await fetch(`${fake.url}/api/v1/namespaces/${NAMESPACE}/pods/${second.name}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(response.status, 200);
  assert.equal(await provider.check(other), 'its pod was deleted');
  await provider.stop(handle);
  await provider.stop(other);
});

test('a pod deleted while its worker still runs is gone for check; stop deletes and resolves only after the pod has gone', async (t) => {
  const { fake, provider, spec } = await setup(t);
  const instance = spec();
  const handle = await provider.start(instance);
  await fake.until(phaseOf(fake, instance.name, 'Running'), 'the pod runs');
  // Once it has printed, it has its SIGTERM handler.
  await standInSaw(fake, instance.name);
  const pid = fake.pid(NAMESPACE, instance.name)!;
  assert.ok(pid && isAlive(pid));
  const before = fake.requests.length;
  await provider.stop(handle);
  assert.equal(fake.pod(NAMESPACE, instance.name), undefined, 'the pod is gone when stop resolves');
  assert.equal(isAlive(pid), false, 'its process has exited');
  await fake.until(() => fake.logs(NAMESPACE, instance.name).includes('stand-in: SIGTERM'), 'the worker was asked to stop (SIGTERM) and drained');
  const during = fake.requests.slice(before).map((r) => `${r.method} ${r.status}`);
  assert.equal(during[0], 'DELETE 200');
  assert.equal(during.at(-1), 'GET 404', 'read until it was gone');
  assert.ok(during.includes('GET 200'), `it was read while it terminated: ${during.join(', ')}`);
  const deleteRequest = fake.requests[before]!;
  assert.deepEqual([deleteRequest.path, deleteRequest.query.gracePeriodSeconds], [`/api/v1/namespaces/${NAMESPACE}/pods/${instance.name}`, undefined], 'graceful: the pod\'s own grace period');
  await provider.stop(handle);
  assert.equal(fake.requests.at(-1)!.status, 404, 'stopping what is gone already is fine');

  // Deleted by someone else while it runs: Terminating, then gone.
  const next = spec();
  const other = await provider.start(next);
  await fake.until(phaseOf(fake, next.name, 'Running'), 'the pod runs');
  fake.stall(NAMESPACE, next.name);
  await fetch(`${fake.url}/api/v1/namespaces/${NAMESPACE}/pods/${next.name}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(await provider.check(other), 'its pod is being deleted');
});

test('a pod whose node stops answering is force-deleted after the stop time', async (t) => {
  const { fake, provider, spec } = await setup(t, {}, {}, { stopTimeoutMs: 300 });
  const instance = spec();
  const handle = await provider.start(instance);
  await fake.until(phaseOf(fake, instance.name, 'Running'), 'the pod runs');
  fake.stall(NAMESPACE, instance.name);
  await provider.stop(handle);
  assert.equal(fake.pod(NAMESPACE, instance.name), undefined);
  const deletes = fake.requests.filter((r) => r.method === 'DELETE').map((r) => r.query.gracePeriodSeconds ?? 'default');
  assert.deepEqual(deletes, ['default', '0'], 'graceful first, then forced');
});

test('listOwn finds this owner\'s pods by exact instance id, with their pool and name, and a later life can stop them', async (t) => {
  const { fake, provider, spec, owner, dir } = await setup(t, { image: 'registry.example/not-run:1' });
  const mine = [spec(), spec({ pool: 'other-pool' })];
  for (const instance of mine) await provider.start(instance);
  // Not ours: another owner; our label with a foreign id; an id that only starts like ours; no id.
  fake.seed(NAMESPACE, { metadata: { name: 'theirs', labels: { 'kiln.dev/owner': 'someoneelse' }, annotations: { 'kiln.dev/instance': `someoneelse/${randomUUID()}` } } });
  fake.seed(NAMESPACE, { metadata: { name: 'labelled-only', labels: { 'kiln.dev/owner': owner }, annotations: { 'kiln.dev/instance': `someoneelse/${randomUUID()}` } } });
  fake.seed(NAMESPACE, { metadata: { name: 'prefix-trap', labels: { 'kiln.dev/owner': owner }, annotations: { 'kiln.dev/instance': `${owner}0/${randomUUID()}` } } });
  fake.seed(NAMESPACE, { metadata: { name: 'no-annotation', labels: { 'kiln.dev/owner': owner } } });
  fake.seed('default', { metadata: { name: 'other-namespace', labels: { 'kiln.dev/owner': owner }, annotations: { 'kiln.dev/instance': `${owner}/${randomUUID()}` } } });

  // A later life: a new provider, nothing in memory.
  const later = new KubernetesProvider(kubernetesOptionsSchema.parse({ namespace: NAMESPACE, image: 'x', kubeconfig: 'kubeconfig.yaml' }), { baseDir: dir }, { pollMaxMs: 50 });
  const found = await later.listOwn(owner);
  const sort = <T extends { name: string }>(list: T[]) => [...list].sort((a, b) => a.name.localeCompare(b.name));
  assert.deepEqual(
    sort(found.map((own) => ({ id: own.handle.id, ref: own.handle.ref, pool: own.pool, name: own.name }))),
    sort(mine.map((instance) => ({ id: instance.id, ref: instance.name, pool: instance.pool, name: instance.name }))),
  );
  const list = fake.requests.find((r) => r.method === 'GET' && r.path === `/api/v1/namespaces/${NAMESPACE}/pods`)!;
  assert.equal(list.query.labelSelector, `kiln.dev/owner=${owner}`);
  await Promise.all(found.map((own) => later.stop(own.handle)));
  assert.deepEqual(fake.pods(NAMESPACE).map((pod) => pod.metadata.name).sort(), ['labelled-only', 'no-annotation', 'prefix-trap', 'theirs']);
  assert.deepEqual(await later.listOwn(owner), []);
});

test('listOwn follows the list page by page', async (t) => {
  const { fake, provider, owner } = await setup(t);
  for (let i = 0; i < 1001; i += 1) {
    fake.seed(NAMESPACE, { metadata: { name: `pod-${String(i).padStart(4, '0')}`, labels: { 'kiln.dev/owner': owner }, annotations: { 'kiln.dev/instance': `${owner}/${i}`, 'kiln.dev/pool': 'kube' } } });
  }
  const found = await provider.listOwn(owner);
  assert.equal(new Set(found.map((own) => own.handle.id)).size, 1001);
  const pages = fake.requests.filter((r) => r.method === 'GET').map((r) => [r.query.limit, r.query.continue === undefined ? 'first' : 'next']);
  assert.deepEqual(pages, [['500', 'first'], ['500', 'next'], ['500', 'next']]);
});

test('refusals and an unreachable API are one-line errors', async (t) => {
  const { fake, provider, spec, dir } = await setup(t);
  const oneLine = (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.doesNotMatch(err.message, /\n/);
    return err.message;
  };
  const startWith = async (options: Record<string, unknown>) => {
    const other = new KubernetesProvider(kubernetesOptionsSchema.parse({ namespace: NAMESPACE, image: IMAGE, kubeconfig: 'kubeconfig.yaml', ...options }), { baseDir: dir });
    return other.start(spec()).then(() => assert.fail('started'), oneLine);
  };

  fake.writeKubeconfig(path.join(dir, 'bad-token.yaml'), { token: 'not-the-token' });
  assert.equal(await startWith({ kubeconfig: 'bad-token.yaml' }), 'kubernetes refused the pod (401 Unauthorized)');

  fake.deny('create');
  assert.equal(
    await provider.start(spec()).then(() => assert.fail('started'), oneLine),
    `kubernetes refused the pod (403 Forbidden: pods is forbidden: User "system:serviceaccount:kiln:kiln" cannot create resource "pods" in API group "" in the namespace "${NAMESPACE}")`,
  );
  fake.allow('create');

  assert.match(await startWith({ pod_overrides: { restartPolicy: 'Sometimes' } }),
    /^kubernetes refused the pod \(422 Invalid: Pod "kube-[0-9a-f]{12}" is invalid: spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"\)$/);
  assert.equal(await startWith({ namespace: 'nowhere' }), 'kubernetes refused the pod (404 NotFound: namespaces "nowhere" not found)');

  const twice = spec();
  const handle = await provider.start(twice);
  assert.equal(await provider.start(twice).then(() => assert.fail('started'), oneLine), `kubernetes refused the pod (409 AlreadyExists: pods "${twice.name}" already exists)`);
  fake.deny('get');
  assert.match(await provider.check(handle).then(() => assert.fail('checked'), oneLine), /^kubernetes refused to read pod kube-\w+ \(403 Forbidden: pods "kube-\w+" is forbidden: .*\)$/);
  fake.allow('get');
  fake.deny('list');
  assert.match(await provider.listOwn('x').then(() => assert.fail('listed'), oneLine), /^kubernetes refused to list pods \(403 Forbidden: pods is forbidden: .* cannot list resource "pods"/);
  fake.deny('delete');
  assert.match(await provider.stop(handle).then(() => assert.fail('stopped'), oneLine), /^kubernetes refused to delete pod kube-\w+ \(403 Forbidden: /);
  fake.allow('delete');
  await provider.stop(handle);

  // Nobody listens on the port: refused; something listens and never answers: timed out.
  const closedPort = await freePort();
  fake.writeKubeconfig(path.join(dir, 'closed.yaml'));
  const closedConfig = path.join(dir, 'closed.yaml');
  writeFileSync(closedConfig, readFileSync(closedConfig, 'utf8').replace(fake.url, `http://127.0.0.1:${closedPort}`));
  assert.match(await startWith({ kubeconfig: 'closed.yaml' }), new RegExp(`^could not reach the kubernetes API at http://127.0.0.1:${closedPort} \\(connect ECONNREFUSED 127.0.0.1:${closedPort}\\)$`));
  const unreachable = new KubernetesProvider(kubernetesOptionsSchema.parse({ image: IMAGE, kubeconfig: 'closed.yaml' }), { baseDir: dir });
  assert.match(await unreachable.listOwn('x').then(() => assert.fail('listed'), oneLine), /^could not reach the kubernetes API at .*ECONNREFUSED/);
  assert.match(await unreachable.check({ id: 'x/y', ref: 'p', lastWords: () => '' }).then(() => assert.fail('checked'), oneLine), /^could not reach the kubernetes API/);

  const held = new Set<net.Socket>();
  const silent = net.createServer((socket) => void held.add(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const socket of held) socket.destroy();
    silent.close();
  });
  const silentUrl = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
  writeFileSync(path.join(dir, 'silent.yaml'), readFileSync(closedConfig, 'utf8').replace(`http://127.0.0.1:${closedPort}`, silentUrl));
  const slow = new KubernetesProvider(kubernetesOptionsSchema.parse({ image: IMAGE, kubeconfig: 'silent.yaml' }), { baseDir: dir }, { requestTimeoutMs: 200 });
  assert.equal(await slow.start(spec()).then(() => assert.fail('started'), oneLine), `no answer from the kubernetes API at ${silentUrl} within 200ms`);

  assert.match(await startWith({ kubeconfig: 'missing.yaml' }), /^could not load .*missing\.yaml: ENOENT: no such file or directory/);
  assert.match(await startWith({ context: 'production' }), /kubeconfig\.yaml has no context 'production'$/);
});

test('placeholders the values do not define fail start with a clear error, before anything is asked of the API', async (t) => {
  const { fake, provider, spec } = await setup(t, { image: 'registry.example/%%FLAVOR%%:%%PLATFORM%%-%%ARCH%%' });
  await assert.rejects(provider.start(spec()), {
    message: 'options.image uses %%FLAVOR%%, %%ARCH%%, which this instance does not define (it has %%INSTANCE%%, %%PLATFORM%%, %%POOL%%)',
  });
  assert.deepEqual(fake.requests, []);
  const overridden = (await setup(t, { pod_overrides: { containers: [{ name: 'kiln-worker', workingDir: '/work/%%RUN%%' }] } })).provider;
  await assert.rejects(overridden.start(spec()), { message: /^options\.pod_overrides\.containers\.0\.workingDir uses %%RUN%%, which this instance does not define/ });
});

test('options are checked when the config is read', () => {
  const problem = (options: Record<string, unknown>) => {
    const parsed = kubernetesOptionsSchema.safeParse(options);
    assert.equal(parsed.success, false, JSON.stringify(options));
    const issue = parsed.error!.issues[0]!;
    return `${issue.path.join('.')}: ${issue.message}`;
  };
  assert.match(problem({}), /^image: /);
  assert.match(problem({ image: 'x', replicas: 2 }), /replicas/);
  assert.match(problem({ image: 'x', namespace: 'Builds' }), /^namespace: a namespace is a DNS label/);
  assert.match(problem({ image: 'x', env: { KILN_WORKER_TOKEN: 'mine' } }), /^env: KILN_SERVER, KILN_WORKER_NAME, KILN_WORKER_TOKEN, KILN_POOL_INSTANCE, KILN_POOL are set by Kiln$/);
  assert.match(problem({ image: 'x', env: { '1BAD': 'x' } }), /^env.1BAD: /);
  assert.match(problem({ image: 'x', node_selector: { zone: 'not ok!' } }), /^node_selector.zone: a label value/);
  assert.match(problem({ image: 'x', image_pull_policy: 'Sometimes' }), /^image_pull_policy: /);
  assert.match(problem({ image: 'x', server_url: 'kiln:8080/' }), /^server_url: /);
  assert.match(problem({ image: 'x', resources: { limit: { cpu: 1 } } }), /limit/);
  const parsed = kubernetesOptionsSchema.parse({ image: 'x' });
  assert.deepEqual(parsed, { namespace: 'default', image: 'x', node_selector: {}, env: {} });
});

test('pod names are DNS labels, distinct for distinct instances', () => {
  assert.equal(podName({ id: 'o/1', name: 'kube-0123456789ab' }), 'kube-0123456789ab', 'a valid name is kept');
  const made = [
    podName({ id: 'o/1', name: 'Big_Pool-0123456789ab' }),
    podName({ id: 'o/2', name: 'Big_Pool-0123456789ab' }),
    podName({ id: 'o/3', name: `${'p'.repeat(64)}-0123456789ab` }),
    podName({ id: 'o/4', name: '__-__' }),
  ];
  for (const name of made) assert.match(name, /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
  assert.equal(new Set(made).size, made.length);
  assert.match(made[0]!, /^big-pool-0123456789ab-[0-9a-f]{10}$/);
});
