/**
 * A fake of the Kubernetes API's pods (core/v1), over real HTTP on 127.0.0.1, written from the
 * public API reference (Pod create/read/list/delete, the Status object, label selectors, the API
 * conventions' status codes); not checked against a real cluster. Every request's shape is checked
 * and a wrong one is answered 4xx with a `Status` object as the API server would: 401 without the
 * bearer token, 404/405 on other paths, 415 on a POST that is not JSON, 400 on a body that does not
 * decode as a Pod, 422 (with causes) on an invalid one, 409 on a duplicate name, 403 for a verb a
 * test denies. Every request is recorded.
 *
 * Pods have phases. A pod whose image is `runnableImage` is run for real: its command and args go
 * to the test's `run` callback (which maps them to a local process) with the pod's environment; the
 * pod is Running while that process lives and Succeeded/Failed (with the container's terminated
 * exit code) after. Deleting a running pod sends SIGTERM, then SIGKILL after its grace period, and
 * removes it once the process has exited. Other pods stay Pending until a test moves them.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { constants as osConstants } from 'node:os';
import { createInterface } from 'node:readline';
import type { TestContext } from 'node:test';
import { stringify as toYaml } from 'yaml';

/** A pod as the fake keeps it (the API's JSON). */
export interface FakePod {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    creationTimestamp: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
    deletionGracePeriodSeconds?: number;
    [field: string]: unknown;
  };
  spec: {
    containers: FakeContainer[];
    restartPolicy?: string;
    terminationGracePeriodSeconds?: number;
    [field: string]: unknown;
  };
  status: {
    phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
    reason?: string;
    message?: string;
    containerStatuses?: Record<string, unknown>[];
    [field: string]: unknown;
  };
}

/** A container of a FakePod. */
export interface FakeContainer {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string }[];
  [field: string]: unknown;
}

/** One request as the fake saw it, with the status it answered. */
export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  body: unknown;
  status: number;
}

/** The verbs on pods the fake serves (and a test may deny). */
export type Verb = 'create' | 'get' | 'list' | 'delete';

/** How the fake is set up. */
export interface FakeKubernetesOptions {
  /** The bearer token the fake accepts (401 for anything else). */
  token: string;
  /** Namespaces that exist; creating a pod elsewhere is 404 (default: `default`). */
  namespaces?: string[];
  /** Pods with this image are run for real, with `run`. */
  runnableImage?: string;
  /** Starts a container: its command then args, with the pod's environment; the fake follows the process. */
  run?: (command: string[], env: Record<string, string>) => ChildProcess;
  /** Whom the token belongs to, as 403 messages name it. */
  user?: string;
  /** How long a pod's process may take to stop when the fake closes, before SIGKILL. */
  closeGraceMs?: number;
}

/** A running fake, what it has seen, and the handles a test moves it with. */
export interface FakeKubernetes {
  /** http://127.0.0.1:PORT */
  url: string;
  /** Every request, in order. */
  requests: RecordedRequest[];
  /** Warnings the fake answered with (unknown fields), as the API's `Warning` header says them. */
  warnings: string[];
  /** The pod as the API would return it, or undefined. */
  pod(namespace: string, name: string): FakePod | undefined;
  /** Every pod (of one namespace). */
  pods(namespace?: string): FakePod[];
  /** Adds a pod as if someone else had made it; it is not run. */
  seed(namespace: string, pod: { metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; image?: string }): void;
  /** Changes a pod as its kubelet would (e.g. sets a waiting reason, ends it). */
  update(namespace: string, name: string, change: (pod: FakePod) => void): void;
  /** Ends a pod that is not run for real: Succeeded with exit code 0, else Failed. */
  end(namespace: string, name: string, exitCode: number, reason?: string): void;
  /** Makes a verb on pods answer 403, as RBAC would; `allow` undoes it. */
  deny(verb: Verb): void;
  allow(verb: Verb): void;
  /** The pod's node stops answering: a graceful delete never completes; a forced one (grace 0) does. */
  stall(namespace: string, name: string): void;
  /** The output lines of a pod run for real (stdout and stderr). */
  logs(namespace: string, name: string): string[];
  /** The pid of a pod's process while it runs. */
  pid(namespace: string, name: string): number | undefined;
  /** Resolves once `predicate` holds, checked now and after every change. */
  until<T>(predicate: () => T | undefined | false, what: string): Promise<T>;
  /** Writes a kubeconfig for the fake (a token user) to `file`; returns `file`. */
  writeKubeconfig(file: string, options?: { token?: string; namespace?: string; context?: string }): string;
  /** Stops every pod's process (SIGTERM, then SIGKILL) and the server. Done when the test ends. */
  close(): Promise<void>;
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
  killTimer?: NodeJS.Timeout;
  lines: string[];
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
const QUANTITY = /^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$/;

const POD_FIELDS = new Set(['apiVersion', 'kind', 'metadata', 'spec', 'status']);
const META_FIELDS = new Set(['name', 'generateName', 'namespace', 'labels', 'annotations', 'uid', 'resourceVersion', 'generation', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'ownerReferences', 'finalizers', 'managedFields', 'selfLink']);
const SPEC_FIELDS = new Set([
  'activeDeadlineSeconds', 'affinity', 'automountServiceAccountToken', 'containers', 'dnsConfig', 'dnsPolicy', 'enableServiceLinks', 'ephemeralContainers',
  'hostAliases', 'hostIPC', 'hostNetwork', 'hostPID', 'hostUsers', 'hostname', 'hostnameOverride', 'imagePullSecrets', 'initContainers', 'nodeName', 'nodeSelector', 'os',
  'overhead', 'preemptionPolicy', 'priority', 'priorityClassName', 'readinessGates', 'resourceClaims', 'resources', 'restartPolicy', 'runtimeClassName',
  'schedulerName', 'schedulingGates', 'securityContext', 'serviceAccount', 'serviceAccountName', 'setHostnameAsFQDN', 'shareProcessNamespace', 'subdomain',
  'terminationGracePeriodSeconds', 'tolerations', 'topologySpreadConstraints', 'volumes',
]);
const CONTAINER_FIELDS = new Set([
  'args', 'command', 'env', 'envFrom', 'image', 'imagePullPolicy', 'lifecycle', 'livenessProbe', 'name', 'ports', 'readinessProbe', 'resizePolicy', 'resources',
  'restartPolicy', 'restartPolicyRules', 'securityContext', 'startupProbe', 'stdin', 'stdinOnce', 'terminationMessagePath', 'terminationMessagePolicy', 'tty',
  'volumeDevices', 'volumeMounts', 'workingDir',
]);

/** A `Status` object, as every API error is answered. */
function statusObject(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** An answer the fake gives instead of going on. */
class Refusal extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details?: Record<string, unknown>) {
    super(message);
  }
}

/** A field error of a 422 (the API's StatusCause). */
interface Cause {
  reason: 'FieldValueRequired' | 'FieldValueInvalid' | 'FieldValueNotSupported' | 'FieldValueDuplicate';
  field: string;
  message: string;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** Starts the fake on a free port; closed (its pods' processes stopped) when the test ends. */
export async function startFakeKubernetes(t: TestContext, options: FakeKubernetesOptions): Promise<FakeKubernetes> {
  const namespaces = new Set(options.namespaces ?? ['default']);
  const user = options.user ?? 'system:serviceaccount:kiln:kiln';
  const store = new Map<string, FakePod>();
  const running = new Map<string, Running>();
  const stalled = new Set<string>();
  const denied = new Set<Verb>();
  const requests: RecordedRequest[] = [];
  const warnings: string[] = [];
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  let version = 1;
  let closed = false;
  const key = (namespace: string, name: string) => `${namespace}/${name}`;

  const changed = (pod?: FakePod) => {
    if (pod) pod.metadata.resourceVersion = String(++version);
    changes.emit('change');
  };

  /** Removes a pod from the API (its process, if any, has exited or is being killed). */
  const remove = (pod: FakePod) => {
    store.delete(key(pod.metadata.namespace, pod.metadata.name));
    changed();
  };

  const containerStatus = (pod: FakePod, state: Record<string, unknown>) => {
    const container = pod.spec.containers[0]!;
    pod.status.containerStatuses = [{ name: container.name, image: container.image, imageID: '', ready: 'running' in state, restartCount: 0, started: 'running' in state, state }];
  };

  const terminate = (pod: FakePod, exitCode: number, reason: string, signal?: number) => {
    pod.status.phase = exitCode === 0 ? 'Succeeded' : 'Failed';
    containerStatus(pod, { terminated: { exitCode, reason, ...(signal ? { signal } : {}), startedAt: pod.metadata.creationTimestamp, finishedAt: new Date().toISOString() } });
    changed(pod);
  };

  /** Runs a pod's container as a local process, as a kubelet would start it. */
  const runPod = (pod: FakePod) => {
    const container = pod.spec.containers[0]!;
    const command = [...(container.command ?? []), ...(container.args ?? [])];
    const env = Object.fromEntries((container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
    const child = options.run!(command, env);
    const lines: string[] = [];
    // A line is a change too: tests wait for what a container printed.
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) {
        createInterface({ input: stream }).on('line', (line) => {
          lines.push(line);
          changes.emit('change');
        });
      }
    }
    const exited = new Promise<void>((resolve) => {
      child.once('error', (err) => {
        terminate(pod, 128, 'StartError', undefined);
        pod.status.message = err.message;
        resolve();
      });
      child.once('exit', (code, signal) => {
        // A container killed by a signal exits 128 + its number, reason Error (as the kubelet reports it).
        const signo = signal ? osConstants.signals[signal] : undefined;
        terminate(pod, signo ? 128 + signo : (code ?? 0), code === 0 ? 'Completed' : 'Error');
        resolve();
      });
    });
    const entry: Running = { child, exited, lines };
    running.set(key(pod.metadata.namespace, pod.metadata.name), entry);
    child.once('spawn', () => {
      if (pod.status.phase !== 'Pending') return;
      pod.status.phase = 'Running';
      containerStatus(pod, { running: { startedAt: new Date().toISOString() } });
      changed(pod);
    });
    void exited.then(() => {
      clearTimeout(entry.killTimer);
      const here = store.get(key(pod.metadata.namespace, pod.metadata.name));
      if (here === pod && pod.metadata.deletionTimestamp && !stalled.has(key(pod.metadata.namespace, pod.metadata.name))) remove(pod);
    });
  };

  const liveProcess = (namespace: string, name: string): Running | undefined => {
    const entry = running.get(key(namespace, name));
    return entry && entry.child.exitCode === null && entry.child.signalCode === null ? entry : undefined;
  };

  const deletePod = (pod: FakePod, graceSeconds: number) => {
    const id = key(pod.metadata.namespace, pod.metadata.name);
    const entry = liveProcess(pod.metadata.namespace, pod.metadata.name);
    if (graceSeconds === 0) {
      // Forced: gone from the API at once, whatever its node says; its process is killed too.
      entry?.child.kill('SIGKILL');
      stalled.delete(id);
      remove(pod);
      return;
    }
    const firstDelete = !pod.metadata.deletionTimestamp;
    if (firstDelete || graceSeconds < (pod.metadata.deletionGracePeriodSeconds ?? Infinity)) {
      pod.metadata.deletionTimestamp = new Date(Date.now() + graceSeconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
      pod.metadata.deletionGracePeriodSeconds = graceSeconds;
      changed(pod);
    }
    if (stalled.has(id)) return;
    if (!entry) return remove(pod);
    if (firstDelete) entry.child.kill('SIGTERM');
    clearTimeout(entry.killTimer);
    entry.killTimer = setTimeout(() => entry.child.kill('SIGKILL'), graceSeconds * 1000);
  };

  const forbidden = (verb: Verb, namespace: string, name?: string) =>
    new Refusal(403, 'Forbidden', `pods${name ? ` "${name}"` : ''} is forbidden: User "${user}" cannot ${verb} resource "pods" in API group "" in the namespace "${namespace}"`, { ...(name ? { name } : {}), kind: 'pods' });

  const notFound = (namespace: string, name: string) => new Refusal(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' });

  const createPod = (namespace: string, headers: IncomingHttpHeaders, body: unknown): FakePod => {
    if (denied.has('create')) throw forbidden('create', namespace);
    const type = (headers['content-type'] ?? '').split(';')[0]!.trim();
    if (type !== 'application/json') throw new Refusal(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf`);
    const pod = decodePod(body, namespace);
    const causes = validatePod(pod);
    const name = String(pod.metadata.name ?? '');
    if (causes.length > 0) {
      throw new Refusal(422, 'Invalid', `Pod "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(', ')}`, { name, kind: 'Pod', causes });
    }
    for (const field of unknownFields(body as Record<string, unknown>)) warnings.push(`unknown field "${field}"`);
    if (!namespaces.has(namespace)) throw new Refusal(404, 'NotFound', `namespaces "${namespace}" not found`, { name: namespace, kind: 'namespaces' });
    if (store.has(key(namespace, name))) throw new Refusal(409, 'AlreadyExists', `pods "${name}" already exists`, { name, kind: 'pods' });
    const made = structuredClone(pod) as FakePod;
    made.metadata = { ...made.metadata, namespace, uid: randomUUID(), resourceVersion: '', creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
    made.spec.restartPolicy ??= 'Always';
    made.spec.terminationGracePeriodSeconds ??= 30;
    made.status = { phase: 'Pending', qosClass: 'BestEffort' };
    containerStatus(made, { waiting: { reason: 'ContainerCreating' } });
    store.set(key(namespace, name), made);
    changed(made);
    if (options.runnableImage !== undefined && made.spec.containers[0]!.image === options.runnableImage && options.run) runPod(made);
    return made;
  };

  const listPods = (namespace: string, query: URLSearchParams) => {
    if (denied.has('list')) throw forbidden('list', namespace);
    if (query.get('watch') === 'true' || query.get('watch') === '1') throw new Refusal(400, 'BadRequest', 'this fake does not serve watches');
    const selector = parseSelector(query.get('labelSelector') ?? '');
    let items = [...store.values()].filter((pod) => pod.metadata.namespace === namespace && selector(pod.metadata.labels ?? {}))
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    const after = query.get('continue');
    if (after) items = items.filter((pod) => pod.metadata.name > Buffer.from(after, 'base64url').toString('utf8'));
    const limitText = query.get('limit');
    const limit = limitText === null ? 0 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 0) throw new Refusal(400, 'BadRequest', `invalid limit '${limitText}'`);
    const more = limit > 0 && items.length > limit;
    if (more) items = items.slice(0, limit);
    return {
      kind: 'PodList', apiVersion: 'v1',
      metadata: { resourceVersion: String(version), ...(more ? { continue: Buffer.from(items.at(-1)!.metadata.name).toString('base64url') } : {}) },
      items,
    };
  };

  const handle = (method: string, url: URL, headers: IncomingHttpHeaders, body: unknown): { status: number; body: unknown } => {
    if (headers.authorization !== `Bearer ${options.token}`) throw new Refusal(401, 'Unauthorized', 'Unauthorized');
    const match = /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+))?$/.exec(url.pathname);
    if (!match) throw new Refusal(404, 'NotFound', 'the server could not find the requested resource', {});
    const namespace = decodeURIComponent(match[1]!);
    const name = match[2] === undefined ? undefined : decodeURIComponent(match[2]);
    if (name === undefined) {
      if (method === 'GET') return { status: 200, body: listPods(namespace, url.searchParams) };
      if (method === 'POST') return { status: 201, body: createPod(namespace, headers, body) };
      throw new Refusal(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`, {});
    }
    if (method === 'GET') {
      if (denied.has('get')) throw forbidden('get', namespace, name);
      const pod = store.get(key(namespace, name));
      if (!pod) throw notFound(namespace, name);
      return { status: 200, body: pod };
    }
    if (method === 'DELETE') {
      if (denied.has('delete')) throw forbidden('delete', namespace, name);
      const pod = store.get(key(namespace, name));
      if (!pod) throw notFound(namespace, name);
      const fromQuery = url.searchParams.get('gracePeriodSeconds');
      const fromBody = isObject(body) ? body.gracePeriodSeconds : undefined;
      const grace = fromQuery !== null ? Number(fromQuery) : typeof fromBody === 'number' ? fromBody : (pod.spec.terminationGracePeriodSeconds ?? 30);
      if (!Number.isInteger(grace) || grace < 0) throw new Refusal(400, 'BadRequest', `invalid gracePeriodSeconds '${fromQuery ?? String(fromBody)}'`);
      const answer = structuredClone(pod);
      deletePod(pod, grace);
      return { status: 200, body: store.get(key(namespace, name)) ?? answer };
    }
    throw new Refusal(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`, {});
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const raw = Buffer.concat(chunks).toString('utf8');
      const record: RecordedRequest = { method: req.method ?? '', path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, body: raw, status: 0 };
      requests.push(record);
      let answer: { status: number; body: unknown };
      const warned = warnings.length;
      try {
        let body: unknown;
        if (raw.length > 0) {
          try {
            body = JSON.parse(raw);
          } catch {
            throw new Refusal(400, 'BadRequest', `the body of the request could not be decoded as JSON: ${raw.slice(0, 40)}`);
          }
        }
        record.body = body;
        answer = handle(req.method ?? '', url, req.headers, body);
      } catch (raw) {
        if (!(raw instanceof Refusal)) throw raw;
        answer = { status: raw.code, body: statusObject(raw.code, raw.reason, raw.message, raw.details) };
      }
      record.status = answer.status;
      const warning = warnings.slice(warned).map((w) => `299 - ${JSON.stringify(w)}`).join(', ');
      res.writeHead(answer.status, { 'content-type': 'application/json', ...(warning ? { warning } : {}) });
      res.end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const fake: FakeKubernetes = {
    url,
    requests,
    warnings,
    pod: (namespace, name) => store.get(key(namespace, name)),
    pods: (namespace) => [...store.values()].filter((pod) => namespace === undefined || pod.metadata.namespace === namespace),
    seed(namespace, { metadata, image = 'elsewhere/other:1' }) {
      const pod: FakePod = {
        apiVersion: 'v1', kind: 'Pod',
        metadata: { ...metadata, namespace, uid: randomUUID(), resourceVersion: '', creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') },
        spec: { containers: [{ name: 'main', image }], restartPolicy: 'Never', terminationGracePeriodSeconds: 30 },
        status: { phase: 'Running' },
      };
      containerStatus(pod, { running: { startedAt: pod.metadata.creationTimestamp } });
      store.set(key(namespace, metadata.name), pod);
      changed(pod);
    },
    update(namespace, name, change) {
      const pod = store.get(key(namespace, name));
      if (!pod) throw new Error(`no pod ${namespace}/${name}`);
      change(pod);
      changed(pod);
    },
    end(namespace, name, exitCode, reason = exitCode === 0 ? 'Completed' : 'Error') {
      const pod = store.get(key(namespace, name));
      if (!pod) throw new Error(`no pod ${namespace}/${name}`);
      terminate(pod, exitCode, reason);
    },
    deny: (verb) => void denied.add(verb),
    allow: (verb) => void denied.delete(verb),
    stall: (namespace, name) => void stalled.add(key(namespace, name)),
    logs: (namespace, name) => running.get(key(namespace, name))?.lines ?? [],
    pid: (namespace, name) => liveProcess(namespace, name)?.child.pid,
    until<T>(predicate: () => T | undefined | false, what: string) {
      const now = predicate();
      if (now) return Promise.resolve(now);
      return new Promise<T>((resolve, reject) => {
        const look = () => {
          if (closed) {
            changes.off('change', look);
            return reject(new Error(`the fake closed before ${what}`));
          }
          const value = predicate();
          if (!value) return;
          changes.off('change', look);
          resolve(value);
        };
        changes.on('change', look);
      });
    },
    writeKubeconfig(file, { token = options.token, namespace, context = 'fake' } = {}) {
      writeFileSync(file, toYaml({
        apiVersion: 'v1',
        kind: 'Config',
        // The client refuses plain http unless told that TLS is not checked.
        clusters: [{ name: 'fake-cluster', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'fake-user', user: { token } }],
        contexts: [{ name: context, context: { cluster: 'fake-cluster', user: 'fake-user', ...(namespace ? { namespace } : {}) } }],
        'current-context': context,
      }));
      return file;
    },
    async close() {
      if (closed) return;
      closed = true;
      changes.emit('change');
      const live = [...running.values()].filter((entry) => entry.child.exitCode === null && entry.child.signalCode === null);
      for (const entry of live) {
        entry.child.kill('SIGTERM');
        clearTimeout(entry.killTimer);
        entry.killTimer = setTimeout(() => entry.child.kill('SIGKILL'), options.closeGraceMs ?? 5_000);
      }
      await Promise.all(live.map((entry) => entry.exited));
      for (const entry of running.values()) clearTimeout(entry.killTimer);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  t.after(() => fake.close());
  return fake;
}

/** Decodes a body as a Pod: what cannot be decoded (wrong kind, wrong types) is a 400, as the API's decoder says. */
function decodePod(body: unknown, namespace: string): { metadata: Record<string, unknown>; spec: Record<string, unknown> } {
  if (!isObject(body)) throw new Refusal(400, 'BadRequest', 'the body of the request was not a JSON object');
  if (body.apiVersion !== 'v1') throw new Refusal(400, 'BadRequest', `the API version in the data (${String(body.apiVersion ?? '')}) does not match the expected API version (v1)`);
  if (body.kind !== 'Pod') throw new Refusal(400, 'BadRequest', `the kind in the data (${String(body.kind ?? '')}) does not match the expected kind (Pod)`);
  const metadata = body.metadata ?? {};
  const spec = body.spec ?? {};
  const typeError = (field: string, want: string, got: unknown) =>
    new Refusal(400, 'BadRequest', `Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal ${typeof got} into Go struct field ${field} of type ${want}`);
  if (!isObject(metadata)) throw typeError('Pod.metadata', 'v1.ObjectMeta', metadata);
  if (!isObject(spec)) throw typeError('Pod.spec', 'v1.PodSpec', spec);
  if (metadata.namespace !== undefined && metadata.namespace !== namespace) {
    throw new Refusal(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
  }
  for (const field of ['labels', 'annotations'] as const) {
    const map = metadata[field];
    if (map === undefined) continue;
    if (!isObject(map)) throw typeError(`ObjectMeta.metadata.${field}`, 'map[string]string', map);
    for (const value of Object.values(map)) if (typeof value !== 'string') throw typeError(`ObjectMeta.metadata.${field}`, 'string', value);
  }
  if (spec.containers !== undefined && !Array.isArray(spec.containers)) throw typeError('PodSpec.spec.containers', '[]v1.Container', spec.containers);
  for (const container of (spec.containers as unknown[] | undefined) ?? []) {
    if (!isObject(container)) throw typeError('PodSpec.spec.containers', 'v1.Container', container);
    for (const field of ['command', 'args'] as const) {
      const list = container[field];
      if (list === undefined) continue;
      if (!Array.isArray(list) || list.some((item) => typeof item !== 'string')) throw typeError(`Container.spec.containers.${field}`, '[]string', list);
    }
    if (container.env !== undefined) {
      if (!Array.isArray(container.env)) throw typeError('Container.spec.containers.env', '[]v1.EnvVar', container.env);
      for (const entry of container.env) {
        if (!isObject(entry)) throw typeError('Container.spec.containers.env', 'v1.EnvVar', entry);
        if (entry.value !== undefined && typeof entry.value !== 'string') throw typeError('EnvVar.spec.containers.env.value', 'string', entry.value);
      }
    }
    const resources = container.resources;
    if (resources !== undefined) {
      if (!isObject(resources)) throw typeError('Container.spec.containers.resources', 'v1.ResourceRequirements', resources);
      for (const kind of ['requests', 'limits'] as const) {
        for (const value of Object.values(isObject(resources[kind]) ? resources[kind] : {})) {
          if (typeof value !== 'string' || !QUANTITY.test(value)) {
            throw new Refusal(400, 'BadRequest', `Pod in version "v1" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`);
          }
        }
      }
    }
  }
  if (spec.nodeSelector !== undefined) {
    if (!isObject(spec.nodeSelector)) throw typeError('PodSpec.spec.nodeSelector', 'map[string]string', spec.nodeSelector);
    for (const value of Object.values(spec.nodeSelector)) if (typeof value !== 'string') throw typeError('PodSpec.spec.nodeSelector', 'string', value);
  }
  for (const field of ['terminationGracePeriodSeconds', 'activeDeadlineSeconds'] as const) {
    if (spec[field] !== undefined && !Number.isInteger(spec[field])) throw typeError(`PodSpec.spec.${field}`, 'int64', spec[field]);
  }
  return { metadata, spec };
}

/** The API's validation of what decoded: every problem is a cause of one 422. */
function validatePod(pod: { metadata: Record<string, unknown>; spec: Record<string, unknown> }): Cause[] {
  const causes: Cause[] = [];
  const required = (field: string) => causes.push({ reason: 'FieldValueRequired', field, message: 'Required value' });
  const invalid = (field: string, value: unknown, why: string) => causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${JSON.stringify(value)}: ${why}` });
  const unsupported = (field: string, value: unknown, allowed: string[]) =>
    causes.push({ reason: 'FieldValueNotSupported', field, message: `Unsupported value: ${JSON.stringify(value)}: supported values: ${allowed.map((v) => `"${v}"`).join(', ')}` });
  const label = (field: string, value: string) => {
    if (value.length > 63 || !DNS_LABEL.test(value)) invalid(field, value, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')");
  };
  const qualifiedName = (field: string, name: string) => {
    const slash = name.lastIndexOf('/');
    const prefix = slash >= 0 ? name.slice(0, slash) : undefined;
    const local = slash >= 0 ? name.slice(slash + 1) : name;
    if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) invalid(field, name, 'prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \'-\' or \'.\'');
    if (local.length > 63 || !QUALIFIED_NAME.test(local)) invalid(field, name, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
  };
  const labels = (field: string, map: unknown) => {
    for (const [k, v] of Object.entries(isObject(map) ? map : {})) {
      qualifiedName(field, k);
      if (typeof v === 'string' && (v.length > 63 || !LABEL_VALUE.test(v))) invalid(field, v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
    }
  };

  const { metadata, spec } = pod;
  if (typeof metadata.name !== 'string' || metadata.name === '') required('metadata.name');
  else label('metadata.name', metadata.name);
  labels('metadata.labels', metadata.labels);
  for (const k of Object.keys(isObject(metadata.annotations) ? metadata.annotations : {})) qualifiedName('metadata.annotations', k);

  const containers = (spec.containers as Record<string, unknown>[] | undefined) ?? [];
  if (containers.length === 0) required('spec.containers');
  const names = new Set<string>();
  containers.forEach((container, i) => {
    const at = `spec.containers[${i}]`;
    if (typeof container.name !== 'string' || container.name === '') required(`${at}.name`);
    else {
      label(`${at}.name`, container.name);
      if (names.has(container.name)) causes.push({ reason: 'FieldValueDuplicate', field: `${at}.name`, message: `Duplicate value: ${JSON.stringify(container.name)}` });
      names.add(container.name);
    }
    if (typeof container.image !== 'string' || container.image.trim() === '') required(`${at}.image`);
    if (container.imagePullPolicy !== undefined && !['Always', 'IfNotPresent', 'Never'].includes(container.imagePullPolicy as string)) {
      unsupported(`${at}.imagePullPolicy`, container.imagePullPolicy, ['Always', 'IfNotPresent', 'Never']);
    }
    ((container.env as Record<string, unknown>[] | undefined) ?? []).forEach((entry, j) => {
      if (typeof entry.name !== 'string' || entry.name === '') required(`${at}.env[${j}].name`);
      else if (!ENV_NAME.test(entry.name)) invalid(`${at}.env[${j}].name`, entry.name, "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit");
    });
  });
  if (spec.restartPolicy !== undefined && !['Always', 'OnFailure', 'Never'].includes(spec.restartPolicy as string)) {
    unsupported('spec.restartPolicy', spec.restartPolicy, ['Always', 'OnFailure', 'Never']);
  }
  labels('spec.nodeSelector', spec.nodeSelector);
  for (const field of ['serviceAccountName', 'serviceAccount'] as const) {
    const value = spec[field];
    if (value !== undefined && (typeof value !== 'string' || value.length > 253 || !DNS_SUBDOMAIN.test(value))) invalid(`spec.${field}`, value, 'a lowercase RFC 1123 subdomain');
  }
  if (typeof spec.terminationGracePeriodSeconds === 'number' && spec.terminationGracePeriodSeconds < 0) invalid('spec.terminationGracePeriodSeconds', spec.terminationGracePeriodSeconds, 'must be greater than or equal to 0');
  return causes;
}

/** Fields the API would not know (it answers with a Warning, and drops them). */
function unknownFields(body: Record<string, unknown>): string[] {
  const unknown = (fields: Set<string>, object: unknown, at: string) =>
    Object.keys(isObject(object) ? object : {}).filter((k) => !fields.has(k)).map((k) => `${at}${k}`);
  return [
    ...unknown(POD_FIELDS, body, ''),
    ...unknown(META_FIELDS, body.metadata, 'metadata.'),
    ...unknown(SPEC_FIELDS, body.spec, 'spec.'),
    ...(((body.spec as Record<string, unknown> | undefined)?.containers as unknown[] | undefined) ?? []).flatMap((c, i) => unknown(CONTAINER_FIELDS, c, `spec.containers[${i}].`)),
  ];
}

/**
 * A label selector (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by
 * commas) as a predicate on labels; a malformed one is a 400.
 */
export function parseSelector(selector: string): (labels: Record<string, string>) => boolean {
  const tests: ((labels: Record<string, string>) => boolean)[] = [];
  const parts = selector.trim() === '' ? [] : selector.split(/,(?![^(]*\))/);
  for (const raw of parts) {
    const part = raw.trim();
    const bad = () => new Refusal(400, 'BadRequest', `unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt`);
    const set = /^([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(part);
    const equality = /^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$/.exec(part);
    const exists = /^(!?)([^\s!=(),]+)$/.exec(part);
    if (set) {
      const [, k, op, list] = set;
      const values = list!.split(',').map((v) => v.trim()).filter(Boolean);
      tests.push((labels) => (op === 'in' ? Object.hasOwn(labels, k!) && values.includes(labels[k!]!) : !values.includes(labels[k!] ?? '\0')));
    } else if (equality) {
      const [, k, op, v] = equality;
      if (v !== '' && !LABEL_VALUE.test(v!)) throw bad();
      tests.push((labels) => (op === '!=' ? labels[k!] !== v : labels[k!] === v));
    } else if (exists) {
      const [, not, k] = exists;
      tests.push((labels) => (not ? !Object.hasOwn(labels, k!) : Object.hasOwn(labels, k!)));
    } else {
      throw bad();
    }
  }
  return (labels) => tests.every((test) => test(labels));
}
