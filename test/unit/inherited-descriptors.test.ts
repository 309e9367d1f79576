/**
 * closeInheritedDescriptors in a real child process handed descriptors as a shell hands them: it
 * closes an inherited one past Node's own close-on-exec range, and leaves a file OpenSSL reads
 * (NODE_EXTRA_CA_CERTS) to OpenSSL.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const MODULE = new URL('../../src/worker/inherited-descriptors.ts', import.meta.url).href;

test('an inherited descriptor is closed; one on the NODE_EXTRA_CA_CERTS file is left to OpenSSL', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kiln-fds-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const secret = path.join(dir, 'secret');
  const certs = path.join(dir, 'extra-ca.pem');
  writeFileSync(secret, 'token');
  writeFileSync(certs, '');
  const script = `import { closeInheritedDescriptors } from ${JSON.stringify(MODULE)}; console.log(JSON.stringify(closeInheritedDescriptors()));`;
  // 200 and 201 past any gap, so Node's own start leaves them inheritable.
  const child = spawnSync('bash', ['-c', 'exec "$@" 200<"$SECRET" 201<"$CERTS"', 'bash', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, SECRET: secret, CERTS: certs, NODE_EXTRA_CA_CERTS: certs },
  });
  assert.equal(child.status, 0, child.stderr);
  const closed = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as number[];
  assert.ok(closed.includes(200), `closed: ${closed}`);
  assert.ok(!closed.includes(201), `closed: ${closed}`);
});
