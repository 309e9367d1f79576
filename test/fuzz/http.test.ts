/**
 * Fuzzes every HTTP route of a real server (in-process, SQLite in a temp dir): malformed path
 * parameters and queries, random and wrong-typed JSON, bodies that are not JSON, wrong content
 * types, with the admin token, a viewer's and an operator's, the worker token, a wrong one and none, interleaved with valid
 * operations (schedule, execute, cancel) and a worker that takes and ends runs, so that deeper
 * states are reached. The routes come from the server itself, so a new route is fuzzed without
 * anyone listing it here.
 *
 * Asserted for every request: an answer comes (no hang), never a 5xx; every non-2xx answer is
 * `{error: {code, message}}` with a code of the catalogue; a request without a valid token never
 * gets a 2xx from an /api route; and the server keeps answering /healthz.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import fc from 'fast-check';
import { call, FakeWorker, inProcessServer } from '../helpers/in-process.js';
import { catalogueCodes, checkFuzz, fuzzSettings, PROTOTYPE_NAMES } from './fuzz-settings.js';
import type { KilnServer } from '../../src/server/index.js';
import { describeAudience } from '../../src/server/api/auth.js';

/** Longest wait for an answer (headers, then body): past it the request counts as hung. */
const REQUEST_TIMEOUT_MS = 15_000;
const CODES = catalogueCodes();
const PLATFORM = 'fuzzos';
const JOB_NAMES = ['fz-a', 'fz-b', 'fz-c'];

/** What the suite knows exists on the server, so that fuzzed requests also hit real jobs and runs. */
interface Known {
  jobs: string[];
  runs: string[];
  platforms: string[];
}

/** An answer, or the stream's first bytes for a stream that is still open (a followed console). */
interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

interface RawRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

/** Sends one request as given (the path is not normalised, unlike fetch's); rejects if it hangs. */
function send(server: KilnServer, request: RawRequest): Promise<Answer> {
  const base = new URL(server.url);
  return new Promise((resolve, reject) => {
    const describe = `${request.method} ${request.path.slice(0, 200)}`;
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer to ${describe} within ${REQUEST_TIMEOUT_MS / 1000}s`));
    }, REQUEST_TIMEOUT_MS);
    const req = http.request({
      host: base.hostname, port: base.port, method: request.method, path: request.path, agent: false,
      headers: { ...request.headers, ...(request.body ? { 'content-length': String(request.body.length) } : {}) },
    }, (response) => {
      const chunks: Buffer[] = [];
      const type = String(response.headers['content-type'] ?? '');
      // A followed console stays open while its run lasts: its first bytes are enough.
      if (response.statusCode! < 300 && /ndjson|event-stream/.test(type)) {
        clearTimeout(timer);
        response.destroy();
        resolve({ status: response.statusCode!, headers: response.headers, body: '' });
        return;
      }
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
      response.on('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`${describe}: the answer broke: ${err.message}`));
      });
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${describe}: ${err.message}`));
    });
    req.end(request.body);
  });
}

/** Percent-encodes what Node refuses in a request path (outside 0x21-0x7e), byte by byte, and nothing else. */
function pathSafe(text: string): string {
  let out = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    out += code >= 0x21 && code <= 0x7e ? char : [...Buffer.from(char, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Generators

const tricky = fc.constantFrom(
  '..', '.', '%00', '%', '%zz', '%2e%2e', '%2F', '%2f..%2f', '..%2F..%2Fjobs', ';', ';x=1', '%3B', '//', '\\', '%5C', '?', '#',
  '%E2%80%AE', '%C0%AF', '%FF', '%u0041', '*', '~', '-', 'latest', 'a'.repeat(300), ...PROTOTYPE_NAMES,
);
const weirdText = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.constantFrom('a', '.', '/', '%', '-', '_', ':', '@', ' ', '\u0000', '\u00e9', '\u{1F525}'), maxLength: 20 }),
);

/** A path parameter: something that exists, a tricky token, any text (encoded or as is), or a huge one. */
type ParamGen =
  | { kind: 'known'; what: keyof Known | 'runPrefix'; index: number }
  | { kind: 'raw'; text: string }
  | { kind: 'text'; text: string; encode: boolean }
  | { kind: 'huge'; length: number };
const paramArb: fc.Arbitrary<ParamGen> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('known' as const), what: fc.constantFrom('jobs', 'runs', 'platforms', 'runPrefix') as fc.Arbitrary<keyof Known | 'runPrefix'>, index: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('raw' as const), text: tricky }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('text' as const), text: weirdText, encode: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('huge' as const), length: fc.integer({ min: 1000, max: 20_000 }) }) },
);

function paramValue(gen: ParamGen, known: Known): string {
  if (gen.kind === 'known') {
    const pool = gen.what === 'runPrefix' ? known.runs.map((id) => id.slice(0, 4)) : known[gen.what];
    return pool.length ? encodeURIComponent(pool[gen.index % pool.length]!) : 'none';
  }
  if (gen.kind === 'raw') return pathSafe(gen.text);
  if (gen.kind === 'huge') return 'a'.repeat(gen.length);
  return gen.encode ? pathSafe(encodeURIComponent(gen.text.replace(/[\uD800-\uDFFF]/g, '?'))) : pathSafe(gen.text);
}

/** Ways to spell a route's fixed part differently (what an attacker tries against the token check). */
const literalMutation = fc.constantFrom('none', 'none', 'none', 'none', 'encode-letter', 'upper', 'double-slash', 'dot-segment', 'absolute-form', 'semicolon', 'trailing-slash');

function mutateLiteral(path: string, how: string): string {
  switch (how) {
    case 'encode-letter': return path.replace(/[a-z]/, (c) => `%${c.charCodeAt(0).toString(16)}`);
    case 'upper': return path.toUpperCase();
    case 'double-slash': return path.replace('/', '//');
    case 'dot-segment': return path.replace(/^\/api\//, '/api/x/../');
    case 'absolute-form': return `http://fuzz.invalid${path}`;
    case 'semicolon': return path.replace(/^\/api/, '/api;x');
    case 'trailing-slash': return `${path}/`;
    default: return path;
  }
}

const queryKey = fc.oneof(fc.constantFrom('job', 'status', 'platform', 'limit', 'count', 'follow', 'after', 'dryRun', ...PROTOTYPE_NAMES), weirdText);
const queryValue = fc.oneof(
  fc.constantFrom('', 'true', 'false', '1', '0', '-1', '1e308', '-1e308', 'NaN', 'Infinity', '9007199254740993', '0x10', ' 5', 'succeeded', 'queued', 'running'),
  fc.integer().map(String), weirdText,
);
const queryArb = fc.option(fc.array(fc.tuple(queryKey, queryValue, fc.boolean()), { maxLength: 4 }), { nil: undefined });

function queryString(query: [string, string, boolean][] | undefined): string {
  if (!query) return '';
  return '?' + query.map(([k, v, encode]) => (encode ? `${encodeURIComponent(k.replace(/[\uD800-\uDFFF]/g, '?'))}=${encodeURIComponent(v.replace(/[\uD800-\uDFFF]/g, '?'))}` : `${pathSafe(k)}=${pathSafe(v)}`)).join('&');
}

const specialNumber = fc.constantFrom(1e308, -1e308, 2 ** 53 + 2, -(2 ** 53), 2 ** 53 - 1, 8_640_000_000_000_000, 100_000_000 * 86_400_000, -1, 0, -0, 0.5, 1e-300, 86_400_000 * 366 * 10_000, 2 ** 31, 'NaN', 'Infinity', '-1', '', null, true, [], {});
/** Any JSON value, bent towards what breaks parsers: huge and negative numbers, numeric strings, nesting. */
const value: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: specialNumber },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }).map((s) => s.repeat(1 + (s.length % 7) * 300)) },
  { weight: 1, arbitrary: fc.constantFrom(...PROTOTYPE_NAMES) },
);

const JOB_FIELDS = ['name', 'platform', 'script', 'template', 'vars', 'env', 'labels', 'schedule', 'period', 'paused', 'overlap', 'catchUp',
  'timeoutMs', 'idleTimeoutMs', 'retries', 'failureRetries', 'artifacts', 'artifactsOnFailure', 'sandbox', 'next', 'by', 'dryRun', 'keepRuns', 'keepForMs'];
const fieldName = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...JOB_FIELDS) }, { weight: 2, arbitrary: fc.constantFrom(...PROTOTYPE_NAMES) }, { weight: 1, arbitrary: weirdText });

/** A valid job body, with some fields replaced by fuzz. */
const scheduleArb = fc.oneof(
  fc.record({ kind: fc.constant('every'), everyMs: fc.oneof(fc.integer({ min: -10, max: 10 ** 9 }), specialNumber) }),
  fc.record({ kind: fc.constant('cron'), expr: fc.oneof(fc.constantFrom('* * * * *', '0 0 31 2 *', '*/0 * * * *', '@yearly', '60 * * * *', '0 0 * * 8', 'L W # ?'), weirdText), tz: fc.oneof(fc.constantFrom('UTC', 'Europe/Paris', 'Mars/Olympus', '+25:00', ''), weirdText) }),
  fc.record({ kind: fc.constantFrom('period', 'weird', ...PROTOTYPE_NAMES), period: fc.constantFrom('hourly', 'daily', 'weekly', 'never', 'monthly') }),
);
const mutatedJob = fc.record({
  base: fc.record({
    name: fc.constantFrom(...JOB_NAMES), platform: fc.constantFrom(PLATFORM, 'other-os'), script: fc.constant('echo fuzz'), period: fc.constant('never'),
  }),
  changes: fc.array(fc.tuple(fieldName, fc.oneof(value, scheduleArb, fc.dictionary(fc.oneof(fc.constantFrom(...PROTOTYPE_NAMES), fc.string({ maxLength: 8 })), value, { maxKeys: 3 }))), { maxLength: 4 }),
}).map(({ base, changes }) => [...Object.entries(base), ...changes] as [string, unknown][]);

/** Object text written by hand, so that `__proto__` becomes a real key of the JSON. */
function objectText(entries: [string, unknown][]): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`).join(',')}}`;
}

type BodyGen =
  | { kind: 'none' }
  | { kind: 'entries'; entries: [string, unknown][] }
  | { kind: 'json'; value: unknown }
  | { kind: 'text'; text: string }
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'nested'; depth: number; open: string }
  | { kind: 'oversized' };
const bodyArb: fc.Arbitrary<BodyGen> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 5, arbitrary: mutatedJob.map((entries) => ({ kind: 'entries' as const, entries })) },
  { weight: 3, arbitrary: fc.array(fc.tuple(fieldName, value), { maxLength: 5 }).map((entries) => ({ kind: 'entries' as const, entries })) },
  { weight: 2, arbitrary: value.map((v) => ({ kind: 'json' as const, value: v })) },
  { weight: 2, arbitrary: fc.oneof(fc.constantFrom('{"a":', '[', '{', '}', 'nul', '{"name": "x",}', "{'name':'x'}", '\u0000', '\uFEFF{}', '1e999', '"\\ud800"'), weirdText).map((text) => ({ kind: 'text' as const, text })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2000 }).map((bytes) => ({ kind: 'bytes' as const, bytes })) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('nested' as const), depth: fc.integer({ min: 100, max: 100_000 }), open: fc.constantFrom('[', '{"a":') }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'oversized' as const }) },
);

function bodyBytes(gen: BodyGen): Buffer | undefined {
  switch (gen.kind) {
    case 'none': return undefined;
    case 'entries': return Buffer.from(objectText(gen.entries));
    case 'json': return Buffer.from(JSON.stringify(gen.value) ?? 'null');
    case 'text': return Buffer.from(gen.text);
    case 'bytes': return Buffer.from(gen.bytes);
    case 'nested': return Buffer.from(gen.open.repeat(gen.depth) + '1' + (gen.open === '[' ? ']' : '}').repeat(gen.depth));
    case 'oversized': return Buffer.alloc(1024 * 1024 + 10, 'a');
  }
}

const contentType = fc.constantFrom(
  'application/json', 'application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'text/plain',
  'application/x-www-form-urlencoded', 'multipart/form-data; boundary=zz', 'application/octet-stream', 'text/json', '*/*', 'application/', ';', undefined,
);
const tokenKind = fc.constantFrom('admin', 'admin', 'admin', 'viewer', 'operator', 'worker', 'none', 'wrong', 'malformed');
const headerValue = fc.oneof(fc.constantFrom('', '-1', '0', '1e308', 'NaN', '9'.repeat(40), 'fuzz-worker', 'f'.repeat(64), '777', '0755', ...PROTOTYPE_NAMES), fc.string({ unit: fc.constantFrom('a', '0', '.', '/', '-', ' ', 'é'), maxLength: 30 }));
const extraHeaders = fc.dictionary(fc.constantFrom('x-kiln-worker', 'x-kiln-size', 'x-kiln-sha256', 'x-kiln-mode', 'range', 'if-none-match', 'accept', 'x-kiln-delivery'), headerValue, { maxKeys: 4 });

/** One fuzzed request on one route. */
const fuzzRequest = fc.record({
  kind: fc.constant('fuzz' as const),
  route: fc.nat(),
  otherMethod: fc.option(fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND'), { freq: 8, nil: undefined }),
  literal: literalMutation,
  params: fc.array(paramArb, { minLength: 3, maxLength: 3 }),
  wildcard: fc.oneof(paramArb, fc.constantFrom('../../../../etc/passwd', '..%2F..%2Fkiln.db', 'a/b/../../../x', '%2e%2e/%2e%2e/x', 'out//x', '/abs').map((text) => ({ kind: 'raw' as const, text }))),
  query: queryArb,
  body: bodyArb,
  contentType,
  token: tokenKind,
  headers: extraHeaders,
});
/** A valid operation, so that fuzzed requests meet jobs, queued, running and ended runs. */
const validOp = fc.oneof(
  fc.record({
    kind: fc.constant('schedule' as const), name: fc.constantFrom(...JOB_NAMES),
    platform: fc.constantFrom(PLATFORM, PLATFORM, 'other-os', 'constructor', 'toString', 'valueOf', 'hasOwnProperty'),
    schedule: fc.oneof(
      fc.constant({ kind: 'period', period: 'never' }),
      fc.record({ kind: fc.constant('every'), everyMs: fc.constantFrom(60_000, 86_400_000 * 365, 8_640_000_000_000_000, 2 ** 53 - 1, 100_000_000 * 86_400_000) }),
      fc.record({ kind: fc.constant('cron'), expr: fc.constantFrom('0 0 29 2 *', '* * * * *', '0 0 1 1 *'), tz: fc.constantFrom('UTC', 'Pacific/Kiritimati', 'America/St_Johns') }),
    ),
    labels: fc.dictionary(fc.constantFrom('arch', ...PROTOTYPE_NAMES), fc.constantFrom('x86_64', ...PROTOTYPE_NAMES), { maxKeys: 2 }),
  }),
  fc.record({
    kind: fc.constant('reschedule' as const), name: fc.constantFrom(...JOB_NAMES),
    next: fc.constantFrom('2030-01-01T00:00:00Z', '9999-12-31T23:59:59.999Z', '+275760-09-13T00:00:00.000Z', '2026-02-30T00:00:00Z', '2031-06-01T12:00:00+14:00'),
  }),
  fc.record({ kind: fc.constant('modify' as const), name: fc.constantFrom(...JOB_NAMES), paused: fc.boolean(), overlap: fc.constantFrom('skip', 'queue', 'cancel') }),
  fc.record({ kind: fc.constant('execute' as const), name: fc.constantFrom(...JOB_NAMES) }),
  fc.record({ kind: fc.constant('cancel' as const), index: fc.nat() }),
);
const action = fc.oneof({ weight: 5, arbitrary: fuzzRequest }, { weight: 1, arbitrary: validOp });
type Action = typeof action extends fc.Arbitrary<infer A> ? A : never;

// ---------------------------------------------------------------------------------------------

/** Checks one answer against the suite's promises. */
function checkAnswer(what: string, method: string, answer: Answer): void {
  assert.ok(answer.status < 500, `${what}: answered ${answer.status} ${answer.body.slice(0, 500)}`);
  if (answer.status < 300 || answer.status === 304 || method === 'HEAD') return;
  let parsed: { error?: { code?: unknown; message?: unknown } };
  try {
    parsed = JSON.parse(answer.body);
  } catch {
    assert.fail(`${what}: answered ${answer.status} with a body that is not JSON: ${answer.body.slice(0, 300)}`);
  }
  assert.equal(typeof parsed.error?.code, 'string', `${what}: ${answer.status} without {error: {code}}: ${answer.body.slice(0, 300)}`);
  assert.ok(CODES.has(parsed.error!.code as string), `${what}: error code ${String(parsed.error!.code)} is not in the catalogue`);
  assert.equal(typeof parsed.error!.message, 'string', `${what}: error without a message`);
}

test('every HTTP route survives fuzzed paths, queries, bodies and tokens: no 5xx, no hang, catalogued refusals, /healthz stays up', async (t) => {
  const server = await inProcessServer(t);
  const routes = server.routes;
  assert.ok(routes.some((r) => r.url === '/api/jobs') && routes.some((r) => r.url === '/api/worker'), 'the routes are read from the server');
  const known: Known = { jobs: [], runs: [], platforms: [PLATFORM, 'other-os'] };

  // A worker that takes each run, prints, keeps an artifact and ends it: runs reach every state.
  const worker = await FakeWorker.connect(t, server);
  await worker.hello({ name: 'fuzz-worker', platform: PLATFORM });
  void (async () => {
    for (let n = 0; ; n += 1) {
      const frame = await worker.next<{ type: string; run?: { id: string }; runId?: string }>();
      if (frame.type === 'run.assign' && frame.run) {
        const runId = frame.run.id;
        worker.send({ v: 1, type: 'run.output', runId, lines: [{ seq: 0, ts: Date.now(), text: `line ${n}` }] });
        await fetch(`${server.url}/api/runs/${runId}/artifacts/out/a${n % 3}.txt`, {
          method: 'PUT', body: `artifact ${n}`,
          headers: { authorization: `Bearer ${server.tokens.worker}`, 'x-kiln-worker': 'fuzz-worker', 'x-kiln-size': String(`artifact ${n}`.length), 'x-kiln-mode': '644' },
        }).then((r) => r.arrayBuffer()).catch(() => undefined);
        worker.send({ v: 1, type: 'run.finished', runId, result: { kind: 'exited', code: n % 2 } });
      } else if (frame.type === 'run.cancel' && frame.runId) {
        worker.send({ v: 1, type: 'run.finished', runId: frame.runId, result: { kind: 'signalled', signal: 'SIGTERM' }, stoppedBy: 'cancel' });
      }
    }
  })();

  // A token of each role below admin (the admin's is the data dir's).
  const roleToken: Record<string, string> = {};
  for (const role of ['viewer', 'operator']) {
    const created = await call(server, 'POST', '/api/tokens', { name: `fuzz-${role}`, role });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    roleToken[role] = created.body.token;
  }

  let inputs = 0;
  const tokenFor = (kind: string): Record<string, string> => {
    switch (kind) {
      case 'admin': return { authorization: `Bearer ${server.tokens.admin}` };
      case 'viewer':
      case 'operator': return { authorization: `Bearer ${roleToken[kind]}` };
      case 'worker': return { authorization: `Bearer ${server.tokens.worker}` };
      case 'wrong': return { authorization: `Bearer ${server.tokens.admin.slice(0, -1)}x` };
      case 'malformed': return { authorization: 'Basic Zm9vOmJhcg==' };
      default: return {};
    }
  };

  /** One action, checked. */
  const perform = async (a: Action): Promise<void> => {
    inputs += 1;
    if (a.kind === 'schedule') {
      const reply = await call(server, 'POST', '/api/jobs', { name: a.name, platform: a.platform, script: 'echo valid', schedule: a.schedule, labels: a.labels });
      assert.ok(reply.status < 500, `schedule: ${JSON.stringify(reply)}`);
      if (reply.status < 300) known.runs.push(...reply.body.runs.map((r: { id: string }) => r.id));
      if (!known.jobs.includes(a.name)) known.jobs.push(a.name);
      if (!known.platforms.includes(a.platform)) known.platforms.push(a.platform);
      return;
    }
    if (a.kind === 'reschedule' || a.kind === 'modify') {
      const reply = a.kind === 'reschedule'
        ? await call(server, 'POST', `/api/jobs/${a.name}/reschedule`, { next: a.next })
        : await call(server, 'PATCH', `/api/jobs/${a.name}`, { paused: a.paused, overlap: a.overlap });
      assert.ok(reply.status < 500, `${a.kind}: ${JSON.stringify(reply)}`);
      return;
    }
    if (a.kind === 'execute') {
      const reply = await call(server, 'POST', `/api/jobs/${a.name}/execute`, {});
      assert.ok(reply.status < 500, `execute: ${JSON.stringify(reply)}`);
      if (reply.status < 300) known.runs.push(...reply.body.runs.map((r: { id: string }) => r.id));
      return;
    }
    if (a.kind === 'cancel') {
      if (known.runs.length === 0) return;
      const reply = await call(server, 'POST', `/api/runs/${known.runs[a.index % known.runs.length]}/cancel`, {});
      assert.ok(reply.status < 500, `cancel: ${JSON.stringify(reply)}`);
      return;
    }
    const route = routes[a.route % routes.length]!;
    const method = a.otherMethod ?? route.method;
    const params = [...a.params];
    let path = route.url.split('/').map((segment) => {
      if (segment.startsWith(':')) return paramValue(params.shift() ?? { kind: 'raw', text: 'x' }, known);
      if (segment === '*') return a.wildcard.kind === 'raw' ? pathSafe(a.wildcard.text) : paramValue(a.wildcard, known);
      return segment;
    }).join('/');
    path = mutateLiteral(path, a.literal) + queryString(a.query);
    // GET and HEAD carry no body (a client cannot send one through most proxies anyway).
    const body = method === 'GET' || method === 'HEAD' ? undefined : bodyBytes(a.body);
    const headers: Record<string, string> = { ...a.headers, ...tokenFor(a.token), ...(a.contentType && body ? { 'content-type': a.contentType } : {}) };
    const what = `${method} ${path.slice(0, 300)} (route ${route.method} ${route.url}, token ${a.token}, ${body?.length ?? 0} body bytes${a.contentType ? `, ${a.contentType}` : ''})`;
    const answer = await send(server, { method, path, headers, body });
    checkAnswer(what, method, answer);
    // Nobody gets in without the right token, however the path is spelled: the audience is the
    // one the route declared.
    const needed = route.audience;
    if (needed !== 'public' && method === route.method) {
      const holds = needed === 'worker' ? a.token === 'worker' : (needed as readonly string[]).includes(a.token);
      if (!holds) assert.ok(answer.status >= 300, `${what}: a request without a ${describeAudience(needed)} token got ${answer.status}`);
    }
  };

  const property = fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 8 }), fc.boolean(), async (actions, together) => {
    // Sometimes all at once: races between requests (two schedules of one name, a cancel during an
    // execute) must end in a catalogued answer too.
    if (together) await Promise.all(actions.map(perform));
    else for (const a of actions) await perform(a);
    const health = await send(server, { method: 'GET', path: '/healthz', headers: {} });
    assert.equal(health.status, 200, `/healthz answered ${health.status}`);
  });

  const settings = fuzzSettings(400);
  await checkFuzz('http', property, settings, () => inputs);
  // After everything, the listings every user reads still answer.
  for (const path of ['/api/info', '/api/jobs', '/api/runs?limit=500', '/api/workers']) {
    const reply = await call(server, 'GET', path);
    assert.equal(reply.status, 200, `${path}: ${JSON.stringify(reply.body).slice(0, 300)}`);
  }
  assert.ok(known.runs.length > 0, 'valid operations ran too');
});
