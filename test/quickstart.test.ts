/**
 * A newcomer's first minutes, from the README itself: `git clone` of this
 * repository's HEAD (committed state) into a temporary folder, the quick
 * start's install (`npm ci`, which must build everything the CLI needs),
 * then the README's marked command-line block, run in order by bash with
 * -euo pipefail. The commands are read from README.md, so README and test
 * cannot drift. Needs git and the npm registry (or its cache).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const MARKER = '<!-- test/quickstart.test.ts runs this block';

/** The first ```sh block after `heading` (or after the marker comment). */
function shBlock(after: string): string {
  const at = readme.indexOf(after);
  assert.ok(at >= 0, `README has ${after}`);
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(m, `a sh block after ${after}`);
  return m[1];
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

const env = { ...process.env, npm_config_fund: 'false', npm_config_audit: 'false', npm_config_update_notifier: 'false', npm_config_prefer_offline: 'true' };

function sh(script: string, cwd: string): { status: number | null; out: string; err: string } {
  // --norc, stdin from /dev/null: a bash whose stdin is a socket (libuv's stdio pipes are socketpairs)
  // may take itself for an rshd child and read /etc/bash.bashrc, which fails under -u.
  const r = spawnSync('bash', ['--norc', '--noprofile', '-euo', 'pipefail', '-c', script], { cwd, env: { ...env, BASH_ENV: '', ENV: '' }, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 64 << 20 });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

test("README quick start in a fresh clone: npm ci, then the command-line examples in order", { timeout: 300_000 }, () => {
  const dir = tempDir('morsel-quickstart-');
  try {
    const clone = path.join(dir, 'morsel');
    const git = spawnSync('git', ['clone', '--quiet', root, clone], { encoding: 'utf8' });
    assert.equal(git.status, 0, git.stderr);
    assert.ok(!fs.existsSync(path.join(clone, 'dist')), 'a clone has no build output');
    // A committed node_modules (e.g. a worktree's symlink to a shared one) would make `npm ci` below
    // empty whatever it points to: refuse before installing.
    assert.equal(lstatOrNull(path.join(clone, 'node_modules')), null, 'node_modules is not committed');

    const install = shBlock('## Quick start').split('\n').find((l) => l.startsWith('npm ci'));
    assert.ok(install, 'the quick start installs with npm ci');
    const ci = sh('npm ci', clone);
    assert.equal(ci.status, 0, ci.out + ci.err);

    const examples = shBlock(MARKER);
    const r = sh(examples, clone);
    assert.equal(r.status, 0, `README command-line block failed:\n${r.out}\n${r.err}`);
    assert.match(r.out, /"frames":\{"total":65536,/, 'stat --json as the README comments it');
    assert.match(r.out, /^0x[0-9a-f]{16}@\d+$/m, 'create <path> prints the handle');
    assert.match(r.out, /^hello$/m, 'read prints what write stored');
    assert.match(r.out, /^-rw-r----- \d+ \d+ +51200 0x[0-9a-f]{16}@\d+ w$/m, 'ls -l');
    assert.match(r.out, /^mode: 0640$/m, 'stat <path>');
    assert.match(r.out, /"tableFrames":\d+,"dataPages":1,/, 'inspect --json');
    assert.match(r.out, /^removed \/models\/v$/m, 'rm');
    assert.match(r.out, /^destroyed 0x[0-9a-f]{16} \(\d+ frames freed\)$/m);
    assert.equal(r.err, '', 'no warnings or errors on stderr');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
