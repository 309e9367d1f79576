/** Sizes on the command line and in config files: `1048576`, `512kb`, `100mb`, `4gb` (1024-based). */
import bytes from 'bytes';

/** Parses a size into bytes; undefined when the text is not one. */
export function parseSize(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^\d+(\.\d+)?\s*([kmgtp]?b)?$/i.test(trimmed)) return undefined;
  const value = bytes.parse(trimmed);
  return value === null || !Number.isSafeInteger(value) ? undefined : value;
}

/** Formats bytes for people: `1.5MB`. */
export function formatSize(value: number): string {
  return bytes.format(value, { decimalPlaces: 1 }) ?? `${value}B`;
}
