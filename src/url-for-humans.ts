/**
 * A URL as logs, errors and `kiln info` show it: without its password, and without its query
 * (libpq and some targets take `?password=` there). Text that is not a URL with a host loses
 * everything between `scheme://` and its last `@` (user and password: a password may hold `/` or `:`).
 */
export function describeUrl(url: string | URL): string {
  const text = typeof url === 'string' ? url : url.href;
  const parsed = URL.canParse(text) ? new URL(text) : undefined;
  if (parsed && parsed.host !== '') {
    parsed.password = '';
    parsed.search = '';
    return parsed.href;
  }
  const bare = text.split('?')[0]!;
  const at = bare.lastIndexOf('@');
  if (at < 0) return bare;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(bare);
  return scheme && at > scheme[0].length ? `${scheme[0]}***${bare.slice(at)}` : '(a URL with credentials)';
}
