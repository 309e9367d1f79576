/** Jobs and their schedule: next time, period or cron, paused, the last run's result; execute, pause, resume. */
import type { JobsReply, PresentedRun } from '../../../src/cli/api-client.js';
import { get, post } from '../api.js';
import { when } from '../format.js';
import { useLive } from '../live.js';
import { href } from '../route.js';
import { Action, Page, Status, Table } from '../ui.js';

/** Every job with its last run, in one request (not one per job). */
async function loadJobs(): Promise<JobsReply['jobs']> {
  return (await get<JobsReply>('/api/jobs')).jobs;
}

export function JobsPage() {
  // Job changes and run moves change what this page shows; worker and pool events do not.
  const live = useLive(loadJobs, [], (e) => e.type.startsWith('run.') || e.type.startsWith('job.') || e.type.startsWith('platform.'));
  const jobs = live.data ?? [];
  return (
    <Page title="Jobs" error={live.error} loading={!live.data}>
      <Table head={['Job', 'Platforms', 'Schedule', 'Next', 'Last run', '']} rows={jobs.length} empty="No jobs: add one with kiln schedule.">
        {jobs.map((job) => (
          <tr key={job.name} data-job={job.name}>
            <td><a href={href(['runs'], { job: job.name })}>{job.name}</a></td>
            <td>{job.platforms.join(', ')}</td>
            <td>{job.scheduleText}{job.paused && <span class="tag">paused</span>}</td>
            <td>{job.paused ? '–' : when(job.nextAt)}</td>
            <td>{job.lastRun ? <a href={href(['runs', job.lastRun.id])}><Status status={job.lastRun.status} /> {job.lastRun.resultText ?? ''}</a> : <span class="muted">never run</span>}</td>
            <td class="actions">
              <Action label="Execute" run={async () => {
                const { run } = await post<{ run: PresentedRun }>(`/api/jobs/${encodeURIComponent(job.name)}/execute`);
                location.hash = href(['runs', run.id]);
              }} />
              {job.paused
                ? <Action label="Resume" run={() => post(`/api/jobs/${encodeURIComponent(job.name)}/resume`).then(live.reload)} />
                : <Action label="Pause" run={() => post(`/api/jobs/${encodeURIComponent(job.name)}/pause`).then(live.reload)} />}
            </td>
          </tr>
        ))}
      </Table>
    </Page>
  );
}
