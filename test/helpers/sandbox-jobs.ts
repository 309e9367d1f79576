/**
 * For tests of jobs in the bwrap sandbox: finding processes by a marker (reading /proc, so no
 * pgrep is needed), and running node inside the sandbox whose root holds only the system dirs.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { SYSTEM_DIRS } from '../../src/worker/sandbox/bwrap-sandbox.js';

/** Processes whose command line contains `marker` (this process excluded), as "PID COMMAND". */
export function processesWith(marker: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
      if (command.includes(marker)) found.push(`${entry} ${command}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** Waits until no process has `marker` in its command line (another process's end gives no event to await). */
export async function noneLeft(marker: string, withinMs = 10_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (processesWith(marker).length > 0) {
    if (Date.now() > deadline) assert.fail(`still running: ${processesWith(marker).join('; ')}`);
    await delay(50);
  }
}

/** Waits until some process has `marker` in its command line; fails past `withinMs`. */
export async function someRunning(marker: string, withinMs = 30_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (processesWith(marker).length === 0) {
    if (Date.now() > deadline) assert.fail(`nothing with '${marker}' started within ${withinMs} ms`);
    await delay(50);
  }
}

/**
 * Worker arguments that make this node visible in the sandbox: none when it lives in a system dir
 * (/usr/bin/node), else a read-only bind of its install prefix (a node under /home, say).
 */
export function nodeBinds(): string[] {
  const prefix = path.dirname(path.dirname(process.execPath));
  const inSystem = SYSTEM_DIRS.some((dir) => !path.relative(dir, process.execPath).startsWith('..'));
  return inSystem ? [] : ['--ro-bind', prefix];
}

/** A shell command that runs `source` (JavaScript) with the sandbox's node, free of quoting trouble. */
export function nodeCommand(source: string): string {
  return `${process.execPath} -e "$(echo ${Buffer.from(source).toString('base64')} | base64 -d)"`;
}
