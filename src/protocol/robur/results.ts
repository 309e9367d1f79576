/** Kiln's run results and builder's `Result`, mapped both ways, and builder's text for a result. */
import { constants } from 'node:os';
import type { RunResult } from '../../core/index.js';
import type { RoburResult } from './types.js';

const SIGNALS = constants.signals as Record<string, number>;

/** The Kiln result as builder says it: a signal by its number; an abort as a message. */
export function roburResultOf(result: RunResult): RoburResult {
  switch (result.kind) {
    case 'exited':
      return { kind: 'exited', code: result.code };
    case 'signalled': {
      const number = Object.hasOwn(SIGNALS, result.signal) ? SIGNALS[result.signal] : undefined;
      return number !== undefined ? { kind: 'signalled', signal: number } : { kind: 'msg', message: `signalled ${result.signal}` };
    }
    case 'aborted':
      return { kind: 'msg', message: result.reason };
  }
}

/** The first name of each signal number (SIGABRT before SIGIOT, as os.constants lists them). */
const SIGNAL_NAMES = new Map<number, string>();
for (const [name, number] of Object.entries(SIGNALS)) if (!SIGNAL_NAMES.has(number)) SIGNAL_NAMES.set(number, name);

/**
 * OCaml's own signal numbers (Sys.sigabrt = -1 ... Sys.sigxfsz = -28): the real builder-worker's
 * `WSIGNALED s` carries these for the signals OCaml knows, POSIX numbers only for the others.
 */
const OCAML_SIGNALS = [
  'SIGABRT', 'SIGALRM', 'SIGFPE', 'SIGHUP', 'SIGILL', 'SIGINT', 'SIGKILL', 'SIGPIPE', 'SIGQUIT', 'SIGSEGV', 'SIGTERM', 'SIGUSR1', 'SIGUSR2', 'SIGCHLD',
  'SIGCONT', 'SIGSTOP', 'SIGTSTP', 'SIGTTIN', 'SIGTTOU', 'SIGVTALRM', 'SIGPROF', 'SIGBUS', 'SIGPOLL', 'SIGSYS', 'SIGTRAP', 'SIGURG', 'SIGXCPU', 'SIGXFSZ',
];

/** A signal number as a name: negative ones are OCaml's, positive ones POSIX (this machine's). */
function signalName(signal: number): string | undefined {
  return signal < 0 ? OCAML_SIGNALS[-signal - 1] : SIGNAL_NAMES.get(signal);
}

/** builder's result as a Kiln result: a signal by its name (or number as text), stopped and msg as aborts. */
export function runResultOf(result: RoburResult): RunResult {
  switch (result.kind) {
    case 'exited':
      return { kind: 'exited', code: result.code };
    case 'signalled':
      return { kind: 'signalled', signal: signalName(result.signal) ?? String(result.signal) };
    case 'stopped':
      return { kind: 'aborted', reason: `stopped ${result.signal < 0 ? (signalName(result.signal) ?? result.signal) : result.signal}` };
    case 'msg':
      return { kind: 'aborted', reason: result.message };
  }
}

/** builder's text for a result, as Observe's last line says it: `exited 0`, `execution aborted: MSG`. */
export function describeRoburResult(result: RoburResult): string {
  switch (result.kind) {
    case 'exited':
      return `exited ${result.code}`;
    case 'signalled':
      return `signalled ${result.signal}`;
    case 'stopped':
      return `stopped ${result.signal}`;
    case 'msg':
      return `execution aborted: ${result.message}`;
  }
}
