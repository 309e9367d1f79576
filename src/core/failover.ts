/**
 * Worker failover: which server (and which of its name's addresses) a worker tries next, and when
 * it waits. A worker given several servers (`--server A,B,C`) moves on at once after losing one or
 * failing to reach it; only a whole round of failures waits the reconnect backoff, so a dead server
 * costs its workers one refused connect, not a backoff.
 */

/** Where the next connection attempt goes, and how many servers have failed in a row. */
export interface FailoverPosition {
  /** Index into the server list. */
  server: number;
  /** Index into the current server's addresses (its name resolved; 0 when it has one). */
  address: number;
  /** Servers whose every address failed (or whose connection was lost) in a row; a welcome resets it. */
  failed: number;
}

/** The next attempt after one failed (or after an established connection was lost). */
export interface FailoverStep extends FailoverPosition {
  /**
   * Whole rounds over the list failed so far: 0 while the round is not over (go on at once), else
   * the failure count the backoff is computed from (with one server: each failure, as before).
   */
  backoffRounds: number;
}

/**
 * The step after the attempt at `at` failed: the next address of the same name, else the next
 * server (wrapping). `addresses` is how many addresses the current server's name had, `servers`
 * the list's length.
 */
export function nextAttempt(at: FailoverPosition, addresses: number, servers: number): FailoverStep {
  if (at.address + 1 < addresses) return { server: at.server, address: at.address + 1, failed: at.failed, backoffRounds: 0 };
  const failed = at.failed + 1;
  const server = (at.server + 1) % Math.max(servers, 1);
  return { server, address: 0, failed, backoffRounds: failed % Math.max(servers, 1) === 0 ? failed / Math.max(servers, 1) : 0 };
}

/**
 * How long a worker keeps trying other servers while each says its name is taken, before it gives
 * up as a duplicate name: a server that died keeps the name `connected` until it is seen dead (one
 * presence tick, 2 s), and a half-open socket on a live server until its heartbeat drops it (2 x 10 s).
 */
export const NAME_TAKEN_PATIENCE_MS = 30_000;

/**
 * Whether a `name taken` close ends the worker (exit refused): with one server, at once when it
 * holds no runs (as before failover existed); with several, once the names have been taken for
 * longer than the patience, since the first of them in a row (`takenSince`).
 */
export function nameTakenIsFinal(servers: number, heldRuns: number, takenSince: number, now: number): boolean {
  if (heldRuns > 0) return false;
  return servers <= 1 || now - takenSince >= NAME_TAKEN_PATIENCE_MS;
}

/**
 * The servers in `--server` / KILN_SERVER: a comma list of http(s) URLs (blanks around commas
 * allowed). Throws a plain Error saying which entry is bad; the CLI turns it into a usage error.
 */
export function parseServerList(value: string): string[] {
  const servers = value.split(',').map((entry) => entry.trim());
  if (servers.length === 0 || servers.some((entry) => entry === '')) throw new Error(`bad server list '${value}': give one or more URLs separated by commas`);
  for (const entry of servers) {
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      throw new Error(`bad server URL '${entry}': use http://HOST:PORT or https://HOST:PORT`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`bad server URL '${entry}': use http:// or https://`);
  }
  return servers;
}
