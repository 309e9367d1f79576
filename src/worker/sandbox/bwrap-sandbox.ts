/**
 * `--sandbox bwrap`: each job runs under bubblewrap in fresh user, pid, ipc and uts namespaces
 * (and a fresh network namespace unless the network is `host`): the host's root read-only, the
 * job's work dir the only writable place besides a private /tmp, fresh /proc and /dev, no
 * capabilities, and the worker's own files (other runs' work dirs, the spool, its token) hidden
 * under empty tmpfs. `--die-with-parent` takes the job down if the worker dies; the pid namespace
 * takes down anything the job left behind when the job ends.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Network } from '../../core/index.js';
import { UsageError } from '../../errors.js';
import { startJobProcess } from './job-process.js';
import type { LimitSupport } from './resource-limits.js';
import type { Sandbox, SandboxLauncher, SandboxSpec } from './sandbox.js';

/** An extra bind mount: the host's `source` at `target` in the sandbox. */
export interface BindMount {
  source: string;
  target: string;
  writable: boolean;
}

/** How this worker's sandboxes are set up. */
export interface BwrapOptions {
  /** The most network a job gets: `host` lets jobs choose, `none` cuts every job off. */
  network: Network;
  binds: BindMount[];
  /** Host paths the job must not see (shown empty). */
  hidden: string[];
  /** The bwrap binary; default `bwrap` on PATH. */
  bwrap?: string;
}

/** Parses `SRC[:DEST]` of `--bind`/`--ro-bind`. */
export function parseBind(text: string, writable: boolean): BindMount {
  const [source, target, ...rest] = text.split(':');
  if (!source || rest.length > 0 || target === '') throw new UsageError(`bad --${writable ? 'bind' : 'ro-bind'} '${text}': use SRC or SRC:DEST`);
  const flag = `--${writable ? 'bind' : 'ro-bind'}`;
  const resolved = path.resolve(source);
  if (!existsSync(resolved)) throw new UsageError(`bad ${flag} '${text}': ${resolved} does not exist`);
  const mountPoint = target ? path.resolve('/', target) : resolved;
  // The sandbox's root is the host's, read-only: bwrap cannot make a missing mount point there.
  if (!existsSync(mountPoint)) throw new UsageError(`bad ${flag} '${text}': the mount point ${mountPoint} must exist on this host (create it, or bind to an existing path)`);
  return { source: resolved, target: mountPoint, writable };
}

/** The namespaces every job gets. */
const ISOLATION = ['--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--cap-drop', 'ALL'];

/**
 * Checks that bubblewrap is installed and can create the namespaces jobs need here; throws a
 * UsageError that says why and how to fix it (the worker then refuses to start).
 */
export function checkBwrap(bwrap = 'bwrap'): void {
  const version = spawnSync(bwrap, ['--version'], { encoding: 'utf8' });
  if (version.error) {
    throw new UsageError(`--sandbox bwrap: bubblewrap is not installed (${bwrap}: ${(version.error as NodeJS.ErrnoException).code}); install it (Debian/Ubuntu: apt-get install bubblewrap) or use --sandbox none`);
  }
  const trial = spawnSync(bwrap, ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', ...ISOLATION, '--unshare-net', '--', '/bin/true'], { encoding: 'utf8', timeout: 10_000 });
  if (trial.status !== 0) {
    const why = (trial.stderr || trial.error?.message || `exit ${trial.status}`).trim().split('\n')[0];
    throw new UsageError(
      `--sandbox bwrap: bubblewrap cannot create the namespaces jobs need (${why}); allow user namespaces ` +
        '(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0; in a container, allow unshare) or use --sandbox none',
    );
  }
}

/** Runs each job in a bubblewrap sandbox. */
export class BwrapSandboxLauncher implements SandboxLauncher {
  readonly kind = 'bwrap';

  constructor(
    private readonly options: BwrapOptions,
    private readonly limits: LimitSupport,
  ) {}

  describe(): string {
    return `sandbox bwrap (network ${this.options.network} at most), ${this.limits.describe()}`;
  }

  async start(spec: SandboxSpec): Promise<Sandbox> {
    const wanted = spec.settings.network ?? this.options.network;
    if (wanted === 'host' && this.options.network === 'none') {
      throw new Error('the job asks for --network host, but this worker cuts every job off the network (--network none)');
    }
    return startJobProcess([this.options.bwrap ?? 'bwrap', ...this.args(spec, wanted), '--', ...spec.argv], spec, this.limits, { signalFromStatus: true });
  }

  /** bwrap's arguments; order matters: later mounts go on top of earlier ones. */
  private args(spec: SandboxSpec, network: Network): string[] {
    const args = ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp'];
    for (const hidden of this.options.hidden) if (existsSync(hidden)) args.push('--tmpfs', hidden);
    for (const bind of this.options.binds) args.push(bind.writable ? '--bind' : '--ro-bind', bind.source, bind.target);
    args.push('--bind', spec.workDir, spec.workDir, '--chdir', spec.workDir, ...ISOLATION);
    if (network === 'none') args.push('--unshare-net');
    return args;
  }
}
