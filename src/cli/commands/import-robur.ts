/** `kiln import-robur STATE_FILE`: moves a robur builder `state` file into the server's store, once. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { coerceError, UsageError } from '../../errors.js';
import type { RoburImportReport } from '../../server/robur/state-import.js';
import { clientFor, globals } from '../context.js';
import { printJson, shortId } from '../output.js';

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** The report as lines: a summary, then one line per thing taken, kept or refused. */
export function describeImport(report: RoburImportReport): string {
  const head = `robur state ${report.sha256.slice(0, 12)}`;
  if (report.alreadyImported) {
    const took = report.took;
    const then = took ? ` (then: ${plural(took.jobs.added.length, 'job')} added, ${plural(took.runs.queued.length, 'run')} queued, ${plural(took.platforms.dropped.length, 'platform')} dropped)` : '';
    return `${head} was imported at ${report.importedAt}: nothing taken now, a file is imported once${then}\n`;
  }
  const lines = [
    `imported ${head}: ${plural(report.jobs.added.length, 'job')} added, ${report.jobs.present.length} already present, `
    + `${plural(report.runs.queued.length, 'run')} queued, ${report.runs.alreadyQueued.length} already queued, `
    + `${plural(report.platforms.dropped.length, 'platform')} dropped, ${report.refused.length} refused, ${plural(report.legacy, 'legacy entry', 'legacy entries')} ignored`,
    ...report.jobs.added.map((j) => `  added job ${j.name}: ${j.kind === 'orb-build' ? 'orb-build (template orb-build)' : `script on ${j.platform}`}, ${j.schedule}, `
      + `${j.next === null ? 'no next time' : `next ${j.next}`}${j.from === 'queue' ? ' (only in a queue: added to run that entry)' : ''}`),
    ...report.jobs.present.map((name) => `  kept job ${name}: already in Kiln, left as it is`),
    ...report.runs.queued.map((r) => `  queued ${r.job} on ${r.platform}: run ${shortId(r.run)}`),
    ...report.runs.alreadyQueued.map((r) => `  already queued ${r.job} on ${r.platform}: run ${shortId(r.run)}`),
    ...report.platforms.dropped.map((p) => `  dropped platform ${p}`),
    ...report.platforms.alreadyDropped.map((p) => `  platform ${p} was dropped already`),
    ...report.refused.map((r) => `  refused ${r.item}: ${r.reason}`),
  ];
  return `${lines.join('\n')}\n`;
}

/** Registers import-robur. */
export function registerImportRoburCommand(program: Command): void {
  program
    .command('import-robur')
    .description("move a robur builder `state` file (its schedule, queues and dropped platforms) into the server's store; a file is taken once")
    .argument('<state-file>', "builder's state file (/var/lib/builder/state by default)")
    .action(async (file: string, _flags: unknown, command: Command) => {
      let bytes: Buffer;
      try {
        bytes = readFileSync(file);
      } catch (raw) {
        throw new UsageError(`cannot read state file '${file}': ${coerceError(raw).message}`);
      }
      const report = await clientFor(command).upload<RoburImportReport>('POST', '/api/import/robur', bytes);
      if (globals(command).json) return printJson(report);
      process.stdout.write(describeImport(report));
    });
}
