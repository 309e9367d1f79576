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
