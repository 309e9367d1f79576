/** The rules of roles, token expiry, sessions and CSRF (src/core/roles.ts), and the session cookie's text. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cancelledBy, csrfRefusal, isRole, sameSecret, SESSION_MS, sessionExpiry, shouldNoteUse, TOKEN_NAME, tokenRefusal } from '../../src/core/index.js';
import { csrfFor, sessionClearCookie, sessionCookie, sessionSetCookie } from '../../src/server/sessions.js';

const T = Date.UTC(2026, 11, 6, 12);

test('a token is refused once revoked or expired, with a line that says which and when', () => {
  const cases: [string, { expiresAt: number | null; revokedAt: number | null }, number, RegExp | undefined][] = [
    ['no expiry', { expiresAt: null, revokedAt: null }, T, undefined],
    ['before its expiry', { expiresAt: T + 1, revokedAt: null }, T, undefined],
    ['at its expiry', { expiresAt: T, revokedAt: null }, T, /^the token 'alice' expired at 2026-12-06T12:00:00.000Z$/],
    ['after its expiry', { expiresAt: T - 1000, revokedAt: null }, T, /expired at 2026-12-06T11:59:59.000Z/],
    ['revoked', { expiresAt: null, revokedAt: T - 1 }, T, /^the token 'alice' was revoked at /],
    ['revoked and expired: revoked says more', { expiresAt: T - 5, revokedAt: T - 1 }, T, /was revoked/],
  ];
  for (const [what, standing, now, expected] of cases) {
    const refusal = tokenRefusal({ name: 'alice', ...standing }, now);
    if (expected === undefined) assert.equal(refusal, undefined, what);
    else assert.match(refusal ?? '', expected, what);
  }
});

test('a session lasts 12 hours, or until its token expires if sooner', () => {
  assert.equal(sessionExpiry(T, null), T + SESSION_MS);
  assert.equal(sessionExpiry(T, T + 60_000), T + 60_000);
  assert.equal(sessionExpiry(T, T + 2 * SESSION_MS), T + SESSION_MS);
});

test('a token\'s last use is written at most once a minute (and again if the clock went back)', () => {
  assert.equal(shouldNoteUse(null, T), true);
  assert.equal(shouldNoteUse(T - 59_999, T), false);
  assert.equal(shouldNoteUse(T - 60_000, T), true);
  assert.equal(shouldNoteUse(T + 5, T), true);
});

test('cookie-only requests: reads pass, changes need the matching X-Kiln-CSRF, cross-site never', () => {
  const cases: [string, string | undefined, string | undefined, RegExp | undefined][] = [
    ['GET', undefined, undefined, undefined],
    ['HEAD', 'same-origin', undefined, undefined],
    ['GET', 'cross-site', undefined, /cross-site/],
    ['POST', 'same-origin', undefined, /must carry the X-Kiln-CSRF header/],
    ['POST', undefined, '', /must carry/],
    ['DELETE', undefined, 'nope', /does not match/],
    ['PATCH', 'same-origin', 'good', undefined],
    ['POST', 'cross-site', 'good', /cross-site/],
  ];
  for (const [method, site, header, expected] of cases) {
    const refusal = csrfRefusal(method, site, header, 'good');
    if (expected === undefined) assert.equal(refusal, undefined, `${method} ${site} ${header}`);
    else assert.match(refusal ?? '', expected, `${method} ${site} ${header}`);
  }
});

test("a cancel is recorded as the credential's name; the client's own word is only a note after it", () => {
  const cases: [string, string | undefined, string][] = [
    ['otto', undefined, 'otto'],
    ['otto', 'otto', 'otto'],
    ['otto', 'root', 'otto (as root)'],
    ['admin', 'alice', 'admin (as alice)'],
  ];
  for (const [name, note, expected] of cases) assert.equal(cancelledBy(name, note), expected, `${name} ${note}`);
});

test('secrets compare equal only when equal, whatever their types and lengths', () => {
  assert.equal(sameSecret('good', 'good'), true);
  for (const other of ['goo', 'goodd', 'Good', '', undefined, ['good'], 1]) assert.equal(sameSecret(other, 'good'), false, String(other));
});

test('roles and token names', () => {
  assert.deepEqual(['viewer', 'operator', 'admin', 'root', 'Admin', ''].map(isRole), [true, true, true, false, false, false]);
  for (const good of ['alice', 'ci-nightly', 'bob@example.org', 'a', 'x'.repeat(64)]) assert.match(good, TOKEN_NAME);
  for (const bad of ['', '-x', '.x', 'a b', 'a/b', 'x'.repeat(65), 'é']) assert.doesNotMatch(bad, TOKEN_NAME);
});

test('the session cookie: read from a Cookie header among others, set HttpOnly and SameSite=Strict, Secure over TLS', () => {
  const id = 'A'.repeat(43);
  assert.equal(sessionCookie(`a=1; kiln_session=${id}; b=2`), id);
  assert.equal(sessionCookie(`kiln_session=${id}`), id);
  assert.equal(sessionCookie('kiln_session=short'), undefined, 'not the shape of an id');
  assert.equal(sessionCookie(`kiln_session=${id};x`), id);
  assert.equal(sessionCookie(`xkiln_session=${id}`), undefined);
  assert.equal(sessionCookie(undefined), undefined);
  assert.equal(sessionSetCookie(id, 3_600_000, false), `kiln_session=${id}; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict`);
  assert.match(sessionSetCookie(id, 3_600_000, true), /; Secure$/);
  assert.match(sessionClearCookie(false), /^kiln_session=; Path=\/; Max-Age=0; HttpOnly; SameSite=Strict$/);
  // Over TLS: the __Host- prefix (Secure, Path=/, no Domain), and only that name is read.
  assert.equal(sessionSetCookie(id, 3_600_000, true), `__Host-kiln_session=${id}; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict; Secure`);
  assert.equal(sessionClearCookie(true), '__Host-kiln_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict; Secure');
  assert.equal(sessionCookie(`__Host-kiln_session=${id}`, true), id);
  assert.equal(sessionCookie(`kiln_session=${id}`, true), undefined, 'over TLS, a cookie without the prefix (one a plain-HTTP page could set) is not read');
  assert.equal(sessionCookie(`__Host-kiln_session=${id}`, false), undefined);
  assert.notEqual(csrfFor(id), csrfFor('B'.repeat(43)));
  assert.equal(csrfFor(id).includes(id), false);
});
