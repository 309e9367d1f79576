/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core, never a downloaded
 * one) against a real server, worker and CLI: sign in, see a job scheduled by the CLI appear live,
 * watch its run's console fill while it runs, download an artifact and check its sha256, cancel a run
 * from the page, see why a run waits. Waits are on page text, never sleeps.
 *
 * With KILN_DASHBOARD_SCREENSHOTS=DIR it also saves the main pages there (the README's images in
 * docs/ are made so: `KILN_DASHBOARD_SCREENSHOTS=docs node --import tsx --test test/e2e/dashboard.test.ts`).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { chromium, type Page } from 'playwright-core';
import { kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { needs } from '../helpers/requirements.js';

/** Debian's Chromium (.ci/run installs it). */
const CHROMIUM = '/usr/bin/chromium';
/** How long a wait on the page may take before the test fails saying what it waited for. */
const PAGE_WAIT_MS = 60_000;
const shots = process.env.KILN_DASHBOARD_SCREENSHOTS;

async function screenshot(page: Page, name: string): Promise<void> {
  if (!shots) return;
  await page.screenshot({ path: path.join(shots, `dashboard-${name}.png`), fullPage: false });
}

test('the dashboard: sign in, a console followed live, an artifact downloaded and verified, a run cancelled, why a run waits', { skip: needs('chromium') }, async (t) => {
  const server = await startServer(t);
  await startWorker(t, server, ['--platform', 'testos', '--name', 'builder-1', '--label', 'arch=x86_64', '--capacity', '2', '--kill-grace', '200ms']);
  const gates = tempDir(t);

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  page.setDefaultTimeout(PAGE_WAIT_MS);
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('dialog', (dialog) => void dialog.accept());

  // Sign in: a wrong token is refused in one line, the admin's is taken. The page then holds an
  // HttpOnly session cookie, and no token where its script (or another's) could read it.
  await page.goto(server.url + '/');
  await page.fill('input[name=token]', 'not-the-token');
  await page.click('button[type=submit]');
  await page.getByRole('alert').getByText('the server refused this token').waitFor();
  await page.fill('input[name=token]', server.adminToken);
  await page.click('button[type=submit]');
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  await page.getByText('No jobs').waitFor();
  const [cookie] = await page.context().cookies();
  assert.deepEqual([cookie?.httpOnly, cookie?.sameSite], [true, 'Strict']);
  // A string, evaluated in the page (the test's own types know no DOM).
  const visible = await page.evaluate<string>('document.cookie + JSON.stringify(sessionStorage) + JSON.stringify(localStorage)');
  assert.ok(!visible.includes(server.adminToken) && !visible.includes(cookie!.value), 'neither the token nor the session id is readable by the page');

  // A job scheduled through the CLI appears on the open page (the farm's events, no reload, no polling).
  // It prints a line, waits for the test to open its gate, prints another, then leaves an artifact.
  const content = 'kiln dashboard artifact\n'.repeat(1000);
  const script = [
    'echo step-1: started',
    `while [ ! -e ${gates}/open ]; do sleep 0.05; done`,
    'echo step-2: the gate opened',
    `printf '%s' "$(cat ${gates}/content)" > out.bin`,
    'echo step-3: done',
  ].join('\n');
  writeFileSync(path.join(gates, 'content'), content.slice(0, -1));
  assert.equal((await kiln(server, ['schedule', 'slow', '--command', script, '--platform', 'testos', '--label', 'arch=x86_64', '--period', 'never'])).code, 0);
  await page.locator('tr[data-job=slow]').waitFor();
  const executed = await kiln(server, ['execute', 'slow']);
  assert.equal(executed.code, 0, executed.stderr);
  const runId = executed.stdout.trim();

  // The job's row shows the run live; its link opens the run page, whose console follows the run.
  await page.locator(`tr[data-job=slow] a[href="#/runs/${runId}"]`).click();
  const consoleBox = page.getByTestId('console');
  await consoleBox.getByText('step-1: started').waitFor();
  await page.getByTestId('run-status').getByText('running').waitFor();
  assert.equal(await page.locator('[data-console-state]').getAttribute('data-console-state'), 'following');
  assert.equal(await consoleBox.getByText('step-2').count(), 0, 'the job has not passed its gate yet');
  await screenshot(page, 'run');
  writeFileSync(path.join(gates, 'open'), '');
  await consoleBox.getByText('step-2: the gate opened').waitFor();
  await consoleBox.getByText('step-3: done').waitFor();
  await page.getByTestId('run-status').getByText('succeeded').waitFor();
  await page.locator('[data-console-state=ended]').waitFor();
  await page.getByTestId('run-result').getByText('exited 0').waitFor();

  // Its artifact: listed with size and sha256, downloaded from the page, the same bytes.
  const want = createHash('sha256').update(content.slice(0, -1)).digest('hex');
  const row = page.locator('tr[data-artifact="out.bin"]');
  await row.getByText(want).waitFor();
  await row.locator(`[title="${content.length - 1} bytes"]`).getByText('23 KiB').waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('button', { name: 'Download' }).click()]);
  assert.equal(download.suggestedFilename(), 'out.bin');
  const saved = path.join(tempDir(t), 'out.bin');
  await download.saveAs(saved);
  assert.equal(createHash('sha256').update(readFileSync(saved)).digest('hex'), want);
  await screenshot(page, 'run-finished');

  // A run cancelled from the page, by an operator signed in with a token of their own (another
  // browser context: its own cookie): the worker stops it, the page shows it ended, and the cancel
  // is recorded under that token's name (not admin.token's, nor anything the page could send).
  const ottoToken = await kiln(server, ['token', 'create', 'otto', '--role', 'operator']);
  assert.equal(ottoToken.code, 0, ottoToken.stderr);
  const ottoContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const otto = await ottoContext.newPage();
  otto.setDefaultTimeout(PAGE_WAIT_MS);
  otto.on('pageerror', (err) => pageErrors.push(err.message));
  otto.on('dialog', (dialog) => void dialog.accept());
  await otto.goto(server.url + '/');
  await otto.fill('input[name=token]', ottoToken.stdout.trim());
  await otto.click('button[type=submit]');
  await otto.getByRole('heading', { name: 'Jobs' }).waitFor();
  assert.equal((await kiln(server, ['schedule', 'forever', '--command', `echo waiting-for-cancel; while [ ! -e ${gates}/never ]; do sleep 0.05; done`, '--platform', 'testos', '--period', 'never'])).code, 0);
  const forever = (await kiln(server, ['execute', 'forever'])).stdout.trim();
  await otto.goto(`${server.url}/#/runs?job=forever`);
  await otto.locator(`tr[data-run="${forever}"] a`).first().click();
  await otto.getByTestId('console').getByText('waiting-for-cancel').waitFor();
  await otto.getByRole('button', { name: 'Cancel run' }).click();
  await otto.getByTestId('run-status').getByText('cancelled').waitFor();
  const cancelled = JSON.parse((await kiln(server, ['runs', '--job', 'forever', '--json'])).stdout).runs[0];
  assert.equal(cancelled.status, 'cancelled');
  assert.equal(cancelled.cancelRequestedBy, 'otto', 'the cancel is recorded as the signed-in token\'s');
  await ottoContext.close();

  // Why a run waits: no worker of its platform; its labels, on a platform whose worker lacks them.
  assert.equal((await kiln(server, ['schedule', 'lonely', '--command', 'true', '--platform', 'nowhere', '--period', 'never'])).code, 0);
  assert.equal((await kiln(server, ['schedule', 'picky', '--command', 'true', '--platform', 'testos', '--label', 'arch=arm64', '--period', 'never'])).code, 0);
  const lonely = (await kiln(server, ['execute', 'lonely'])).stdout.trim();
  const picky = (await kiln(server, ['execute', 'picky'])).stdout.trim();
  await page.goto(`${server.url}/#/queues`);
  await page.locator(`[data-platform=nowhere] tr[data-run="${lonely}"]`).getByText('no worker of platform nowhere is connected, and no pool starts one').waitFor();
  await page.locator(`[data-platform=testos] tr[data-run="${picky}"]`).getByText('no connected worker of platform testos has the labels arch=arm64').waitFor();
  await screenshot(page, 'queues');
  // The CLI reads the same reasons.
  const queues = await kiln(server, ['queues']);
  assert.equal(queues.code, 0, queues.stderr);
  assert.match(queues.stdout, new RegExp(`^nowhere: 1 waiting, 0 workers, 0 free slots\n  ${lonely.slice(0, 8)} lonely: no worker of platform nowhere is connected, and no pool starts one$`, 'm'));

  // Dropping the platform from the page: its run is cancelled and the queue says it is dropped.
  await page.locator('[data-platform=nowhere]').getByRole('button', { name: 'Drop' }).click();
  await page.locator('[data-platform=nowhere]').getByText('dropped', { exact: true }).waitFor();
  assert.equal(JSON.parse((await kiln(server, ['runs', '--job', 'lonely', '--json'])).stdout).runs[0].status, 'cancelled');
  await page.locator('[data-platform=nowhere]').getByRole('button', { name: 'Undrop' }).click();
  await page.locator('[data-platform=nowhere]').getByRole('button', { name: 'Drop' }).waitFor();

  // The other pages: runs filtered by worker, workers with their labels and capacity, jobs.
  await page.goto(`${server.url}/#/runs?worker=builder-1`);
  await page.locator(`tr[data-run="${runId}"]`).waitFor();
  assert.equal(await page.locator(`tr[data-run="${picky}"]`).count(), 0, 'a run no worker took is not listed under the worker');
  await screenshot(page, 'runs');
  await page.goto(`${server.url}/#/workers`);
  await page.locator('tr[data-worker=builder-1]').getByText('arch=x86_64').waitFor();
  await screenshot(page, 'workers');
  // Pause and resume from the page: a paused cron job shows no next time until it is resumed.
  assert.equal((await kiln(server, ['schedule', 'nightly', '--command', 'true', '--cron', '0 3 * * *', '--tz', 'Europe/Berlin', '--platform', 'testos', '--paused'])).code, 0);
  // The jobs page reads every job's last run in its one GET /api/jobs, not one request per job.
  const asked: string[] = [];
  const noteRequest = (request: { url(): string }) => void asked.push(new URL(request.url()).pathname);
  page.on('request', noteRequest);
  await page.goto(`${server.url}/#/jobs`);
  const nightly = page.locator('tr[data-job=nightly]');
  await nightly.getByText('paused').waitFor();
  await nightly.getByRole('button', { name: 'Resume' }).click();
  await nightly.getByRole('button', { name: 'Pause' }).waitFor();
  const jobs = JSON.parse((await kiln(server, ['jobs', '--json'])).stdout).jobs as { name: string; paused: boolean; nextAt: string }[];
  const resumed = jobs.find((j) => j.name === 'nightly')!;
  assert.equal(resumed.paused, false);
  await nightly.getByText(new Date(resumed.nextAt).getFullYear().toString(), { exact: false }).waitFor();
  await page.locator('tr[data-job=forever]').getByText('cancelled').waitFor();
  page.off('request', noteRequest);
  assert.ok(asked.includes('/api/jobs'), asked.join(' '));
  assert.deepEqual(asked.filter((p) => p.startsWith('/api/runs')), [], 'no request per job for its last run');
  await screenshot(page, 'jobs');

  // A reload keeps the tab signed in; signing out shows the sign-in form again, and a reload stays out.
  await page.reload();
  await page.locator('tr[data-job=slow]').waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('input[name=token]').waitFor();
  await page.reload();
  await page.locator('input[name=token]').waitFor();

  // A viewer sees everything and is offered no action.
  const created = await kiln(server, ['token', 'create', 'vera', '--role', 'viewer', '--json']);
  assert.equal(created.code, 0, created.stderr);
  await page.fill('input[name=token]', JSON.parse(created.stdout).token);
  await page.click('button[type=submit]');
  await page.getByText('vera (viewer)').waitFor();
  await page.locator('tr[data-job=slow]').waitFor();
  assert.equal(await page.locator('main button').count(), 0, 'no action on the jobs page');
  await page.goto(`${server.url}/#/queues`);
  await page.locator(`[data-platform=testos] tr[data-run="${picky}"]`).waitFor();
  assert.equal(await page.locator('main button').count(), 0, 'no drop on the queues page');
  await page.goto(`${server.url}/#/runs/${picky}`);
  await page.getByTestId('run-status').getByText('queued').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Cancel run' }).count(), 0, 'no cancel on a queued run');

  assert.deepEqual(pageErrors, [], 'the page threw no errors');
});
