/**
 * robur builder's formats (its TCP protocol, builder-web's exec blob, the state file): values and codec.
 * Not re-exported from src/protocol/index.ts: the worker imports that, and has no use for robur.
 */
export * from './types.js';
export { encodeCmd, decodeCmd, frameOf, FrameReader, MAX_ROBUR_FRAME_BYTES, describeCmd } from './builder-messages.js';
export {
  decodeExec, encodeConsoleEntries, encodeExec, execStream, openExecFile, type EncodedConsole, type ExecFileEntry, type ExecStreamFile, type RoburExecHead, type RoburExecStreamHead,
} from './exec.js';
export { decodeState, encodeState } from './state-file.js';
export { roburResultOf, runResultOf, describeRoburResult } from './results.js';
export { isRoburUuid } from './values.js';
