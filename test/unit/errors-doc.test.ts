/** Every error code is documented, and no code is used by two errors. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const source = readFileSync(new URL('../../src/errors.ts', import.meta.url), 'utf8');
const docs = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
const codes = [...source.matchAll(/super\('(KILN_ERR_[A-Z_]+)'/g)].map((m) => m[1]!);

test('error codes are unique', () => {
  assert.ok(codes.length >= 10, 'the catalogue was read');
  assert.equal(new Set(codes).size, codes.length);
});

test('every error code is in docs/errors.md', () => {
  const missing = codes.filter((code) => !docs.includes(code));
  assert.deepEqual(missing, []);
});
