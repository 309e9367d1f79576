/**
 * The root a bwrap job gets: the host's system dirs (symlinks kept as symlinks), nothing else of
 * the host, and covers over hidden paths wherever they would show (a system dir, through a bind).
 * The last test runs real bubblewrap with those arguments.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { jobRoot, SYSTEM_DIRS, systemRoot } from '../../src/worker/sandbox/bwrap-sandbox.js';
import { tempDir } from '../helpers/processes.js';
import { needs, onPath } from '../helpers/requirements.js';

/** The (flag, a, b) triples of an argument list. */
function triples(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; ) {
    const arity = ['--ro-bind', '--bind', '--symlink'].includes(args[i]!) ? 2 : 1;
    out.push(args.slice(i, i + 1 + arity).join(' '));
    i += 1 + arity;
  }
  return out;
}

test('the system dirs present here are bound read-only, and symlinked ones (merged /usr) recreated as symlinks', () => {
  const expected = SYSTEM_DIRS.filter((dir) => {
    try {
      lstatSync(dir);
      return true;
    } catch {
      return false;
    }
  }).map((dir) => (lstatSync(dir).isSymbolicLink() ? `--symlink ${readlinkSync(dir)} ${dir}` : `--ro-bind ${dir} ${dir}`));
  assert.deepEqual(triples(systemRoot()), expected);
  assert.ok(!systemRoot().includes('/run') && !systemRoot().includes('/'), 'neither /run nor the whole root');
});

test('hidden paths are covered where they would show: inside a system dir, through a bind; elsewhere they are absent anyway', (t) => {
  const source = tempDir(t);
  mkdirSync(path.join(source, 'state'));
  writeFileSync(path.join(source, 'token'), 'secret');
  const elsewhere = tempDir(t);
  const args = triples(jobRoot([{ source, target: '/cache', writable: false }], [path.join(source, 'state'), path.join(source, 'token'), elsewhere], ['/etc', '/etc/no-such-kiln-dir']));
  assert.ok(args.includes('--tmpfs /etc'), 'always hidden, inside a system dir');
  assert.ok(!args.some((a) => a.includes('no-such-kiln-dir')), 'a path that does not exist needs no cover');
  assert.ok(args.includes('--tmpfs /cache/state'), 'a hidden dir seen through a bind is covered at its target');
  assert.ok(args.includes('--ro-bind /dev/null /cache/token'), 'a hidden file is covered by an empty one');
  assert.ok(args.indexOf(`--ro-bind ${source} /cache`) < args.indexOf('--tmpfs /cache/state'), 'the cover goes on top of the bind');
  assert.ok(!args.some((a) => a.includes(elsewhere)), 'a hidden path outside what is bound is simply not there');
});

test('in real bubblewrap the job sees the system dirs, not /run, /var, /home, /root, /srv, /mnt, and a hidden /etc dir empty', { skip: needs('bwrap') }, () => {
  const hiddenEtc = ['/etc/ssl', '/etc/default', '/etc/apt'].find((dir) => existsSync(dir) && readdirSync(dir).length > 0);
  assert.ok(hiddenEtc, 'a non-empty dir in /etc to hide');
  const compiler = onPath('cc') !== undefined;
  const probe = [
    'for d in /usr /bin /etc /run /var /home /root /srv /mnt; do [ -e $d ] && echo "$d: there" || echo "$d: absent"; done',
    `echo "hidden: $(ls -A ${hiddenEtc} | wc -l) entries"`,
    'sh -c "echo sh works" && env true && echo "env works"',
    // A compiler, where the host has one: headers, libraries and the linker all come from /usr.
    ...(compiler ? ['printf "int main(void) { return 0; }\\n" > /tmp/t.c && cc -o /tmp/t /tmp/t.c && /tmp/t && echo "cc works"'] : []),
  ].join('\n');
  const result = spawnSync('bwrap', [...jobRoot([], [], [hiddenEtc!]), '--unshare-user', '--unshare-pid', '--unshare-net', '--', '/bin/sh', '-c', probe], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  assert.deepEqual(result.stdout.trim().split('\n'), [
    '/usr: there', '/bin: there', '/etc: there', '/run: absent', '/var: absent', '/home: absent', '/root: absent', '/srv: absent', '/mnt: absent',
    'hidden: 0 entries', 'sh works', 'env works', ...(compiler ? ['cc works'] : []),
  ]);
});
