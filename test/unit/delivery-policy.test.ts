/** What the outbox does after an attempt, and how the HTTP and S3 targets classify failures. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { judge } from '../../src/server/upload/http-target.js';
import { afterAttempt, DEFAULT_OUTBOX_TIMINGS } from '../../src/server/upload/outbox.js';
import { outcomeOf } from '../../src/server/upload/s3-target.js';

test('HTTP answers: 2xx delivered; 408, 429 and 5xx transient; every other status a refusal for good', () => {
  const cases: [number, string][] = [
    [200, 'delivered'], [201, 'delivered'], [204, 'delivered'],
    [408, 'retry'], [429, 'retry'], [500, 'retry'], [502, 'retry'], [503, 'retry'], [504, 'retry'],
    [301, 'give-up'], [302, 'give-up'], [400, 'give-up'], [401, 'give-up'], [403, 'give-up'], [404, 'give-up'], [409, 'give-up'], [413, 'give-up'], [422, 'give-up'],
  ];
  for (const [status, kind] of cases) assert.equal(judge(status, 'body', undefined).kind, kind, `HTTP ${status}`);
  assert.deepEqual(judge(503, '', '30'), { kind: 'retry', reason: 'HTTP 503', retryAfterMs: 30_000 });
  assert.deepEqual(judge(400, '  not a   builder blob\n', undefined), { kind: 'give-up', reason: 'HTTP 400: not a builder blob' });
});

test('S3 failures: no answer or 5xx, 408, 429 transient; other statuses and a missing blob a refusal for good', () => {
  const answered = (status: number, name: string) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
  const cases: [unknown, string][] = [
    [answered(500, 'InternalError'), 'retry'], [answered(503, 'SlowDown'), 'retry'], [answered(429, 'TooManyRequests'), 'retry'], [answered(408, 'RequestTimeout'), 'retry'],
    [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'retry'],
    [answered(404, 'NoSuchBucket'), 'give-up'], [answered(403, 'AccessDenied'), 'give-up'], [answered(301, 'PermanentRedirect'), 'give-up'],
    [Object.assign(new Error('no such file'), { code: 'ENOENT' }), 'give-up'],
  ];
  for (const [raw, kind] of cases) assert.equal(outcomeOf(raw, 's3://b/k').kind, kind, String((raw as Error).name ?? raw));
});

test('after an attempt: delivered, failed at once for a refusal, retried with backoff up to maxAttempts, then failed with the last error', () => {
  const timings = { ...DEFAULT_OUTBOX_TIMINGS, retryMinMs: 1000, retryMaxMs: 60_000, maxAttempts: 5 };
  assert.deepEqual(afterAttempt({ kind: 'delivered' }, 3, timings, 100), { state: 'delivered', nextAt: 100, error: null });
  assert.deepEqual(afterAttempt({ kind: 'give-up', reason: 'HTTP 400' }, 1, timings, 100), { state: 'failed', nextAt: 100, error: 'HTTP 400' });
  const transient = { kind: 'retry' as const, reason: 'HTTP 500: Internal server error' };
  assert.deepEqual([1, 2, 3, 4].map((n) => afterAttempt(transient, n, timings, 100)), [
    { state: 'pending', nextAt: 1100, error: transient.reason },
    { state: 'pending', nextAt: 2100, error: transient.reason },
    { state: 'pending', nextAt: 4100, error: transient.reason },
    { state: 'pending', nextAt: 8100, error: transient.reason },
  ]);
  assert.deepEqual(afterAttempt(transient, 5, timings, 100), { state: 'failed', nextAt: 100, error: 'gave up after 5 attempts: HTTP 500: Internal server error' });
  assert.equal(DEFAULT_OUTBOX_TIMINGS.maxAttempts, 100, 'a target that answers 500 forever is given up by default too');
});
