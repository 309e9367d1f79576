/**
 * Loaded into every test process by the npm test scripts (`--import ./test/helpers/guard.ts`;
 * test/unit/test-guard.test.ts checks they all do), so no test file can hang a run or leave a
 * process behind, whoever wrote it:
 *
 * - In each test file's process (node --test runs one per file): a deadline for the whole file
 *   (KILN_TEST_FILE_DEADLINE, seconds; node's --test-timeout is per test), and a marker in the
 *   environment (KILN_TEST_OWNER) that every process the file starts inherits. When the file ends
 *   (normally, at its deadline, or on SIGTERM/SIGINT from the runner) every process still carrying
 *   its marker is SIGKILLed; if one was found after a normal end, the file fails and names it.
 * (Node 20 stops a file that overruns --test-timeout with SIGTERM and runs no `after` hooks then:
 * that is how pools.test.ts once left a `kiln server` running. The runner itself does not load
 * --import modules on Node 20, so a file process killed with SIGKILL is beyond this guard.)
 *
 * Processes that replace their environment (a sandboxed job, a pool instance) are not marked:
 * those stop with their parent by their own mechanisms, which their own tests check.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const OWNER = 'KILN_TEST_OWNER';
/** Default deadline of one test file, in seconds, when the script sets none. */
const DEFAULT_FILE_DEADLINE_S = 600;

/** Pids (not this process) whose initial environment has exactly `name=value`. */
export function markedProcesses(name: string, value: string): { pid: number; command: string }[] {
  const found: { pid: number; command: string }[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return found; // No /proc (not Linux): nothing can be checked.
  }
  const needle = `${name}=${value}`;
  // tsx's esbuild service, started by this very process to compile TypeScript: it goes when its
  // stdin (our pipe) closes, and is not something a test left.
  const tooling = /\/esbuild --service=/;
  for (const entry of entries) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (!environ.includes(needle)) continue;
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
      if (!tooling.test(command)) found.push({ pid: Number(entry), command });
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

/** SIGKILLs the marked processes; returns those it found. */
function killMarked(name: string, value: string): { pid: number; command: string }[] {
  const found = markedProcesses(name, value);
  for (const { pid } of found) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

const describeAll = (found: { pid: number; command: string }[]) => found.map((p) => `${p.pid} ${p.command.slice(0, 200)}`).join('; ');

if (process.env.NODE_TEST_CONTEXT) {
  // A test file's process.
  const file = path.relative(process.cwd(), process.argv[1] ?? 'test file');
  const marker = `${process.ppid}/${process.pid}`;
  process.env[OWNER] = marker;
  let ended = false;
  const end = (why: string | undefined) => {
    if (ended) return;
    ended = true;
    const left = killMarked(OWNER, marker);
    if (why) process.stderr.write(`\nkiln test guard: ${file} ${why}; killed ${left.length} process(es) it started${left.length ? `: ${describeAll(left)}` : ''}\n`);
    else if (left.length > 0) {
      process.stderr.write(`\nkiln test guard: ${file} left ${left.length} process(es) running (killed now): ${describeAll(left)}\n`);
      process.exitCode = 1;
    }
  };
  const seconds = Number(process.env.KILN_TEST_FILE_DEADLINE ?? DEFAULT_FILE_DEADLINE_S);
  setTimeout(() => {
    end(`passed its deadline of ${seconds} s (KILN_TEST_FILE_DEADLINE)`);
    process.exit(1);
  }, seconds * 1000).unref();
  process.on('exit', () => end(undefined));
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      // The runner sends SIGTERM when the file overran --test-timeout: clean up, then go.
      end(`was stopped by ${signal}`);
      process.exit(1);
    });
  }
}
