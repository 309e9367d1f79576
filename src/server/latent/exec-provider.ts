/**
 * The `exec` provider: your own commands make, check, stop and list instances (FreeBSD jails, VMs,
 * any cloud CLI). Each command gets one JSON object on stdin and answers JSON on stdout; a command
 * that exits non-zero failed, and the last line it wrote on stderr says why. The instance's token
 * travels on stdin only (never in arguments, which `ps` shows). Protocol: docs/pools.md (exec).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import * as z from 'zod';
import { formatDuration, MAX_TIMER_MS, parseDuration } from '../../core/index.js';
import type { ProviderContext } from './providers.js';
import { instanceEnvironment, localCaEnvironment, workerArguments, type InstanceHandle, type InstanceSpec, type OwnInstance, type Provider } from './provider.js';

/** A command: an argv array, run as it is, or a string, run by `sh -c`. */
const command = z.union([z.array(z.string()).min(1), z.string().min(1)]);
const duration = z.string().refine((text) => parseDuration(text) !== undefined && parseDuration(text)! <= MAX_TIMER_MS, {
  message: `use a duration like 30s or 5m (at most ${formatDuration(MAX_TIMER_MS)})`,
});

/** Options of an exec pool (`options:` in its config). */
export const execOptionsSchema = z.strictObject({
  start: command,
  check: command,
  stop: command,
  list: command,
  /** Instances outlive the server (a jail, a VM): a restarted server adopts them. */
  adopt: z.boolean().default(true),
  /** The longest a command may take before it is killed and counted as failed. */
  timeout: duration.default('10m'),
  /** The server's address as the instance sees it; default: the server's own. */
  server_url: z.string().url().optional(),
  /** Extra environment for the commands (not the instance). */
  env: z.record(z.string(), z.string()).default({}),
});
export type ExecOptions = z.output<typeof execOptionsSchema>;

const startReply = z.object({ ref: z.string().min(1) }).passthrough();
const checkReply = z.object({ alive: z.boolean(), reason: z.string().optional() });
const listReply = z.array(z.object({ id: z.string(), ref: z.string(), pool: z.string().default(''), name: z.string().default(''), run: z.string().optional() }));

/** The most of a command's stdout that is read (a JSON answer is small). */
const MAX_ANSWER_BYTES = 1024 * 1024;
/** After a command exits, how long its pipes may stay open (a child it left in the background holds them). */
const PIPE_GRACE_MS = 200;

/**
 * What a command printed, once it exited 0; rejects with its last stderr line otherwise. It runs in
 * its own process group, killed whole on timeout; it is done when it exits, even if something it
 * started in the background still holds its output open.
 */
function runCommand(argv: string[], input: unknown, options: { timeoutMs: number; cwd: string; env: Record<string, string> }): Promise<string> {
  return new Promise((resolve, reject) => {
    const name = path.basename(argv[0]!);
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', LANG: 'C.UTF-8', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const settle = (error: Error | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout.destroy();
      child.stderr.destroy();
      if (error) reject(error);
      else resolve(stdout);
    };
    child.stdout.on('data', (chunk: Buffer) => {
      if (stdout.length < MAX_ANSWER_BYTES) stdout += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-4096)));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
      settle(new Error(`${name} took longer than ${Math.round(options.timeoutMs / 1000)}s and was killed`));
    }, options.timeoutMs);
    child.stdin.on('error', () => {});
    child.stdin.end(JSON.stringify(input) + '\n');
    child.on('error', (err) => settle(new Error(`cannot run ${argv[0]}: ${err.message}`)));
    child.on('exit', (code, signal) => {
      const done = () => {
        const said = stderr.trim().split('\n').at(-1) ?? '';
        settle(code === 0 ? undefined : new Error(`${name} exited ${code ?? signal}${said ? `: ${said}` : ''}`));
      };
      // Its output is read to the end, unless a background child keeps the pipes open.
      const grace = setTimeout(done, PIPE_GRACE_MS);
      child.stdout.once('close', () => {
        clearTimeout(grace);
        done();
      });
    });
  });
}

/** Parses a command's JSON answer with `schema`, or says what was wrong with it. */
function answer<T>(stdout: string, schema: z.ZodType<T>, what: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(stdout);
  } catch {
    // What it printed is not repeated: it could hold what it was given (the token).
    throw new Error(`the ${what} command did not print JSON (${stdout.length} characters on stdout)`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`the ${what} command's answer is not as expected: ${issue.path.join('.') || 'top level'}: ${issue.message}`);
  }
  return parsed.data;
}

export class ExecProvider implements Provider {
  readonly kind = 'exec';
  readonly adoptable: boolean;
  private readonly timeoutMs: number;

  constructor(
    private readonly options: ExecOptions,
    private readonly context: ProviderContext,
  ) {
    this.adoptable = options.adopt;
    this.timeoutMs = parseDuration(options.timeout)!;
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    const input = {
      id: spec.id, owner: spec.owner, pool: spec.pool, name: spec.name, platform: spec.platform, labels: spec.labels, once: spec.once,
      ...(spec.forRun ? { run: spec.forRun } : {}),
      // What to run, and with what: the script decides how (jexec, ssh, cloud-init...).
      command: ['kiln', ...workerArguments(spec)],
      // A jail or VM on this host may see the CA file at the same path; the script decides.
      env: { ...instanceEnvironment(spec, this.options.server_url ?? spec.server), ...localCaEnvironment(spec) },
      values: spec.values,
    };
    try {
      const { ref } = answer(await this.run('start', input), startReply, 'start');
      return { id: spec.id, ref, lastWords: () => '' };
    } catch (err) {
      // A start killed halfway, or that said nothing useful, may have made something: stop whatever has its id.
      await this.removeHalfMade(spec).catch(() => undefined);
      throw err;
    }
  }

  async check(handle: InstanceHandle): Promise<string | null> {
    const reply = answer(await this.run('check', { id: handle.id, ref: handle.ref }), checkReply, 'check');
    return reply.alive ? null : (reply.reason ?? 'the check command says it is gone');
  }

  async stop(handle: InstanceHandle): Promise<void> {
    await this.run('stop', { id: handle.id, ref: handle.ref });
  }

  async listOwn(owner: string): Promise<OwnInstance[]> {
    const found = answer(await this.run('list', { owner }), listReply, 'list');
    // Exact ids only: whatever else the script lists (another server's instances) is not ours.
    return found
      .filter((item) => item.id.startsWith(`${owner}/`))
      .map((item) => ({ pool: item.pool, name: item.name, forRun: item.run, handle: { id: item.id, ref: item.ref, lastWords: () => '' } }));
  }

  private async removeHalfMade(spec: InstanceSpec): Promise<void> {
    for (const own of await this.listOwn(spec.owner)) if (own.handle.id === spec.id) await this.stop(own.handle);
  }

  private run(which: 'start' | 'check' | 'stop' | 'list', input: unknown): Promise<string> {
    const given = this.options[which];
    // Placeholder values travel in the JSON (`values`), not in the command line.
    const argv = typeof given === 'string' ? ['/bin/sh', '-c', given] : [...given];
    // A relative program is the config folder's (./scripts/start-jail, say).
    if (argv[0]!.startsWith('./') || argv[0]!.startsWith('../')) argv[0] = path.resolve(this.context.baseDir, argv[0]!);
    return runCommand(argv, input, { timeoutMs: this.timeoutMs, cwd: this.context.baseDir, env: this.options.env });
  }
}
