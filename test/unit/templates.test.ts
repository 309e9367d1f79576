/** Templates on disk: Kiln's templates/ dir and builder's orb-build.template.PLATFORM files in the config dir, and which wins. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { Templates } from '../../src/server/templates.js';

function configDir(t: TestContext, files: Record<string, string>): { config: string; templates: Templates } {
  const config = mkdtempSync(path.join(os.tmpdir(), 'kiln-templates-'));
  t.after(() => rmSync(config, { recursive: true, force: true }));
  mkdirSync(path.join(config, 'templates'));
  for (const [file, text] of Object.entries(files)) writeFileSync(path.join(config, file), text);
  return { config, templates: new Templates(path.join(config, 'templates'), config) };
}

test("builder's orb-build.template.PLATFORM in the config dir is an orb-build variant, listed as builder's", (t) => {
  const { config, templates } = configDir(t, {
    'orb-build.template.ubuntu-20.04': 'orb build %%OPAM_PACKAGE%% on %%PLATFORM%%\n',
    'orb-build.template.freebsd': 'freebsd %%OPAM_PACKAGE%%\n',
    // Only orb-build is builder's: another name in builder's form is not a template.
    'hello.template.alpha': 'echo no\n',
    'orb-build.template.': 'no platform\n',
  });
  assert.deepEqual(templates.read('orb-build', 'ubuntu-20.04'), { file: path.join(config, 'orb-build.template.ubuntu-20.04'), text: 'orb build %%OPAM_PACKAGE%% on %%PLATFORM%%\n' });
  assert.deepEqual(templates.list(), [{ name: 'orb-build', generic: false, platforms: ['freebsd', 'ubuntu-20.04'], builderPlatforms: ['freebsd', 'ubuntu-20.04'] }]);
  assert.deepEqual(templates.platformsFor('orb-build'), ['freebsd', 'ubuntu-20.04']);
  assert.throws(() => templates.read('hello', 'alpha'), { code: 'KILN_ERR_TEMPLATE_NOT_FOUND' });
});

test("Kiln's templates/orb-build.PLATFORM wins over builder's file of the same platform; builder's file over a generic templates/orb-build", (t) => {
  const { templates } = configDir(t, {
    'templates/orb-build.debian-12': 'kiln debian\n',
    'templates/orb-build': 'kiln generic\n',
    'orb-build.template.debian-12': 'builder debian\n',
    'orb-build.template.freebsd': 'builder freebsd\n',
  });
  assert.equal(templates.read('orb-build', 'debian-12').text, 'kiln debian\n');
  assert.equal(templates.read('orb-build', 'freebsd').text, 'builder freebsd\n');
  assert.equal(templates.read('orb-build', 'alpine').text, 'kiln generic\n');
  assert.deepEqual(templates.list(), [{ name: 'orb-build', generic: true, platforms: ['debian-12', 'freebsd'], builderPlatforms: ['freebsd'] }]);
});

test('a missing orb-build template says where it looked, both places', (t) => {
  const { config, templates } = configDir(t, { 'orb-build.template.freebsd': 'x\n' });
  assert.throws(() => templates.read('orb-build', 'debian-12'), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'KILN_ERR_TEMPLATE_NOT_FOUND');
    assert.equal(err.message, `no template 'orb-build' for platform debian-12 (looked for orb-build.debian-12 and orb-build in ${path.join(config, 'templates')}, and for orb-build.template.debian-12 in ${config})`);
    return true;
  });
});

test('without a builder dir, builder files are not read', (t) => {
  const { config } = configDir(t, { 'orb-build.template.freebsd': 'x\n' });
  const templates = new Templates(path.join(config, 'templates'));
  assert.deepEqual(templates.list(), []);
  assert.throws(() => templates.read('orb-build', 'freebsd'), { code: 'KILN_ERR_TEMPLATE_NOT_FOUND' });
});

test('a platform that is not a platform name never reaches a file name: `/../admin.token` reads nothing', (t) => {
  const { config, templates } = configDir(t, { 'admin.token': 'secret\n', 'templates/hello': 'generic\n' });
  writeFileSync(path.join(config, 'orb-build.template.x'), 'x\n');
  for (const platform of ['/../admin.token', '../admin.token', '.', '..', 'a/b', '']) {
    assert.throws(() => templates.read('orb-build', platform), { code: 'KILN_ERR_TEMPLATE_NOT_FOUND' }, platform);
    assert.throws(() => templates.read('hello', platform), { code: 'KILN_ERR_TEMPLATE_NOT_FOUND' }, platform);
  }
  assert.equal(templates.read('hello', 'debian-12').text, 'generic\n');
});
