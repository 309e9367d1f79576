/** Work dirs made ahead of the runs: a run takes one made while the worker was idle. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { SPARE_MAX_AGE_MS, SpareWorkDirs } from '../../src/worker/spare-work-dirs.js';

function root(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-spare-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('taking a dir makes the next one ahead; the next run takes that one, empty and private', async (t) => {
  const dir = root(t);
  const dirs = new SpareWorkDirs(dir);
  const first = await dirs.take();
  await dirs.settled();
  const ahead = readdirSync(dir).map((name) => path.join(dir, name)).filter((p) => p !== first);
  assert.equal(ahead.length, 1, 'one spare, made before the next run asked');
  const second = await dirs.take();
  assert.equal(second, ahead[0]);
  assert.deepEqual(readdirSync(second), []);
  assert.equal(statSync(second).mode & 0o777, 0o700);
  await dirs.dispose();
  assert.deepEqual(readdirSync(dir).sort(), [path.basename(first), path.basename(second)].sort(), 'dispose removes the spare only');
});

test('two runs taking at once get two dirs and leave one spare', async (t) => {
  const dir = root(t);
  const dirs = new SpareWorkDirs(dir);
  await dirs.take();
  await dirs.settled();
  const [a, b] = await Promise.all([dirs.take(), dirs.take()]);
  assert.notEqual(a, b);
  await dirs.settled();
  assert.equal(readdirSync(dir).length, 4, 'the first run\'s, these two and one spare');
  await dirs.dispose();
  assert.equal(readdirSync(dir).length, 3);
});

test('a spare older than SPARE_MAX_AGE_MS is not trusted (a /tmp cleaner may have swept it): removed, a fresh dir made', async (t) => {
  const dir = root(t);
  let now = 0;
  const dirs = new SpareWorkDirs(dir, () => now);
  await dirs.take();
  await dirs.settled();
  const old = readdirSync(dir).length;
  assert.equal(old, 2);
  const spare = readdirSync(dir);
  now += SPARE_MAX_AGE_MS + 1;
  const taken = await dirs.take();
  assert.ok(!spare.includes(path.basename(taken)), 'not the old spare');
  await dirs.dispose();
  assert.equal(readdirSync(dir).length, 2, 'the first run\'s dir and this one\'s');
});

test('a root that cannot take a dir fails the run that takes one, as mkdtemp does', async (t) => {
  const dirs = new SpareWorkDirs(path.join(root(t), 'missing'));
  await assert.rejects(dirs.take(), { code: 'ENOENT' });
  await dirs.dispose();
});
