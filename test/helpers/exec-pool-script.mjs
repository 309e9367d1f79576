#!/usr/bin/env node
// A stand-in "cloud CLI" for the exec provider's tests: `exec-pool-script.mjs STATE_DIR VERB`
// reads the provider's JSON on stdin and starts, checks, stops or lists `kiln worker` processes
// (detached, so they outlive the server as a VM or jail would). Every call is logged to
// STATE_DIR/calls.log (without the token). EXEC_FAIL=1 makes `start` fail as a full cloud would.
import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const KILN_BIN = fileURLToPath(new URL('../../bin/kiln.mjs', import.meta.url));
const [stateDir, verb] = process.argv.slice(2);
let text = '';
for await (const chunk of process.stdin) text += chunk;
const input = JSON.parse(text);
const { env, ...shown } = input;
appendFileSync(path.join(stateDir, 'calls.log'), JSON.stringify({ verb, ...shown, envKeys: env ? Object.keys(env).sort() : undefined }) + '\n');

// Alive, and not a zombie waiting for a reaper that may never come.
const alive = (pid) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};
const stateFile = (ref) => path.join(stateDir, `instance-${ref}.json`);

if (verb === 'start') {
  if (process.env.EXEC_FAIL === '1') {
    process.stderr.write('starting...\nno capacity left in this region\n');
    process.exit(1);
  }
  const child = spawn(process.execPath, [KILN_BIN, ...input.command.slice(1)], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  writeFileSync(stateFile(child.pid), JSON.stringify({ id: input.id, pool: input.pool, name: input.name, ref: String(child.pid), ...(input.run ? { run: input.run } : {}) }));
  process.stdout.write(JSON.stringify({ ref: String(child.pid) }));
} else if (verb === 'check') {
  const up = alive(Number(input.ref));
  process.stdout.write(JSON.stringify(up ? { alive: true } : { alive: false, reason: `process ${input.ref} is gone` }));
} else if (verb === 'stop') {
  const pid = Number(input.ref);
  if (alive(pid)) process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 20_000;
  while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(stateFile(input.ref), { force: true });
} else if (verb === 'list') {
  const items = readdirSync(stateDir).filter((f) => f.startsWith('instance-')).map((f) => JSON.parse(readFileSync(path.join(stateDir, f), 'utf8')));
  process.stdout.write(JSON.stringify(items.filter((item) => item.id.startsWith(`${input.owner}/`))));
} else {
  process.stderr.write(`unknown verb ${verb}\n`);
  process.exit(2);
}
