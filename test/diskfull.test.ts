// A full file system: a region reserves its blocks when made or opened
// (posix_fallocate), so the failure is ENOSPC up front, never SIGBUS on a
// later page fault. Runs on a small tmpfs this test mounts (needs root).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { isMorselError } from '../src/errors.js';
import { MiB } from '../src/units.js';
import { tempDir } from './helpers.js';

const TMPFS_BYTES = 16 * MiB;
const mnt = tempDir('morsel-diskfull-');
const dist = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
const bin = dist('../../bin/morsel.js');
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const code = (c: string) => (e: unknown) => isMorselError(e, c as never);

/** Why these tests cannot run here, or null once the tmpfs is mounted. */
let skipReason: string | null = 'not set up';
before(() => {
  if (process.getuid?.() !== 0) {
    skipReason = 'needs root to mount a small tmpfs';
  } else {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES}`, 'tmpfs', mnt], { encoding: 'utf8' });
    skipReason = r.status === 0 ? null : `cannot mount a tmpfs: ${(r.stderr || r.error?.message || '').trim()}`;
  }
  if (skipReason !== null) console.log(`# diskfull tests skipped: ${skipReason}`);
});
after(() => {
  // Lazy: this process's mappings of region files (released at GC) would keep it busy.
  if (skipReason === null) spawnSync('umount', ['-l', mnt]);
  fs.rmSync(mnt, { recursive: true, force: true });
});

/** Fills the file system with a junk file until `leaveBytes` or less are free. */
function fill(leaveBytes: number): string {
  const junk = path.join(mnt, 'junk');
  const { bavail, bsize } = fs.statfsSync(mnt);
  const bytes = Math.max(0, bavail * bsize - leaveBytes);
  const fd = fs.openSync(junk, 'w');
  try {
    fs.writeSync(fd, Buffer.alloc(bytes, 1));
  } finally {
    fs.closeSync(fd);
  }
  return junk;
}

test('init on a file system too small: ENOSPC and no file left behind (library and CLI)', (t) => {
  if (skipReason !== null) return t.skip(skipReason);
  const file = path.join(mnt, 'big.region');
  assert.throws(() => Memory.create(file, 2 * TMPFS_BYTES), code('ENOSPC'));
  assert.equal(fs.existsSync(file), false);
  const r = spawnSync(process.execPath, [bin, 'init', file, '--size', '32MiB', '--json'], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.equal(r.signal, null);
  assert.equal(JSON.parse(r.stdout).error.code, 'ENOSPC', r.stdout + r.stderr);
  assert.equal(fs.existsSync(file), false);
});

test('a region made on a file system that then fills up: using every frame never SIGBUSes', (t) => {
  if (skipReason !== null) return t.skip(skipReason);
  const file = path.join(mnt, 'full.region');
  Memory.create(file, 8 * MiB).close();
  assert.ok(fs.statSync(file).blocks * 512 >= 8 * MiB, 'every block reserved at init');
  const junk = fill(0);
  try {
    // Writes every free frame of the region through morsels until the allocator (not the disk) says ENOSPC.
    const src = `import { Memory } from ${JSON.stringify(dist('../src/memory.js'))};
      const m = Memory.open(${JSON.stringify(file)});
      let pages = 0;
      try {
        for (;;) { const id = m.morsels.create(1); m.morsels.populate(id, 0, 2 * 1024 * 1024); pages += 512; }
      } catch (e) { if (e.code !== 'ENOSPC') throw e; }
      m.close();
      process.stdout.write(String(pages));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8' });
    assert.equal(r.signal, null, 'no SIGBUS');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(Number(r.stdout) > 0);
  } finally {
    fs.rmSync(junk);
  }
});

test('a sparse region file made elsewhere: reserved on open, or a clear ENOSPC with the file unchanged', (t) => {
  if (skipReason !== null) return t.skip(skipReason);
  const elsewhere = path.join(path.dirname(mnt), `${path.basename(mnt)}.src.region`);
  Memory.create(elsewhere, 8 * MiB).close();
  const file = path.join(mnt, 'sparse.region');
  const cp = spawnSync('cp', ['--sparse=always', elsewhere, file]);
  fs.rmSync(elsewhere);
  assert.equal(cp.status, 0);
  assert.ok(fs.statSync(file).blocks * 512 < 8 * MiB, 'the copy is sparse');
  const junk = fill(1 * MiB);
  const before = sha(file);
  try {
    assert.throws(() => Memory.open(file), (e: unknown) => isMorselError(e, 'ENOSPC') && /no room to reserve/.test(e.message));
    assert.equal(sha(file), before, 'refused before changing anything');
    const ro = Memory.open(file, { mode: 'readonly' });
    assert.equal(ro.morsels.list().length, 0, 'a read-only open needs no reservation');
    ro.close();
  } finally {
    fs.rmSync(junk);
  }
  const m = Memory.open(file);
  assert.equal(m.report?.crashed, false);
  assert.ok(fs.statSync(file).blocks * 512 >= 8 * MiB, 'reserved on open');
  m.close();
});
