/** How a failed command ends: one `kiln: ...` line on stderr and the exit code of SPEC.md. */
import { coerceError } from '../errors.js';

/** Exit codes of SPEC.md. */
export const Exit = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

/** The exit code for an error code. */
export function exitCodeFor(code: string): number {
  switch (code) {
    case 'KILN_ERR_USAGE':
    case 'KILN_ERR_INVALID_REQUEST':
    case 'KILN_ERR_CONFIG':
    case 'KILN_ERR_DATA_DIR_IN_USE':
    case 'KILN_ERR_DATA_DIR_UNSAFE':
    case 'KILN_ERR_TLS_CONFIG':
      return Exit.usage;
    case 'KILN_ERR_UNAUTHORIZED':
    case 'KILN_ERR_FORBIDDEN':
    case 'KILN_ERR_SERVER_UNREACHABLE':
    case 'KILN_ERR_SERVER_UNTRUSTED':
      return Exit.unreachable;
    default:
      return Exit.failed;
  }
}

/** Says why a command failed (with the stack under KILN_DEBUG for an internal error) and sets the exit code. */
export function reportFailure(raw: unknown): void {
  const err = coerceError(raw);
  process.stderr.write(`kiln: ${err.message}\n`);
  if (err.code === 'KILN_ERR_INTERNAL' && process.env.KILN_DEBUG) process.stderr.write(`${err.stack}\n`);
  process.exitCode = exitCodeFor(err.code);
}
