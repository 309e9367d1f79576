/**
 * The `process` and `bwrap` providers: each instance is `kiln worker` as a local child process in
 * its own process group (with `--sandbox bwrap` for `bwrap`), given its name and single-use token in
 * its environment. Leftovers of an earlier server life are found by the exact instance id in their
 * environment (`/proc/PID/environ`), never by name.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as z from 'zod';
import { expandTemplate } from '../../core/index.js';
import { KILN_BIN } from '../../package-paths.js';
import { instanceEnvironment, lastLogMessage, localCaEnvironment, workerArguments, type InstanceHandle, type InstanceSpec, type OwnInstance, type Provider } from './provider.js';

/** How long a stopped instance may drain (10 s) and stop its jobs (3 s grace) before it is killed. */
const STOP_GRACE_MS = 20_000;

/** Options of a process or bwrap pool (`options:` in its config). */
export const processOptionsSchema = z.strictObject({
  /** Extra `kiln worker` arguments, e.g. ["--capacity", "2"]; may use %%PLATFORM%%, %%JOB%%... */
  args: z.array(z.string()).default([]),
});
export type ProcessOptions = z.output<typeof processOptionsSchema>;

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

export class ProcessProvider implements Provider {
  /** Instances stop with their server (they watch its pipe), so a later life removes them. */
  readonly adoptable = false;
  private readonly children = new Map<string, ReturnType<typeof spawn>>();

  constructor(
    readonly kind: 'process' | 'bwrap',
    private readonly options: ProcessOptions,
  ) {}

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    const args = [KILN_BIN, ...workerArguments(spec)];
    if (this.kind === 'bwrap') args.push('--sandbox', 'bwrap');
    args.push(...this.options.args.map((arg) => expandTemplate(arg, spec.values)));
    const child = spawn(process.execPath, args, {
      // Only what a worker needs: never the server's own environment (its tokens, say).
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', LANG: 'C.UTF-8',
        ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
        KILN_LOG_LEVEL: process.env.KILN_LOG_LEVEL ?? 'info',
        // The token comes on descriptor 3, not in the environment, which same-user jobs could read in /proc.
        ...withoutToken(instanceEnvironment(spec)),
        ...localCaEnvironment(spec),
        KILN_WORKER_TOKEN_FD: '3',
        // The instance watches this pipe (its lifeline): if the server dies, even by SIGKILL, the
        // instance kills its jobs' process trees and exits at once, without draining.
        KILN_EXIT_WITH_STDIN: '1',
      },
      detached: true,
      stdio: ['pipe', 'ignore', 'pipe', 'pipe'],
    });
    const tokenPipe = child.stdio[3] as NodeJS.WritableStream & { on(event: 'error', fn: () => void): void };
    tokenPipe.on('error', () => {});
    tokenPipe.end(spec.token);
    child.stdin!.on('error', () => {});
    const words: string[] = [];
    // node:readline is required here, at the first instance: a server without a process pool never loads it.
    const { createInterface } = createRequire(import.meta.url)('node:readline') as typeof import('node:readline');
    createInterface({ input: child.stderr! }).on('line', (line) => {
      words.push(line);
      if (words.length > 5) words.shift();
    });
    const gone = new Promise<string>((resolve) => {
      child.once('error', (err) => resolve(`could not start: ${err.message}`));
      // 'close', not 'exit': its last words on stderr are read by then.
      child.once('close', (code, signal) => resolve(`exited ${signal ?? code}`));
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    this.children.set(spec.id, child);
    return { id: spec.id, ref: String(child.pid), gone, lastWords: () => lastLogMessage(words.at(-1) ?? '') };
  }

  async check(handle: InstanceHandle): Promise<string | null> {
    const child = this.children.get(handle.id);
    if (!child) return 'not a child of this server';
    return child.exitCode !== null || child.signalCode !== null ? `exited ${child.signalCode ?? child.exitCode}` : null;
  }

  async stop(handle: InstanceHandle): Promise<void> {
    const child = this.children.get(handle.id);
    this.children.delete(handle.id);
    if (!child) return killLeftover(Number(handle.ref));
    if (!child.pid || child.exitCode !== null || child.signalCode !== null) return;
    signalGroup(child.pid, 'SIGTERM');
    const timer = setTimeout(() => signalGroup(child.pid!, 'SIGKILL'), STOP_GRACE_MS);
    await handle.gone;
    clearTimeout(timer);
  }

  async listOwn(owner: string): Promise<OwnInstance[]> {
    const found: OwnInstance[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
      let environ: string[];
      try {
        environ = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      } catch {
        continue;
      }
      const id = environ.find((pair) => pair.startsWith(`KILN_POOL_INSTANCE=${owner}/`))?.slice('KILN_POOL_INSTANCE='.length);
      if (!id) continue;
      const name = environ.find((pair) => pair.startsWith('KILN_WORKER_NAME='))?.slice('KILN_WORKER_NAME='.length) ?? '';
      const pool = environ.find((pair) => pair.startsWith('KILN_POOL='))?.slice('KILN_POOL='.length) ?? '';
      found.push({ pool, name, handle: { id, ref: entry, lastWords: () => '' } });
    }
    return found;
  }
}

function withoutToken(env: Record<string, string>): Record<string, string> {
  const { KILN_WORKER_TOKEN: _token, ...rest } = env;
  return rest;
}

/** A leftover of an earlier life is not our child: killed with its group (it leads one). */
function killLeftover(pid: number): void {
  signalGroup(pid, 'SIGKILL');
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Gone with its group.
  }
}
