/**
 * What a test needs of its machine beyond Node and npm (bubblewrap, a Docker engine, a writable
 * cgroup, root, a program on PATH), checked the way the code under test would find it. A test
 * whose requirement is missing is skipped with the reason, so `npm ci && npm test` passes on a
 * fresh machine. With KILN_TEST_REQUIRE_ALL=1 (.ci/run sets it) a missing requirement is a
 * failure instead: CI must never pass by skipping a suite.
 *
 *   test('...', { skip: needs('bwrap', 'cgroup') }, async (t) => { ... })   // at module level
 *   if (skipUnless(t, whyMissing('python3'))) return;                       // inside a test
 */
import assert from 'node:assert/strict';
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { checkBwrap } from '../../src/worker/sandbox/bwrap-sandbox.js';
import { dockerAvailable } from './docker-image.js';
import { postgresReason } from './postgres.js';

/** The variable that turns missing requirements into failures (.ci/run exports it). */
export const REQUIRE_ALL_ENV = 'KILN_TEST_REQUIRE_ALL';

/**
 * `bwrap`: bubblewrap on PATH that can make the job namespaces (the worker's own check);
 * `docker`: an engine that answers; `cgroup`: memory and pids groups the worker can create;
 * `root`: uid 0 (mount, say); `postgres`: a PostgreSQL server that answers at KILN_TEST_POSTGRES_URL
 * (test/helpers/postgres.ts); any other word: a program of that name on PATH.
 */
export type Requirement = 'bwrap' | 'docker' | 'cgroup' | 'root' | 'postgres' | (string & {});

/** Debian packages of programs tests use, for the hint in a skip reason. */
const PACKAGES: Record<string, string> = {
  pgrep: 'procps', ps: 'procps', script: 'bsdutils', 'docker-registry': 'docker-registry', python3: 'python3',
  openssl: 'openssl', jq: 'jq', dash: 'dash', curl: 'curl', mount: 'mount', chromium: 'chromium', prometheus: 'prometheus', postgres: 'postgresql',
};

export const requireAll = (): boolean => process.env[REQUIRE_ALL_ENV] === '1';

/** The file `program` would be run from (PATH searched as execvp does), or undefined. */
export function onPath(program: string): string | undefined {
  if (program.includes('/')) return isExecutable(program) ? program : undefined;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const file = path.join(dir || '.', program);
    if (isExecutable(file)) return file;
  }
  return undefined;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

const cache = new Map<string, string | undefined>();

/** Why `requirement` is not met here, or undefined when it is. Checked once per process. */
export function missingReason(requirement: Requirement): string | undefined {
  if (!cache.has(requirement)) cache.set(requirement, check(requirement));
  return cache.get(requirement);
}

function check(requirement: Requirement): string | undefined {
  switch (requirement) {
    case 'bwrap':
      try {
        checkBwrap();
        return undefined;
      } catch (raw) {
        return `needs bubblewrap: ${(raw as Error).message.replace(/^--sandbox bwrap: /, '')} (.ci/run installs it)`;
      }
    case 'docker':
      return dockerAvailable();
    case 'cgroup':
      return cgroupReason();
    case 'root':
      return process.getuid?.() === 0 ? undefined : 'needs root (CI runs as root)';
    case 'postgres':
      return postgresReason();
    default:
      return onPath(requirement)
        ? undefined
        : `needs ${requirement} on PATH (Debian/Ubuntu: apt-get install ${PACKAGES[requirement] ?? requirement}; .ci/run installs it)`;
  }
}

/** A worker makes memory and pids groups: v1 hierarchies it can write, or a v2 root offering both. */
function cgroupReason(): string | undefined {
  const root = '/sys/fs/cgroup';
  try {
    accessSync(path.join(root, 'memory'), constants.W_OK);
    accessSync(path.join(root, 'pids'), constants.W_OK);
    return undefined;
  } catch {
    // Not v1 (or not writable): try v2.
  }
  const controllers = path.join(root, 'cgroup.controllers');
  if (existsSync(controllers)) {
    const offered = readFileSync(controllers, 'utf8');
    if (/\bmemory\b/.test(offered) && /\bpids\b/.test(offered)) {
      try {
        accessSync(root, constants.W_OK);
        return undefined;
      } catch {
        return `needs a writable cgroup: ${root} (v2) is not writable by this user`;
      }
    }
  }
  return `needs a writable cgroup (v1 memory+pids under ${root}, or v2 with memory and pids): none here`;
}

/** Why any of `requirements` is not met here (joined), or undefined: pure, for use anywhere. */
export function whyMissing(...requirements: Requirement[]): string | undefined {
  const reasons = requirements.map(missingReason).filter((r): r is string => r !== undefined);
  return reasons.length === 0 ? undefined : reasons.join('; ');
}

/** Reasons already turned into a failing test in this file (one failure per reason). */
const failed = new Set<string>();

/**
 * For a test's `skip` option, at module level: false when every requirement is met, else the
 * reason to skip. With KILN_TEST_REQUIRE_ALL=1, a missing requirement also registers a failing
 * test that names it, so the run fails (the dependent tests are skipped rather than run into
 * confusing errors).
 */
export function needs(...requirements: Requirement[]): string | false {
  const reason = whyMissing(...requirements);
  if (reason === undefined) return false;
  if (!requireAll()) return reason;
  if (!failed.has(reason)) {
    failed.add(reason);
    test(`requirement missing: ${reason}`, () => {
      assert.fail(`${REQUIRE_ALL_ENV}=1 makes a missing requirement a failure (CI must not skip a suite): ${reason}`);
    });
  }
  return `${reason} (and this run fails: ${REQUIRE_ALL_ENV}=1)`;
}

/**
 * Inside a running test: skips it when `reason` (from `whyMissing`, or a capability found missing only
 * at run time) is set and returns true; with KILN_TEST_REQUIRE_ALL=1 fails the test instead.
 */
export function skipUnless(t: TestContext, reason: string | false | undefined): boolean {
  if (!reason) return false;
  if (requireAll()) assert.fail(`${REQUIRE_ALL_ENV}=1 makes a missing requirement a failure (CI must not skip a suite): ${reason}`);
  t.skip(reason);
  return true;
}
