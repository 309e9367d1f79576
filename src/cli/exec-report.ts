/**
 * How `kiln inspect` prints an exec blob's console: as robur's `builder-inspect --console` does
 * (app/inspect.ml), so scripts that read its output read Kiln's: `started at TIME`, then each line
 * oldest first as `<ms>ms: "<text>"` (OCaml's `%S`: quoted and escaped, so a job's output cannot
 * drive the terminal), then the result (`exited 0`, `execution aborted: MSG`) and `stopped at TIME`,
 * times as Ptime's RFC 3339 (`2026-12-06T17:00:00-00:00`).
 */
import { describeRoburResult, type RoburExec } from '../protocol/robur/index.js';

/** `text` as OCaml's `%S` writes it (String.escaped of its UTF-8 bytes, in double quotes). */
export function ocamlQuoted(text: string): string {
  let out = '"';
  for (const byte of Buffer.from(text, 'utf8')) {
    if (byte === 0x22) out += '\\"';
    else if (byte === 0x5c) out += '\\\\';
    else if (byte === 0x0a) out += '\\n';
    else if (byte === 0x09) out += '\\t';
    else if (byte === 0x0d) out += '\\r';
    else if (byte === 0x08) out += '\\b';
    else if (byte >= 0x20 && byte <= 0x7e) out += String.fromCharCode(byte);
    else out += `\\${String(byte).padStart(3, '0')}`;
  }
  return `${out}"`;
}

/** A time as Ptime.to_rfc3339 writes it by default: whole seconds, offset `-00:00` (UTC, offset unknown). */
export function ptimeRfc3339(ms: number): string {
  return `${new Date(Math.floor(ms / 1000) * 1000).toISOString().slice(0, 19)}-00:00`;
}

/** The console block of builder-inspect, line by line. */
export function inspectConsole(exec: Omit<RoburExec, 'files'>): string[] {
  return [
    `started at ${ptimeRfc3339(exec.started)}`,
    // Duration.to_ms: whole milliseconds, rounded down.
    ...exec.console.map((entry) => `${Math.floor(entry.deltaNs / 1_000_000)}ms: ${ocamlQuoted(entry.line)}`),
    describeRoburResult(exec.result),
    `stopped at ${ptimeRfc3339(exec.finished)}`,
  ];
}
