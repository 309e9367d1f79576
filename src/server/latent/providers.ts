/**
 * The provider kinds a pool may name: each with the schema of its `options:` (checked when the
 * config is read, so a typo fails at start with its path) and how to make the provider.
 */
import type { Logger } from 'pino';
import type * as z from 'zod';
import type { Provider } from './provider.js';

/** What a provider is made with besides its options. */
export interface ProviderContext {
  /** The pool's name. */
  pool: string;
  /** Relative paths in options are taken from here (the config file's folder). */
  baseDir: string;
  /** The pool's logger. */
  log: Logger;
}

/** One provider kind. */
export interface ProviderKind {
  readonly options: z.ZodType;
  create(options: unknown, context: ProviderContext): Provider;
}

function kind<S extends z.ZodType>(options: S, create: (options: z.output<S>, context: ProviderContext) => Provider): ProviderKind {
  return { options, create: (parsed, context) => create(parsed as z.output<S>, context) };
}

/**
 * Each kind's module is imported only when a config names it: most servers have no pools, and
 * the docker one alone loads dockerode and ssh2 (16 MB of WASM memory, BENCHMARKS.md).
 */
const KINDS: Record<string, () => Promise<ProviderKind>> = {
  process: async () => {
    const { processOptionsSchema, ProcessProvider } = await import('./process-provider.js');
    return kind(processOptionsSchema, (options) => new ProcessProvider('process', options));
  },
  bwrap: async () => {
    const { processOptionsSchema, ProcessProvider } = await import('./process-provider.js');
    return kind(processOptionsSchema, (options) => new ProcessProvider('bwrap', options));
  },
  kubernetes: async () => {
    const { kubernetesOptionsSchema, KubernetesProvider } = await import('./kubernetes-provider.js');
    return kind(kubernetesOptionsSchema, (options, context) => new KubernetesProvider(options, context));
  },
  docker: async () => {
    const { dockerOptionsSchema, DockerProvider } = await import('./docker-provider.js');
    return kind(dockerOptionsSchema, (options, context) => new DockerProvider(options, context));
  },
  marathon: async () => {
    const { marathonOptionsSchema, MarathonProvider } = await import('./marathon-provider.js');
    return kind(marathonOptionsSchema, (options) => new MarathonProvider(options));
  },
  exec: async () => {
    const { execOptionsSchema, ExecProvider } = await import('./exec-provider.js');
    return kind(execOptionsSchema, (options, context) => new ExecProvider(options, context));
  },
};

/** The names a pool's `provider:` may take. */
export const PROVIDER_NAMES: readonly string[] = Object.keys(KINDS);

/** The kind `name` (one of PROVIDER_NAMES), its module loaded. */
export async function providerKind(name: string): Promise<ProviderKind> {
  const load = Object.hasOwn(KINDS, name) ? KINDS[name] : undefined;
  if (!load) throw new Error(`unknown provider kind '${name}'`);
  return load();
}

/** Containers serve one run each by default (Buildbot's build_wait_timeout 0); others wait 10 minutes for more. */
export const ONE_RUN_BY_DEFAULT = new Set(['docker', 'kubernetes', 'marathon']);
