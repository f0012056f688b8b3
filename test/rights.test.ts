import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { Names } from '../src/manage/names.js';
import type { Credentials } from '../src/manage/rights.js';
import { MiB } from '../src/units.js';
import { outcome, tempDir } from './helpers.js';

const ROOT: Credentials = { uid: 0, gid: 0, groups: [0] };
const OWNER: Credentials = { uid: 1000, gid: 1000, groups: [1000] };
const GROUP: Credentials = { uid: 1001, gid: 2000, groups: [2000, 1000] }; // 1000 as a supplementary group
const OTHER: Credentials = { uid: 1002, gid: 3000, groups: [3000] };
const ACTORS = { owner: OWNER, group: GROUP, other: OTHER, root: ROOT };

/** mode -> for each actor: r = may open for reading, w = for writing (written out, not computed). */
const MATRIX: Record<number, Record<keyof typeof ACTORS, string>> = {
  0o600: { owner: 'rw', group: '', other: '', root: 'rw' },
  0o640: { owner: 'rw', group: 'r', other: '', root: 'rw' },
  0o644: { owner: 'rw', group: 'r', other: 'r', root: 'rw' },
  0o660: { owner: 'rw', group: 'rw', other: '', root: 'rw' },
  0o604: { owner: 'rw', group: '', other: 'r', root: 'rw' },
  0o400: { owner: 'r', group: '', other: '', root: 'rw' },
  0o000: { owner: '', group: '', other: '', root: 'rw' },
  0o066: { owner: '', group: 'rw', other: 'rw', root: 'rw' },
};


test('rights matrix: open for read/write per owner, group, other and root; chmod owner-only, chown root-only', () => {
  const m = Memory.volatile(32 * MiB);
  const ns = m.names.ns;
  const as = (cred: Credentials) => new Names(m.morsels, ns, { cred });
  const root = as(ROOT);
  root.mkdir('/d', { mode: 0o777 });
  for (const mode of Object.keys(MATRIX).map(Number)) {
    const p = `/d/m${mode.toString(8)}`;
    root.close(root.create(p, { sizeBytes: 4096, mode }));
    root.chown(p, OWNER.uid, OWNER.gid);
    for (const [actor, cred] of Object.entries(ACTORS) as [keyof typeof ACTORS, Credentials][]) {
      const names = as(cred);
      const want = MATRIX[mode][actor];
      for (const [right, write] of [['r', false], ['w', true]] as const) {
        const got = outcome(() => names.close(names.open(p, { write })));
        assert.equal(got, want.includes(right) ? 'ok' : 'EACCES', `${actor} open ${right} of ${mode.toString(8)}`);
      }
    }
  }
  const p = '/d/m640';
  assert.equal(outcome(() => as(GROUP).chmod(p, 0o666)), 'EPERM');
  assert.equal(outcome(() => as(OTHER).chmod(p, 0o666)), 'EPERM');
  assert.equal(outcome(() => as(OWNER).chown(p, OTHER.uid, OTHER.gid)), 'EPERM', 'chown is root-only');
  assert.equal(outcome(() => as(OWNER).chmod(p, 0o606)), 'ok');
  assert.equal(outcome(() => as(OTHER).close(as(OTHER).open(p, { write: true }))), 'ok', 'chmod took effect');
  assert.equal(ns.lookup(p).mode, 0o606);
  // search permission on directories: nobody but the owner (and root) gets through a 0700 directory
  as(ROOT).mkdir('/private', { mode: 0o700 });
  as(ROOT).chown('/private', OWNER.uid, OWNER.gid);
  as(OWNER).close(as(OWNER).create('/private/x', { sizeBytes: 10, mode: 0o666 }));
  assert.equal(outcome(() => as(OTHER).open('/private/x')), 'EACCES');
  assert.equal(outcome(() => as(OTHER).unlink('/private/x')), 'EACCES');
  assert.equal(outcome(() => as(OTHER).list('/private')), 'EACCES');
  assert.equal(outcome(() => as(ROOT).close(as(ROOT).open('/private/x', { write: true }))), 'ok');
  // creating and unlinking needs write permission on the directory
  as(ROOT).mkdir('/ro', { mode: 0o755 });
  assert.equal(outcome(() => as(OTHER).create('/ro/y', { sizeBytes: 10 })), 'EACCES');
  assert.equal(outcome(() => as(OTHER).mkdir('/ro/z')), 'EACCES');
});

test('as nobody (child process with uid/gid 65534): the OS user decides, the region file is the outer boundary', (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to spawn a child as nobody');
    return;
  }
  const dir = tempDir('morsel-rights-');
  fs.chmodSync(dir, 0o755);
  const file = path.join(dir, 'private.region');
  Memory.create(file, 8 * MiB).close();
  fs.chmodSync(file, 0o600);
  const child = fileURLToPath(new URL('./workers/rights-child.js', import.meta.url));
  const r = spawnSync(process.execPath, [child, file], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 30_000 });
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.deepEqual(got, {
    uid: 65534,
    regionFile: 'EACCES',
    read600: 'EACCES',
    read644: 'ok',
    write644: 'EACCES',
    write666: 'ok',
    chmod: 'EPERM',
    chown: 'EPERM',
    mapWriteOfReadHandle: 'EACCES',
  });
});
