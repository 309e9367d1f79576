/** Printing for the CLI: aligned tables for people, JSON for scripts. */

/** Prints rows as columns aligned under their headers. */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)));
  const format = (cells: string[]) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ');
  process.stdout.write([format(headers), ...rows.map(format)].join('\n') + '\n');
}

/** Prints a value as JSON, alone on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** A short run id for tables (ids are accepted by unique prefix). */
export function shortId(id: string): string {
  return id.slice(0, 8);
}

/** `-` for missing values. */
export function orDash(value: string | null | undefined): string {
  return value === null || value === undefined || value === '' ? '-' : value;
}

/**
 * A client command whose reader went away (`kiln logs RUN | head -1`) has printed all anyone
 * wants: it ends at once, quietly, with exit 0, as if it had finished (so `set -o pipefail`
 * scripts do not fail on it). Node reports the closed pipe as an 'error' event on stdout (EPIPE),
 * which would otherwise end the process with a stack trace. Any other failure to write stdout
 * (a full disk) is one line on stderr and exit 1. Returns what undoes it.
 */
export function endQuietlyWhenStdoutCloses(): () => void {
  const onError = (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    try {
      process.stderr.write(`kiln: cannot write the output: ${err.code ?? err.message}\n`);
    } finally {
      process.exit(1);
    }
  };
  process.stdout.on('error', onError);
  return () => process.stdout.off('error', onError);
}

/**
 * For the long-running commands: what they print outside the log (the banner, the greeting) must
 * not end them either when stdout or stderr is closed or full. Node reports such a failed write as
 * an 'error' event on the stream, fatal when nobody listens.
 */
export function survivePrintErrors(): void {
  const ignore = () => undefined;
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
}
