/** Jobs: names, variables and the rules they follow. */

const JOB_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Job names are short and safe in paths, URLs and shells. */
export function isValidJobName(name: string): boolean {
  return JOB_NAME.test(name);
}

/** The rule isValidJobName applies, for error messages. */
export const JOB_NAME_RULE = 'letters, digits, dot, dash and underscore, starting with a letter or digit, at most 128';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Longest job timeout (and idle timeout): a week. */
export const MAX_JOB_TIMEOUT_MS = 7 * 86_400_000;

/**
 * Parses `K=V` pairs (as given to --env and --label) into a record; throws on a pair without `=`.
 * Keys are names users choose: collected in a Map and made own properties, so `constructor` or
 * `toString` are plain keys. `__proto__` is refused: JSON bodies with it are refused by the server,
 * and as an assignment it would silently vanish.
 */
export function parsePairs(pairs: readonly string[], what: string, strictKeys = false): Record<string, string> {
  const out = new Map<string, string>();
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new TypeError(`${what} '${pair}' must look like KEY=VALUE`);
    const key = pair.slice(0, eq);
    if (strictKeys && !ENV_NAME.test(key)) throw new TypeError(`${what} name '${key}' is not a valid variable name`);
    if (key === '__proto__') throw new TypeError(`${what} name '__proto__' is reserved`);
    out.set(key, pair.slice(eq + 1));
  }
  return Object.fromEntries(out);
}

/** True when every label the job asks for is one the worker has (its own, not an Object's). */
export function labelsMatch(wanted: Record<string, string>, offered: Record<string, string>): boolean {
  return Object.entries(wanted).every(([key, value]) => Object.hasOwn(offered, key) && offered[key] === value);
}

/** What to do when a job is due while its previous run is still queued or running. */
export const OVERLAPS = ['skip', 'queue', 'cancel-previous'] as const;
export type Overlap = (typeof OVERLAPS)[number];

const TEMPLATE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** Platform names: they name queues, template variants (`NAME.PLATFORM` files) and builder-web paths. */
const PLATFORM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** What a platform name may be: letters, digits, dot, dash and underscore, starting with a letter or digit (so never `..` or a path). */
export const PLATFORM_RULE = 'platform names use letters, digits, dot, dash and underscore';

/** Whether `name` is a valid platform name (see PLATFORM_RULE). */
export function isValidPlatform(name: string): boolean {
  return PLATFORM_NAME.test(name);
}

/** Template names are plain file names without dots (a dot starts the platform suffix): no `/`, no `..`. */
export function isValidTemplateName(name: string): boolean {
  return name.length <= 128 && TEMPLATE_NAME.test(name);
}
