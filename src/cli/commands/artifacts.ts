/**
 * `kiln artifacts RUN [--download DIR] [--path P]`: list a run's artifacts, or fetch them, verified;
 * `kiln gc [--dry-run]`: apply artifact retention now.
 */
import { createHash } from 'node:crypto';
import { chmodSync, createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { durationRangeProblem, formatDuration, formatSize, normaliseArtifactPath, parseDuration } from '../../core/index.js';
import { UsageError } from '../../errors.js';
import { clientFor, globals } from '../context.js';
import { printJson, printTable } from '../output.js';

interface Listed {
  path: string;
  size: number;
  sha256: string;
  mode: number;
}

/** Registers `artifacts` and `gc`. */
export function registerArtifactCommands(program: Command): void {
  registerGcCommand(program);
  program
    .command('artifacts')
    .description("list a run's artifacts (path, size, sha256), or download them with --download")
    .argument('<run>', 'run id or unique prefix')
    .option('--download <dir>', 'fetch them into DIR, recreating their tree and modes; each sha256 is checked')
    .option('--path <path>', 'with --download: only this file (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (runArg: string, flags: { download?: string; path?: string[] }, command: Command) => {
      const client = clientFor(command);
      const reply = await client.request<{ run: string; artifacts: Listed[] }>('GET', `/api/runs/${encodeURIComponent(runArg)}/artifacts`);
      if (!flags.download) {
        if (globals(command).json) return printJson(reply);
        printTable(['PATH', 'SIZE', 'SHA256'], reply.artifacts.map((a) => [a.path, String(a.size), a.sha256]));
        return;
      }
      const wanted = flags.path?.map((p) => normaliseArtifactPath(p));
      const chosen = wanted ? reply.artifacts.filter((a) => wanted.includes(a.path)) : reply.artifacts;
      const missing = wanted?.filter((p) => !reply.artifacts.some((a) => a.path === p)) ?? [];
      if (missing.length > 0) throw new UsageError(`run ${reply.run} has no artifact ${missing.join(', ')}`);
      for (const artifact of chosen) await download(client, reply.run, artifact, path.resolve(flags.download));
      if (globals(command).json) return printJson({ run: reply.run, downloaded: chosen });
      process.stdout.write(`downloaded ${chosen.length} artifacts into ${path.resolve(flags.download)}\n`);
    });
}

interface GcReply {
  dryRun: boolean;
  runs: { runId: string; job: string; finishedAt: string; files: number; bytes: number }[];
  blobs: { sha256: string; bytes: number }[];
  tempFiles: number;
  policy: { keepRuns: number | null; keepForMs: number | null };
}

/** The policy in words. */
function describePolicy(policy: GcReply['policy']): string {
  const parts = [
    policy.keepRuns === null ? '' : `the newest ${policy.keepRuns} runs of each job`,
    policy.keepForMs === null ? '' : `runs that ended in the last ${formatDuration(policy.keepForMs)}`,
  ].filter(Boolean);
  return parts.length ? `keeping the artifacts of ${parts.join(' and of ')}` : 'no retention policy: only unreferenced blobs go';
}

/** Registers `gc`. */
function registerGcCommand(program: Command): void {
  program
    .command('gc')
    .description("apply artifact retention now: forget expired runs' artifacts, then delete blobs no run references")
    .option('--dry-run', 'only say what would go')
    .option('--keep-runs <n>', "this time, keep the newest N runs' artifacts of each job (instead of the server's policy)")
    .option('--keep-for <duration>', "this time, keep artifacts of runs that ended within DURATION (instead of the server's policy)")
    .action(async (flags: { dryRun?: boolean; keepRuns?: string; keepFor?: string }, command: Command) => {
      const body: Record<string, unknown> = { dryRun: flags.dryRun ?? false };
      if (flags.keepRuns !== undefined) {
        const n = Number(flags.keepRuns);
        if (!Number.isInteger(n) || n < 0) throw new UsageError(`bad --keep-runs '${flags.keepRuns}': give a whole number, e.g. 10`);
        body.keepRuns = n;
      }
      if (flags.keepFor !== undefined) {
        const ms = parseDuration(flags.keepFor);
        if (ms === undefined) throw new UsageError(`bad --keep-for '${flags.keepFor}': use a duration like 12h or 30d`);
        const problem = durationRangeProblem(ms);
        if (problem) throw new UsageError(`bad --keep-for '${flags.keepFor}': ${problem}`);
        body.keepForMs = ms;
      }
      const reply = await clientFor(command).request<GcReply>('POST', '/api/artifacts/gc', body);
      if (globals(command).json) return printJson(reply);
      const would = reply.dryRun ? 'would ' : '';
      const files = reply.runs.reduce((n, r) => n + r.files, 0);
      const runBytes = reply.runs.reduce((n, r) => n + r.bytes, 0);
      const blobBytes = reply.blobs.reduce((n, b) => n + b.bytes, 0);
      process.stdout.write(`${describePolicy(reply.policy)}\n`);
      process.stdout.write(`${would}forget the artifacts of ${reply.runs.length} runs (${files} files, ${formatSize(runBytes)})\n`);
      if (reply.runs.length) printTable(['RUN', 'JOB', 'FINISHED', 'FILES', 'SIZE'], reply.runs.map((r) => [r.runId, r.job, r.finishedAt, String(r.files), formatSize(r.bytes)]));
      process.stdout.write(`${would}delete ${reply.blobs.length} unreferenced blobs (${formatSize(blobBytes)}) and ${reply.tempFiles} abandoned temp files\n`);
    });
}

/** Files at least this big show their progress (on a terminal only). */
const PROGRESS_MIN_BYTES = 1024 * 1024;
const PROGRESS_EVERY_MS = 100;

/** A one-line progress meter on stderr, redrawn in place: `path  42% 1.2GB/2.9GB  110.5MB/s`. */
function progressMeter(artifact: Listed): { advance(bytes: number): void; finish(): void } {
  if (!process.stderr.isTTY || artifact.size < PROGRESS_MIN_BYTES) return { advance() {}, finish() {} };
  const started = Date.now();
  let done = 0;
  let drawn = 0;
  const draw = () => {
    drawn = Date.now();
    const percent = Math.floor((done / artifact.size) * 100);
    const rate = done / Math.max((drawn - started) / 1000, 0.001);
    process.stderr.write(`\r\x1b[K${artifact.path}  ${percent}% ${formatSize(done)}/${formatSize(artifact.size)}  ${formatSize(rate)}/s`);
  };
  return {
    advance(bytes) {
      done += bytes;
      if (Date.now() - drawn >= PROGRESS_EVERY_MS) draw();
    },
    finish() {
      draw();
      process.stderr.write('\n');
    },
  };
}

/** Streams one artifact to DIR/path through a temp file, checking its sha256 before it takes its name. */
async function download(client: ReturnType<typeof clientFor>, runId: string, artifact: Listed, dir: string): Promise<void> {
  const target = path.join(dir, normaliseArtifactPath(artifact.path));
  mkdirSync(path.dirname(target), { recursive: true });
  const temp = `${target}.kiln-partial`;
  const response = await client.raw('GET', `/api/runs/${runId}/artifacts/${artifact.path.split('/').map(encodeURIComponent).join('/')}`);
  const hash = createHash('sha256');
  const progress = progressMeter(artifact);
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      progress.advance(chunk.length);
      done(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(response.body as never), hashing, createWriteStream(temp));
    progress.finish();
    const actual = hash.digest('hex');
    if (actual !== artifact.sha256) throw new Error(`${artifact.path}: downloaded content hashes to ${actual}, not ${artifact.sha256}`);
    // Permission bits only, whatever the server says: never setuid, setgid or sticky.
    chmodSync(temp, artifact.mode & 0o777);
    renameSync(temp, target);
  } catch (raw) {
    rmSync(temp, { force: true });
    throw raw;
  }
}
