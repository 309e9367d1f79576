/** Template expansion and template names. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expandTemplate, isValidTemplateName, templateNames } from '../../src/core/index.js';

test('every %%NAME%% is replaced literally, as often as it appears', () => {
  const text = 'opam install %%PACKAGE%%\necho %%PLATFORM%% %%PACKAGE%% 100%% %%\n';
  assert.equal(expandTemplate(text, { PACKAGE: 'solo5$HOME', PLATFORM: 'debian-12' }), 'opam install solo5$HOME\necho debian-12 solo5$HOME 100%% %%\n');
});

test('unknown variables are an error naming each of them', () => {
  assert.throws(() => expandTemplate('%%A%% %%B%% %%A%% %%C%%', { B: 'b' }), /the template uses %%A%%, %%C%%, which the job does not define/);
});

test('template names are plain file names', () => {
  for (const good of ['hello', 'orb-build', 'a_b', 'X1']) assert.ok(isValidTemplateName(good), good);
  for (const bad of ['', '../x', 'a/b', '..', '.hidden', 'a.b', 'a..b', 'x'.repeat(129)]) assert.ok(!isValidTemplateName(bad), bad);
});

test('templateNames lists the variables a text uses, in order, repeats included', () => {
  assert.deepEqual(templateNames('%%JOB%%-%%RUN%% on %%JOB%%, 100%% done, %%not-a-name%%'), ['JOB', 'RUN', 'JOB']);
  assert.deepEqual(templateNames('nothing here'), []);
});
