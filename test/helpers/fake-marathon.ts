/**
 * An HTTP fake of Marathon's REST API v2 (apps only), written from Marathon's public API docs
 * (docs/docs/rest-api/public/api/v2/apps.raml and traits.raml, AppDefinition.json, rest-api.md),
 * on 127.0.0.1 and a free port. It checks every request's shape and answers errors as those docs
 * give them: `{"message"}` with a 4xx, 422 with `details` for a bad app definition, 409 for a
 * duplicate id or an app locked by a deployment, 401 without the right Basic auth, 404 for an
 * unknown app. Every request is recorded for assertions.
 *
 * Apps are run for real when the test gives `run`: it starts the app's task as a local process
 * (tasksRunning 1 while it lives); when the task ends, Marathon's way is followed: TASK_FINISHED
 * (exit 0) or TASK_FAILED (recorded as lastTaskFailure), then a relaunch after the app's backoff.
 * DELETE kills the task (SIGTERM, SIGKILL after taskKillGracePeriodSeconds) and the app goes once
 * it has exited. Everything still running is killed by pid when the test ends.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';

/** Starts an app's task: a real process, or null to leave it staged (as when no offer fits). */
export type RunTask = (command: string[], env: Record<string, string>, app: Record<string, unknown>) => ChildProcess | null;

export interface FakeMarathonOptions {
  /** When set, every request needs exactly these Basic credentials. */
  auth?: { username: string; password: string };
  run?: RunTask;
}

/** A request as the fake received it. */
export interface RecordedRequest {
  method: string;
  /** The path without the query. */
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
  body: unknown;
  /** The status it was answered with. */
  status: number;
}

/** A task of an app, as the fake ran it. */
export interface FakeTask {
  id: string;
  appId: string;
  child: ChildProcess;
  stagedAt: string;
  startedAt: string | null;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** An app the fake holds. */
export interface FakeApp {
  id: string;
  /** The definition as posted (the fake adds its defaults only when showing it). */
  definition: Record<string, unknown>;
  version: string;
  task: FakeTask | undefined;
  /** Every task launched, in order. */
  launches: FakeTask[];
  /** Deployment ids in flight (its start until its task runs; its destroy until it is gone). */
  deployments: string[];
  lastTaskFailure: Record<string, string> | undefined;
  destroying: boolean;
}

export interface FakeMarathon {
  /** `http://127.0.0.1:PORT` */
  url: string;
  requests: RecordedRequest[];
  apps: Map<string, FakeApp>;
  /** Every task started, of apps present or gone. */
  launched: FakeTask[];
  /** Resolves once an app of that id exists and its `nth` task (1: its first) runs. */
  running(appId: string, nth?: number): Promise<FakeTask>;
  /** Resolves once no app of that id exists. */
  gone(appId: string): Promise<void>;
  /** Closes it and kills every task still running (by pid). */
  close(): Promise<void>;
}

// Marathon's docs: each path segment is lowercase letters, digits, dashes and dots, no dash at either end.
const SEGMENT = /^(?:(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])\.)*(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$/;
// AppDefinition's fields (Marathon 1.x); the JSON schema in the docs allows no others.
const APP_FIELDS = new Set([
  'id', 'cmd', 'args', 'user', 'env', 'instances', 'cpus', 'mem', 'disk', 'gpus', 'executor', 'constraints', 'fetch', 'uris', 'storeUrls',
  'backoffSeconds', 'backoffFactor', 'maxLaunchDelaySeconds', 'container', 'healthChecks', 'readinessChecks', 'dependencies', 'upgradeStrategy',
  'labels', 'acceptedResourceRoles', 'ipAddress', 'residency', 'secrets', 'taskKillGracePeriodSeconds', 'unreachableStrategy', 'killSelection',
  'networks', 'portDefinitions', 'ports', 'requirePorts', 'role', 'version', 'versionInfo',
]);
const CONTAINER_FIELDS = new Set(['type', 'docker', 'volumes', 'portMappings']);
const DOCKER_FIELDS = new Set(['image', 'network', 'portMappings', 'privileged', 'parameters', 'forcePullImage', 'pullConfig']);
const APP_DEFAULTS = { backoffSeconds: 1, backoffFactor: 1.15, maxLaunchDelaySeconds: 3600, taskKillGracePeriodSeconds: 3, instances: 1, cpus: 1, mem: 128, disk: 0 };

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The errors of an app definition, as Marathon's 422 `details` give them. */
function validate(app: unknown): { path: string; errors: string[] }[] {
  const details: { path: string; errors: string[] }[] = [];
  const fail = (path: string, error: string) => details.push({ path, errors: [error] });
  if (!isObject(app)) return [{ path: '/', errors: ['error.expected.jsobject'] }];
  for (const key of Object.keys(app)) if (!APP_FIELDS.has(key)) fail(`/${key}`, 'error.unknown.property');
  if (typeof app.id !== 'string') fail('/id', 'error.path.missing');
  else if (!app.id.startsWith('/') || !app.id.slice(1).split('/').every((s) => SEGMENT.test(s))) {
    fail('/id', `'${app.id}' must be an absolute path whose segments match ${SEGMENT.source}`);
  }
  if (app.cmd !== undefined && app.args !== undefined) fail('/', 'AppDefinition must either contain one of \'cmd\' or \'args\', and/or a \'container\'.');
  if (app.cmd !== undefined && (typeof app.cmd !== 'string' || app.cmd === '')) fail('/cmd', 'error.minLength');
  if (app.args !== undefined && (!Array.isArray(app.args) || !app.args.every((a) => typeof a === 'string'))) fail('/args', 'error.expected.jsarray of jsstring');
  if (app.cmd === undefined && app.args === undefined && app.container === undefined) fail('/', 'AppDefinition must either contain one of \'cmd\' or \'args\', and/or a \'container\'.');
  if (app.container !== undefined) {
    const container = app.container;
    if (!isObject(container)) fail('/container', 'error.expected.jsobject');
    else {
      for (const key of Object.keys(container)) if (!CONTAINER_FIELDS.has(key)) fail(`/container/${key}`, 'error.unknown.property');
      if (container.type !== 'DOCKER' && container.type !== 'MESOS') fail('/container/type', 'error.expected.enum: DOCKER, MESOS');
      if (container.type === 'DOCKER') {
        if (!isObject(container.docker)) fail('/container/docker', 'must not be empty');
        else {
          for (const key of Object.keys(container.docker)) if (!DOCKER_FIELDS.has(key)) fail(`/container/docker/${key}`, 'error.unknown.property');
          if (typeof container.docker.image !== 'string' || container.docker.image === '') fail('/container/docker/image', 'must not be empty');
        }
      }
    }
  }
  if (app.env !== undefined) {
    if (!isObject(app.env)) fail('/env', 'error.expected.jsobject');
    else for (const [key, value] of Object.entries(app.env)) if (typeof value !== 'string' && !isObject(value)) fail(`/env(${key})`, 'error.expected.jsstring');
  }
  if (app.labels !== undefined) {
    if (!isObject(app.labels)) fail('/labels', 'error.expected.jsobject');
    else for (const [key, value] of Object.entries(app.labels)) if (typeof value !== 'string') fail(`/labels(${key})`, 'error.expected.jsstring');
  }
  const number = (key: string, min: number, integer = false) => {
    const value = app[key];
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isFinite(value)) fail(`/${key}`, 'error.expected.jsnumber');
    else if (integer && !Number.isInteger(value)) fail(`/${key}`, 'error.expected.int');
    else if (value < min) fail(`/${key}`, `got ${value}, expected ${min} or more`);
  };
  number('instances', 0, true);
  number('cpus', 0);
  number('mem', 0);
  number('disk', 0);
  number('backoffSeconds', 0, true);
  number('backoffFactor', 1);
  number('maxLaunchDelaySeconds', 0, true);
  number('taskKillGracePeriodSeconds', 0, true);
  return details;
}

/** Marathon's label selector, as far as its docs go: `k`, `k==v`, `k!=v`, comma-separated, `\` escapes. */
function parseSelector(query: string): ((labels: Record<string, string>) => boolean) | undefined {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < query.length; i += 1) {
    const c = query.charAt(i);
    if (c === '\\' && i + 1 < query.length) {
      current += c + query.charAt(i + 1);
      i += 1;
    } else if (c === ',') {
      parts.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  parts.push(current);
  const unescape = (text: string) => text.trim().replace(/\\(.)/g, '$1');
  const tests: ((labels: Record<string, string>) => boolean)[] = [];
  for (const part of parts) {
    const match = /^\s*((?:\\.|[-A-Za-z0-9_.])+)\s*(?:(==|!=)\s*((?:\\.|[-A-Za-z0-9_.])*))?\s*$/.exec(part);
    if (!match) return undefined;
    const [, key, op, value] = match;
    const k = unescape(key!);
    const v = value === undefined ? undefined : unescape(value);
    if (op === '==') tests.push((labels) => labels[k] === v);
    else if (op === '!=') tests.push((labels) => k in labels && labels[k] !== v);
    else tests.push((labels) => k in labels);
  }
  return (labels) => tests.every((test) => test(labels));
}

/** Starts the fake; it is closed (its tasks killed) when the test ends. */
export async function startFakeMarathon(t: TestContext, options: FakeMarathonOptions = {}): Promise<FakeMarathon> {
  const requests: RecordedRequest[] = [];
  const apps = new Map<string, FakeApp>();
  const timers = new Set<NodeJS.Timeout>();
  const tasks: FakeTask[] = [];
  const waiters = new Set<() => void>();
  const changed = () => {
    for (const waiter of [...waiters]) waiter();
  };
  const later = (ms: number, fn: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };
  const now = () => new Date().toISOString();
  const expected = options.auth && `Basic ${Buffer.from(`${options.auth.username}:${options.auth.password}`).toString('base64')}`;

  const launch = (app: FakeApp) => {
    if (!options.run || app.destroying || apps.get(app.id) !== app) return;
    const env = Object.fromEntries(Object.entries((app.definition.env ?? {}) as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string'));
    const command = (app.definition.args as string[] | undefined) ?? (typeof app.definition.cmd === 'string' ? ['/bin/sh', '-c', app.definition.cmd] : []);
    const child = options.run(command, env, app.definition);
    if (!child) return;
    const taskId = `${app.id.slice(1).replaceAll('/', '_')}.${randomUUID()}`;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: 127, signal: null }));
    });
    const task: FakeTask = { id: taskId, appId: app.id, child, stagedAt: now(), startedAt: null, exited };
    app.task = task;
    app.launches.push(task);
    tasks.push(task);
    child.once('spawn', () => {
      task.startedAt = now();
      // The start deployment is done once its task runs.
      if (app.launches.length === 1) app.deployments = app.deployments.filter((d) => d !== startDeployments.get(app));
      changed();
    });
    void exited.then(({ code, signal }) => {
      app.task = undefined;
      if (app.destroying) {
        // Killed by its destroy (TASK_KILLED: not a failure); the app goes with it.
        if (apps.get(app.id) === app) apps.delete(app.id);
      } else {
        if (code !== 0) {
          app.lastTaskFailure = {
            appId: app.id, taskId, state: 'TASK_FAILED', host: '127.0.0.1', timestamp: now(), version: app.version,
            message: signal ? `Command terminated with signal ${signal}` : `Command exited with status ${code}`,
          };
        }
        // Marathon relaunches every ended task, after its backoff (finished ones too).
        const def = { ...APP_DEFAULTS, ...app.definition } as typeof APP_DEFAULTS;
        const delay = Math.min(def.backoffSeconds * def.backoffFactor ** (app.launches.length - 1), def.maxLaunchDelaySeconds);
        later(delay * 1000, () => launch(app));
      }
      changed();
    });
  };
  const startDeployments = new WeakMap<FakeApp, string>();

  const view = (app: FakeApp, embed: string[]) => {
    const running = app.task?.startedAt ? 1 : 0;
    return {
      ...APP_DEFAULTS,
      ...app.definition,
      version: app.version,
      versionInfo: { lastScalingAt: app.version, lastConfigChangeAt: app.version },
      tasksStaged: app.task && !app.task.startedAt ? 1 : 0,
      tasksRunning: running,
      tasksHealthy: 0,
      tasksUnhealthy: 0,
      deployments: app.deployments.map((id) => ({ id })),
      ...(embed.some((e) => e.endsWith('.tasks')) ? {
        tasks: app.task ? [{ id: app.task.id, appId: app.id, host: '127.0.0.1', ports: [], stagedAt: app.task.stagedAt, startedAt: app.task.startedAt, version: app.version }] : [],
      } : {}),
      ...(embed.some((e) => e.endsWith('.lastTaskFailure')) && app.lastTaskFailure ? { lastTaskFailure: app.lastTaskFailure } : {}),
    };
  };

  const destroy = (app: FakeApp): string => {
    const deployment = randomUUID();
    app.destroying = true;
    app.deployments = [deployment];
    const task = app.task;
    if (!task) {
      // Nothing to kill: the app goes once this deployment is through (not within this request).
      later(20, () => {
        if (apps.get(app.id) === app) apps.delete(app.id);
        changed();
      });
    } else {
      task.child.kill('SIGTERM');
      const grace = ((app.definition.taskKillGracePeriodSeconds as number | undefined) ?? APP_DEFAULTS.taskKillGracePeriodSeconds) * 1000;
      later(grace, () => {
        if (task.child.exitCode === null && task.child.signalCode === null) task.child.kill('SIGKILL');
      });
    }
    return deployment;
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, record: RecordedRequest): Promise<void> => {
    const reply = (status: number, body?: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    if (expected && req.headers.authorization !== expected) {
      return reply(401, { message: 'Invalid username or password.' }, { 'www-authenticate': 'Basic realm="Mesosphere"' });
    }
    const { method, path, query } = record;
    if (path === '/v2/apps' || path === '/v2/apps/') {
      if (method === 'GET') {
        const label = query.get('label');
        const select = label === null ? () => true : parseSelector(label);
        if (!select) return reply(400, { message: `Invalid label selector: ${label}` });
        return reply(200, { apps: [...apps.values()].filter((app) => select((app.definition.labels ?? {}) as Record<string, string>)).map((app) => view(app, query.getAll('embed'))) });
      }
      if (method === 'POST') {
        if (!String(req.headers['content-type']).startsWith('application/json')) return reply(415, { message: 'Unsupported Media Type' });
        if (record.body === undefined) return reply(400, { message: 'Invalid JSON', details: [{ path: '/', errors: ['error.expected.jsobject'] }] });
        const details = validate(record.body);
        if (details.length > 0) return reply(422, { message: 'Object is not valid', details });
        const definition = record.body as Record<string, unknown>;
        const id = definition.id as string;
        if (apps.has(id)) return reply(409, { message: `An app with id [${id}] already exists.` });
        const app: FakeApp = { id, definition, version: now(), task: undefined, launches: [], deployments: [randomUUID()], lastTaskFailure: undefined, destroying: false };
        startDeployments.set(app, app.deployments[0]!);
        apps.set(id, app);
        reply(201, view(app, []), { location: `/v2/apps${id}` });
        // Marathon launches the task after answering, once an offer fits.
        setImmediate(() => launch(app));
        changed();
        return;
      }
      return reply(405, { message: `HTTP ${method} is not allowed on /v2/apps` });
    }
    if (path.startsWith('/v2/apps/')) {
      const id = path.slice('/v2/apps'.length).replace(/\/+$/, '');
      const app = apps.get(id);
      if (method === 'GET') {
        if (!app) return reply(404, { message: `App '${id}' does not exist` });
        return reply(200, { app: view(app, query.getAll('embed')) });
      }
      if (method === 'DELETE') {
        if (!app) return reply(404, { message: `App '${id}' does not exist` });
        const force = query.get('force');
        if (force !== null && force !== 'true' && force !== 'false') return reply(400, { message: `Invalid boolean for force: ${force}` });
        if (app.deployments.length > 0 && force !== 'true') {
          return reply(409, {
            message: "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
            deployments: app.deployments.map((d) => ({ id: d })),
          });
        }
        const deploymentId = destroy(app);
        changed();
        return reply(200, { deploymentId, version: now() }, { 'marathon-deployment-id': deploymentId });
      }
      return reply(405, { message: `HTTP ${method} is not allowed on /v2/apps/{app_id}` });
    }
    return reply(404, { message: `No resource ${method} ${path}` });
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = undefined;
      }
      const record: RecordedRequest = { method: req.method ?? '', path: url.pathname, query: url.searchParams, authorization: req.headers.authorization, body, status: 0 };
      requests.push(record);
      handle(req, res, record).catch((raw: unknown) => {
        record.status = 500;
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: String(raw) }));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  const until = <T>(test: () => T | undefined): Promise<T> =>
    new Promise((resolve) => {
      const check = () => {
        const value = test();
        if (value === undefined) return;
        waiters.delete(check);
        resolve(value);
      };
      waiters.add(check);
      check();
    });

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    const live = tasks.filter((task) => task.child.exitCode === null && task.child.signalCode === null);
    for (const task of live) {
      try {
        process.kill(task.child.pid!, 'SIGKILL');
      } catch {
        // Exited meanwhile.
      }
    }
    await Promise.all(live.map((task) => task.exited));
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  t.after(close);

  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    apps,
    launched: tasks,
    running: (appId, nth = 1) => until(() => {
      const task = apps.get(appId)?.launches[nth - 1];
      return task?.startedAt ? task : undefined;
    }),
    gone: (appId) => until(() => (apps.has(appId) ? undefined : true)).then(() => undefined),
    close,
  };
}
