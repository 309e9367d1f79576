/**
 * builder's persistent `state` file (reference robur-protocol.md §4): a SEQUENCE OF StateItem,
 * strict DER, no header. Read with builder's legacy items; written as builder writes it.
 */
import { asDecodeError, DerReader, explicit, sequence, tagName, utf8String } from './der.js';
import { RoburDecodeError } from '../../errors.js';
import { decodeJob, decodePeriod, decodeQueue, decodeScheduleItem, decodeScriptJob, encodeQueue, encodeScheduleItem } from './values.js';
import type { RoburState } from './types.js';

/** Reads a state file. [0]/[2] legacy queue entries are counted and dropped, [1] legacy schedule items kept. */
export function decodeState(bytes: Buffer): RoburState {
  try {
    const top = new DerReader(bytes);
    const items = top.sequence('state');
    top.end('state');
    const state: RoburState = { dropped: [], schedule: [], queues: [], ignoredLegacy: 0 };
    for (let i = 0; !items.atEnd(); i++) {
      const what = `state item ${i}`;
      const value = items.next(what);
      const n = value.tag & 0x1f;
      if ((value.tag & 0xe0) !== 0xa0 || n > 5) throw new RoburDecodeError(`robur state: ${what}: unknown item ${tagName(value.tag)}`);
      const r = items.enter(value, what);
      switch (n) {
        case 0:
          decodeScriptJob(r, `${what} (legacy script job)`);
          state.ignoredLegacy++;
          break;
        case 1: {
          const s = r.sequence(`${what} (legacy schedule item)`);
          const next = s.time(`${what} next`);
          const period = decodePeriod(s, `${what} period`);
          const job = decodeScriptJob(s, `${what} job`);
          s.end(what);
          state.schedule.push({ next, period, job: { kind: 'script', job } });
          break;
        }
        case 2:
          decodeJob(r, `${what} (legacy job)`);
          state.ignoredLegacy++;
          break;
        case 3:
          state.schedule.push(decodeScheduleItem(r, what));
          break;
        case 4:
          state.queues.push(decodeQueue(r, what));
          break;
        case 5:
          state.dropped.push(r.utf8(`${what} dropped platform`));
          break;
      }
      r.end(what);
    }
    return state;
  } catch (raw) {
    throw asDecodeError(raw);
  }
}

/** Writes a state file as builder does: dropped platforms, then schedule items, then queues. */
export function encodeState(state: RoburState): Buffer {
  return sequence([
    ...state.dropped.map((p) => explicit(5, utf8String(p))),
    ...state.schedule.map((item) => explicit(3, encodeScheduleItem(item))),
    ...state.queues.map((q) => explicit(4, encodeQueue(q))),
  ]);
}
