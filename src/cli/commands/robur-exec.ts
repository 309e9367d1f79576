/**
 * robur builder's exec blobs (builder's `full` files, builder-web's uploads):
 * `kiln export RUN --format robur-exec [--output FILE]` writes a finished run as one (the bytes the
 * builder-web upload target sends); `kiln inspect FILE [--output DIR]` reads one offline, as
 * robur's `builder-inspect` does, and extracts its artifacts safely.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { isExportFormat, unknownExportFormat } from '../../core/index.js';
import { coerceError, RoburDecodeError, ServerUnreachableError, UnsafeArtifactPathError, UsageError } from '../../errors.js';
import { describeRoburResult, openExecFile } from '../../protocol/robur/index.js';
import { inspectConsole } from '../exec-report.js';
import { clientFor, globals } from '../context.js';
import { printJson, printTable } from '../output.js';
import { ensureOutputDir, extractFile, planExtraction, writePrivateFile } from '../safe-extract.js';

/** Registers `export` and `inspect`. */
export function registerRoburExecCommands(program: Command): void {
  program
    .command('export')
    .description('write a finished run as a robur exec blob (builder\'s `full` file, what builder-web stores) on stdout')
    .argument('<run>', 'run id or unique prefix')
    .requiredOption('--format <format>', 'robur-exec (the only one)')
    .option('--output <file>', 'write it to FILE (0600) instead of stdout')
    .action(async (runArg: string, flags: { format: string; output?: string }, command: Command) => {
      if (!isExportFormat(flags.format)) throw new UsageError(unknownExportFormat(flags.format));
      const json = globals(command).json ?? false;
      if (flags.output === undefined && json) throw new UsageError('--json needs --output FILE: without it the blob itself is what goes to stdout');
      if (flags.output === undefined && process.stdout.isTTY) {
        throw new UsageError('refusing to write a binary exec blob to a terminal: redirect stdout (> FILE) or give --output FILE');
      }
      const client = clientFor(command);
      const response = await client.raw('GET', `/api/runs/${encodeURIComponent(runArg)}/export?format=${flags.format}`);
      const length = Number(response.headers.get('content-length'));
      const body = Readable.fromWeb(response.body as never);
      let sent = 0;
      const broke = (raw: unknown) => new ServerUnreachableError(client.baseUrl, `the export broke after ${sent} of ${length} bytes: ${coerceError(raw).message}`);
      if (flags.output === undefined) {
        body.on('data', (chunk: Buffer) => (sent += chunk.length));
        await pipeline(body, process.stdout, { end: false }).catch((raw) => {
          throw broke(raw);
        });
        if (sent !== length) throw broke(new Error('short body'));
        return;
      }
      const file = path.resolve(flags.output);
      // Written through a temp file: a cut export leaves no partial blob behind.
      const { size, sha256 } = await writePrivateFile(file, body).catch((raw) => {
        // A file system's refusal (no such dir, no space) is this side's; anything else is the download's.
        if ((raw as NodeJS.ErrnoException).syscall) throw new UsageError(`cannot write ${file}: ${coerceError(raw).message}`);
        throw broke(raw);
      });
      if (size !== length) throw broke(new Error('short body'));
      const written = { run: response.headers.get('x-kiln-run') ?? runArg, format: flags.format, file, bytes: size, sha256 };
      if (json) return printJson(written);
      process.stdout.write(`wrote ${file} (${written.bytes} bytes, sha256 ${written.sha256})\n`);
    });

  program
    .command('inspect')
    .description("read a robur exec blob (builder's `full` file) offline: job, script, console, result and artifacts, as builder-inspect does")
    .argument('<file>', 'the exec blob')
    .option('--output <dir>', 'extract the artifacts into DIR (made 0700 if absent; files 0600; never outside DIR)')
    .action(async (file: string, flags: { output?: string }, command: Command) => {
      const { exec, files } = await openExec(file);
      const dir = flags.output === undefined ? undefined : path.resolve(flags.output);
      const artifacts: { path: string; size: number; sha256: string }[] = [];
      if (dir !== undefined) {
        // Every path is checked before anything is written.
        const planned = refusing(file, () => planExtraction(files.map((f) => f.path)));
        await ensureOutputDir(dir);
        for (const [i, entry] of files.entries()) {
          const written = await refusingAsync(file, () => extractFile(dir, planned[i]!, entry.read()));
          artifacts.push({ path: entry.path, ...written });
        }
      } else {
        for (const entry of files) artifacts.push({ path: entry.path, size: entry.size, sha256: await sha256Of(entry.read()) });
      }
      if (globals(command).json) {
        return printJson({
          file, job: exec.job, uuid: exec.uuid, started: new Date(exec.started).toISOString(), finished: new Date(exec.finished).toISOString(),
          result: exec.result, resultText: describeRoburResult(exec.result), console: exec.console, artifacts, output: dir ?? null,
        });
      }
      const script = exec.job.script.endsWith('\n') || exec.job.script === '' ? exec.job.script : `${exec.job.script}\n`;
      process.stdout.write([
        `job       ${exec.job.name}`,
        // builder reads a job without a platform as "no-platform".
        `platform  ${exec.job.platform ?? 'no-platform'}`,
        `uuid      ${exec.uuid}`,
        `started   ${new Date(exec.started).toISOString()}`,
        `finished  ${new Date(exec.finished).toISOString()}`,
        `result    ${describeRoburResult(exec.result)}`,
        'script:',
      ].join('\n') + '\n' + script + ['console:', ...inspectConsole(exec), `artifacts: ${artifacts.length}`].join('\n') + '\n');
      if (artifacts.length > 0) printTable(['PATH', 'SIZE', 'SHA256'], artifacts.map((a) => [a.path, String(a.size), a.sha256]));
      if (dir !== undefined) process.stdout.write(`extracted ${artifacts.length} artifacts into ${dir}\n`);
    });
}

/** The blob at `file`, its head decoded; a file that cannot be read or decoded is one line naming it. */
async function openExec(file: string) {
  try {
    return await openExecFile(file);
  } catch (raw) {
    const err = coerceError(raw);
    // The codec's messages about a file mostly name it already (`robur exec file FILE: ...`): said once.
    if (err.code === 'KILN_ERR_ROBUR_DECODE') throw new RoburDecodeError(`${file}: ${err.message.replace(`robur exec file ${file}: `, '')}`);
    const code = (raw as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') throw new UsageError(`${file}: cannot read it (${code})`);
    throw err;
  }
}

/** Runs `work`, naming `file` in an unsafe path's refusal. */
function refusing<T>(file: string, work: () => T): T {
  try {
    return work();
  } catch (raw) {
    if (raw instanceof UnsafeArtifactPathError) throw new UnsafeArtifactPathError(`${file}: ${raw.message}: nothing extracted`);
    throw raw;
  }
}

async function refusingAsync<T>(file: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (raw) {
    if (raw instanceof UnsafeArtifactPathError) throw new UnsafeArtifactPathError(`${file}: ${raw.message}: extraction stopped there`);
    throw raw;
  }
}

/** The sha256 of a stream's bytes, read through. */
async function sha256Of(stream: Readable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

