/**
 * Who the page is signed in as, and how its requests carry that: the one module that knows the
 * credential. The page signs in once with a token (`POST /api/session`); the server sets an
 * HttpOnly, SameSite=Strict cookie the page never sees and answers who (`{name, role}`) and a CSRF
 * value, which every request that changes something carries in `X-Kiln-CSRF`. The page keeps no
 * token: only that value, in memory; a reload asks `GET /api/session` again. Streams are plain
 * fetches (the cookie goes with them), downloads plain links.
 */

/** Who the session says the user is, and so what the page offers. */
export interface Who {
  name: string;
  /** viewer: reads; operator: also executes, cancels, pauses, drops; admin: everything. */
  role: 'viewer' | 'operator' | 'admin';
}

/** The session's CSRF value, and who; null when signed out. */
let session: { csrf: string; who: Who } | null = null;
const listeners = new Set<() => void>();

function set(next: typeof session): void {
  session = next;
  for (const listener of [...listeners]) listener();
}

/** The signed-in user, or null. */
export function currentUser(): Who | null {
  return session?.who ?? null;
}

/** Calls `listener` when the user signs in or out; returns how to stop. */
export function onSessionChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** True when the signed-in user may take actions that change the farm (execute, cancel, pause, drop). */
export function mayOperate(): boolean {
  const role = session?.who.role;
  return role === 'operator' || role === 'admin';
}

interface SessionReply extends Who {
  csrf: string | null;
}

/** Finds the session the browser still has (its cookie), at page load; never throws. */
export async function restoreSession(): Promise<void> {
  try {
    const response = await fetch('/api/session', { credentials: 'same-origin' });
    if (!response.ok) return;
    const reply = (await response.json()) as SessionReply;
    if (reply.csrf) set({ csrf: reply.csrf, who: { name: reply.name, role: reply.role } });
  } catch {
    // The server is unreachable: signed out; the sign-in form says what fails.
  }
}

/** Signs in with the token the user typed; throws a one-line error when refused. */
export async function signIn(candidate: string): Promise<Who> {
  const token = candidate.trim();
  if (!token) throw new Error('enter a token');
  const response = await fetch('/api/session', {
    method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }),
  });
  const reply = (await response.json().catch(() => undefined)) as (SessionReply & { error?: { message?: string } }) | undefined;
  if (!response.ok || !reply?.csrf) {
    if (response.status === 401) throw new Error('the server refused this token');
    throw new Error(reply?.error?.message ?? `the server answered ${response.status}`);
  }
  set({ csrf: reply.csrf, who: { name: reply.name, role: reply.role } });
  return session!.who;
}

/** Signs out: the server ends the session and clears the cookie. */
export async function signOut(): Promise<void> {
  const was = session;
  set(null);
  if (was) await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin', headers: { 'x-kiln-csrf': was.csrf } }).catch(() => undefined);
}

/** A request to the server with the session; a 401 (the session ended) signs the page out. */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const method = (init.method ?? 'GET').toUpperCase();
  if (session && method !== 'GET' && method !== 'HEAD') headers.set('x-kiln-csrf', session.csrf);
  const response = await fetch(path, { ...init, headers, credentials: 'same-origin' });
  if (response.status === 401 && session) set(null);
  return response;
}

/** Saves the file at `path` (an artifact) as `filename`: a plain link, so the browser streams it to disk. */
export function download(path: string, filename: string): void {
  const link = document.createElement('a');
  link.href = path;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
}
