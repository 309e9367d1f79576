/**
 * `--sandbox bwrap`: each job runs under bubblewrap in fresh user, pid, ipc and uts namespaces
 * (and a fresh network namespace unless the network is `host`). Its root is an empty tmpfs holding
 * only what builds need, read-only: /usr, /bin, /sbin, /lib*, /etc and /opt (merged-/usr symlinks
 * are recreated as symlinks). Everything else of the host (/run and its sockets, /var, /srv, /home,
 * /root, /mnt, the server's data dir, other runs' work dirs, the worker's own state) is absent
 * unless bound on purpose with --bind/--ro-bind. The job's work dir is the only writable place
 * besides a private /tmp; /proc and /dev are fresh; no capabilities. Paths of the worker's own
 * files that fall inside the bound dirs anyway (a spool under /opt, /etc/kiln) are covered with
 * empty tmpfs. `--die-with-parent` takes the job down if the worker dies; the pid namespace takes
 * down anything the job left behind when the job ends.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readlinkSync, statSync } from 'node:fs';
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
  /** Host paths the job must not see (absent, or shown empty where they lie inside a bound dir). */
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
  // Inside the read-only system dirs bwrap cannot make a missing mount point; elsewhere the root is
  // the sandbox's own tmpfs, where it makes one.
  if (SYSTEM_DIRS.some((dir) => within(mountPoint, dir)) && !existsSync(mountPoint)) throw new UsageError(`bad ${flag} '${text}': the mount point ${mountPoint} is in a read-only system dir and must exist on this host (create it, or bind elsewhere)`);
  return { source: resolved, target: mountPoint, writable };
}

/**
 * The host dirs every job's root is made of, read-only: what a build needs (programs, libraries,
 * configuration, add-on software) and nothing that holds state or sockets (/run, /var, /home...).
 */
export const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/opt'];

/**
 * Kiln's own files that may sit inside SYSTEM_DIRS on a packaged host (packaging/systemd keeps the
 * worker's token in /etc/kiln/worker.env): always covered, whatever the worker is told.
 */
export const ALWAYS_HIDDEN = ['/etc/kiln'];

/** bwrap arguments that build the job's root from the host's SYSTEM_DIRS (those present here). */
export function systemRoot(dirs: string[] = SYSTEM_DIRS): string[] {
  const args: string[] = [];
  for (const dir of dirs) {
    let link: string | undefined;
    try {
      link = lstatSync(dir).isSymbolicLink() ? readlinkSync(dir) : undefined;
    } catch {
      continue; // Not on this host (lib32 and libx32 rarely are).
    }
    // A merged-/usr host has /bin -> usr/bin: bound as a dir it would be a second copy of /usr/bin
    // and scripts comparing paths would differ from the host; the symlink keeps the layout exact.
    if (link !== undefined) args.push('--symlink', link, dir);
    else args.push('--ro-bind', dir, dir);
  }
  return args;
}

/** True when `target` is `dir` or inside it. */
function within(target: string, dir: string): boolean {
  const relative = path.relative(dir, target);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/** Covers the host's `source` at `target`: an empty tmpfs for a dir, an empty file for a file. */
function cover(source: string, target: string): string[] {
  return statSync(source).isDirectory() ? ['--tmpfs', target] : ['--ro-bind', '/dev/null', target];
}

/**
 * bwrap arguments for a job's file system, all but its work dir: the system dirs, fresh /dev,
 * /proc and /tmp, the binds, and covers over the hidden paths (plus ALWAYS_HIDDEN) that would
 * otherwise show, inside a system dir or through a bind.
 */
export function jobRoot(binds: BindMount[], hidden: string[], alwaysHidden: string[] = ALWAYS_HIDDEN): string[] {
  const args = [...systemRoot(), '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp'];
  const present = [...alwaysHidden, ...hidden].filter((h) => existsSync(h));
  // Only what lies inside a bound dir needs covering: the rest of the host is not there at all
  // (and a path under /tmp would only be an empty dir in the job's own /tmp).
  for (const h of present) if (SYSTEM_DIRS.some((dir) => within(h, dir))) args.push(...cover(h, h));
  for (const bind of binds) {
    args.push(bind.writable ? '--bind' : '--ro-bind', bind.source, bind.target);
    // A hidden path inside a bind's source would show through the bind, at its target.
    for (const h of present) if (within(h, bind.source)) args.push(...cover(h, path.join(bind.target, path.relative(bind.source, h))));
  }
  return args;
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
  const trial = spawnSync(bwrap, [...systemRoot(), '--dev', '/dev', '--proc', '/proc', ...ISOLATION, '--unshare-net', '--', '/bin/true'], { encoding: 'utf8', timeout: 10_000 });
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
    const args = jobRoot(this.options.binds, this.options.hidden);
    args.push('--bind', spec.workDir, spec.workDir, '--chdir', spec.workDir, ...ISOLATION);
    if (network === 'none') args.push('--unshare-net');
    return args;
  }
}
