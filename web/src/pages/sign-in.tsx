/** The sign-in form: a token, checked with the server. */
import { useState } from 'preact/hooks';
import { signIn } from '../session.js';

export function SignIn() {
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const token = String(new FormData(event.currentTarget as HTMLFormElement).get('token') ?? '');
    setBusy(true);
    setError(undefined);
    try {
      await signIn(token);
    } catch (raw) {
      setError((raw as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="sign-in card" onSubmit={submit}>
      <h1>Sign in to Kiln</h1>
      <p class="muted">Paste a token: the admin token is in the server's data dir (<code>admin.token</code>).</p>
      <label>Token <input name="token" type="password" autoComplete="current-password" autoFocus /></label>
      <button type="submit" disabled={busy}>Sign in</button>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}
