/**
 * The change feed between servers sharing one PostgreSQL database (notes/issue16-plan.md §3.1): a
 * NOTIFY on one channel per schema, heard by every server's presence connection. The store sends
 * the console ranges itself, in the transaction that writes the lines (NOTIFY is delivered at
 * commit, in commit order); the server's feed bridge sends the bus's events after their commit.
 * On SQLite there is one server and the bus is the feed: nothing here is used.
 */

/** SQL for the feed's channel name in the current schema: `kiln_` and 8 hex digits of its md5. */
export const FEED_CHANNEL_SQL = "'kiln_' || left(md5(current_schema()), 8)";

/** A NOTIFY payload is at most 8000 bytes: messages are split to stay under this. */
export const FEED_PAYLOAD_MAX = 7900;

/** One message on the feed: the sending server's id, the kind (a bus event's name, or `console`), and its data. */
export interface FeedMessage {
  s: string;
  k: string;
  d: unknown;
}

/** The kind of the store's own messages: `d` is ConsoleRange[]. */
export const CONSOLE_FEED_KIND = 'console';

/** Lines `a`..`b` (seqs, inclusive) of run `r` were committed: observers elsewhere read them (seq > what they have). */
export interface ConsoleRange {
  r: string;
  a: number;
  b: number;
}

/**
 * The feed messages announcing console ranges, as NOTIFY payloads each under FEED_PAYLOAD_MAX bytes
 * (UTF-8): one range per run of `lines`, from its smallest seq to its largest. Empty: no lines.
 */
export function consoleFeedPayloads(serverId: string, lines: readonly { runId: string; seq: number }[]): string[] {
  const byRun = new Map<string, ConsoleRange>();
  for (const { runId, seq } of lines) {
    const range = byRun.get(runId);
    if (!range) byRun.set(runId, { r: runId, a: seq, b: seq });
    else {
      range.a = Math.min(range.a, seq);
      range.b = Math.max(range.b, seq);
    }
  }
  const payloads: string[] = [];
  let chunk: ConsoleRange[] = [];
  const text = (d: ConsoleRange[]): string => JSON.stringify({ s: serverId, k: CONSOLE_FEED_KIND, d } satisfies FeedMessage);
  for (const range of byRun.values()) {
    if (chunk.length > 0 && Buffer.byteLength(text([...chunk, range])) > FEED_PAYLOAD_MAX) {
      payloads.push(text(chunk));
      chunk = [];
    }
    chunk.push(range);
  }
  if (chunk.length > 0) payloads.push(text(chunk));
  return payloads;
}
