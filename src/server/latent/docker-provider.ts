/**
 * The `docker` provider: each instance is a container running `kiln worker`, made through the
 * Docker Engine API (dockerode) with Buildbot's DockerLatentWorker options. Containers carry the
 * server's owner id and the exact instance id as labels, so a later life finds them by those; a
 * stopped container is removed with its anonymous volumes.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { pack } from 'tar-stream';
import * as z from 'zod';
import { backoffMs, parseSize } from '../../core/index.js';
import { coerceError } from '../../errors.js';
import type { ProviderContext } from './providers.js';
import { expandDeep, instanceEnvironment, lastLogMessage, workerArguments, type InstanceHandle, type InstanceSpec, type OwnInstance, type Provider } from './provider.js';

/** Following a container's end again after the engine cut the wait: 1 s, doubling to 30 s. */
const FOLLOW_RETRY = { retryMinMs: 1000, retryMaxMs: 30_000 };

/** Docker's own stop grace before SIGKILL: the worker drains 10 s and gives its jobs 3 s. */
const STOP_GRACE_S = 20;

const LABEL = { owner: 'dev.kiln.owner', pool: 'dev.kiln.pool', instance: 'dev.kiln.instance', name: 'dev.kiln.worker-name', run: 'dev.kiln.run' };

/** Friendly `hostconfig` keys (as in Buildbot's docker-py options) and the Engine API fields they set. */
const HOSTCONFIG_KEYS: Record<string, (value: unknown) => [string, unknown]> = {
  memory: (v) => ['Memory', typeof v === 'number' ? v : parseSize(String(v))],
  cpus: (v) => ['NanoCpus', Math.round(Number(v) * 1e9)],
  network_mode: (v) => ['NetworkMode', v],
  extra_hosts: (v) => ['ExtraHosts', v],
  shm_size: (v) => ['ShmSize', typeof v === 'number' ? v : parseSize(String(v))],
  privileged: (v) => ['Privileged', v],
  cap_add: (v) => ['CapAdd', v],
  cap_drop: (v) => ['CapDrop', v],
  dns: (v) => ['Dns', v],
  pids_limit: (v) => ['PidsLimit', v],
  devices: (v) => ['Devices', v],
};

const volume = z.string().regex(/^[^:]+:\/[^:]*(:(ro|rw))?$/, 'use SRC:DEST or SRC:DEST:ro (DEST absolute)');

/** Options of a docker pool (`options:` in its config). */
export const dockerOptionsSchema = z.strictObject({
  /** unix:///var/run/docker.sock (default: $DOCKER_HOST, else that socket) or tcp://HOST:PORT. */
  docker_host: z.string().regex(/^(unix:\/\/\/|tcp:\/\/|https?:\/\/)/, 'use unix:///PATH or tcp://HOST:PORT').optional(),
  /** TLS client certificates for a tcp:// host (paths; relative to the config file). */
  tls: z.strictObject({ ca: z.string(), cert: z.string(), key: z.string(), verify: z.boolean().default(true) }).optional(),
  /** Engine API version to speak, e.g. "1.41" (default: negotiated by dockerode). */
  version: z.string().regex(/^\d+\.\d+$/, 'use a version like 1.41').optional(),
  /** The image; may use %%PLATFORM%%, %%POOL%%, and %%JOB%%, %%RUN%% or job variables (one instance per run then). */
  image: z.string().min(1),
  /** The container's command (default: kiln worker with the instance's platform, labels and --once). */
  command: z.array(z.string()).min(1).optional(),
  /** SRC:DEST[:ro] bind mounts or named volumes. */
  volumes: z.array(volume).default([]),
  /** A Dockerfile's text: the image is built from it when missing. */
  dockerfile: z.string().min(1).optional(),
  /** Engine API HostConfig fields, or friendly keys: memory, cpus, network_mode, extra_hosts, shm_size... */
  hostconfig: z.record(z.string(), z.unknown()).default({}).superRefine((config, ctx) => {
    for (const [key, value] of Object.entries(config)) {
      if (!Object.hasOwn(HOSTCONFIG_KEYS, key) && !/^[A-Z]/.test(key)) {
        ctx.addIssue({ code: 'custom', path: [key], message: `unknown key (use ${Object.keys(HOSTCONFIG_KEYS).join(', ')} or an Engine API HostConfig field like Memory)` });
      }
      // A bad size or CPU count would otherwise reach the engine as no limit at all.
      if ((key === 'memory' || key === 'shm_size') && !(typeof value === 'number' ? value >= 0 : parseSize(String(value)) !== undefined)) {
        ctx.addIssue({ code: 'custom', path: [key], message: 'use a size like 512mb or 4gb' });
      }
      if (key === 'cpus' && !(typeof value === 'number' && value > 0)) ctx.addIssue({ code: 'custom', path: [key], message: 'use a number of CPUs like 1.5' });
    }
  }),
  /** Pull the image when it is missing. */
  autopull: z.boolean().default(false),
  /** Pull the image before every start. */
  always_pull: z.boolean().default(false),
  /** Copy the container's output into the server's log until its worker connects. */
  follow_startup_logs: z.boolean().default(false),
  /** The server's address as the container sees it (Buildbot's masterFQDN); default: the server's own. */
  server_url: z.string().url().optional(),
  /** Extra environment for the container. */
  env: z.record(z.string(), z.string()).default({}),
});
export type DockerOptions = z.output<typeof dockerOptionsSchema>;

/** The dockerode connection options for `docker_host` (and TLS). */
export function connectionOptions(options: DockerOptions, baseDir: string): Docker.DockerOptions {
  const version = options.version ? { version: `v${options.version}` } : {};
  const host = options.docker_host ?? process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
  if (host.startsWith('unix://')) return { socketPath: host.slice('unix://'.length), ...version };
  const url = new URL(host.replace(/^tcp:/, options.tls ? 'https:' : 'http:'));
  const read = (file: string) => readFileSync(path.resolve(baseDir, file));
  const tls = options.tls ? { ca: read(options.tls.ca), cert: read(options.tls.cert), key: read(options.tls.key) } : {};
  return { protocol: url.protocol === 'https:' ? 'https' : 'http', host: url.hostname, port: Number(url.port || (options.tls ? 2376 : 2375)), ...tls, ...version };
}

/** The Engine API HostConfig for the options (friendly keys translated). */
export function hostConfig(options: DockerOptions): Docker.HostConfig {
  const config: Record<string, unknown> = { Binds: options.volumes };
  for (const [key, value] of Object.entries(options.hostconfig)) {
    const [field, translated] = HOSTCONFIG_KEYS[key]?.(value) ?? [key, value];
    config[field] = translated;
  }
  return config as Docker.HostConfig;
}

/** A one-line reason from a dockerode error (its JSON message when the engine answered). */
function reason(raw: unknown): string {
  const err = raw as { statusCode?: number; json?: { message?: string }; message?: string };
  const message = err.json?.message ?? coerceError(raw).message;
  return (err.statusCode ? `${err.statusCode}: ${message}` : message).split('\n')[0]!.replace(/^\(HTTP code \d+\) /, '');
}

const statusOf = (raw: unknown) => (raw as { statusCode?: number }).statusCode;

export class DockerProvider implements Provider {
  readonly kind = 'docker';
  /** Containers outlive their server; their workers reconnect to the next life. */
  readonly adoptable = true;
  private readonly docker: Docker;
  private readonly words = new Map<string, string>();

  constructor(
    private readonly options: DockerOptions,
    private readonly context: ProviderContext,
  ) {
    this.docker = new Docker(connectionOptions(options, context.baseDir));
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    // Every string option may use placeholders (the image, volumes, env, hostconfig...).
    const options = expandDeep(this.options, spec.values);
    const { image } = options;
    await this.ensureImage(image, options);
    // The token goes in a file the worker removes once read, not in the environment, where a job in
    // the container could read it (/proc/1/environ).
    const { KILN_WORKER_TOKEN: _token, ...connect } = instanceEnvironment(spec, options.server_url ?? spec.server);
    const env = { ...options.env, ...connect, KILN_WORKER_TOKEN_FILE: TOKEN_FILE };
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer({
        name: spec.name,
        Image: image,
        Cmd: options.command ?? ['kiln', ...workerArguments(spec)],
        Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
        Labels: { [LABEL.owner]: spec.owner, [LABEL.pool]: spec.pool, [LABEL.instance]: spec.id, [LABEL.name]: spec.name, ...(spec.forRun ? { [LABEL.run]: spec.forRun } : {}) },
        HostConfig: hostConfig(options),
      });
    } catch (raw) {
      throw new Error(`docker could not create the container (${reason(raw)})`);
    }
    try {
      await container.putArchive(tokenTar(spec.token), { path: '/' });
      await container.start();
    } catch (raw) {
      await container.remove({ v: true, force: true }).catch(() => undefined);
      throw new Error(`docker could not start the container (${reason(raw)})`);
    }
    if (options.follow_startup_logs) void this.followLogs(container, spec.name);
    return this.handle(spec.id, container.id);
  }

  async check(handle: InstanceHandle): Promise<string | null> {
    try {
      const { State } = await this.docker.getContainer(handle.ref).inspect();
      return State.Running ? null : exitReason(State);
    } catch (raw) {
      if (statusOf(raw) === 404) return 'its container was removed';
      throw new Error(`docker could not inspect the container (${reason(raw)})`);
    }
  }

  async stop(handle: InstanceHandle): Promise<void> {
    const container = this.docker.getContainer(handle.ref);
    // SIGTERM, then SIGKILL after the grace (304: already stopped; 404: already gone).
    await container.stop({ t: STOP_GRACE_S }).catch((raw) => {
      if (statusOf(raw) !== 304 && statusOf(raw) !== 404) throw new Error(`docker could not stop the container (${reason(raw)})`);
    });
    await container.remove({ v: true, force: true }).catch((raw) => {
      if (statusOf(raw) !== 404 && statusOf(raw) !== 409) throw new Error(`docker could not remove the container (${reason(raw)})`);
    });
    this.words.delete(handle.ref);
  }

  async listOwn(owner: string): Promise<OwnInstance[]> {
    const containers = await this.docker.listContainers({ all: true, filters: { label: [`${LABEL.owner}=${owner}`] } });
    return containers
      .filter((c) => c.Labels[LABEL.instance]?.startsWith(`${owner}/`))
      .map((c) => ({ pool: c.Labels[LABEL.pool] ?? '', name: c.Labels[LABEL.name] ?? '', forRun: c.Labels[LABEL.run], handle: this.handle(c.Labels[LABEL.instance]!, c.Id) }));
  }

  /** A handle whose `gone` follows the container's end (the engine's wait), opened when first asked for. */
  private handle(id: string, ref: string): InstanceHandle {
    const follow = async (): Promise<string> => {
      const container = this.docker.getContainer(ref);
      const asked = () => this.check({ id, ref, lastWords: () => '' }).catch(() => null);
      for (let failures = 1; ; failures += 1) {
        try {
          await container.wait();
          await this.keepLastWords(container);
          return (await asked()) ?? 'exited';
        } catch (raw) {
          if (statusOf(raw) === 404) return 'its container was removed';
          // The engine restarted, or a proxy cut the long request: ask again rather than take it for dead.
          const why = await asked();
          if (why) return why;
          await new Promise((resolve) => setTimeout(resolve, backoffMs(failures, FOLLOW_RETRY)));
        }
      }
    };
    let gone: Promise<string> | undefined;
    return {
      id,
      ref,
      get gone() {
        return (gone ??= follow());
      },
      lastWords: () => this.words.get(ref) ?? '',
    };
  }

  private async keepLastWords(container: Docker.Container): Promise<void> {
    try {
      const output = await container.logs({ stdout: true, stderr: true, tail: 5, follow: false });
      const lines = demux(output).split('\n').filter((line) => line.trim() !== '');
      if (lines.length > 0) this.words.set(container.id, lastLogMessage(lines.at(-1)!));
    } catch {
      // No logs (removed already): nothing to say.
    }
  }

  private async followLogs(container: Docker.Container, name: string): Promise<void> {
    try {
      const stream = await container.logs({ stdout: true, stderr: true, follow: true });
      // A container removed while followed cuts the stream: that is its end, not the server's.
      stream.on('error', () => {});
      const out = new PassThrough();
      this.docker.modem.demuxStream(stream, out, out);
      let rest = '';
      out.on('data', (chunk: Buffer) => {
        const lines = (rest + chunk.toString('utf8')).split('\n');
        rest = lines.pop()!;
        for (const line of lines) this.context.log.info({ instance: name, line }, 'instance startup output');
      });
      // Startup logs only: once its worker says it connected, the rest is the worker's own business.
      stream.on('data', (chunk: Buffer) => {
        if (chunk.includes('"msg":"connected to the server"')) (stream as unknown as { destroy(): void }).destroy();
      });
    } catch {
      // The container went before its logs could be followed; its end is reported elsewhere.
    }
  }

  private async ensureImage(image: string, options: DockerOptions): Promise<void> {
    const present = await this.docker.getImage(image).inspect().then(() => true, (raw) => {
      if (statusOf(raw) === 404) return false;
      throw new Error(`docker could not inspect the image ${image} (${reason(raw)})`);
    });
    if (options.always_pull || (!present && options.autopull && !options.dockerfile)) return this.pull(image);
    if (present) return;
    if (options.dockerfile) return this.build(image, options.dockerfile);
    throw new Error(`the image ${image} is not on the docker host (set autopull, or dockerfile to build it)`);
  }

  private async pull(image: string): Promise<void> {
    try {
      const stream = await this.docker.pull(image);
      await followProgress(this.docker, stream);
    } catch (raw) {
      throw new Error(`docker could not pull ${image} (${reason(raw)})`);
    }
  }

  private async build(image: string, dockerfile: string): Promise<void> {
    try {
      // As Buildbot's: the Dockerfile's text, built with nothing else in its context.
      const stream = await this.docker.buildImage(dockerfileTar(dockerfile), { t: image });
      await followProgress(this.docker, stream);
    } catch (raw) {
      throw new Error(`docker could not build ${image} (${reason(raw)})`);
    }
  }
}

/** Where a container's worker finds its token (a folder anyone may write, so whoever the worker runs as can remove it). */
const TOKEN_FILE = '/.kiln-token/token';

/** A tar of TOKEN_FILE, put into the container before it starts. */
function tokenTar(token: string): NodeJS.ReadableStream {
  const tar = pack();
  tar.entry({ name: '.kiln-token/', type: 'directory', mode: 0o777 });
  tar.entry({ name: '.kiln-token/token', mode: 0o644 }, token);
  tar.finalize();
  return tar as unknown as NodeJS.ReadableStream;
}

/** A tar stream holding only `Dockerfile` with this text. */
function dockerfileTar(text: string): NodeJS.ReadableStream {
  const tar = pack();
  tar.entry({ name: 'Dockerfile' }, text);
  tar.finalize();
  return tar as unknown as NodeJS.ReadableStream;
}

/** Waits for a pull or build to finish; an error in its progress (a failed RUN step, say) rejects. */
function followProgress(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, events: { error?: string; errorDetail?: { message?: string } }[]) => {
      const failed = events?.find((e) => e.error || e.errorDetail);
      if (err) reject(err);
      else if (failed) reject(new Error(failed.errorDetail?.message ?? failed.error));
      else resolve();
    });
  });
}

/** Why a stopped container ended. */
function exitReason(state: { ExitCode?: number; OOMKilled?: boolean; Error?: string; Status?: string }): string {
  if (state.OOMKilled) return `exited ${state.ExitCode} (out of memory)`;
  if (state.Error) return `failed: ${state.Error}`;
  return `exited ${state.ExitCode ?? state.Status}`;
}

/** Docker's multiplexed log frames (8-byte headers) as text; a TTY container's logs are plain. */
function demux(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let at = 0;
  while (at + 8 <= buffer.length && buffer[at]! <= 2 && buffer.readUIntBE(at + 1, 3) === 0) {
    const size = buffer.readUInt32BE(at + 4);
    parts.push(buffer.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return at === 0 ? buffer.toString('utf8') : Buffer.concat(parts).toString('utf8');
}
