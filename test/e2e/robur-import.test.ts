/**
 * `kiln import-robur` and builder's orb-build templates with real processes: a server started on a
 * config dir holding builder's `orb-build.template.PLATFORM` files as /etc/builder has them, the
 * CLI importing a builder state file (made with the codec, as builder writes it), real workers
 * running what it queued, and a template removed before dispatch ending its run aborted.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { followRun, kiln, startServer, startWorker, tempDir } from '../helpers/processes.js';
import { legacyQueueEntries, stateFile } from '../helpers/robur-state.js';

const NEXT = Date.UTC(2031, 5, 1, 12, 0, 0);

test('kiln import-robur moves a state file in once; its orb-build runs expand builder\'s templates from the config dir, and one whose template is gone ends aborted', async (t) => {
  const config = tempDir(t);
  // builder's templates, copied as they are (only %%OPAM_PACKAGE%% and %%PLATFORM%%).
  writeFileSync(path.join(config, 'orb-build.template.alpha'), 'echo "building %%OPAM_PACKAGE%% on %%PLATFORM%% (twice: %%PLATFORM%%)"\n');
  writeFileSync(path.join(config, 'orb-build.template.beta'), 'echo "beta builds %%OPAM_PACKAGE%%"\n');
  const server = await startServer(t, { args: ['--config-dir', config] });

  const listed = await kiln(server, ['templates']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^orb-build\s+alpha \(builder's file\), beta \(builder's file\)\s+no$/m);

  const file = path.join(tempDir(t), 'state');
  writeFileSync(file, stateFile({
    dropped: ['retired'],
    schedule: [
      { next: NEXT, period: 'weekly', job: { kind: 'orb-build', job: { name: 'orb-hello', opamPackage: 'hello-pkg' } } },
      { next: NEXT, period: 'daily', job: { kind: 'script', job: { name: 'nightly', script: 'echo nightly\n', platform: 'alpha' } } },
    ],
    queues: [
      { platform: 'alpha', jobs: [{ kind: 'orb-build', job: { name: 'orb-hello', opamPackage: 'hello-pkg' } }] },
      { platform: 'beta', jobs: [{ kind: 'orb-build', job: { name: 'orb-hello', opamPackage: 'hello-pkg' } }] },
    ],
  }, legacyQueueEntries('alpha')));

  const imported = await kiln(server, ['import-robur', file]);
  assert.equal(imported.code, 0, imported.stderr);
  const lines = imported.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^imported robur state [0-9a-f]{12}: 2 jobs added, 0 already present, 2 runs queued, 0 already queued, 1 platform dropped, 0 refused, 2 legacy entries ignored$/);
  assert.ok(lines.includes('  added job orb-hello: orb-build (template orb-build), weekly, next 2031-06-01T12:00:00Z'), imported.stdout);
  assert.ok(lines.includes('  added job nightly: script on alpha, daily, next 2031-06-01T12:00:00Z'), imported.stdout);
  assert.ok(lines.includes('  dropped platform retired'), imported.stdout);
  const queued = lines.filter((l) => l.startsWith('  queued '));
  assert.deepEqual(queued.map((l) => l.replace(/run \S+$/, 'run')), ['  queued orb-hello on alpha: run', '  queued orb-hello on beta: run']);

  const jobs = JSON.parse((await kiln(server, ['jobs', '--json'])).stdout).jobs as { name: string; nextAt: string | null; template: string | null; vars: Record<string, string> }[];
  assert.deepEqual(jobs.map((j) => [j.name, j.nextAt, j.template, j.vars]).sort(), [
    ['nightly', '2031-06-01T12:00:00Z', null, {}],
    ['orb-hello', '2031-06-01T12:00:00Z', 'orb-build', { OPAM_PACKAGE: 'hello-pkg' }],
  ]);

  // Again: nothing taken; --json says so too.
  const again = await kiln(server, ['import-robur', file]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /^robur state [0-9a-f]{12} was imported at \S+: nothing taken now, a file is imported once \(then: 2 jobs added, 2 runs queued, 1 platform dropped\)\n$/);
  const json = JSON.parse((await kiln(server, ['import-robur', file, '--json'])).stdout);
  assert.equal(json.alreadyImported, true);
  assert.deepEqual(json.runs.queued, []);

  // The queued runs run on real workers: alpha's expands builder's template.
  const runs = JSON.parse((await kiln(server, ['runs', '--json'])).stdout).runs as { id: string; platform: string }[];
  const onAlpha = runs.find((r) => r.platform === 'alpha')!;
  const onBeta = runs.find((r) => r.platform === 'beta')!;
  await startWorker(t, server, ['--platform', 'alpha']);
  const alpha = await followRun(server, onAlpha.id);
  assert.deepEqual(alpha.lines, ['building hello-pkg on alpha (twice: alpha)']);
  assert.equal(alpha.run.status, 'succeeded');

  // beta's template is removed before a beta worker takes the run: the run ends aborted, with the reason.
  rmSync(path.join(config, 'orb-build.template.beta'));
  await startWorker(t, server, ['--platform', 'beta']);
  const beta = await followRun(server, onBeta.id);
  assert.equal(beta.run.status, 'failed');
  assert.match(beta.run.resultText ?? '', /^aborted: no template 'orb-build' for platform beta \(looked for orb-build\.beta and orb-build in .*, and for orb-build\.template\.beta in /);
});

test('kiln import-robur with garbage or a missing file: one line on stderr, exit 1', async (t) => {
  const server = await startServer(t);
  const garbage = path.join(tempDir(t), 'state');
  writeFileSync(garbage, 'not a state file at all\n');
  const bad = await kiln(server, ['import-robur', garbage]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^kiln: .+\n$/);
  const missing = await kiln(server, ['import-robur', path.join(tempDir(t), 'nope')]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /^kiln: cannot read state file '.*nope': .+\n$/);
  assert.equal(JSON.parse((await kiln(server, ['jobs', '--json'])).stdout).jobs.length, 0);
});
