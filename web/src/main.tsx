/** The dashboard: a sign-in, then the farm's pages, kept live by the farm's events. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { startLive, stopLive } from './live.js';
import { JobsPage } from './pages/jobs.js';
import { QueuesPage } from './pages/queues.js';
import { RunPage } from './pages/run.js';
import { RunsPage } from './pages/runs.js';
import { SignIn } from './pages/sign-in.js';
import { WorkersPage } from './pages/workers.js';
import { href, useRoute } from './route.js';
import { currentUser, onSessionChange, restoreSession, signOut } from './session.js';

const NAV: [string, string][] = [['jobs', 'Jobs'], ['queues', 'Queues'], ['runs', 'Runs'], ['workers', 'Workers']];

function App() {
  const [user, setUser] = useState(currentUser);
  const route = useRoute();
  useEffect(() => onSessionChange(() => setUser(currentUser())), []);
  useEffect(() => {
    if (user) startLive();
    else stopLive();
    return stopLive;
  }, [user]);
  const [page = 'jobs', id] = route.parts;
  return (
    <>
      <nav class="top">
        <a class="brand" href={href([])}>Kiln</a>
        {user && NAV.map(([key, label]) => <a key={key} href={href([key])} class={page === key ? 'current' : ''}>{label}</a>)}
        <span class="spacer" />
        {user && <span class="muted">{user.name} ({user.role})</span>}
        {user && <button type="button" class="link" onClick={() => void signOut()}>Sign out</button>}
      </nav>
      <main>
        {!user ? <SignIn />
          : page === 'runs' && id ? <RunPage id={id} key={id} />
            : page === 'runs' ? <RunsPage route={route} />
              : page === 'queues' ? <QueuesPage />
                : page === 'workers' ? <WorkersPage />
                  : <JobsPage />}
      </main>
    </>
  );
}

// The session the browser still holds (a cookie, or this tab's token) is found before the first render.
void restoreSession().then(() => render(<App />, document.getElementById('app')!));
