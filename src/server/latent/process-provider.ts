/**
 * The `process` and `bwrap` providers: each instance is `kiln worker` as a local child process in
 * its own process group (with `--sandbox bwrap` for `bwrap`), given its name and single-use token in
 * its environment. Leftovers of an earlier server life are found by the exact instance id in their
 * environment (`/proc/PID/environ`), never by name.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { InstanceHandle, InstanceSpec, Provider } from './provider.js';

const KILN_BIN = fileURLToPath(new URL('../../../bin/kiln.mjs', import.meta.url));
/** How long a stopped instance may drain (10 s) and stop its jobs (3 s grace) before it is killed. */
const STOP_GRACE_MS = 20_000;

/** Options of a process pool (`options:` in its config). */
export interface ProcessOptions {
  /** Extra `kiln worker` arguments, e.g. ["--capacity", "2"]. */
  args?: string[];
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

export class ProcessProvider implements Provider {
  private readonly children = new Map<string, ReturnType<typeof spawn>>();

  constructor(
    readonly kind: 'process' | 'bwrap',
    private readonly options: ProcessOptions,
  ) {}

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    const args = [KILN_BIN, 'worker', '--platform', spec.platform, ...Object.entries(spec.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`])];
    // An instance outlives its server by 10 s at most (its jobs are cancelled then); options may say otherwise.
    args.push('--drain-timeout', '10s', '--kill-grace', '3s');
    if (spec.once) args.push('--once');
    if (this.kind === 'bwrap') args.push('--sandbox', 'bwrap');
    args.push(...(this.options.args ?? []));
    const child = spawn(process.execPath, args, {
      // Only what a worker needs: never the server's own environment (its tokens, say).
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', LANG: 'C.UTF-8',
        ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
        KILN_LOG_LEVEL: process.env.KILN_LOG_LEVEL ?? 'info',
        KILN_SERVER: spec.server, KILN_WORKER_NAME: spec.name, KILN_WORKER_TOKEN: spec.token, KILN_POOL_INSTANCE: spec.id,
        // The instance watches this pipe: if the server dies, even by SIGKILL, its instances stop.
        KILN_EXIT_WITH_STDIN: '1',
      },
      detached: true,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    child.stdin!.on('error', () => {});
    const words: string[] = [];
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
    return { id: spec.id, gone, lastWords: () => lastMessage(words) };
  }

  async stop(handle: InstanceHandle): Promise<void> {
    const child = this.children.get(handle.id);
    this.children.delete(handle.id);
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    signalGroup(child.pid, 'SIGTERM');
    const timer = setTimeout(() => signalGroup(child.pid!, 'SIGKILL'), STOP_GRACE_MS);
    await handle.gone;
    clearTimeout(timer);
  }

  async removeLeftovers(owner: string): Promise<number> {
    let removed = 0;
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
      let environ: string;
      try {
        environ = readFileSync(`/proc/${entry}/environ`, 'utf8');
      } catch {
        continue;
      }
      if (environ.split('\0').some((pair) => pair.startsWith(`KILN_POOL_INSTANCE=${owner}/`))) {
        signalGroup(Number(entry), 'SIGKILL');
        try {
          process.kill(Number(entry), 'SIGKILL');
        } catch {
          // Gone with its group.
        }
        removed += 1;
      }
    }
    return removed;
  }
}

/** The message of the instance's last log line (JSON logs), or the line itself. */
function lastMessage(lines: string[]): string {
  const last = lines.at(-1) ?? '';
  try {
    const parsed = JSON.parse(last) as { msg?: string; err?: string };
    return [parsed.msg, parsed.err].filter(Boolean).join(': ') || last;
  } catch {
    return last;
  }
}
