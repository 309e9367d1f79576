/** The formats a run can be exported in (`kiln export RUN --format F`). */

/** `robur-exec`: robur builder's exec blob, as builder-web stores it (builder's `full` file). */
export const EXPORT_FORMATS = ['robur-exec'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** Whether `text` names a format runs can be exported in. */
export function isExportFormat(text: string): text is ExportFormat {
  return (EXPORT_FORMATS as readonly string[]).includes(text);
}

/** The one-line refusal of an unknown format. */
export function unknownExportFormat(text: string): string {
  return `unknown export format '${text}': use ${EXPORT_FORMATS.join(' or ')}`;
}
