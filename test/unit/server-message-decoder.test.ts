/**
 * The worker's zod-free decoder of server frames against the zod schema it stands in for: for
 * valid frames, frames with a field dropped, retyped, pushed past a bound, or with keys added, both
 * must agree on accepting, and on the value returned.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { serverMessage } from '../../src/protocol/index.js';
import { decodeServerMessage } from '../../src/protocol/server-message-decoder.js';

const UUID = '0b7c7a51-3f4e-4c1a-9d2e-5a6b7c8d9e0f';

function sameAsZod(frame: unknown): void {
  const zod = serverMessage.safeParse(frame);
  const ours = decodeServerMessage(frame);
  assert.equal(ours.ok, zod.success, `${JSON.stringify(frame)}: zod ${zod.success ? 'accepts' : `refuses (${zod.error.issues[0]?.message})`}, the decoder ${ours.ok ? 'accepts' : `refuses (${ours.issue})`}`);
  if (ours.ok && zod.success) assert.deepStrictEqual(ours.message, zod.data, JSON.stringify(frame));
}

/** A full run assignment, every optional field given. */
const fullRun = () => ({
  id: UUID, job: 'build', platform: 'debian-12', attempt: 1, script: 'echo hi\n', env: { A: '1', EMPTY: '' }, timeoutMs: 60_000,
  idleTimeoutMs: 5_000, firstSeq: 0, artifacts: ['out/**'], artifactsOnFailure: true,
  sandbox: { memoryBytes: 1 << 20, pids: 10, cpuSeconds: 5, network: 'none' }, artifactLimits: { fileBytes: 0, runBytes: 10 },
});

/** One valid frame of every type. */
const VALID: Record<string, unknown>[] = [
  { v: 1, type: 'welcome', name: 'w', heartbeatMs: 10_000, resume: [{ runId: 'r', afterSeq: -1 }], release: [{ runId: 'r2', reason: 'gone' }] },
  { v: 1, type: 'welcome', name: '', heartbeatMs: 1, resume: [], release: [] },
  { v: 1, type: 'refused', code: 'KILN_ERR_PROTOCOL_VERSION', message: 'no' },
  { v: 7, type: 'refused', code: '', message: '' },
  { v: 1, type: 'run.assign', run: fullRun() },
  { v: 1, type: 'run.assign', run: { id: UUID, job: 'j', platform: 'p', attempt: 3, script: '', env: {}, timeoutMs: 1, firstSeq: 12 } },
  { v: 1, type: 'error', code: 'KILN_ERR_PROTOCOL', message: 'bad frame' },
  { v: 1, type: 'run.cancel', runId: 'r', reason: 'cancelled by admin' },
  { v: 1, type: 'run.release', runId: 'r', reason: 'lost' },
  { v: 1, type: 'run.done', runId: 'r', applied: false },
  { v: 1, type: 'notice', message: 'your platform was dropped' },
];

/** Values a field may be swapped for: every JSON type, and numbers at the bounds the schema draws. */
const ODD_VALUES: unknown[] = [
  null, true, false, '', 'x', [], {}, [1], { a: 1 }, 0, -1, 1, 1.5, -0.5, 2 ** 53, -(2 ** 53), 2 ** 53 - 1, 1e300, 255, 256,
  'none', 'host', 'welcome', UUID, UUID.toUpperCase(), '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '0b7c7a51-3f4e-9c1a-9d2e-5a6b7c8d9e0f', '0b7c7a51-3f4e-4c1a-7d2e-5a6b7c8d9e0f', `${UUID}0`, UUID.slice(1),
];

/** Every path to a value inside a frame (objects and arrays), the root excluded. */
function paths(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (typeof value !== 'object' || value === null) return [];
  const keys = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
  return keys.flatMap((key) => [[...prefix, key], ...paths((value as Record<string | number, unknown>)[key], [...prefix, key])]);
}

/** A copy of `frame` with the value at `path` replaced (undefined: the key removed). */
function withValue(frame: unknown, path: (string | number)[], value: unknown): unknown {
  const copy = structuredClone(frame) as Record<string | number, unknown>;
  let at = copy;
  for (const key of path.slice(0, -1)) at = at[key] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  if (value === undefined) {
    if (Array.isArray(at)) at.splice(Number(last), 1);
    else delete at[last];
  } else at[last] = value;
  return copy;
}

test('the decoder accepts every valid server frame and returns what zod returns', () => {
  for (const frame of VALID) {
    assert.ok(decodeServerMessage(frame).ok, JSON.stringify(frame));
    sameAsZod(frame);
  }
});

test('the decoder fills in the defaults zod does and drops unknown keys as zod does', () => {
  const minimal = VALID[5]!;
  const decoded = decodeServerMessage({ ...minimal, extra: 1, run: { ...(minimal.run as object), extra: 'x' } });
  assert.ok(decoded.ok);
  assert.deepStrictEqual(decoded.message, {
    v: 1, type: 'run.assign',
    run: { id: UUID, job: 'j', platform: 'p', attempt: 3, script: '', env: {}, timeoutMs: 1, firstSeq: 12, artifacts: [], artifactsOnFailure: false, sandbox: {} },
  });
});

test('the decoder refuses what zod refuses: every field of every frame removed or swapped for an odd value', () => {
  let refused = 0;
  for (const frame of VALID) {
    for (const path of paths(frame)) {
      for (const value of [undefined, ...ODD_VALUES]) {
        const changed = withValue(frame, path, value);
        sameAsZod(changed);
        if (!decodeServerMessage(changed).ok) refused += 1;
      }
    }
  }
  // The sweep must have exercised refusals, not only acceptances.
  assert.ok(refused > 500, `only ${refused} refusals`);
});

test('the decoder refuses frames that are not objects or name no server message type', () => {
  for (const frame of [null, undefined, 1, 'welcome', [], [VALID[0]], {}, { v: 1 }, { v: 1, type: 'hello' }, { v: 1, type: 'run.output' }, { v: 1, type: 'toString' }, { v: 1, type: '__proto__' }]) {
    assert.equal(decodeServerMessage(frame).ok, false, JSON.stringify(frame));
    sameAsZod(frame);
  }
});

test('the decoder agrees with zod on random changes to valid frames (fast-check)', () => {
  const json = fc.jsonValue({ maxDepth: 2 });
  const frame = fc.constantFrom(...VALID).chain((base) => {
    const all = paths(base);
    const change = fc.oneof(
      fc.record({ path: fc.constantFrom(...all), value: fc.oneof(json, fc.constantFrom(undefined, ...ODD_VALUES)) }),
      fc.record({ path: fc.constantFrom(...all.filter((p) => p.length < 3)).map((p) => [...p.slice(0, -1), 'extra']), value: json }),
    );
    return fc.array(change, { minLength: 0, maxLength: 3 }).map((changes) => changes.reduce<unknown>((f, c) => {
      try {
        return withValue(f, c.path, c.value);
      } catch {
        // The path no longer exists after an earlier change.
        return f;
      }
    }, base));
  });
  fc.assert(fc.property(frame, (f) => sameAsZod(f)), { numRuns: 3000 });
});
