/**
 * packaging/exec/kiln-jail-pool.sh (an `exec` pool of FreeBSD jails on ZFS clones), run under dash
 * on Linux against stand-in zfs, jail, jexec, jls, pgrep, mount and umount commands first on PATH.
 * The stand-ins keep their state in a temp dir (datasets with their properties, each mounted on a
 * dir; jails; devfs mounts) and log every call; the jail's "node" is a stand-in that records how it
 * was started and becomes a real `sleep`: the worker. jq, awk, ps and the other tools the script
 * runs are the real ones behind logging wrappers, so the log holds every command line it ran.
 *
 * This is no FreeBSD: the stand-ins behave as their man pages say, as far as the script uses them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { execOptionsSchema, ExecProvider } from '../../src/server/latent/exec-provider.js';
import { workerArguments, type InstanceSpec } from '../../src/server/latent/provider.js';
import { followRun, kiln, startServer } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

const SCRIPT = fileURLToPath(new URL('../../packaging/exec/kiln-jail-pool.sh', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const SNAPSHOT = 'tank/jails/kiln-base@clean';

const which = (cmd: string): string | undefined => {
  const found = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : undefined;
};
// The stand-in pgrep reads /proc.
const skip = needs('jq', 'dash', 'ps') || (!existsSync('/proc/self/stat') && 'the stand-in pgrep reads /proc');

/** The stand-ins' logic (all but jexec, which must exec), run by node; state in DIR/state.json. */
const FAKE_TOOLS = String.raw`
import { cpSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
const DIR = process.argv[2];
const [tool, ...args] = process.argv.slice(3);
const STATE = path.join(DIR, 'state.json');
const state = JSON.parse(readFileSync(STATE, 'utf8'));
const save = () => writeFileSync(STATE, JSON.stringify(state, null, 1));
const die = (message, code = 1) => { process.stderr.write(message + '\n'); process.exit(code); };
const out = (lines) => { if (lines.length) process.stdout.write(lines.join('\n') + '\n'); };
const alive = (pid) => { try { return !/^\d+ \(.*\) [ZX]/.test(readFileSync('/proc/' + pid + '/stat', 'utf8')); } catch { return false; } };
const isDir = (dir) => { try { return statSync(dir).isDirectory(); } catch { return false; } };
const jailOf = (name) => state.jails[name];

if (tool === 'zfs') {
  const [sub, ...rest] = args;
  if (sub === 'clone') {
    const props = {};
    while (rest[0] === '-o') {
      const [key, ...value] = rest[1].split('=');
      if (!key.includes(':') || value.length === 0) die("cannot set property '" + rest[1] + "'");
      props[key] = value.join('=');
      rest.splice(0, 2);
    }
    const [snap, ds] = rest;
    if (rest.length !== 2) die('stand-in zfs: clone: ' + rest.join(' '), 2);
    if (state.fail.zfsClone) die("cannot create '" + ds + "': " + state.fail.zfsClone);
    if (!state.snapshots.includes(snap)) die("cannot open '" + snap + "': dataset does not exist");
    if (state.datasets[ds]) die("cannot create '" + ds + "': dataset already exists");
    if (!state.datasets[ds.slice(0, ds.lastIndexOf('/'))]) die("cannot create '" + ds + "': parent does not exist");
    const mountpoint = path.join(DIR, 'mnt', ds);
    cpSync(state.datasets[snap.split('@')[0]].mountpoint, mountpoint, { recursive: true });
    state.datasets[ds] = { mountpoint, origin: snap, props };
    save();
  } else if (sub === 'get') {
    const flags = { o: 'name,property,value,source', s: '', t: 'filesystem' };
    let scripted = false;
    while (rest[0]?.startsWith('-')) {
      const flag = rest.shift();
      if (flag === '-H') scripted = true;
      else if (['-o', '-s', '-t'].includes(flag)) flags[flag[1]] = rest.shift();
      else die('stand-in zfs: get ' + flag, 2);
    }
    if (!scripted) die('stand-in zfs: get without -H', 2);
    const [propList, ...names] = rest;
    const fields = flags.o.split(',');
    const sources = flags.s ? flags.s.split(',') : undefined;
    const lines = [];
    for (const name of names.length ? names : Object.keys(state.datasets).sort()) {
      const ds = state.datasets[name];
      if (!ds) die("cannot open '" + name + "': dataset does not exist");
      for (const property of propList.split(',')) {
        const local = property !== 'mountpoint' && ds.props[property] !== undefined;
        const source = property === 'mountpoint' ? 'default' : local ? 'local' : '-';
        if (sources && !sources.includes(source)) continue;
        const value = property === 'mountpoint' ? ds.mountpoint : (ds.props[property] ?? '-');
        lines.push(fields.map((f) => ({ name, property, value, source })[f]).join('\t'));
      }
    }
    out(lines);
  } else if (sub === 'destroy') {
    const name = rest.filter((a) => a !== '-f');
    if (name.length !== 1 || !rest.includes('-f')) die('stand-in zfs: destroy ' + rest.join(' '), 2);
    const ds = state.datasets[name[0]];
    if (!ds) die("cannot open '" + name[0] + "': dataset does not exist");
    // A devfs still mounted in it keeps it busy, even with -f.
    if (state.mounts.some((m) => m.dir.startsWith(ds.mountpoint + '/'))) die("cannot unmount '" + ds.mountpoint + "': pool or dataset is busy");
    delete state.datasets[name[0]];
    rmSync(ds.mountpoint, { recursive: true, force: true });
    save();
  } else die('stand-in zfs: unsupported: ' + args.join(' '), 2);
} else if (tool === 'jail') {
  if (args[0] === '-c') {
    const params = Object.fromEntries(args.slice(1).map((a) => (a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, true])));
    if (state.fail.jailCreate) die('jail: ' + params.name + ': ' + state.fail.jailCreate);
    if (!params.name || !params.path || !params.persist) die('stand-in jail: -c needs name, path and persist', 2);
    if (jailOf(params.name)) die('jail: ' + params.name + ': jail already exists');
    if (!isDir(params.path)) die('jail: ' + params.name + ': path ' + params.path + ': No such file or directory');
    if (params['mount.devfs']) {
      mkdirSync(params.path + '/dev', { recursive: true });
      state.mounts.push({ fs: 'devfs', dir: params.path + '/dev' });
    }
    state.jails[params.name] = { jid: ++state.lastJid, path: params.path, params, pids: [] };
    save();
  } else if (args[0] === '-r' && args.length === 2) {
    const jail = jailOf(args[1]);
    if (!jail) die('jail: "' + args[1] + '" not found');
    const left = jail.pids.filter(alive);
    for (const pid of left) process.kill(pid, 'SIGKILL');
    // Made on the command line, not from jail.conf: its devfs stays mounted (the script unmounts it).
    state.removed[args[1]] = { killed: left.length };
    delete state.jails[args[1]];
    save();
  } else die('stand-in jail: unsupported: ' + args.join(' '), 2);
} else if (tool === 'jls') {
  if (args[0] !== '-j' || args.length < 2) die('stand-in jls: unsupported: ' + args.join(' '), 2);
  const jail = jailOf(args[1]);
  if (!jail) die('jls: jail "' + args[1] + '" not found');
  const wanted = args.length > 2 ? args.slice(2) : ['jid', 'path'];
  out([wanted.map((p) => ({ jid: jail.jid, name: args[1], path: jail.path })[p] ?? '-').join(' ')]);
} else if (tool === 'pgrep') {
  if (args[0] !== '-j' || args.length !== 2) die('stand-in pgrep: unsupported: ' + args.join(' '), 2);
  const jail = jailOf(args[1]);
  if (!jail) die('pgrep: Invalid jail ID ' + args[1], 2);
  const pids = jail.pids.filter(alive);
  out(pids.map(String));
  process.exit(pids.length ? 0 : 1);
} else if (tool === 'mount') {
  if (args.join(' ') !== '-p') die('stand-in mount: unsupported: ' + args.join(' '), 2);
  out(state.mounts.map((m) => [m.fs, m.dir, m.fs, 'rw', '0', '0'].join('\t')));
} else if (tool === 'umount') {
  const dir = args.filter((a) => a !== '-f');
  const at = state.mounts.findIndex((m) => m.dir === dir[0]);
  if (dir.length !== 1 || at < 0) die('umount: ' + dir.join(' ') + ': not a file system root directory');
  state.mounts.splice(at, 1);
  save();
} else if (tool === 'jexec-enter') {
  // jexec's part: the process (its pid) joins the jail; prints the jail's root.
  const jail = jailOf(args[0]);
  if (!jail) die('jexec: jail "' + args[0] + '" not found');
  jail.pids.push(Number(args[1]));
  save();
  out([jail.path]);
} else die('stand-in: unknown tool ' + tool, 2);
`;

interface State {
  datasets: Record<string, { mountpoint: string; origin?: string; props: Record<string, string> }>;
  snapshots: string[];
  jails: Record<string, { jid: number; path: string; params: Record<string, string | true>; pids: number[] }>;
  mounts: { fs: string; dir: string }[];
  removed: Record<string, { killed: number }>;
  fail: { zfsClone?: string; jailCreate?: string };
  lastJid: number;
}

interface World {
  dir: string;
  node: string;
  env: Record<string, string>;
  state(): State;
  setFail(fail: State['fail']): void;
  addDataset(name: string, props: Record<string, string>): void;
  /** Every command line the script ran (stand-ins and wrapped tools), program first. */
  calls(): string[][];
  /** What the jail's stand-in node was started with, by pid. */
  workers(): { pid: number; argv: string[]; env: Record<string, string>; cwd: string }[];
}

/** A fresh fake FreeBSD host: the stand-ins in DIR/bin, the base dataset and its snapshot. */
function makeWorld(t: TestContext): World {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-jail-pool-'));
  const bin = path.join(dir, 'bin');
  const log = path.join(dir, 'calls.log');
  mkdirSync(bin);
  writeFileSync(log, '');
  writeFileSync(path.join(dir, 'fake-tools.mjs'), FAKE_TOOLS);
  const q = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;
  const logLine = (tool: string) => `{ for a in ${q(tool)} "$@"; do printf '%s\\037' "$a"; done; printf '\\036'; } >>${q(log)}`;
  const script = (name: string, body: string) => {
    writeFileSync(path.join(bin, name), `#!/bin/sh\n${logLine(name)}\n${body}\n`);
    chmodSync(path.join(bin, name), 0o755);
  };
  const fake = `${q(process.execPath)} ${q(path.join(dir, 'fake-tools.mjs'))} ${q(dir)}`;
  for (const tool of ['zfs', 'jail', 'jls', 'pgrep', 'mount', 'umount']) script(tool, `exec ${fake} ${tool} "$@"`);
  // jexec [-U user] jail command...: joins the jail (as its pid), checks the user exists in the jail, and execs
  // the command from the jail's root, keeping the environment, as jexec does.
  script('jexec', [
    'user=root',
    'if [ "$1" = -U ]; then user=$2; shift 2; fi',
    'jail=$1; shift',
    `root=$(${fake} jexec-enter "$jail" "$$") || exit 1`,
    'grep -q "^$user:" "$root/etc/passwd" || { echo "jexec: getpwnam: $user: no such user" >&2; exit 1; }',
    'cd "$root" || exit 1',
    'unset OLDPWD # set by cd here; jexec has no shell',
    'exec "$@"',
  ].join('\n'));
  // The real tools the script runs, behind a log.
  for (const tool of ['jq', 'cat', 'tail', 'cut', 'tr', 'awk', 'ps', 'sleep', 'grep', 'env']) {
    const real = which(tool);
    if (real) script(tool, `exec ${q(real)} "$@"`);
  }
  // The jail's node: records its arguments, environment and directory, then is the worker: a sleep. With
  // DIR/drain-seconds, it takes that long to go on SIGTERM, as a draining worker would.
  const node = path.join(dir, 'node-in-jail');
  const record = (what: string) => q(path.join(dir, 'worker-')) + `"$$"${q(`.${what}`)}`;
  writeFileSync(node, [
    '#!/bin/sh',
    `{ for a in "$@"; do printf '%s\\037' "$a"; done; } >${record('argv')}`,
    `env >${record('env')}`,
    `pwd >${record('cwd')}`,
    'echo "stand-in worker $$ up, as $(id -un 2>/dev/null || echo ?)"',
    `if [ -f ${q(path.join(dir, 'drain-seconds'))} ]; then`,
    `  drain=$(cat ${q(path.join(dir, 'drain-seconds'))})`,
    '  trap \'echo draining; sleep "$drain"; exit 0\' TERM',
    '  while :; do sleep 1; done',
    'fi',
    'exec sleep 600',
    '',
  ].join('\n'));
  chmodSync(node, 0o755);

  // The prepared root: what the snapshot holds.
  const baseRoot = path.join(dir, 'mnt', 'tank/jails/kiln-base');
  for (const sub of ['etc', 'var/log', 'var/run', 'tmp']) mkdirSync(path.join(baseRoot, sub), { recursive: true });
  writeFileSync(path.join(baseRoot, 'etc/passwd'), 'root:*:0:0::0:0:Charlie &:/root:/bin/sh\nbuilder:*:1001:1001::0:0:Kiln:/nonexistent:/usr/sbin/nologin\n');
  const stateFile = path.join(dir, 'state.json');
  const initial: State = {
    datasets: {
      tank: { mountpoint: path.join(dir, 'mnt', 'tank'), props: {} },
      'tank/jails': { mountpoint: path.join(dir, 'mnt', 'tank/jails'), props: {} },
      'tank/jails/kiln-base': { mountpoint: baseRoot, props: {} },
    },
    snapshots: [SNAPSHOT],
    jails: {},
    mounts: [],
    removed: {},
    fail: {},
    lastJid: 0,
  };
  writeFileSync(stateFile, JSON.stringify(initial));
  const state = () => JSON.parse(readFileSync(stateFile, 'utf8')) as State;
  const world: World = {
    dir,
    node,
    env: {
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      HOME: process.env.HOME ?? '/',
      LANG: 'C.UTF-8',
      KILN_JAIL_SNAPSHOT: SNAPSHOT,
      KILN_JAIL_USER: 'builder',
      KILN_JAIL_NODE: node,
      KILN_JAIL_KILN: '/opt/kiln',
      // For the commands only: must not reach the instance.
      SECRET_OF_THE_COMMANDS: 'not-for-the-jail',
    },
    state,
    setFail(fail) {
      writeFileSync(stateFile, JSON.stringify({ ...state(), fail }));
    },
    addDataset(name, props) {
      const now = state();
      now.datasets[name] = { mountpoint: path.join(dir, 'mnt', name), props };
      mkdirSync(now.datasets[name]!.mountpoint, { recursive: true });
      writeFileSync(stateFile, JSON.stringify(now));
    },
    calls: () => readFileSync(log, 'utf8').split('\x1e').filter(Boolean).map((call) => call.split('\x1f').slice(0, -1)),
    workers: () =>
      readdirSync(dir)
        .filter((f) => /^worker-\d+\.argv$/.test(f))
        .map((f) => {
          const pid = Number(/\d+/.exec(f)![0]);
          const read = (what: string) => readFileSync(path.join(dir, `worker-${pid}.${what}`), 'utf8');
          const env = Object.fromEntries(read('env').trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
          return { pid, argv: read('argv').split('\x1f').slice(0, -1), env, cwd: read('cwd').trim() };
        }),
  };
  t.after(() => {
    // Whatever happened, no stand-in worker outlives the test.
    const pids = new Set([...world.workers().map((w) => w.pid), ...Object.values(state().jails).flatMap((j) => j.pids)]);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return world;
}

/** Runs the script as the server would, with one JSON object (or some text) on stdin. */
function run(world: World, verb: string, input: unknown, env: Record<string, string> = {}) {
  const result = spawnSync('dash', [SCRIPT, verb], {
    input: typeof input === 'string' ? input : JSON.stringify(input) + '\n',
    env: { ...world.env, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const lastLine = result.stderr.trim().split('\n').at(-1) ?? '';
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, lastLine };
}

/** The exec provider itself, its four commands being the script under dash. */
function provider(world: World, env: Record<string, string> = {}): ExecProvider {
  const verb = (v: string) => ['dash', SCRIPT, v];
  const options = execOptionsSchema.parse({ start: verb('start'), check: verb('check'), stop: verb('stop'), list: verb('list'), timeout: '60s', env: { ...world.env, ...env } });
  return new ExecProvider(options, { pool: 'jails', baseDir: world.dir, log: pino({ level: 'silent' }) });
}

const newOwner = () => randomBytes(8).toString('hex');

function newSpec(owner: string, pool = 'jails'): InstanceSpec {
  const id = `${owner}/${randomUUID()}`;
  return {
    id,
    owner,
    pool,
    name: `${pool}-${id.slice(-6)}`,
    token: `tok-${randomBytes(12).toString('hex')}`,
    server: 'http://kiln.example.org:7420',
    platform: 'freebsd-14',
    labels: { zfs: 'yes' },
    once: true,
    values: { PLATFORM: 'freebsd-14', POOL: pool },
  };
}

/** What start is given on stdin (as ExecProvider.start builds it). */
function startInput(spec: InstanceSpec) {
  return {
    id: spec.id, owner: spec.owner, pool: spec.pool, name: spec.name, platform: spec.platform, labels: spec.labels, once: spec.once,
    command: ['kiln', ...workerArguments(spec)],
    env: { KILN_SERVER: spec.server, KILN_WORKER_NAME: spec.name, KILN_WORKER_TOKEN: spec.token, KILN_POOL_INSTANCE: spec.id, KILN_POOL: spec.pool },
    values: spec.values,
  };
}

const jailName = (id: string) => `kiln_${id.split('/')[1]!.replace(/-/g, '_')}`;
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};
/** Command lines of every process now running that hold `text`. */
function processesWith(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(text)) found.push(`${entry}: ${cmdline.replace(/\0/g, ' ')}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** The world has nothing but its base: no clone, no jail, no mount left. */
function assertClean(world: World) {
  const now = world.state();
  assert.deepEqual(Object.keys(now.datasets).sort(), ['tank', 'tank/jails', 'tank/jails/kiln-base'], 'no clone left');
  assert.deepEqual(Object.keys(now.jails), [], 'no jail left');
  assert.deepEqual(now.mounts, [], 'no devfs left mounted');
}

test('start makes a clone recording the instance, a jail on it and the worker in it; check; stop removes all, twice', { skip, timeout: 60_000 }, async (t) => {
  const world = makeWorld(t);
  const pool = provider(world);
  const spec = newSpec(newOwner());
  const handle = await pool.start(spec);
  assert.ok(world.workers().some((w) => alive(w.pid)), 'start returns while the worker runs on');
  const ref = jailName(spec.id);
  assert.equal(handle.ref, ref);
  assert.match(ref, /^kiln_[0-9a-f_]{36}$/);
  const clone = `tank/jails/${ref}`;

  // The clone, with the instance recorded on it as it was made.
  const calls = world.calls();
  const cloneCall = calls.find((c) => c[0] === 'zfs' && c[1] === 'clone');
  assert.deepEqual(cloneCall, ['zfs', 'clone', '-o', `kiln:instance=${spec.id}`, '-o', `kiln:owner=${spec.owner}`, '-o', `kiln:pool=${spec.pool}`, '-o', `kiln:name=${spec.name}`, SNAPSHOT, clone]);
  const state = world.state();
  const dataset = state.datasets[clone]!;
  assert.equal(dataset.origin, SNAPSHOT);
  assert.deepEqual(dataset.props, { 'kiln:instance': spec.id, 'kiln:owner': spec.owner, 'kiln:pool': spec.pool, 'kiln:name': spec.name });

  // The jail, on the clone's mountpoint.
  const jail = state.jails[ref]!;
  assert.equal(jail.path, dataset.mountpoint);
  assert.equal(jail.params.persist, true);
  assert.equal(jail.params['mount.devfs'], true);
  assert.deepEqual(state.mounts, [{ fs: 'devfs', dir: `${dataset.mountpoint}/dev` }]);

  // The worker: in the jail, as the user, with the arguments and the environment it was given.
  const jexec = calls.find((c) => c[0] === 'jexec')!;
  assert.deepEqual(jexec.slice(1, 4), ['-U', 'builder', ref]);
  assert.deepEqual(jexec.slice(-workerArguments(spec).length - 2), [world.node, '/opt/kiln/bin/kiln.mjs', ...workerArguments(spec)]);
  const [worker, ...more] = world.workers();
  assert.equal(more.length, 0, 'one worker');
  assert.deepEqual(worker!.argv, ['/opt/kiln/bin/kiln.mjs', 'worker', '--platform', 'freebsd-14', '--label', 'zfs=yes', '--drain-timeout', '10s', '--kill-grace', '3s', '--once']);
  const { PATH: jailPath, PWD: _pwd, ...kilnEnv } = worker!.env;
  assert.deepEqual(kilnEnv, { KILN_SERVER: spec.server, KILN_WORKER_NAME: spec.name, KILN_WORKER_TOKEN: spec.token, KILN_POOL_INSTANCE: spec.id, KILN_POOL: spec.pool }, "the instance's env and nothing of the commands' own");
  assert.ok(jailPath, 'a PATH');
  assert.equal(worker!.cwd, dataset.mountpoint, 'run from the jail');
  assert.ok(jail.pids.includes(worker!.pid), 'the worker runs in the jail');
  assert.ok(alive(worker!.pid));
  assert.equal(readFileSync(`${dataset.mountpoint}/var/run/kiln-worker.pid`, 'utf8').trim(), String(worker!.pid), 'its pid, recorded in the jail');
  assert.match(readFileSync(`${dataset.mountpoint}/var/log/kiln-worker.log`, 'utf8'), new RegExp(`stand-in worker ${worker!.pid} up`), 'its output, logged in the jail');

  // The token: in no command line the script ran, nor in any process running now.
  const withToken = calls.filter((c) => c.some((arg) => arg.includes(spec.token)));
  assert.deepEqual(withToken, [], 'the token is in no logged command line');
  assert.deepEqual(processesWith(spec.token), [], 'the token is in no command line ps would show');
  assert.ok(calls.some((c) => c[0] === 'jq'), 'the logged wrappers did see the tools run');

  // check: alive, then not once the worker is gone (its last words in the reason).
  assert.equal(await pool.check(handle), null);
  process.kill(worker!.pid, 'SIGKILL');
  // (No event says a process that is not our child has gone: polled, for up to 10 s.)
  for (let i = 0; i < 500 && alive(worker!.pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(alive(worker!.pid), false, 'the worker is gone');
  const reason = await pool.check(handle);
  assert.match(reason ?? '', new RegExp(`the worker \\(pid ${worker!.pid}\\) in jail ${ref} has exited; its last words: stand-in worker ${worker!.pid} up`));

  // stop: the jail removed, its devfs unmounted, the clone destroyed; again: nothing to do, fine.
  await pool.stop(handle);
  assertClean(world);
  const after = world.calls();
  assert.ok(after.some((c) => c.join(' ') === `jail -r ${ref}`));
  assert.ok(after.some((c) => c.join(' ') === `umount -f ${dataset.mountpoint}/dev`));
  assert.ok(after.some((c) => c.join(' ') === `zfs destroy -f ${clone}`));
  assert.ok(!existsSync(dataset.mountpoint));
  await pool.stop(handle);
  assertClean(world);
  assert.match((await pool.check(handle)) ?? '', new RegExp(`jail ${ref} does not exist`));
});

test('stop lets a running worker drain before it removes the jail', { skip, timeout: 60_000 }, async (t) => {
  const world = makeWorld(t);
  writeFileSync(path.join(world.dir, 'drain-seconds'), '2');
  const spec = newSpec(newOwner());
  // spawnSync returns once the script has exited and its pipes are closed: the worker holds none.
  const started = run(world, 'start', startInput(spec));
  assert.equal(started.status, 0, started.stderr);
  const { ref } = JSON.parse(started.stdout) as { ref: string };
  const [worker] = world.workers();
  assert.ok(alive(worker!.pid));
  const stopped = run(world, 'stop', { id: spec.id, ref });
  assert.equal(stopped.status, 0, stopped.stderr);
  assert.equal(stopped.stdout, '');
  // It waited for the drain: the worker ended by itself before the jail went (nothing left to kill).
  assert.ok(!alive(worker!.pid));
  assert.deepEqual(world.state().removed[ref], { killed: 0 }, 'nothing was left to kill when the jail was removed');
  assertClean(world);
});

test("list gives exactly this owner's instances, by the exact ids on the clones", { skip, timeout: 60_000 }, async (t) => {
  const world = makeWorld(t);
  const owner = newOwner();
  const other = newOwner();
  const specs = [newSpec(owner, 'jails'), newSpec(owner, 'big-jails')];
  for (const spec of specs) assert.equal(run(world, 'start', startInput(spec)).status, 0);
  // Another server's clone; one that says it is this owner's but whose id is not; one with no id.
  world.addDataset(`tank/jails/${jailName(`${other}/${randomUUID()}`)}`, { 'kiln:instance': `${other}/${randomUUID()}`, 'kiln:owner': other, 'kiln:pool': 'jails', 'kiln:name': 'x' });
  world.addDataset('tank/jails/kiln_impostor', { 'kiln:instance': `${other}/${randomUUID()}`, 'kiln:owner': owner, 'kiln:pool': 'jails', 'kiln:name': 'y' });
  world.addDataset('tank/jails/kiln_no_id', { 'kiln:owner': owner, 'kiln:pool': 'jails', 'kiln:name': 'z' });
  // A clone named like ours (the prefix), recorded for no one.
  world.addDataset(`tank/jails/kiln_${owner}`, {});

  const listed = run(world, 'list', { owner });
  assert.equal(listed.status, 0, listed.stderr);
  const items = (JSON.parse(listed.stdout) as { id: string }[]).sort((a, b) => a.id.localeCompare(b.id));
  const expected = specs.map((s) => ({ id: s.id, ref: jailName(s.id), pool: s.pool, name: s.name })).sort((a, b) => a.id.localeCompare(b.id));
  assert.deepEqual(items, expected);
  assert.deepEqual(JSON.parse(run(world, 'list', { owner: newOwner() }).stdout), [], 'a stranger has none');

  // The provider adopts them, and stops them by their refs.
  const pool = provider(world);
  const own = await pool.listOwn(owner);
  assert.deepEqual(own.map((o) => o.handle.id).sort(), specs.map((s) => s.id).sort());
  for (const found of own) await pool.stop(found.handle);
  assert.deepEqual(JSON.parse(run(world, 'list', { owner }).stdout), []);
  assert.deepEqual(Object.keys(world.state().jails), []);
  assert.ok(world.state().datasets[`tank/jails/kiln_impostor`], "the others' clones are left alone");
});

test('a failing zfs clone: start exits non-zero with the reason last, nothing made', { skip, timeout: 60_000 }, async (t) => {
  const world = makeWorld(t);
  world.setFail({ zfsClone: 'out of space' });
  const spec = newSpec(newOwner());
  const result = run(world, 'start', startInput(spec));
  assert.equal(result.status, 1);
  assert.equal(result.stdout, '');
  assert.equal(result.lastLine, `kiln-jail-pool: zfs clone ${SNAPSHOT} tank/jails/${jailName(spec.id)} failed: cannot create 'tank/jails/${jailName(spec.id)}': out of space`);
  assert.ok(!world.calls().some((c) => c[0] === 'jail' || c[0] === 'jexec'), 'no jail tried');
  assertClean(world);
  // Through the provider: the reason is its error.
  await assert.rejects(provider(world).start(newSpec(newOwner())), /exited 1: kiln-jail-pool: zfs clone .* out of space$/);
  assertClean(world);
});

test('a failing jail -c: start destroys the clone it made', { skip, timeout: 60_000 }, async (t) => {
  const world = makeWorld(t);
  world.setFail({ jailCreate: 'ip4.addr: Cannot assign requested address' });
  const spec = newSpec(newOwner());
  const ref = jailName(spec.id);
  const result = run(world, 'start', startInput(spec));
  assert.equal(result.status, 1);
  assert.equal(result.lastLine, `kiln-jail-pool: jail -c ${ref} failed: jail: ${ref}: ip4.addr: Cannot assign requested address`);
  const calls = world.calls().map((c) => c.join(' '));
  assert.ok(calls.includes(`zfs destroy -f tank/jails/${ref}`), 'the clone destroyed');
  assert.ok(!calls.some((c) => c.startsWith('jexec')));
  assertClean(world);
});

test('a worker that exits at once: start fails with its last words, and removes the jail and the clone', { skip, timeout: 60_000 }, async (t) => {
  const world = makeWorld(t);
  const spec = newSpec(newOwner());
  const ref = jailName(spec.id);
  const result = run(world, 'start', startInput(spec), { KILN_JAIL_NODE: '/nonexistent/node' });
  assert.equal(result.status, 1);
  assert.match(result.lastLine, /^kiln-jail-pool: the worker exited at once: .*\/nonexistent\/node.*not found/);
  const calls = world.calls().map((c) => c.join(' '));
  assert.ok(calls.includes(`jail -r ${ref}`));
  assert.ok(calls.some((c) => c.startsWith('umount -f ') && c.endsWith(`${ref}/dev`)));
  assertClean(world);

  // A user the jail does not know: the same.
  const again = run(world, 'start', startInput(newSpec(newOwner())), { KILN_JAIL_USER: 'nobody-here' });
  assert.equal(again.status, 1);
  assert.match(again.lastLine, /^kiln-jail-pool: the worker exited at once: jexec: getpwnam: nobody-here: no such user$/);
  assertClean(world);
});

test('refusals: a ref not of the instance, a command not kiln, bad input, an unknown verb', { skip, timeout: 60_000 }, async (t) => {
  const world = makeWorld(t);
  const spec = newSpec(newOwner());
  assert.equal(run(world, 'start', startInput(spec)).status, 0);
  const ref = jailName(spec.id);
  const other = newSpec(spec.owner);

  const wrongRef = run(world, 'stop', { id: other.id, ref });
  assert.equal(wrongRef.status, 1);
  assert.equal(wrongRef.lastLine, `kiln-jail-pool: ref '${ref}' is not the jail of instance ${other.id} (that is ${jailName(other.id)})`);
  assert.ok(world.state().jails[ref], 'the jail is left alone');
  assert.equal(run(world, 'check', { id: other.id, ref }).status, 1);

  const notKiln = run(world, 'start', { ...startInput(other), command: ['rm', '-rf', '/'] });
  assert.equal(notKiln.status, 1);
  assert.match(notKiln.lastLine, /^kiln-jail-pool: bad input on stdin: .*"command" must be \["kiln", \.\.\.\]/);
  const badId = run(world, 'start', { ...startInput(other), id: 'someone-else/x' });
  assert.match(badId.lastLine, /does not start with/);
  const badEnv = run(world, 'start', { ...startInput(other), env: { 'A B': 'x' } });
  assert.match(badEnv.lastLine, /"env" has a key that is no variable name/);
  const notJson = run(world, 'check', 'this is not JSON');
  assert.equal(notJson.status, 1);
  assert.match(notJson.lastLine, /^kiln-jail-pool: bad input on stdin: /);
  const empty = run(world, 'list', '');
  assert.equal(empty.lastLine, 'kiln-jail-pool: nothing on stdin (one JSON object expected)');
  const noOwner = run(world, 'list', {});
  assert.match(noOwner.lastLine, /"owner" must be a non-empty string/);
  const verb = run(world, 'restart', {});
  assert.equal(verb.status, 2);
  assert.match(verb.lastLine, /usage: .* start\|check\|stop\|list/);
  // Only the first instance was ever made.
  assert.deepEqual(Object.keys(world.state().jails), [ref]);

  assert.equal(run(world, 'stop', { id: spec.id, ref }).status, 0);
  assertClean(world);
});

test('a real server runs a job on a jail instance: the jail\'s node is the real one, its worker connects', { skip, timeout: 120_000 }, async (t) => {
  const world = makeWorld(t);
  // In the stand-in jail, `node` is this node and Kiln is this checkout: a real `kiln worker`.
  const config = {
    pools: [{
      name: 'jails', provider: 'exec', platform: 'freebsd-14', max: 1, idle_timeout: 0, check_interval: '200ms',
      options: {
        start: ['dash', SCRIPT, 'start'], check: ['dash', SCRIPT, 'check'], stop: ['dash', SCRIPT, 'stop'], list: ['dash', SCRIPT, 'list'],
        timeout: '60s',
        env: { ...world.env, KILN_JAIL_NODE: process.execPath, KILN_JAIL_KILN: REPO.replace(/\/$/, '') },
      },
    }],
  };
  const configFile = path.join(world.dir, 'kiln.yaml');
  writeFileSync(configFile, JSON.stringify(config)); // JSON is YAML
  const server = await startServer(t, { args: ['--config', configFile] });
  assert.equal((await kiln(server, ['schedule', 'jailed', '--command', 'echo "on $KILN_PLATFORM in $(pwd)"', '--platform', 'freebsd-14', '--period', 'never'])).code, 0);
  const runId = (await kiln(server, ['execute', 'jailed'])).stdout.trim();
  const { lines, run } = await followRun(server, runId);
  assert.equal(run.status, 'succeeded', `${run.resultText}\n${lines.join('\n')}`);
  assert.ok(lines.some((line) => line.startsWith('on freebsd-14 in ')), lines.join('\n'));
  await server.waitFor(/"msg":"worker instance stopped"/);
  const calls = world.calls();
  const id = calls.find((c) => c[0] === 'zfs' && c[1] === 'clone')![3]!.replace(/^kiln:instance=/, '');
  assert.match(id, /^[0-9a-f]{16}\/[0-9a-f-]{36}$/);
  assert.ok(calls.some((c) => c.join(' ') === `jail -r ${jailName(id)}`), 'stopped through the script');
  assertClean(world);
});
