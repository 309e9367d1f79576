/**
 * builder `state` files for tests (reference robur-protocol.md §4): one made with the codec's
 * encodeState, as builder writes it, with the legacy entries builder still reads ([0] a script job,
 * [2] a job: old queue entries) spliced in by hand, since Kiln never writes them. The DER here is
 * the reference's, written out as simply as possible: tag, definite minimal length, body.
 */
import { encodeState, type RoburState } from '../../src/protocol/robur/index.js';

/** One DER TLV with a definite, minimal length. */
function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  const length = n < 0x80 ? Buffer.from([n]) : (() => {
    const bytes: number[] = [];
    for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
    return Buffer.from([0x80 | bytes.length, ...bytes]);
  })();
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

const utf8 = (text: string) => tlv(0x0c, Buffer.from(text, 'utf8'));
const sequence = (...parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));

/** A ScriptJob: name, script, files (empty), platform. */
function scriptJob(name: string, script: string, platform: string): Buffer {
  return sequence(utf8(name), utf8(script), sequence(), utf8(platform));
}

/** The legacy items builder reads and ignores: [0] ScriptJob, [2] Job ([0] ScriptJob). */
export function legacyQueueEntries(platform: string): Buffer[] {
  return [
    tlv(0xa0, scriptJob('legacy-one', 'echo legacy\n', platform)),
    tlv(0xa2, tlv(0xa0, scriptJob('legacy-two', 'echo legacy\n', platform))),
  ];
}

/** A state file: `state` as builder writes it, then `extra` items (already encoded) appended to the top SEQUENCE. */
export function stateFile(state: Omit<RoburState, 'ignoredLegacy'>, extra: Buffer[] = []): Buffer {
  const encoded = encodeState({ ...state, ignoredLegacy: 0 });
  if (extra.length === 0) return encoded;
  // Strip the top SEQUENCE's header (tag, then a short or long length) and wrap the items again.
  const header = encoded[1]! < 0x80 ? 2 : 2 + (encoded[1]! & 0x7f);
  return tlv(0x30, Buffer.concat([encoded.subarray(header), ...extra]));
}
