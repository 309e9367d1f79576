/**
 * Who the page is signed in as, and how its requests carry that: the one module that knows the
 * credential. Two ways, chosen by what the server offers:
 *
 * - Browser sessions (`POST /api/session` with the token): the server sets an HttpOnly,
 *   SameSite=Strict cookie the page never sees, and answers who (`{name, role}`) and a CSRF value
 *   that requests changing something carry in `X-Kiln-CSRF`. Nothing is kept by the page but that
 *   value, in memory: a reload asks `GET /api/session` again.
 * - Where the server has no sessions (it answers 404 to `POST /api/session`), the token itself, kept
 *   in the tab's sessionStorage (gone when the tab closes) and sent as `Authorization: Bearer` on
 *   every request.
 *
 * Streams are read with fetch, not EventSource, so that both ways work (EventSource cannot send a
 * header).
 */

/** Who the credential says the user is, and so what the page offers. */
export interface Who {
  name: string;
  /** viewer: reads; operator: also executes, cancels, pauses, drops; admin: everything. */
  role: 'viewer' | 'operator' | 'admin';
}

type Credential = { kind: 'cookie'; csrf: string } | { kind: 'bearer'; token: string };

const TOKEN_KEY = 'kiln.token';
/** What a server without sessions answers to `POST /api/session`. */
const NO_SUCH_ROUTE = 'KILN_ERR_ROUTE_NOT_FOUND';

let credential: Credential | null = null;
let who: Who | null = null;
const listeners = new Set<() => void>();

function set(next: Credential | null, user: Who | null): void {
  credential = next;
  who = user;
  if (next?.kind === 'bearer') sessionStorage.setItem(TOKEN_KEY, next.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  for (const listener of [...listeners]) listener();
}

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

/** The error code of a JSON error answer, if it is one. */
async function errorCode(response: Response): Promise<string | undefined> {
  const body = (await response.json().catch(() => undefined)) as { error?: { code?: string; message?: string } } | undefined;
  return body?.error?.code;
}

/** A one-line reason for a refused sign-in. */
async function refusal(response: Response): Promise<Error> {
  const body = (await response.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
  if (response.status === 401) return new Error('the server refused this token');
  return new Error(body?.error?.message ?? `the server answered ${response.status}`);
}

/**
 * Finds the session the browser still has (a cookie, or a token kept in this tab), at page load.
 * Resolves signed in or not; never throws.
 */
export async function restoreSession(): Promise<void> {
  try {
    const response = await fetch('/api/session', { credentials: 'same-origin' });
    if (response.ok) {
      const reply = (await response.json()) as Who & { csrf: string | null };
      if (reply.csrf) return set({ kind: 'cookie', csrf: reply.csrf }, { name: reply.name, role: reply.role });
    }
  } catch {
    // The server is unreachable: signed out, the sign-in form says what fails.
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) await signInWithToken(token).catch(() => set(null, null));
}

/** Signs in with the token the user typed; throws a one-line error when refused. */
export async function signIn(candidate: string): Promise<Who> {
  const token = candidate.trim();
  if (!token) throw new Error('enter a token');
  const response = await fetch('/api/session', {
    method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }),
  });
  if (response.ok) {
    const reply = (await response.json()) as Who & { csrf: string };
    set({ kind: 'cookie', csrf: reply.csrf }, { name: reply.name, role: reply.role });
    return who!;
  }
  if (response.status === 404 && (await errorCode(response.clone())) === NO_SUCH_ROUTE) return signInWithToken(token);
  throw await refusal(response);
}

/** Without sessions on the server: the token, checked with a read it must be allowed (only the admin's exists there). */
async function signInWithToken(token: string): Promise<Who> {
  const response = await fetch('/api/jobs', { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw await refusal(response);
  set({ kind: 'bearer', token }, { name: 'admin', role: 'admin' });
  return who!;
}

/** Signs out (the server forgets the session). */
export async function signOut(): Promise<void> {
  const was = credential;
  set(null, null);
  if (was?.kind === 'cookie') {
    await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin', headers: { 'x-kiln-csrf': was.csrf } }).catch(() => undefined);
  }
}

/** A request to the server with the credential; a 401 signs the page out. */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const method = (init.method ?? 'GET').toUpperCase();
  if (credential?.kind === 'bearer') headers.set('authorization', `Bearer ${credential.token}`);
  if (credential?.kind === 'cookie' && method !== 'GET' && method !== 'HEAD') headers.set('x-kiln-csrf', credential.csrf);
  const response = await fetch(path, { ...init, headers, credentials: 'same-origin' });
  if (response.status === 401 && credential) set(null, null);
  return response;
}

/** Saves the file at `path` (an artifact) as `filename`. */
export async function download(path: string, filename: string): Promise<void> {
  const link = document.createElement('a');
  link.download = filename;
  let objectUrl: string | undefined;
  if (credential?.kind === 'cookie') {
    // The cookie goes with a plain link: the browser streams the file to disk.
    link.href = path;
  } else {
    // A link cannot carry the Authorization header: fetched, then saved from memory.
    const response = await request(path);
    if (!response.ok) throw new Error(`download failed: HTTP ${response.status}`);
    objectUrl = URL.createObjectURL(await response.blob());
    link.href = objectUrl;
  }
  document.body.append(link);
  link.click();
  link.remove();
  if (objectUrl) setTimeout(() => URL.revokeObjectURL(objectUrl), 60_000);
}
