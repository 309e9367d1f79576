/** Jobs and their schedule: next time, period or cron, paused, the last run's result; execute, pause, resume. */
import type { InfoReply, PresentedRun } from '../../../src/cli/api-client.js';
import { ApiError, get, post } from '../api.js';
import { when } from '../format.js';
import { useLive } from '../live.js';
import { href } from '../route.js';
import { Action, Page, Status, Table } from '../ui.js';

type Scheduled = InfoReply['schedule'][number] & { last: PresentedRun | null };

async function loadJobs(): Promise<Scheduled[]> {
  const { schedule } = await get<InfoReply>('/api/info');
  return Promise.all(schedule.map(async (job) => {
    try {
      const { run } = await get<{ run: PresentedRun }>(`/api/runs/latest?job=${encodeURIComponent(job.job)}`);
      return { ...job, last: run };
    } catch (raw) {
      if (raw instanceof ApiError && raw.status === 404) return { ...job, last: null };
      throw raw;
    }
  }));
}

export function JobsPage() {
  // Job changes and run moves change what this page shows; worker and pool events do not.
  const live = useLive(loadJobs, [], (e) => e.type.startsWith('run.') || e.type.startsWith('job.') || e.type.startsWith('platform.'));
  const jobs = live.data ?? [];
  return (
    <Page title="Jobs" error={live.error} loading={!live.data}>
      <Table head={['Job', 'Platforms', 'Schedule', 'Next', 'Last run', '']} rows={jobs.length} empty="No jobs: add one with kiln schedule.">
        {jobs.map((job) => (
          <tr key={job.job} data-job={job.job}>
            <td><a href={href(['runs'], { job: job.job })}>{job.job}</a></td>
            <td>{job.platforms.join(', ')}</td>
            <td>{job.schedule}{job.paused && <span class="tag">paused</span>}</td>
            <td>{job.paused ? '–' : when(job.nextAt)}</td>
            <td>{job.last ? <a href={href(['runs', job.last.id])}><Status status={job.last.status} /> {job.last.resultText ?? ''}</a> : <span class="muted">never run</span>}</td>
            <td class="actions">
              <Action label="Execute" run={async () => {
                const { run } = await post<{ run: PresentedRun }>(`/api/jobs/${encodeURIComponent(job.job)}/execute`);
                location.hash = href(['runs', run.id]);
              }} />
              {job.paused
                ? <Action label="Resume" run={() => post(`/api/jobs/${encodeURIComponent(job.job)}/resume`).then(live.reload)} />
                : <Action label="Pause" run={() => post(`/api/jobs/${encodeURIComponent(job.job)}/pause`).then(live.reload)} />}
            </td>
          </tr>
        ))}
      </Table>
    </Page>
  );
}
