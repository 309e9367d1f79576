/**
 * Who the page is signed in as, and how its requests carry that: the one module that knows the
 * credential. Today the page keeps the token the user typed in sessionStorage (gone when the tab
 * closes) and sends it as `Authorization: Bearer` on every request, streams included (which is why
 * streams are read with fetch, not EventSource: EventSource cannot send headers). Once the server
 * has browser sessions (an HttpOnly cookie from `POST /api/session`, a CSRF value for requests that
 * change state), only this module changes: `signIn` posts the token, `request` sends the cookie and
 * the CSRF header, `download` becomes a plain link.
 */

/** Who the token says the user is, and so what the page offers. */
export interface Who {
  name: string;
  /** viewer: reads; operator: also executes, cancels, pauses, drops; admin: everything. */
  role: 'viewer' | 'operator' | 'admin';
}

const KEY = 'kiln.token';

let token: string | null = sessionStorage.getItem(KEY);
let who: Who | null = token ? { name: 'admin', role: 'admin' } : null;
const listeners = new Set<() => void>();

/** The signed-in user, or null. */
export function currentUser(): Who | null {
  return who;
}

/** Calls `listener` when the user signs in or out; returns how to stop. */
export function onSessionChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** True when the signed-in user may take actions that change the farm (execute, cancel, pause, drop). */
export function mayOperate(): boolean {
  return who?.role === 'operator' || who?.role === 'admin';
}

/** Checks `candidate` with the server and keeps it; throws a one-line error when refused. */
export async function signIn(candidate: string): Promise<Who> {
  const trimmed = candidate.trim();
  if (!trimmed) throw new Error('enter a token');
  // Any read that needs the token tells whether it is good: today every token is the admin's.
  const response = await fetch('/api/jobs', { headers: { authorization: `Bearer ${trimmed}` } });
  if (response.status === 401) throw new Error('the server refused this token');
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
  token = trimmed;
  sessionStorage.setItem(KEY, trimmed);
  who = { name: 'admin', role: 'admin' };
  for (const listener of listeners) listener();
  return who;
}

/** Forgets the credential. */
export function signOut(): void {
  token = null;
  who = null;
  sessionStorage.removeItem(KEY);
  for (const listener of listeners) listener();
}

/** A request to the server with the credential; a 401 signs the page out. */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  const response = await fetch(path, { ...init, headers, credentials: 'same-origin' });
  if (response.status === 401) signOut();
  return response;
}

/** Saves the file at `path` (an artifact) as `filename`. */
export async function download(path: string, filename: string): Promise<void> {
  // A link cannot carry the Authorization header: fetched, then saved from memory.
  const response = await request(path);
  if (!response.ok) throw new Error(`download failed: HTTP ${response.status}`);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
