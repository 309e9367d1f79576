/**
 * A Docker image holding node and this Kiln checkout, made without a registry: a root filesystem
 * of the host's node, a shell and a few tools (with the libraries they load) plus Kiln's compiled
 * dist/ and node_modules, brought in with `docker import`. Tagged by a hash of what went in, so a test
 * run builds it once.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, lstatSync, readlinkSync, realpathSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(import.meta.dirname, '../..');
const TOOLS = ['sh', 'env', 'cat', 'echo', 'sleep', 'ls', 'mkdir', 'rm', 'true', 'false', 'head', 'tail', 'id', 'uname', 'sha256sum', 'hostname', 'grep', 'tr', 'wc'];
/** What the Dockerfile's steps run, beyond TOOLS. */
const BASE_TOOLS = ['mv', 'cp', 'bwrap', 'useradd', 'nologin'];
/** Not needed at run time: types, the type checker and the TypeScript loader. */
const SKIPPED_MODULES = ['typescript', '@types', 'tsx', 'esbuild', '@esbuild'];

/** True when a Docker engine answers here (`docker version` reaches the server). */
export function dockerAvailable(): string | undefined {
  try {
    execFileSync('docker', ['version', '--format', '{{.Server.Version}}'], { stdio: 'pipe', timeout: 10_000 });
    return undefined;
  } catch (err) {
    return `no Docker engine answers here (${String((err as { stderr?: Buffer }).stderr ?? err).trim().split('\n')[0]}); .ci/run installs docker.io and starts dockerd`;
  }
}

/** Every file under `dir` (for the hash). */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort();
}

/** The host's program file of that name (not a shell builtin). */
function hostProgram(name: string): string {
  const found = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'].map((dir) => path.join(dir, name)).find((file) => existsSync(file));
  if (!found) throw new Error(`${name} is not on this host`);
  return found;
}

/** The executables and the shared libraries they load (ldd), as absolute host paths. */
function withLibraries(programs: string[]): string[] {
  const files = new Set(programs);
  for (const program of programs) {
    const out = execFileSync('ldd', [program], { encoding: 'utf8' });
    for (const match of out.matchAll(/(\/[^\s]+) \(0x/g)) files.add(match[1]!);
  }
  return [...files];
}

/**
 * Writes into `rootfs` the host's `programs` with the libraries they load, the host's merged /usr
 * links, a world-writable /tmp and an /etc/passwd with root: enough for node and a shell.
 */
function writeRootfs(rootfs: string, programs: string[]): void {
  for (const file of withLibraries(programs)) {
    const real = realpathSync(file);
    const target = path.join(rootfs, real);
    mkdirSync(path.dirname(target), { recursive: true });
    copyFileSync(real, target);
    chmodSync(target, statSync(real).mode);
    // A file reached through its own symlink (the dynamic loader, say) keeps that link.
    const linked = path.join(realpathSync(path.dirname(file)), path.basename(file));
    if (linked !== real && !existsSync(path.join(rootfs, linked))) {
      mkdirSync(path.join(rootfs, path.dirname(linked)), { recursive: true });
      symlinkSync(real, path.join(rootfs, linked));
    }
  }
  // The host's merged /usr (/bin -> usr/bin...), as it is.
  for (const top of ['bin', 'sbin', 'lib', 'lib64']) {
    if (lstatSync(`/${top}`, { throwIfNoEntry: false })?.isSymbolicLink()) symlinkSync(readlinkSync(`/${top}`), path.join(rootfs, top));
  }
  // /usr/bin/env node finds node.
  if (!process.execPath.startsWith('/usr/bin/')) symlinkSync(process.execPath, path.join(rootfs, 'usr/bin/node'));
  // recursive: node itself may live under /tmp or /root (a Node fetched by .ci/with-node, nvm's).
  mkdirSync(path.join(rootfs, 'tmp'), { recursive: true });
  chmodSync(path.join(rootfs, 'tmp'), 0o1777);
  mkdirSync(path.join(rootfs, 'etc'), { recursive: true });
  writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\n');
  mkdirSync(path.join(rootfs, 'root'), { recursive: true });
}

/** Pipes `tar -c TAR_ARGS` into `docker import` as `tag`, with a shell-friendly PATH and any extra Dockerfile `changes`. */
async function importTar(tarArgs: string[], tag: string, changes: string[] = []): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const tar = spawn('tar', ['-c', '-f', '-', ...tarArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
    const load = spawn('docker', ['import', '--change', 'WORKDIR /root', '--change', 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', ...changes.flatMap((change) => ['--change', change]), '-', tag], { stdio: ['pipe', 'ignore', 'pipe'] });
    let error = '';
    load.stderr!.on('data', (chunk: Buffer) => (error += chunk.toString()));
    tar.stdout!.pipe(load.stdin!);
    tar.on('error', reject);
    load.on('error', reject);
    load.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`docker import failed (${code}): ${error.trim()}`))));
  });
}

/**
 * A stand-in for `node:24-bookworm-slim`, made without a registry as `tag`: the host's node, a
 * shell and tools, bubblewrap and useradd, the host's /etc/os-release (so a worker in it names the
 * host's platform). No npm and no apt: packaging/docker/Dockerfile's offline path needs neither.
 * It carries `label` (name=value), and so does every image built FROM it: removeImagesLabelled.
 */
export async function nodeBaseImage(tag: string, label: string): Promise<void> {
  const rootfs = mkdtempSync(path.join(os.tmpdir(), 'kiln-rootfs-'));
  try {
    writeRootfs(rootfs, [process.execPath, ...[...TOOLS, ...BASE_TOOLS].map(hostProgram)]);
    for (const file of ['os-release', 'login.defs']) copyFileSync(realpathSync(`/etc/${file}`), path.join(rootfs, 'etc', file));
    await importTar(['-C', rootfs, '.'], tag, [`LABEL ${label}`]);
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
}

/** The image's tag, made (imported) if this checkout's image is not there yet. */
export async function kilnWorkerImage(): Promise<string> {
  // The Node version too: node_modules holds a native addon built for it (a CI run tests two).
  const hash = createHash('sha256').update(process.version);
  for (const file of [path.join(ROOT, 'npm-shrinkwrap.json'), ...filesUnder(path.join(ROOT, 'dist')), path.join(ROOT, 'bin/kiln.mjs'), fileURLToPath(import.meta.url)]) {
    hash.update(file).update(readFileSync(file));
  }
  const tag = `kiln-test-worker:${hash.digest('hex').slice(0, 16)}`;
  try {
    execFileSync('docker', ['image', 'inspect', tag], { stdio: 'ignore' });
    return tag;
  } catch {
    // Not there yet: make it.
  }
  const rootfs = mkdtempSync(path.join(os.tmpdir(), 'kiln-rootfs-'));
  try {
    writeRootfs(rootfs, [process.execPath, ...TOOLS.map(hostProgram)]);
    // `kiln` is on PATH.
    mkdirSync(path.join(rootfs, 'usr/local/bin'), { recursive: true });
    symlinkSync('/opt/kiln/bin/kiln.mjs', path.join(rootfs, 'usr/local/bin/kiln'));
    const excludes = SKIPPED_MODULES.flatMap((name) => ['--exclude', `node_modules/${name}`]);
    // node_modules from where it really is (a worktree's may be a symlink, which would dangle).
    const modules = realpathSync(path.join(ROOT, 'node_modules'));
    assert.equal(path.basename(modules), 'node_modules');
    // One tar of the rootfs and the checkout (under /opt/kiln), straight into `docker import`.
    await importTar(['-C', rootfs, '.', ...excludes, '--transform', 's,^\\(bin\\|dist\\|node_modules\\|package.json\\),opt/kiln/\\1,', '-C', ROOT, 'bin', 'dist', 'package.json', '-C', path.dirname(modules), 'node_modules'], tag);
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
  return tag;
}

/** Containers (any state) carrying a label, e.g. `dev.kiln.owner=ID`. */
export function containersLabelled(label: string): string[] {
  return execFileSync('docker', ['ps', '-a', '-q', '--no-trunc', '--filter', `label=${label}`], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

/** Removes containers by id, with their anonymous volumes (test cleanup). */
export function removeContainers(ids: string[]): void {
  if (ids.length > 0) execFileSync('docker', ['rm', '-f', '-v', ...ids], { stdio: 'ignore' });
}

/** Removes every image (tagged or not, children first) carrying `label` (name=value) that no container uses. */
export function removeImagesLabelled(label: string): void {
  execFileSync('docker', ['image', 'prune', '--all', '--force', '--filter', `label=${label}`], { stdio: 'ignore' });
}

/** Removes an image a test made. */
export function removeImage(tag: string): void {
  execFileSync('docker', ['rmi', '-f', tag], { stdio: 'ignore' });
}
