/**
 * The provider kinds a pool may name: each with the schema of its `options:` (checked when the
 * config is read, so a typo fails at start with its path) and how to make the provider.
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import { marathonOptionsSchema, MarathonProvider } from './marathon-provider.js';
import { dockerOptionsSchema, DockerProvider } from './docker-provider.js';
import { execOptionsSchema, ExecProvider } from './exec-provider.js';
import { kubernetesOptionsSchema, KubernetesProvider } from './kubernetes-provider.js';
import { processOptionsSchema, ProcessProvider } from './process-provider.js';
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

export const PROVIDER_KINDS: Record<string, ProviderKind> = {
  process: kind(processOptionsSchema, (options) => new ProcessProvider('process', options)),
  bwrap: kind(processOptionsSchema, (options) => new ProcessProvider('bwrap', options)),
  kubernetes: kind(kubernetesOptionsSchema, (options, context) => new KubernetesProvider(options, context)),
  docker: kind(dockerOptionsSchema, (options, context) => new DockerProvider(options, context)),
  marathon: kind(marathonOptionsSchema, (options) => new MarathonProvider(options)),
  exec: kind(execOptionsSchema, (options, context) => new ExecProvider(options, context)),
};

/** Containers serve one run each by default (Buildbot's build_wait_timeout 0); others wait 10 minutes for more. */
export const ONE_RUN_BY_DEFAULT = new Set(['docker', 'kubernetes', 'marathon']);
