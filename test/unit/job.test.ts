/** Jobs: isValidJobName, parsePairs and labelsMatch. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isValidJobName, labelsMatch, parsePairs } from '../../src/core/index.js';

test('isValidJobName accepts short names safe in paths, URLs and shells', () => {
  const valid = ['a', 'A', '0', 'build', 'mirage-www', 'opam_repo.2', 'v1.2.3', 'a..b', 'a-', 'x'.repeat(128)];
  for (const name of valid) assert.equal(isValidJobName(name), true, name);
});

test('isValidJobName refuses everything else', () => {
  const invalid = [
    '', '-a', '.a', '_a', '..', '.', 'a b', 'a/b', '../etc', 'a\\b', 'a:b', 'a;rm', '$HOME', 'a\nb', 'a\n', 'é',
    'x'.repeat(129), 'a%2f', 'a?b', 'a#b', 'a*',
  ];
  for (const name of invalid) assert.equal(isValidJobName(name), false, JSON.stringify(name));
});

test('parsePairs turns KEY=VALUE pairs into a record', () => {
  const cases: [string[], Record<string, string>][] = [
    [[], {}],
    [['A=1'], { A: '1' }],
    [['A=1', 'B=two words'], { A: '1', B: 'two words' }],
    [['EMPTY='], { EMPTY: '' }],
    [['URL=a=b=c'], { URL: 'a=b=c' }],
    [['A=1', 'A=2'], { A: '2' }],
    [['arch=arm', 'os.name=linux'], { arch: 'arm', 'os.name': 'linux' }],
  ];
  for (const [pairs, want] of cases) assert.deepEqual(parsePairs(pairs, 'label'), want, JSON.stringify(pairs));
});

test('parsePairs throws on a pair without a key or without =', () => {
  for (const pair of ['A', '', '=1', '=', 'A:1']) {
    assert.throws(() => parsePairs(['OK=1', pair], 'env'), TypeError, JSON.stringify(pair));
  }
});

test('parsePairs with strict keys accepts only variable names', () => {
  assert.deepEqual(parsePairs(['_A=1', 'b_2=x', 'PATH=/bin'], 'env', true), { _A: '1', b_2: 'x', PATH: '/bin' });
  for (const pair of ['1A=1', 'A-B=1', 'A.B=1', 'A B=1', 'É=1']) {
    assert.throws(() => parsePairs([pair], 'env', true), TypeError, pair);
    assert.doesNotThrow(() => parsePairs([pair], 'label'), `${pair} is fine without strict keys`);
  }
});

test('labelsMatch: a worker matches when it has every label the job wants', () => {
  const cases: { wanted: Record<string, string>; offered: Record<string, string>; want: boolean }[] = [
    { wanted: {}, offered: {}, want: true },
    { wanted: {}, offered: { arch: 'arm' }, want: true },
    { wanted: { arch: 'arm' }, offered: { arch: 'arm' }, want: true },
    { wanted: { arch: 'arm' }, offered: { arch: 'arm', os: 'debian' }, want: true },
    { wanted: { arch: 'arm', os: 'debian' }, offered: { os: 'debian', arch: 'arm' }, want: true },
    { wanted: { arch: 'arm' }, offered: {}, want: false },
    { wanted: { arch: 'arm' }, offered: { arch: 'x86_64' }, want: false },
    { wanted: { arch: 'arm' }, offered: { ARCH: 'arm' }, want: false },
    { wanted: { arch: 'arm', os: 'debian' }, offered: { arch: 'arm' }, want: false },
    { wanted: { gpu: '' }, offered: {}, want: false },
    { wanted: { gpu: '' }, offered: { gpu: '' }, want: true },
    { wanted: { toString: 'x' }, offered: {}, want: false },
  ];
  for (const { wanted, offered, want } of cases) {
    assert.equal(labelsMatch(wanted, offered), want, `${JSON.stringify(wanted)} vs ${JSON.stringify(offered)}`);
  }
});

test('parsePairs keeps names like constructor and toString as plain keys and refuses __proto__', () => {
  const pairs = parsePairs(['constructor=a', 'toString=b', 'hasOwnProperty=c'], '--label');
  assert.deepEqual(Object.entries(pairs), [['constructor', 'a'], ['toString', 'b'], ['hasOwnProperty', 'c']]);
  assert.throws(() => parsePairs(['__proto__=x'], '--label'), /--label name '__proto__' is reserved/);
  assert.equal(labelsMatch({ constructor: 'a' }, pairs), true);
  assert.equal(labelsMatch({ constructor: 'a' }, {}), false);
  assert.equal(labelsMatch({ toString: '[object Object]' }, {}), false, "an Object's own methods are no labels");
});
