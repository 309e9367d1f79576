/**
 * The `kubernetes` provider: each instance is a Pod (restartPolicy Never) whose one container runs
 * `kiln worker` with its name and single-use token in its environment. The pod carries the server's
 * owner id as a label (to list by) and the exact instance id as an annotation (to match by), so a
 * later life of the server finds what it made, never by name. Kubernetes tells nobody cheaply when
 * a pod ends, so there is no `gone` promise: the pool manager's `check` reads the pod.
 *
 * `@kubernetes/client-node` takes most of a second to load, so it is imported on first use.
 */
import { createHash } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as k8s from '@kubernetes/client-node';
import * as z from 'zod';
import { backoffMs, expandTemplate, formatDuration, templateNames } from '../../core/index.js';
import { instanceEnvironment, isPlainObject, mapStrings, workerArguments, type InstanceHandle, type InstanceSpec, type OwnInstance, type Provider } from './provider.js';

/** Label (selectable) and annotations (exact, may hold '/') set on every pod. */
const OWNER_LABEL = 'kiln.dev/owner';
const POOL_LABEL = 'kiln.dev/pool';
const INSTANCE_ANNOTATION = 'kiln.dev/instance';
const WORKER_NAME_ANNOTATION = 'kiln.dev/worker-name';
const POOL_ANNOTATION = 'kiln.dev/pool';
const RUN_ANNOTATION = 'kiln.dev/run';
const CONTAINER = 'kiln-worker';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
/** Set by Kiln on every pod: options may not override how the worker connects back. */
const INSTANCE_ENV = ['KILN_SERVER', 'KILN_WORKER_NAME', 'KILN_WORKER_TOKEN', 'KILN_POOL_INSTANCE', 'KILN_POOL'];

/** YAML reads `cpu: 2` or `FOO: 1` as numbers; Kubernetes wants strings. */
const text = z.union([z.string(), z.number()]).transform(String);
const quantities = z.record(z.string().min(1), text);

/** Options of a kubernetes pool (`options:` in its config). */
export const kubernetesOptionsSchema = z.strictObject({
  /** Namespace the pods are made in. */
  namespace: z.string().regex(DNS_LABEL, 'a namespace is a DNS label (lowercase letters, digits, -)').default('default'),
  /**
   * Container image. Placeholders are replaced here and in command, env values and pod_overrides:
   * `%%PLATFORM%%`, `%%POOL%%`, `%%INSTANCE%%`, and for a pool that names the run, `%%JOB%%`,
   * `%%RUN%%` and the job's vars.
   */
  image: z.string().min(1),
  /** The container's command (entrypoint) that runs Kiln; the worker arguments follow it. Default ["kiln"]. */
  command: z.array(z.string().min(1)).min(1).optional(),
  /** The server's address as the pod reaches it (Buildbot's masterFQDN); default the server's own. */
  server_url: z.url({ protocol: /^https?$/, message: 'an http:// or https:// URL' }).optional(),
  /** The container's resource requests and limits, e.g. `{ limits: { cpu: "2", memory: 4Gi } }`. */
  resources: z.strictObject({ requests: quantities.optional(), limits: quantities.optional() }).optional(),
  /** Node labels the pod must be scheduled on. */
  node_selector: z.record(z.string().min(1), z.string().regex(LABEL_VALUE, 'a label value: up to 63 letters, digits, -, _ or .').max(63)).default({}),
  /** The pod's service account. */
  service_account: z.string().min(1).optional(),
  image_pull_policy: z.enum(['Always', 'IfNotPresent', 'Never']).optional(),
  /** Extra environment for the worker (the KILN_* ones that connect it back are Kiln's). */
  env: z.record(z.string().regex(ENV_NAME, 'an environment variable name'), text).default({})
    .refine((env) => !INSTANCE_ENV.some((name) => Object.hasOwn(env, name)), { message: `${INSTANCE_ENV.join(', ')} are set by Kiln` }),
  /** kubeconfig file (relative to the config file); default: in-cluster when run in a pod, else the usual kubeconfig. */
  kubeconfig: z.string().min(1).optional(),
  /** Context of the kubeconfig to use; default its current context. */
  context: z.string().min(1).optional(),
  /** Deep-merged into the pod's spec, for what the options above do not cover (lists of named items merge by name). */
  pod_overrides: z.record(z.string(), z.unknown()).optional(),
});
/** Options of a kubernetes pool, as checked (defaults filled in). */
export type KubernetesOptions = z.output<typeof kubernetesOptionsSchema>;

/** @internal Waits, made shorter by tests. */
export interface KubernetesTiming {
  /** How long one API request may take. */
  requestTimeoutMs: number;
  /** How long a deleted pod may take to go (its worker drains 10 s, its jobs get 3 s) before it is force-deleted. */
  stopTimeoutMs: number;
  /** How long a force-deleted pod may still take. */
  forceTimeoutMs: number;
  /** Longest pause between reads of a deleted pod. */
  pollMaxMs: number;
}

const DEFAULT_TIMING: KubernetesTiming = { requestTimeoutMs: 30_000, stopTimeoutMs: 60_000, forceTimeoutMs: 10_000, pollMaxMs: 1_000 };

interface Connection {
  api: k8s.CoreV1Api;
  /** The API server's address, to say which one could not be reached. */
  server: string;
  ApiException: typeof k8s.ApiException;
}

/** Worker instances as pods in one namespace of one cluster (a pool's `provider: kubernetes`). */
export class KubernetesProvider implements Provider {
  readonly kind = 'kubernetes';
  /** Pods outlive their server: a later life finds them by owner label and instance annotation. */
  readonly adoptable = true;
  private connection: Promise<Connection> | undefined;
  /** The last status message seen per instance (a waiting or terminated reason), for lastWords. */
  private readonly words = new Map<string, string>();
  private readonly timing: KubernetesTiming;

  constructor(
    private readonly options: KubernetesOptions,
    private readonly context: { baseDir: string },
    timing: Partial<KubernetesTiming> = {},
  ) {
    this.timing = { ...DEFAULT_TIMING, ...timing };
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    const name = podName(spec);
    const pod = this.podFor(spec, name);
    const { api, ApiException, server } = await this.connect();
    try {
      await api.createNamespacedPod({ namespace: this.options.namespace, body: pod });
    } catch (raw) {
      if (raw instanceof ApiException) throw new Error(`kubernetes refused the pod (${describeApiError(raw)})`);
      // No answer: the pod may have been made all the same, and nothing made may be left.
      await api.deleteNamespacedPod({ name, namespace: this.options.namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
      throw new Error(describeUnreachable(raw, server, this.timing.requestTimeoutMs));
    }
    return this.handle(spec.id, name);
  }

  async check(handle: InstanceHandle): Promise<string | null> {
    const pod = await this.readPod(handle.ref);
    if (!pod) return 'its pod was deleted';
    const words = statusWords(pod);
    if (words) this.words.set(handle.id, words);
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return `its pod ${phase === 'Failed' ? 'failed' : 'succeeded'}: ${howItEnded(pod)}`;
    if (pod.metadata?.deletionTimestamp) return 'its pod is being deleted';
    return null;
  }

  async stop(handle: InstanceHandle): Promise<void> {
    try {
      // Deleted gracefully first: the worker gets SIGTERM and drains before its pod goes.
      if (await this.deletePod(handle.ref)) await this.waitGone(handle.ref, this.timing.stopTimeoutMs);
    } catch (raw) {
      if (!(raw instanceof PodStillThereError)) throw raw;
      // A pod on a node that no longer answers stays Terminating: removed from the API at once.
      if (await this.deletePod(handle.ref, 0)) await this.waitGone(handle.ref, this.timing.forceTimeoutMs);
    } finally {
      this.words.delete(handle.id);
    }
  }

  async listOwn(owner: string): Promise<OwnInstance[]> {
    const { api, ApiException, server } = await this.connect();
    const found: OwnInstance[] = [];
    let next: string | undefined;
    do {
      let list: k8s.V1PodList;
      try {
        list = await api.listNamespacedPod({ namespace: this.options.namespace, labelSelector: `${OWNER_LABEL}=${owner}`, limit: 500, _continue: next });
      } catch (raw) {
        throw new Error(raw instanceof ApiException ? `kubernetes refused to list pods (${describeApiError(raw)})` : describeUnreachable(raw, server, this.timing.requestTimeoutMs));
      }
      for (const pod of list.items) {
        const meta = pod.metadata ?? {};
        const id = meta.annotations?.[INSTANCE_ANNOTATION];
        // The label only narrows the list: the exact id says whose pod it is.
        if (!meta.name || !id?.startsWith(`${owner}/`)) continue;
        found.push({
          handle: this.handle(id, meta.name),
          pool: meta.annotations?.[POOL_ANNOTATION] ?? meta.labels?.[POOL_LABEL] ?? '',
          name: meta.annotations?.[WORKER_NAME_ANNOTATION] ?? '',
          forRun: meta.annotations?.[RUN_ANNOTATION],
        });
      }
      next = list.metadata?._continue || undefined;
    } while (next);
    return found;
  }

  /** The pod for an instance: Kiln's parts, then the options, then pod_overrides. */
  private podFor(spec: InstanceSpec, name: string): k8s.V1Pod {
    const { options } = this;
    const env: Record<string, string> = { ...instanceEnvironment(spec, options.server_url ?? spec.server) };
    for (const [key, value] of Object.entries(options.env)) env[key] = expandOption(`env.${key}`, value, spec);
    const container: k8s.V1Container = {
      name: CONTAINER,
      image: expandOption('image', options.image, spec),
      command: (options.command ?? ['kiln']).map((part, i) => expandOption(`command.${i}`, part, spec)),
      args: workerArguments(spec),
      env: Object.entries(env).map(([key, value]) => ({ name: key, value })),
      ...(options.image_pull_policy ? { imagePullPolicy: options.image_pull_policy } : {}),
      ...(options.resources ? { resources: options.resources } : {}),
    };
    const podSpec: k8s.V1PodSpec = {
      restartPolicy: 'Never',
      // The worker drains 10 s and gives its jobs 3 s: a little more than that before SIGKILL.
      terminationGracePeriodSeconds: 30,
      containers: [container],
      ...(Object.keys(options.node_selector).length > 0 ? { nodeSelector: options.node_selector } : {}),
      ...(options.service_account ? { serviceAccountName: options.service_account } : {}),
    };
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: options.namespace,
        labels: { [OWNER_LABEL]: spec.owner, [POOL_LABEL]: labelValue(spec.pool) },
        annotations: { [INSTANCE_ANNOTATION]: spec.id, [WORKER_NAME_ANNOTATION]: spec.name, [POOL_ANNOTATION]: spec.pool, ...(spec.forRun ? { [RUN_ANNOTATION]: spec.forRun } : {}) },
      },
      spec: (options.pod_overrides ? deepMerge(podSpec, mapStrings(options.pod_overrides, (text, at) => expandOption(at, text, spec), 'pod_overrides')) : podSpec) as k8s.V1PodSpec,
    };
  }

  private handle(id: string, ref: string): InstanceHandle {
    return { id, ref, lastWords: () => this.words.get(id) ?? '' };
  }

  /** The pod, or undefined when there is none (404). */
  private async readPod(name: string): Promise<k8s.V1Pod | undefined> {
    const { api, ApiException, server } = await this.connect();
    try {
      return await api.readNamespacedPod({ name, namespace: this.options.namespace });
    } catch (raw) {
      if (raw instanceof ApiException && raw.code === 404) return undefined;
      throw new Error(raw instanceof ApiException ? `kubernetes refused to read pod ${name} (${describeApiError(raw)})` : describeUnreachable(raw, server, this.timing.requestTimeoutMs));
    }
  }

  /** Deletes a pod; false when there was none. */
  private async deletePod(name: string, gracePeriodSeconds?: number): Promise<boolean> {
    const { api, ApiException, server } = await this.connect();
    try {
      await api.deleteNamespacedPod({ name, namespace: this.options.namespace, ...(gracePeriodSeconds === undefined ? {} : { gracePeriodSeconds }) });
      return true;
    } catch (raw) {
      if (raw instanceof ApiException && raw.code === 404) return false;
      throw new Error(raw instanceof ApiException ? `kubernetes refused to delete pod ${name} (${describeApiError(raw)})` : describeUnreachable(raw, server, this.timing.requestTimeoutMs));
    }
  }

  /** Reads a deleted pod until it is gone (Kubernetes gives no cheap event for it), at most `withinMs`. */
  private async waitGone(name: string, withinMs: number): Promise<void> {
    const deadline = Date.now() + withinMs;
    for (let reads = 1; ; reads += 1) {
      if (!(await this.readPod(name))) return;
      // Read often at first (a pod usually goes within a second), then every pollMaxMs.
      const pause = backoffMs(reads, { retryMinMs: 100, retryMaxMs: this.timing.pollMaxMs });
      if (Date.now() >= deadline) throw new PodStillThereError(`pod ${name} was still there ${formatDuration(withinMs)} after it was deleted`);
      await sleep(Math.min(pause, Math.max(deadline - Date.now(), 0)));
    }
  }

  /** The API client, made on first use; a failure is not kept (the next call tries again). */
  private connect(): Promise<Connection> {
    this.connection ??= this.makeConnection().catch((raw: unknown) => {
      this.connection = undefined;
      throw raw;
    });
    return this.connection;
  }

  private async makeConnection(): Promise<Connection> {
    const lib = await import('@kubernetes/client-node');
    const config = new lib.KubeConfig();
    const { kubeconfig, context } = this.options;
    const source = kubeconfig ? path.resolve(this.context.baseDir, kubeconfig) : process.env.KUBERNETES_SERVICE_HOST ? 'the in-cluster service account' : 'the default kubeconfig';
    try {
      if (kubeconfig) config.loadFromFile(source);
      else if (process.env.KUBERNETES_SERVICE_HOST) config.loadFromCluster();
      else config.loadFromDefault();
    } catch (raw) {
      throw new Error(`could not load ${source}: ${oneLine(raw instanceof Error ? raw.message : String(raw))}`);
    }
    if (context) {
      if (!config.getContextObject(context)) throw new Error(`${source} has no context '${context}'`);
      config.setCurrentContext(context);
    }
    const cluster = config.getCurrentCluster();
    if (!cluster) throw new Error(`${source} names no cluster for context '${config.getCurrentContext()}'`);
    const timeoutMs = this.timing.requestTimeoutMs;
    const configuration = lib.createConfiguration({
      baseServer: new lib.ServerConfiguration(cluster.server, {}),
      authMethods: { default: config },
      // Every request is bounded: a stop or a start never waits on a silent API for ever.
      promiseMiddleware: [{
        pre: async (request) => {
          request.setSignal(AbortSignal.timeout(timeoutMs));
          return request;
        },
        post: async (response) => response,
      }],
    });
    return { api: new lib.CoreV1Api(configuration), server: cluster.server, ApiException: lib.ApiException };
  }
}

/** A deleted pod that has not gone within its time. */
class PodStillThereError extends Error {}

/**
 * The pod's name: the worker name when it is a DNS label already, else made one (lowercase,
 * [a-z0-9-], at most 63) with a hash of the exact id, so two instances never share a name.
 */
export function podName(spec: Pick<InstanceSpec, 'id' | 'name'>): string {
  if (spec.name.length <= 63 && DNS_LABEL.test(spec.name)) return spec.name;
  const hash = createHash('sha256').update(spec.id).digest('hex').slice(0, 10);
  const base = spec.name.toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 63 - hash.length - 1).replace(/^-+|-+$/g, '');
  return `${base || 'kiln'}-${hash}`;
}

/** A pool name as a label value (at most 63, alphanumeric at both ends); the exact name is in an annotation. */
function labelValue(value: string): string {
  return LABEL_VALUE.test(value) && value.length <= 63 ? value : value.slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
}

/** Expands placeholders in an option; one that the values do not define is named with those that are. */
function expandOption(option: string, value: string, spec: InstanceSpec): string {
  try {
    return expandTemplate(value, spec.values);
  } catch {
    const unknown = [...new Set(templateNames(value).filter((n) => !Object.hasOwn(spec.values, n)))];
    throw new Error(`options.${option} uses ${unknown.map((n) => `%%${n}%%`).join(', ')}, which this instance does not define (it has ${Object.keys(spec.values).sort().map((n) => `%%${n}%%`).join(', ')})`);
  }
}


/**
 * Merges `override` into `base`: objects key by key, lists of named objects (containers, env,
 * volumes) by name, anything else replaced.
 */
function deepMerge(base: unknown, override: unknown): unknown {
  if (isPlainObject(base) && isPlainObject(override)) {
    const merged: Record<string, unknown> = { ...base };
    for (const [key, value] of Object.entries(override)) merged[key] = key in base ? deepMerge(base[key], value) : value;
    return merged;
  }
  if (Array.isArray(base) && Array.isArray(override) && [...base, ...override].every((item) => isPlainObject(item) && typeof item.name === 'string')) {
    const merged = [...base] as Record<string, unknown>[];
    for (const item of override as Record<string, unknown>[]) {
      const at = merged.findIndex((existing) => existing.name === item.name);
      if (at >= 0) merged[at] = deepMerge(merged[at], item) as Record<string, unknown>;
      else merged.push(item);
    }
    return merged;
  }
  return override;
}

/** The container's status (ours, else the first). */
function workerStatus(pod: k8s.V1Pod): k8s.V1ContainerStatus | undefined {
  const statuses = pod.status?.containerStatuses ?? [];
  return statuses.find((s) => s.name === CONTAINER) ?? statuses[0];
}

/** How an ended pod ended: its container's terminated reason and exit code, else the pod's reason. */
function howItEnded(pod: k8s.V1Pod): string {
  const ended = workerStatus(pod)?.state?.terminated;
  if (ended) {
    const signal = ended.signal ? `, signal ${ended.signal}` : '';
    return oneLine(`${ended.reason ?? 'exited'} (exit code ${ended.exitCode}${signal})${ended.message ? `: ${ended.message}` : ''}`);
  }
  return oneLine([pod.status?.reason, pod.status?.message].filter(Boolean).join(': ') || (pod.status?.phase ?? 'ended'));
}

/** What the pod says about trouble: a waiting or terminated reason, an unschedulable condition, its message. */
function statusWords(pod: k8s.V1Pod): string {
  const state = workerStatus(pod)?.state;
  const waiting = state?.waiting;
  if (waiting?.reason && waiting.reason !== 'ContainerCreating') return oneLine([waiting.reason, waiting.message].filter(Boolean).join(': '));
  if (state?.terminated) return howItEnded(pod);
  const unscheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unscheduled) return oneLine([unscheduled.reason, unscheduled.message].filter(Boolean).join(': '));
  return oneLine([pod.status?.reason, pod.status?.message].filter(Boolean).join(': '));
}

/** An API answer as one line: the status code, the Status object's reason and message. */
function describeApiError(err: k8s.ApiException<unknown>): string {
  const status = parseStatus(err.body);
  const reason = status.reason || STATUS_CODES[err.code] || 'error';
  return oneLine(`${err.code} ${reason}${status.message ? `: ${status.message}` : ''}`);
}

function parseStatus(body: unknown): { reason?: string; message?: string } {
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return { message: body.slice(0, 300) };
    }
  }
  if (!isPlainObject(parsed)) return {};
  return {
    reason: typeof parsed.reason === 'string' ? parsed.reason : undefined,
    message: typeof parsed.message === 'string' ? parsed.message : undefined,
  };
}

/** A request that got no answer: refused, reset, timed out, or never sent. */
function describeUnreachable(raw: unknown, server: string, timeoutMs: number): string {
  const err = raw instanceof Error ? raw : new Error(String(raw));
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return `no answer from the kubernetes API at ${server} within ${formatDuration(timeoutMs)}`;
  if (err.name === 'FetchError') {
    // node-fetch says "request to URL failed, reason: connect ECONNREFUSED ..."; the reason is what matters.
    const reason = /reason: (.*)$/s.exec(err.message)?.[1] ?? err.message;
    return oneLine(`could not reach the kubernetes API at ${server} (${reason})`);
  }
  // Refused before it was sent (the client's own checks, e.g. http:// without insecure-skip-tls-verify).
  return oneLine(`could not call the kubernetes API at ${server} (${err.message})`);
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > 500 ? `${line.slice(0, 497)}...` : line;
}
