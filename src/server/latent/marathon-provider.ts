/**
 * The `marathon` provider (Buildbot's MarathonLatentWorker): each instance is a Marathon app (on
 * Mesos or DC/OS) of one Docker task running `kiln worker`, made and removed through Marathon's
 * REST API v2 with Node's fetch. Every app carries the exact instance id in its labels, so a later
 * server life finds its own apps by it, never by name. Tested only against an HTTP fake written
 * from Marathon's API docs (test/helpers/fake-marathon.ts), not against a real Marathon.
 */
import * as z from 'zod';
import { backoffMs, expandTemplate } from '../../core/index.js';
import { coerceError, ConfigError } from '../../errors.js';
import { instanceEnvironment, isPlainObject, mapStrings, workerArguments, type InstanceHandle, type InstanceSpec, type OwnInstance, type Provider } from './provider.js';

/** One Marathon path segment, as its docs give it: lowercase letters, digits, dashes and dots, no dash at either end. */
const SEGMENT = '(?:(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])\\.)*(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])';
/** The labels every app carries; they are ours, so `marathon_extra_config` may not set them. */
const KILN_LABELS = ['KILN_OWNER', 'KILN_POOL', 'KILN_INSTANCE', 'KILN_WORKER_NAME', 'KILN_RUN'] as const;

/** How long an asked-to-stop worker drains (10 s) and stops its jobs (3 s), with room, before Marathon's SIGKILL. */
const KILL_GRACE_S = 20;
/**
 * Marathon restarts every task that ends, even one that exits 0: it has no run-once apps. It does
 * hold back a relaunch after a task ends (its backoff, which it applies to finished tasks too), so
 * a one-run app waits this long before it could come back, and the pool's check sees it gone and
 * destroys it well before then.
 */
const ONE_RUN_HOLD_S = 3600;
/** How long a stop waits for the app to disappear: the kill grace and Marathon's own deployment. */
const STOP_WAIT_MS = (KILL_GRACE_S + 40) * 1000;
/** A Marathon that does not answer within this is taken as unreachable for that call. */
const REQUEST_TIMEOUT_MS = 30_000;


/** Options of a marathon pool (`options:` in its config). */
export const marathonOptionsSchema = z
  .strictObject({
    /** Marathon's base URL, e.g. http://marathon.mesos:8080 (its REST API is under /v2). */
    marathon_url: z.url({ protocol: /^https?$/, error: 'use an http(s) URL' }),
    /** HTTP Basic credentials (Buildbot's marathon_auth); both or neither. */
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    /** Docker image of the app's container; `%%NAME%%` placeholders are expanded per instance. */
    image: z.string().min(1),
    /** The container's command (Marathon `args`, placeholders expanded); default `kiln worker` with the pool's arguments. */
    command: z.array(z.string()).min(1).optional(),
    /** The address the app's worker reaches the server at (Buildbot's masterFQDN); default the server's own. */
    server_url: z.url({ protocol: /^https?$/, error: 'use an http(s) URL' }).optional(),
    /** CPU shares of the app's task. */
    cpus: z.number().positive().default(1),
    /** Memory of the app's task, in MiB. */
    mem: z.number().positive().default(1024),
    /** The Marathon group the apps are made in. */
    app_prefix: z
      .string()
      .regex(new RegExp(`^(?:/${SEGMENT})+/?$`), 'use a Marathon group path like /kiln (lowercase letters, digits, - and .)')
      .transform((prefix) => prefix.replace(/\/$/, ''))
      .default('/kiln'),
    /** Merged recursively into the app definition (Buildbot's option): constraints, volumes, fetch, networks... */
    marathon_extra_config: z
      .record(z.string(), z.unknown())
      .superRefine((extra, ctx) => {
        // What finds an app again (its id, its labels) and its one task are the provider's own.
        for (const key of ['id', 'instances']) {
          if (key in extra) ctx.addIssue({ code: 'custom', path: [key], message: `'${key}' is set by the provider` });
        }
        const labels = extra.labels;
        if (labels !== undefined && !isPlainObject(labels)) ctx.addIssue({ code: 'custom', path: ['labels'], message: 'use a map of strings' });
        for (const label of KILN_LABELS) {
          if (isPlainObject(labels) && label in labels) ctx.addIssue({ code: 'custom', path: ['labels', label], message: `'${label}' is set by the provider` });
        }
      })
      .default({}),
  })
  .refine((options) => (options.username === undefined) === (options.password === undefined), {
    path: ['password'],
    message: 'give username and password together',
  });
export type MarathonOptions = z.output<typeof marathonOptionsSchema>;

/**
 * Marathon did not do what was asked (`status`: its HTTP status), or could not be asked (`status`
 * 0; `timedOut` when it was asked but did not answer in time). @internal
 */
export class MarathonRequestError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly timedOut = false,
  ) {
    super(message);
  }
}

/** The parts of Marathon's app JSON the provider reads. */
interface MarathonApp {
  id: string;
  labels?: Record<string, string>;
  tasksRunning?: number;
  tasksStaged?: number;
  deployments?: { id: string }[];
  tasks?: { id: string; startedAt?: string | null }[];
  lastTaskFailure?: { state?: string; message?: string; taskId?: string };
}

/** The app's name in its group: the worker name made into a valid Marathon path segment. */
function appSegment(name: string): string {
  const segment = name.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  return segment || 'worker';
}

/** Marathon's label selector wants anything but `-A-Za-z0-9_.` escaped with a backslash. */
function selectorValue(value: string): string {
  return value.replace(/[^-A-Za-z0-9_.]/g, (c) => `\\${c}`);
}

/** Objects merged key by key, recursively; anything else from `extra` replaces (Buildbot's dictionary_merge). */
function deepMerge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const merged = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const current = merged[key];
    merged[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value;
  }
  return merged;
}

export class MarathonProvider implements Provider {
  readonly kind = 'marathon';
  /** Apps outlive their server: a later life finds them by their labels. */
  readonly adoptable = true;
  private readonly base: string;
  private readonly authorization: string | undefined;
  /** The first running task each instance was seen with: another one later means Marathon restarted it. */
  private readonly firstTask = new Map<string, string>();
  /** What Marathon last said about an instance's failed task, as its last words. */
  private readonly lastFailure = new Map<string, string>();

  constructor(private readonly options: MarathonOptions) {
    this.base = options.marathon_url.replace(/\/+$/, '');
    this.authorization =
      options.username === undefined ? undefined : `Basic ${Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')}`;
  }

  /** The app definition for `spec`: placeholders expanded, the extra config merged in. @internal */
  appDefinition(spec: InstanceSpec): Record<string, unknown> {
    // Like Buildbot's renderables: the image, the command and every string of the extra config.
    const expand = <T>(value: T, at: string): T =>
      mapStrings(value, (text, path) => {
        try {
          return expandTemplate(text, spec.values);
        } catch (raw) {
          throw new ConfigError(`${path}: ${coerceError(raw).message}`);
        }
      }, at);
    const image = expand(this.options.image, 'image');
    const command = this.options.command ? expand(this.options.command, 'command') : ['kiln', ...workerArguments(spec)];
    const extra = expand(this.options.marathon_extra_config, 'marathon_extra_config');
    const app: Record<string, unknown> = {
      id: `${this.options.app_prefix}/${appSegment(spec.name)}`,
      // `args`, not `cmd`: no shell between Marathon and the worker, nothing to quote.
      args: command,
      instances: 1,
      cpus: this.options.cpus,
      mem: this.options.mem,
      container: { type: 'DOCKER', docker: { image } },
      env: instanceEnvironment(spec, this.options.server_url ?? spec.server),
      labels: { KILN_OWNER: spec.owner, KILN_POOL: spec.pool, KILN_INSTANCE: spec.id, KILN_WORKER_NAME: spec.name, ...(spec.forRun ? { KILN_RUN: spec.forRun } : {}) },
      taskKillGracePeriodSeconds: KILL_GRACE_S,
      ...(spec.once ? { backoffSeconds: ONE_RUN_HOLD_S, backoffFactor: 1, maxLaunchDelaySeconds: ONE_RUN_HOLD_S } : {}),
    };
    const merged = deepMerge(app, extra);
    // Marathon refuses an app with both: a `cmd` given in the extra config replaces the worker's args.
    if ('cmd' in extra) delete merged.args;
    return merged;
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    const app = this.appDefinition(spec);
    const id = app.id as string;
    try {
      await this.call('POST', '/v2/apps', app, [201]);
    } catch (raw) {
      // Asked, but no answer in time: the app may exist, and what was made is removed (best effort).
      if (raw instanceof MarathonRequestError && raw.timedOut) await this.call('DELETE', `/v2/apps${id}?force=true`, undefined, [200, 404]).catch(() => undefined);
      throw raw;
    }
    return this.handle(spec.id, id);
  }

  /**
   * Gone when the app was destroyed, or when its one task has ended: Marathon shows that, per its
   * API docs, as `lastTaskFailure` (for failed, lost and errored tasks only, not for one that
   * exited 0), or as no task running or staged once no deployment is in flight (the app's start
   * deployment lasts until its task has run), or as another task than the first one seen running
   * (Marathon restarted it between two checks). `tasksUnhealthy` needs health checks, which a
   * worker has none of, so it says nothing here.
   */
  async check(handle: InstanceHandle): Promise<string | null> {
    const { status, body } = await this.call('GET', `/v2/apps${handle.ref}?embed=app.tasks&embed=app.counts&embed=app.deployments&embed=app.lastTaskFailure`, undefined, [200, 404]);
    if (status === 404) return 'its app was destroyed';
    const app = (body as { app: MarathonApp }).app;
    const failure = app.lastTaskFailure;
    if (failure) {
      const why = `its task ended: ${[failure.state, failure.message].filter(Boolean).join(' ')}`;
      this.lastFailure.set(handle.id, failure.message ?? failure.state ?? '');
      return why;
    }
    const deploying = (app.deployments ?? []).length > 0;
    if (!deploying && (app.tasksRunning ?? 0) === 0 && (app.tasksStaged ?? 0) === 0) return 'its task ended';
    const tasks = app.tasks ?? [];
    const first = this.firstTask.get(handle.id);
    if (first !== undefined && !tasks.some((task) => task.id === first)) return 'its task ended and Marathon started another';
    const running = tasks.find((task) => task.startedAt);
    if (first === undefined && running) this.firstTask.set(handle.id, running.id);
    return null;
  }

  async stop(handle: InstanceHandle): Promise<void> {
    const path = `/v2/apps${handle.ref}`;
    let { status } = await this.call('DELETE', path, undefined, [200, 404, 409]);
    if (status === 409) {
      // A deployment holds the app (its start, when its task never got to run, or an earlier
      // destroy): Marathon takes no other change to it meanwhile. The app is to go anyway, so that
      // deployment is cancelled with force.
      ({ status } = await this.call('DELETE', `${path}?force=true`, undefined, [200, 404]));
    }
    if (status !== 404) {
      // Destroying is a deployment (kill the task: SIGTERM, SIGKILL after the grace; then remove the
      // app) and Marathon gives no cheap event for its end, so the app is looked for until it is gone.
      const deadline = Date.now() + STOP_WAIT_MS;
      for (let reads = 1; ; reads += 1) {
        if ((await this.call('GET', path, undefined, [200, 404])).status === 404) break;
        if (Date.now() > deadline) throw new MarathonRequestError(`Marathon app ${handle.ref} still exists ${STOP_WAIT_MS / 1000}s after it was destroyed`, 0);
        await new Promise((resolve) => setTimeout(resolve, backoffMs(reads, { retryMinMs: 100, retryMaxMs: 1000 })));
      }
    }
    this.firstTask.delete(handle.id);
    this.lastFailure.delete(handle.id);
  }

  async listOwn(owner: string): Promise<OwnInstance[]> {
    const selector = encodeURIComponent(`KILN_OWNER==${selectorValue(owner)}`);
    const { body } = await this.call('GET', `/v2/apps?label=${selector}`, undefined, [200]);
    const found: OwnInstance[] = [];
    for (const app of (body as { apps: MarathonApp[] }).apps) {
      const labels = app.labels ?? {};
      // By the exact instance id: the owner label alone could be set by anyone's app.
      if (labels.KILN_OWNER !== owner || !labels.KILN_INSTANCE?.startsWith(`${owner}/`)) continue;
      found.push({ pool: labels.KILN_POOL ?? '', name: labels.KILN_WORKER_NAME ?? '', forRun: labels.KILN_RUN, handle: this.handle(labels.KILN_INSTANCE, app.id) });
    }
    return found;
  }

  private handle(id: string, ref: string): InstanceHandle {
    return { id, ref, lastWords: () => this.lastFailure.get(id) ?? '' };
  }

  /** One call to Marathon; any status not in `expected` is a one-line error with Marathon's message. */
  private async call(method: string, path: string, body: unknown, expected: number[]): Promise<{ status: number; body: unknown }> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.authorization) headers.authorization = this.authorization;
    const route = `${method} ${path.replace(/\?.*$/, '')}`;
    let response: Response;
    try {
      response = await fetch(this.base + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (raw) {
      if ((raw as Error).name === 'TimeoutError') {
        throw new MarathonRequestError(`Marathon at ${this.base} did not answer ${route} within ${REQUEST_TIMEOUT_MS / 1000}s`, 0, true);
      }
      // fetch says only "fetch failed"; why (refused, unknown host, TLS) is in its cause.
      const cause = ((raw as { cause?: unknown }).cause ?? raw) as { message?: string; code?: string };
      const reason = cause.message || cause.code || String(raw);
      throw new MarathonRequestError(`cannot reach Marathon at ${this.base} (${route}): ${reason}`.replace(/\s*\n\s*/g, ' '), 0);
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined; // Not JSON (a proxy's page, say): the status says enough.
    }
    if (!expected.includes(response.status)) throw new MarathonRequestError(`Marathon ${route}: ${response.status} ${describe(parsed, response.statusText)}`, response.status);
    return { status: response.status, body: parsed };
  }
}

/** Marathon's `message` and the first few `details` (422: which fields, and why), on one line. */
function describe(body: unknown, fallback: string): string {
  if (!isPlainObject(body)) return fallback;
  const message = typeof body.message === 'string' ? body.message : fallback;
  const details = Array.isArray(body.details)
    ? body.details
        .slice(0, 3)
        .map((d: { path?: unknown; errors?: unknown }) => `${String(d.path ?? '')}: ${Array.isArray(d.errors) ? d.errors.join(', ') : ''}`)
        .join('; ')
    : '';
  return `${message}${details ? ` (${details})` : ''}`.replace(/\s*\n\s*/g, ' ');
}
