/** `kiln server --config FILE`: YAML settings, command-line options win, bad files refused in one line. */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, spawnKiln, tempDir } from '../helpers/processes.js';

test('the server takes listen and data from its config file; a flag given wins', async (t) => {
  const dir = tempDir(t);
  const [filePort, flagPort] = [await freePort(), await freePort()];
  const config = path.join(dir, 'kiln.yaml');
  writeFileSync(config, `listen: 127.0.0.1:${filePort}\ndata: ./state\nheartbeat: 5s\nreattach_grace: 1m\n`);
  const fromFile = spawnKiln(t, ['server', '--config', config]);
  await fromFile.waitFor(new RegExp(`listening on http://127.0.0.1:${filePort} \\(data in ${path.join(dir, 'state')}\\)`));
  assert.ok(existsSync(path.join(dir, 'state', 'admin.token')), 'data is relative to the config file');
  await fromFile.kill('SIGTERM');

  const flagged = spawnKiln(t, ['server', '--config', config, '--listen', `127.0.0.1:${flagPort}`]);
  await flagged.waitFor(new RegExp(`listening on http://127.0.0.1:${flagPort} `));
});

test('a bad config file stops the server with one clear line and exit 2', async (t) => {
  const dir = tempDir(t);
  const cases: [string, RegExp][] = [
    ['colour: red\n', /^kiln: bad config file .*: top level: Unrecognized key: "colour"$/],
    ['heartbeat: soon\n', /^kiln: bad config file .*: heartbeat: use a duration like 10s, 5m or 1h$/],
    ['pools:\n  - name: local\n', /^kiln: bad config file .*: pools\.0\.provider: /],
    ['pools:\n  - {name: vm, provider: qemu, platform: p, max: 1}\n', /^kiln: bad config file .*: pools\.0\.provider: use one of process, bwrap, /],
    ['pools:\n  - {name: a, provider: process, platform: p, max: 1, options: {args: --capacity}}\n', /^kiln: bad config file .*: pools\.0\.options\.args: /],
    ['pools:\n  - {name: a, provider: process, platform: p, max: 1, options: {arg: [x]}}\n', /^kiln: bad config file .*: pools\.0\.options: Unrecognized key: "arg"$/],
    ['pools:\n  - {name: d, provider: docker, platform: p, max: 1, options: {image: x, hostconfig: {memory: lots}}}\n', /^kiln: bad config file .*: pools\.0\.options\.hostconfig\.memory: use a size like 512mb or 4gb$/],
    ['pools:\n  - {name: d, provider: docker, platform: p, max: 1, options: {image: x, hostconfig: {cpus: two}}}\n', /^kiln: bad config file .*: pools\.0\.options\.hostconfig\.cpus: use a number of CPUs like 1\.5$/],
    ['pools:\n  - {name: a, provider: process, platform: p, max: 1}\n  - {name: a, provider: bwrap, platform: q, max: 1}\n', /^kiln: bad config file .*: pools\.1\.name: 'a' is used twice$/],
    ['pools:\n  - {name: a, provider: process, platform: p, max: 1, idle_timeout: soon}\n', /^kiln: bad config file .*: pools\.0\.idle_timeout: use a duration like 10m, 0 \(one run per instance\) or -1 \(never\)$/],
    // Durations out of range: one line naming the field and the limit (timers at most 24d, others 3660d).
    ['heartbeat: 30d\n', /^kiln: bad config file .*: heartbeat: at most 24d$/],
    ['artifacts:\n  keep_for: 100000000d\n', /^kiln: bad config file .*: artifacts\.keep_for: at most 3660d$/],
    ['pools:\n  - {name: a, provider: process, platform: p, max: 1, start_timeout: 30d}\n', /^kiln: bad config file .*: pools\.0\.start_timeout: at most 24d$/],
    ['pools:\n  - {name: a, provider: process, platform: p, max: 1, idle_timeout: 25d}\n', /^kiln: bad config file .*: pools\.0\.idle_timeout: at most 24d$/],
    ['listen: [\n', /^kiln: cannot read config file .*: /],
    ['artifacts:\n  max_file: huge\n', /^kiln: bad config file .*: artifacts\.max_file: use a size like 512mb or 4gb$/],
    ['artifacts:\n  keep_runs: -1\n', /^kiln: bad config file .*: artifacts\.keep_runs: /],
    ['upload: ftp://example.org/\n', /^kiln: bad --upload 'ftp:\/\/example\.org\/': unsupported scheme ftp: \(use http, https, builder-web\+http, builder-web\+https or s3\)$/],
    ['upload:\n  url: s3://builds\n  access_key_id: AKIA\n', /^kiln: S3 access key id and secret access key go together/],
    ['artifacts:\n  store: /shared/blobs\n', /^kiln: bad config file .*: artifacts\.store '\/shared\/blobs': use dir:PATH or s3:\/\/BUCKET\/PREFIX\?endpoint=URL$/],
    ['artifacts:\n  store: s3://blobs/kiln?secret=x\n', /^kiln: config file .*: artifacts\.store: unknown setting 'secret' \(use endpoint, region, force_path_style\)$/],
    ['artifacts:\n  store: s3://blobs\n  access_key_id: AKIA\n', /^kiln: config file .*: artifacts\.store: S3 access key id and secret access key go together/],
    ['artifacts:\n  store: dir:/shared/blobs\n  access_key_id: AKIA\n  secret_access_key: x\n', /^kiln: bad config file .*: artifacts\.access_key_id: only for an s3:\/\/ artifacts\.store$/],
  ];
  for (const [i, [text, message]] of cases.entries()) {
    const file = path.join(dir, `bad-${i}.yaml`);
    writeFileSync(file, text);
    const server = spawnKiln(t, ['server', '--config', file, '--data', path.join(dir, `data-${i}`)]);
    assert.equal((await server.exited).code, 2, text);
    assert.match(server.stderr[0] ?? '', message);
    assert.equal(existsSync(path.join(dir, `data-${i}`)), false, 'nothing was created');
  }
  const flags: [string[], RegExp][] = [
    [['--max-artifact-file', 'huge'], /^kiln: bad --max-artifact-file 'huge': use a size like 512mb or 4gb$/],
    [['--keep-artifacts-runs', 'ten'], /^kiln: bad --keep-artifacts-runs 'ten': give a whole number/],
    [['--keep-artifacts-for', 'forever'], /^kiln: bad --keep-artifacts-for 'forever': use a duration/],
    [['--keep-artifacts-for', '100000000d'], /^kiln: bad --keep-artifacts-for '100000000d': at most 3660d$/],
    [['--reattach-grace', '30d'], /^kiln: bad --reattach-grace '30d': at most 24d \(longer timers fire at once\)$/],
    [['--artifact-store', 'nowhere'], /^kiln: bad --artifact-store 'nowhere': use dir:PATH or s3:\/\/BUCKET\/PREFIX\?endpoint=URL$/],
    [['--upload', 'not a url'], /^kiln: bad --upload 'not a url': use http\(s\):\/\/\[user:password@\]host\/path, builder-web\+https:\/\/user:password@host\/upload or s3:\/\/bucket\/prefix$/],
  ];
  for (const [args, message] of flags) {
    const server = spawnKiln(t, ['server', '--data', path.join(dir, 'flags'), ...args]);
    assert.equal((await server.exited).code, 2, args.join(' '));
    assert.match(server.stderr[0] ?? '', message);
  }
  assert.equal(existsSync(path.join(dir, 'flags')), false, 'nothing was created');
});
