/** Artifact paths: relative, normalised, never escaping the run's work dir. */

/** Thrown for a path that cannot name an artifact. */
export class ArtifactPathError extends TypeError {}

/** Normalises `./a//b/c` to `a/b/c`; refuses absolute paths, `..`, NUL, backslashes and empty names. */
export function normaliseArtifactPath(raw: string): string {
  if (raw.includes('\0')) throw new ArtifactPathError('an artifact path may not contain NUL');
  if (raw.includes('\\')) throw new ArtifactPathError(`artifact path '${raw}' may not contain a backslash`);
  if (raw.startsWith('/')) throw new ArtifactPathError(`artifact path '${raw}' must be relative`);
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.some((part) => part === '..')) throw new ArtifactPathError(`artifact path '${raw}' may not contain '..'`);
  if (parts.length === 0) throw new ArtifactPathError('an artifact path may not be empty');
  if (raw.length > 4096) throw new ArtifactPathError('an artifact path may not be longer than 4096 characters');
  return parts.join('/');
}

/** True for a sha256 in lower-case hex. */
export function isSha256(text: string): boolean {
  return /^[0-9a-f]{64}$/.test(text);
}

/**
 * The `Content-Disposition` of an artifact's download (RFC 6266): always `attachment` (a browser
 * saves it, never renders a job's HTML as this server's page), named after the file's last path
 * part: a plain-ASCII `filename` for old clients (other characters, quotes and backslashes as `_`)
 * and the exact name in `filename*` (RFC 8187: UTF-8, percent-encoded).
 */
export function attachmentDisposition(artifactPath: string): string {
  const name = artifactPath.split('/').pop() || 'artifact';
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const exact = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${fallback}"; filename*=UTF-8''${exact}`;
}
