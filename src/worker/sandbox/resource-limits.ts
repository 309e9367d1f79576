/**
 * Per-run resource limits: memory and process count by cgroup (v2, else v1) where the worker can
 * write one, and CPU time always by rlimit. The worker detects once what its host allows; each run
 * then gets its own leaf group (named after the run), which the wrapper shell is moved into before
 * it execs the sandbox, so everything the job starts is counted, limited and killed with it.
 *
 * Without a writable cgroup, memory falls back to `ulimit -v` (address space of each process, not
 * the job's total) and a process-count limit is refused: RLIMIT_NPROC counts every process of the
 * user on the host, so it cannot bound one job.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { backoffMs, type BackoffTimings } from '../../core/backoff.js';

/** Between rounds of killing a group's members or removing its dirs: 5 ms, doubling to 100 ms. */
const KILL_POLL: BackoffTimings = { retryMinMs: 5, retryMaxMs: 100 };

/** The limits a job asks for; each is optional and absent means unlimited. */
export interface JobLimits {
  /** Memory of the whole job (cgroup), or of each process's address space (rlimit fallback). */
  memoryBytes?: number;
  /** Most processes (and threads) the job may have at once; needs a cgroup. */
  pids?: number;
  /** CPU time of each process, in seconds (rlimit: SIGXCPU, then SIGKILL a second later). */
  cpuSeconds?: number;
}

/** What memory and pids limits are enforced with on this host. */
export type LimitMechanism = 'cgroup-v2' | 'cgroup-v1' | 'rlimit';

/** Where `detectLimits` looks. Both fields exist for tests and unusual hosts. */
export interface DetectLimitsOptions {
  /** Mount point of the cgroup hierarchies; default `/sys/fs/cgroup`. */
  cgroupRoot?: string;
  /** Name of the group that holds every run's group; default `kiln`. */
  parentName?: string;
}

/** What this host lets the worker limit, found once at start-up. */
export interface LimitSupport {
  /** What memory and pids limits will use. */
  readonly mechanism: LimitMechanism;
  /** One line for the worker's start-up log and each run's console header. */
  describe(): string;
  /**
   * Prepares the limits of one run; `runId` names its cgroup. Creates no group when neither memory
   * nor pids is limited. Throws with a clear message if a limit cannot be applied.
   */
  forRun(runId: string, limits: JobLimits): Promise<RunLimits>;
}

/** The limits of one run, from `LimitSupport.forRun`. */
export interface RunLimits {
  /**
   * Shell lines to put before `exec` in the wrapper shell that execs the sandbox (rlimits). Each
   * exits the shell with status 125 and a message on stderr if the limit cannot be set, so a job
   * never runs without a limit it asked for.
   */
  shellPrelude: string[];
  /** True when the run has groups: its process must be moved into them (`enter`) before the command runs. */
  grouped: boolean;
  /** Moves a process (the wrapper shell, before it execs the sandbox) into the run's groups; no-op without groups. */
  enter(pid: number): Promise<void>;
  /**
   * After the job: did the kernel OOM-kill a process of this run? Read from `memory.events`
   * (`oom_kill`) on v2 and `memory.oom_control` (`oom_kill`) on v1. v1 kernels older than 4.13
   * lack that line; there it falls back to `memory.failcnt` > 0 (the group hit its limit), which
   * the caller should only believe when the job died by SIGKILL. Always false without a memory group.
   */
  oomKilled(): Promise<boolean>;
  /**
   * SIGKILLs every process still in the run's groups (none may outlive the run), then removes the
   * groups, retrying briefly while the killed processes exit. Never rejects for a group it could
   * not remove: it resolves to the paths of such groups (empty when all are gone), for the caller
   * to log.
   */
  release(): Promise<string[]>;
}

const DEFAULT_ROOT = '/sys/fs/cgroup';
const DEFAULT_PARENT = 'kiln';
/** How long `release` keeps killing and retrying rmdir before leaving a group behind. */
const RELEASE_DEADLINE_MS = 3000;
/** Exit status of the wrapper shell when an rlimit cannot be set. */
const PRELUDE_FAILURE_STATUS = 125;
/** A run id becomes a directory name: nothing that could climb out of the parent group. */
const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Detects once what this host lets the worker use: cgroup v2 (if `<root>/cgroup.controllers`
 * offers memory and pids and the worker can make a child group with them), else cgroup v1 (if
 * `<root>/memory` and `<root>/pids` take a child group), else rlimit. Creates the parent group
 * (`kiln`) it found usable. On v2, when the root is not writable (typical under systemd
 * delegation), the parent goes under the worker's own group (from /proc/self/cgroup); if that
 * group holds the worker itself, the worker first moves itself into a sibling leaf
 * (`<parent>-worker`), since a group with processes cannot hand controllers to children.
 */
export function detectLimits(options: DetectLimitsOptions = {}): LimitSupport {
  const root = options.cgroupRoot ?? DEFAULT_ROOT;
  const parentName = options.parentName ?? DEFAULT_PARENT;
  if (!SAFE_NAME.test(parentName)) throw new Error(`cgroup parent name '${parentName}' is not a plain directory name`);
  const reasons: string[] = [];

  const v2 = detectV2(root, parentName);
  if (typeof v2 === 'string') reasons.push(`cgroup v2: ${v2}`);
  else return cgroupSupport(v2);

  const v1 = detectV1(root, parentName);
  if (typeof v1 === 'string') reasons.push(`cgroup v1: ${v1}`);
  else return cgroupSupport(v1);

  return rlimitSupport(reasons.join('; '));
}

/** How one cgroup version lays out and fills a run's groups. */
interface CgroupLayout {
  mechanism: 'cgroup-v1' | 'cgroup-v2';
  /** Where the run groups go, for `describe`. */
  where: string;
  /** The run's group directories (v1: one per hierarchy; v2: one). */
  groupDirs(runId: string): string[];
  /** Writes the limits into freshly created groups (same order as `groupDirs`). */
  writeLimits(dirs: string[], limits: JobLimits): Promise<void>;
  oomKilled(dirs: string[]): Promise<boolean>;
}

function cgroupSupport(layout: CgroupLayout): LimitSupport {
  return {
    mechanism: layout.mechanism,
    describe: () =>
      `limits by ${layout.mechanism.replace('-', ' ')} (memory, pids in ${layout.where}) + rlimit (cpu time, per process)`,
    async forRun(runId, limits) {
      checkLimits(limits);
      const shellPrelude = cpuPrelude(limits);
      if (limits.memoryBytes === undefined && limits.pids === undefined) return noGroups(shellPrelude);
      if (!SAFE_NAME.test(runId)) throw new Error(`run id '${runId}' cannot name a cgroup (letters, digits, '.', '_', '-' only)`);
      const dirs = layout.groupDirs(runId);
      const created: string[] = [];
      try {
        for (const dir of dirs) {
          await createFreshGroup(dir);
          created.push(dir);
        }
        await layout.writeLimits(dirs, limits);
      } catch (raw) {
        // Nothing of a run that cannot start may stay behind; the first error is the one to report.
        await releaseGroups(created);
        throw raw;
      }
      return {
        shellPrelude,
        grouped: true,
        async enter(pid) {
          for (const dir of dirs) {
            await writeControl(dir, 'cgroup.procs', String(pid), `move process ${pid} into the run's group`);
          }
        },
        oomKilled: () => layout.oomKilled(dirs),
        release: () => releaseGroups(dirs),
      };
    },
  };
}

function rlimitSupport(reason: string): LimitSupport {
  return {
    mechanism: 'rlimit',
    describe: () => `limits by rlimit only (memory as address space per process, cpu time per process; no pids limit: ${reason})`,
    async forRun(_runId, limits) {
      checkLimits(limits);
      if (limits.pids !== undefined) {
        throw new Error(
          `this worker cannot limit processes: no writable cgroup (pids controller); ${reason}. ` +
            'Run the worker as root on a host with cgroup v1 pids or a delegated cgroup v2 subtree, or drop the job\'s pids limit',
        );
      }
      const prelude: string[] = [];
      if (limits.memoryBytes !== undefined) {
        prelude.push(guarded(`ulimit -v ${Math.max(1, Math.floor(limits.memoryBytes / 1024))}`, 'memory (address space) limit'));
      }
      return noGroups([...prelude, ...cpuPrelude(limits)]);
    },
  };
}

function noGroups(shellPrelude: string[]): RunLimits {
  return {
    shellPrelude,
    grouped: false,
    enter: async () => {},
    oomKilled: async () => false,
    release: async () => [],
  };
}

/** Rejects values no kernel interface would take, before anything is created. */
function checkLimits(limits: JobLimits): void {
  for (const [name, value] of Object.entries(limits) as [keyof JobLimits, number | undefined][]) {
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
      throw new Error(`resource limit ${name} must be a positive number, got ${value}`);
    }
  }
}

/**
 * CPU time is always an rlimit, so it is per process. The soft limit sends SIGXCPU (which says
 * why the job died); the hard limit a second later SIGKILLs a job that ignores it. Soft first: a
 * hard limit below the current soft one is refused (EINVAL).
 */
function cpuPrelude(limits: JobLimits): string[] {
  if (limits.cpuSeconds === undefined) return [];
  const seconds = Math.ceil(limits.cpuSeconds);
  return [guarded(`ulimit -S -t ${seconds} && ulimit -H -t ${seconds + 1}`, 'cpu time limit')];
}

/** A prelude line that stops the wrapper rather than run the job without its limit. */
function guarded(command: string, what: string): string {
  return `${command} || { echo 'kiln: cannot set the ${what}' >&2; exit ${PRELUDE_FAILURE_STATUS}; }`;
}

// ---- cgroup v1 ---------------------------------------------------------------------------------

function detectV1(root: string, parentName: string): CgroupLayout | string {
  const memory = join(root, 'memory');
  const pids = join(root, 'pids');
  for (const hierarchy of [memory, pids]) {
    if (!existsSync(join(hierarchy, 'cgroup.procs'))) return `no hierarchy at ${hierarchy}`;
    try {
      mkdirSync(join(hierarchy, parentName), { recursive: true });
    } catch (raw) {
      return `cannot create ${join(hierarchy, parentName)}: ${(raw as Error).message}`;
    }
  }
  return {
    mechanism: 'cgroup-v1',
    where: join(root, `{memory,pids}`, parentName),
    groupDirs: (runId) => [join(memory, parentName, runId), join(pids, parentName, runId)],
    async writeLimits([memoryDir, pidsDir], limits) {
      if (limits.memoryBytes !== undefined) {
        const bytes = String(Math.floor(limits.memoryBytes));
        await writeControl(memoryDir!, 'memory.limit_in_bytes', bytes, 'set the memory limit');
        // memsw (memory + swap) exists only with swap accounting; without it swap could carry the
        // job past its limit, but a kernel that has no memsw has no way to close that either.
        if (existsSync(join(memoryDir!, 'memory.memsw.limit_in_bytes'))) {
          try {
            await writeFile(join(memoryDir!, 'memory.memsw.limit_in_bytes'), bytes);
          } catch {
            // Best effort by design (swap accounting can be off even with the file present): the
            // memory limit itself is in place, and refusing the run would help nobody.
          }
        }
      }
      if (limits.pids !== undefined) {
        await writeControl(pidsDir!, 'pids.max', String(Math.floor(limits.pids)), 'set the process limit');
      }
    },
    async oomKilled([memoryDir]) {
      const control = await readFile(join(memoryDir!, 'memory.oom_control'), 'utf8');
      const kills = counter(control, 'oom_kill');
      if (kills !== undefined) return kills > 0;
      // Kernels before 4.13 do not count kills; hitting the limit is the best evidence left.
      return Number((await readFile(join(memoryDir!, 'memory.failcnt'), 'utf8')).trim()) > 0;
    },
  };
}

// ---- cgroup v2 ---------------------------------------------------------------------------------

const V2_CONTROLLERS = ['memory', 'pids'];

function detectV2(root: string, parentName: string): CgroupLayout | string {
  let offered: string[];
  try {
    offered = tokens(readFileSync(join(root, 'cgroup.controllers'), 'utf8'));
  } catch (raw) {
    return `no ${join(root, 'cgroup.controllers')} (${(raw as NodeJS.ErrnoException).code ?? (raw as Error).message})`;
  }
  const missing = V2_CONTROLLERS.filter((c) => !offered.includes(c));
  if (missing.length > 0) return `controller ${missing.join(', ')} not offered in ${join(root, 'cgroup.controllers')}`;

  const own = ownV2Group(root);
  const bases = own === undefined || own === root ? [root] : [root, own];
  const failures: string[] = [];
  for (const base of bases) {
    try {
      const parent = prepareV2Parent(base, parentName, base === (own ?? root));
      return v2Layout(parent);
    } catch (raw) {
      failures.push((raw as Error).message);
    }
  }
  return failures.join('; ');
}

/** The worker's own v2 group as a directory under `root`, from the `0::` line of /proc/self/cgroup. */
function ownV2Group(root: string): string | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    // Not Linux, or /proc not mounted: the root is the only candidate.
    return undefined;
  }
  const line = text.split('\n').find((l) => l.startsWith('0::'));
  // The path is absolute within the hierarchy ("/" for its root); keep no trailing slash so it
  // compares equal to `root`.
  return line === undefined ? undefined : join(root, line.slice(3).replace(/^\/+/, ''));
}

/** Creates `<base>/<parentName>` with memory and pids handed down to it and to its children. */
function prepareV2Parent(base: string, parentName: string, mayHoldSelf: boolean): string {
  enableV2Controllers(base, mayHoldSelf ? () => moveSelfToLeaf(base, `${parentName}-worker`) : undefined);
  const parent = join(base, parentName);
  try {
    mkdirSync(parent, { recursive: true });
  } catch (raw) {
    throw new Error(`cannot create ${parent}: ${(raw as Error).message}`);
  }
  enableV2Controllers(parent);
  return parent;
}

function enableV2Controllers(dir: string, onBusy?: () => void): void {
  const file = join(dir, 'cgroup.subtree_control');
  if (hasV2Controllers(file)) return;
  const request = V2_CONTROLLERS.map((c) => `+${c}`).join(' ');
  try {
    writeFileSync(file, request);
  } catch (raw) {
    const code = (raw as NodeJS.ErrnoException).code;
    if (code !== 'EBUSY' || onBusy === undefined) throw new Error(`cannot enable ${request} in ${file}: ${(raw as Error).message}`);
    // A group with processes cannot give controllers to children ("no internal processes").
    onBusy();
    try {
      writeFileSync(file, request);
    } catch (again) {
      throw new Error(`cannot enable ${request} in ${file} even after leaving it: ${(again as Error).message}`);
    }
  }
  if (!hasV2Controllers(file)) throw new Error(`${file} still lacks ${V2_CONTROLLERS.join(', ')} after writing ${request}`);
}

function hasV2Controllers(subtreeControl: string): boolean {
  let enabled: string[];
  try {
    enabled = tokens(readFileSync(subtreeControl, 'utf8')).map((t) => t.replace(/^\+/, ''));
  } catch (raw) {
    if ((raw as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new Error(`cannot read ${subtreeControl}: ${(raw as Error).message}`);
  }
  return V2_CONTROLLERS.every((c) => enabled.includes(c));
}

function moveSelfToLeaf(base: string, leafName: string): void {
  const leaf = join(base, leafName);
  try {
    mkdirSync(leaf, { recursive: true });
    writeFileSync(join(leaf, 'cgroup.procs'), String(process.pid));
  } catch (raw) {
    throw new Error(`cannot move the worker into ${leaf}: ${(raw as Error).message}`);
  }
}

function v2Layout(parent: string): CgroupLayout {
  return {
    mechanism: 'cgroup-v2',
    where: parent,
    groupDirs: (runId) => [join(parent, runId)],
    async writeLimits([dir], limits) {
      if (limits.memoryBytes !== undefined) {
        await writeControl(dir!, 'memory.max', String(Math.floor(limits.memoryBytes)), 'set the memory limit');
        // Without this, swap lets the job's total exceed memory.max; absent when swap accounting is off.
        if (existsSync(join(dir!, 'memory.swap.max'))) await writeControl(dir!, 'memory.swap.max', '0', 'forbid swap');
      }
      if (limits.pids !== undefined) {
        await writeControl(dir!, 'pids.max', String(Math.floor(limits.pids)), 'set the process limit');
      }
    },
    async oomKilled([dir]) {
      let events: string;
      try {
        events = await readFile(join(dir!, 'memory.events'), 'utf8');
      } catch (raw) {
        // No memory.events: the memory controller is not on in this group, so it cannot OOM.
        if ((raw as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw raw;
      }
      return (counter(events, 'oom_kill') ?? 0) > 0;
    },
  };
}

// ---- shared by both versions -------------------------------------------------------------------

/** Makes an empty group at `dir`; one left by a crashed worker under the same run id is emptied and replaced. */
async function createFreshGroup(dir: string): Promise<void> {
  try {
    await mkdir(dir);
    return;
  } catch (raw) {
    if ((raw as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot create cgroup ${dir}: ${(raw as Error).message}`);
  }
  const left = await releaseGroups([dir]);
  if (left.length > 0) throw new Error(`cgroup ${dir} is left from an earlier run and cannot be removed`);
  await mkdir(dir).catch((raw: unknown) => {
    throw new Error(`cannot create cgroup ${dir}: ${(raw as Error).message}`);
  });
}

async function writeControl(dir: string, file: string, value: string, what: string): Promise<void> {
  try {
    await writeFile(join(dir, file), value);
  } catch (raw) {
    throw new Error(`cannot ${what}: writing '${value}' to ${join(dir, file)} failed: ${(raw as Error).message}`);
  }
}

/** Kills what is left in `dirs`, removes them, and returns those it could not remove. */
async function releaseGroups(dirs: string[]): Promise<string[]> {
  const deadline = Date.now() + RELEASE_DEADLINE_MS;
  for (const dir of dirs) {
    // cgroup.kill (v2, Linux 5.14+) kills the whole group at once, racing no fork; the loop below
    // covers kernels without it and v1.
    if (existsSync(join(dir, 'cgroup.kill'))) {
      try {
        await writeFile(join(dir, 'cgroup.kill'), '1');
      } catch {
        // The kill loop below does the same work, one process at a time.
      }
    }
  }
  for (let rounds = 1; (await killMembers(dirs)) > 0 && Date.now() < deadline; rounds += 1) await delay(backoffMs(rounds, KILL_POLL));
  const left: string[] = [];
  for (const dir of dirs) {
    for (let tries = 1; ; tries += 1) {
      try {
        await rmdir(dir);
        break;
      } catch (raw) {
        const code = (raw as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        // EBUSY: killed processes still exiting. Anything else will not get better by waiting.
        if (code !== 'EBUSY' || Date.now() >= deadline) {
          left.push(dir);
          break;
        }
        await delay(backoffMs(tries, KILL_POLL));
      }
    }
  }
  return left;
}

/** SIGKILLs every process listed in the groups; returns how many were still there to kill. */
async function killMembers(dirs: string[]): Promise<number> {
  const pids = new Set<number>();
  for (const dir of dirs) {
    let text: string;
    try {
      text = await readFile(join(dir, 'cgroup.procs'), 'utf8');
    } catch (raw) {
      // A group never created or already removed holds nothing.
      if ((raw as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw raw;
    }
    for (const word of tokens(text)) {
      const pid = Number(word);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) pids.add(pid);
    }
  }
  let alive = 0;
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
      alive += 1;
    } catch (raw) {
      if ((raw as NodeJS.ErrnoException).code !== 'ESRCH') throw raw;
    }
  }
  return alive;
}

function tokens(text: string): string[] {
  return text.split(/\s+/).filter(Boolean);
}

/** The value of a `name N` line in a flat-keyed cgroup file, or undefined if there is none. */
function counter(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}
