// The per-process lookup cache of Names.open (src/manage/lookup-cache.ts):
// another process's unlink / rename / chmod is seen by this process's next
// open, a create keeps the cache, and random sequences of changes made
// through a second Names (its own Namespace and cache, as another process)
// give exactly what a Map model says, with the cache on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { Names } from '../src/manage/names.js';
import { Namespace } from '../src/manage/namespace.js';
import { formatHandle } from '../src/manage/handle.js';
import { MiB } from '../src/units.js';
import { checkRegion } from '../src/recovery/check.js';
import { outcome, tempDir } from './helpers.js';

const ROOT = { uid: 0, gid: 0, groups: [0] };
/** Not the owner, not in the group: the "other" bits decide. */
const OTHER = { uid: 4242, gid: 4242, groups: [4242] };
const child = fileURLToPath(new URL('./workers/names-cache-child.js', import.meta.url));

function runChild(region: string, ops: string): number {
  const r = spawnSync(process.execPath, [child, region, ops], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout).epoch;
}

/** open + close through `names`: 'ok' or the error code. */
const openClose = (names: Names, p: string): string => outcome(() => names.close(names.open(p)));

test('two processes: a second process\'s unlink, rename (of a name and of a directory) and chmod are seen by the next open here; a create keeps the cache', () => {
  const dir = tempDir('morsel-names-cache-');
  const region = path.join(dir, 'r.region');
  const m = Memory.create(region, 32 * MiB);
  try {
    const admin = new Names(m.morsels, m.names.ns, { cred: ROOT });
    for (const d of ['/d', '/e', '/f']) admin.mkdir(d, { mode: 0o755 });
    for (const p of ['/d/a', '/d/b', '/d/c', '/e/x', '/f/y']) admin.close(admin.create(p, { sizeBytes: 4096, mode: 0o644 }));
    const me = new Names(m.morsels, new Namespace(m.region, m.alloc), { cred: OTHER });
    const all = ['/d/a', '/d/b', '/d/c', '/e/x', '/f/y'];
    for (const p of all) assert.equal(openClose(me, p), 'ok', p);
    assert.equal(me.lookups.size, all.length, 'every open filled the cache');
    const epoch0 = me.ns.changeEpoch();

    // A create elsewhere changes no resolution: the cache stays and serves.
    assert.equal(runChild(region, 'create /d/new'), epoch0, 'a create does not move the epoch');
    for (const p of all) assert.equal(openClose(me, p), 'ok', p);
    assert.equal(me.lookups.size, all.length, 'still cached after a create');
    assert.equal(openClose(me, '/d/new'), 'ok');

    const epoch1 = runChild(region, 'unlink /d/a; rename /d/b /d/b2; chmod /d/c 0640; rename /e /e2; chmod /f 0700');
    assert.ok(epoch1 !== epoch0, 'the changes moved the epoch');
    assert.equal(openClose(me, '/d/a'), 'ENOENT', 'unlinked in the other process');
    assert.equal(openClose(me, '/d/b'), 'ENOENT', 'renamed away in the other process');
    assert.equal(openClose(me, '/d/b2'), 'ok', 'the new name opens');
    assert.equal(openClose(me, '/d/c'), 'EACCES', 'chmod 0640: others may not read any more');
    assert.equal(openClose(me, '/e/x'), 'ENOENT', 'its directory was renamed');
    assert.equal(openClose(me, '/e2/x'), 'ok');
    assert.equal(openClose(me, '/f/y'), 'EACCES', 'its directory lost the search bit for others');
    // The same names again: any entry filled now is current too.
    assert.equal(openClose(me, '/d/a'), 'ENOENT');
    assert.equal(openClose(me, '/d/c'), 'EACCES');
    assert.equal(openClose(me, '/d/b2'), 'ok');
    // Re-created under the old name by the other process: the new incarnation, never the old one.
    runChild(region, 'create /d/a');
    const h = me.open('/d/a');
    assert.equal(formatHandle(h), formatHandle(admin.open('/d/a')), 'the name\'s current incarnation');
    me.close(h);
  } finally {
    m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('close() with unlinked morsels still open destroys them after its usage tables are dropped (no cached table outlives them)', () => {
  const dir = tempDir('morsel-names-cache-');
  const file = path.join(dir, 'r.region');
  try {
    const m = Memory.create(file, 32 * MiB);
    const names = m.names;
    const held = [];
    for (let i = 0; i < 3; i++) {
      const h = names.create(`/u${i}`, { sizeBytes: 4096 });
      held.push(h, names.open(`/u${i}`));
      assert.equal(names.unlink(`/u${i}`), false, 'deferred: still open');
    }
    names.close(names.create('/kept', { sizeBytes: 4096 }));
    m.close(); // the handles die with the process's slot: the PENDING morsels go
    const next = Memory.open(file);
    try {
      assert.equal(next.report?.crashed, false, 'closed cleanly');
      assert.equal(next.morsels.list().length, 1, 'only the named morsel is left');
      const report = checkRegion(next);
      assert.equal(report.ok, true, JSON.stringify(report.problems));
      assert.equal(report.lostFrames, 0);
    } finally {
      next.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the cache is bounded: it never holds more than its entry cap', () => {
  const m = Memory.volatile(32 * MiB);
  const admin = new Names(m.morsels, m.names.ns, { cred: ROOT });
  for (let i = 0; i < 40; i++) admin.close(admin.create(`/n${i}`, { sizeBytes: 4096, mode: 0o644 }));
  const me = new Names(m.morsels, new Namespace(m.region, m.alloc), { cred: OTHER, lookupCacheEntries: 16 });
  for (let r = 0; r < 2; r++) for (let i = 0; i < 40; i++) assert.equal(openClose(me, `/n${i}`), 'ok');
  assert.equal(me.lookups.size, 16);
  const off = new Names(m.morsels, new Namespace(m.region, m.alloc), { cred: OTHER, lookupCacheEntries: 0 });
  assert.equal(openClose(off, '/n1'), 'ok');
  assert.equal(off.lookups.size, 0, 'a cap of 0 turns the cache off');
});

// --- model test --------------------------------------------------------------------

type Op =
  | { op: 'create'; path: string; mode: number }
  | { op: 'unlink'; path: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'chmod'; path: string; mode: number }
  | { op: 'open'; path: string }
  /** a create or unlink by the reader (its own Namespace: its directory cache must see the writer's changes) */
  | { op: 'mine'; act: 'create' | 'unlink'; path: string };

const DIRS = ['/a', '/b', '/c'];
const LEAVES = ['x', 'y', 'z'];
const pathArb = fc.oneof(
  fc.constantFrom(...DIRS),
  fc.tuple(fc.constantFrom(...DIRS), fc.constantFrom(...LEAVES)).map(([d, l]) => `${d}/${l}`),
);
const modeArb = fc.constantFrom(0o600, 0o604, 0o644, 0o700, 0o711, 0o755, 0o777, 0o713);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('create' as const), path: pathArb, mode: modeArb }),
  fc.record({ op: fc.constant('unlink' as const), path: pathArb }),
  fc.record({ op: fc.constant('rename' as const), from: pathArb, to: pathArb }),
  fc.record({ op: fc.constant('chmod' as const), path: pathArb, mode: modeArb }),
  { arbitrary: fc.record({ op: fc.constant('open' as const), path: pathArb }), weight: 5 },
  {
    arbitrary: fc.record({ op: fc.constant('mine' as const), act: fc.constantFrom('create' as const, 'unlink' as const), path: fc.tuple(fc.constantFrom(...DIRS), fc.constantFrom(...LEAVES)).map(([d, l]) => `${d}/${l}`) }),
    weight: 3,
  },
);

interface Entry {
  kind: 'dir' | 'morsel';
  mode: number;
  /** the morsel's handle text */
  handle?: string;
}

/** What open by OTHER must give on the model (same order of checks as Names.open). */
function expectedOpen(model: Map<string, Entry>, p: string): string {
  const parts = p.split('/').slice(1);
  for (let i = 1; i <= parts.length; i++) {
    const e = model.get('/' + parts.slice(0, i).join('/'));
    if (e === undefined) return 'ENOENT';
    if (i < parts.length && e.kind !== 'dir') return 'ENOTDIR';
  }
  for (let i = 1; i < parts.length; i++) if ((model.get('/' + parts.slice(0, i).join('/'))!.mode & 0o001) === 0) return 'EACCES';
  const e = model.get(p)!;
  if (e.kind === 'dir') return 'EISDIR';
  return (e.mode & 0o004) === 0 ? 'EACCES' : 'ok';
}

/** What a create or unlink of `p` (a file path: '/d/leaf') by OTHER must give on the model (the order of Names' checks). */
function expectedMine(model: Map<string, Entry>, act: 'create' | 'unlink', p: string): string {
  const dir = model.get(p.slice(0, p.lastIndexOf('/')));
  if (dir === undefined) return 'ENOENT';
  if (dir.kind !== 'dir') return 'ENOTDIR';
  const e = model.get(p);
  if (act === 'unlink' && e === undefined) return 'ENOENT';
  if ((dir.mode & 0o003) !== 0o003) return 'EACCES'; // write and search for "other"; '/' is 0o755
  if (act === 'create') return e === undefined ? 'ok' : 'EEXIST';
  return e!.kind === 'dir' ? 'EISDIR' : 'ok';
}

/**
 * Whether root may search every directory above `p`'s last component: it
 * passes every check but the execute bit, which needs some x bit (rights.ts).
 */
function rootReaches(model: Map<string, Entry>, p: string): boolean {
  const parts = p.split('/').slice(1);
  for (let i = 1; i < parts.length; i++) {
    const e = model.get('/' + parts.slice(0, i).join('/'));
    if (e !== undefined && e.kind === 'dir' && (e.mode & 0o111) === 0) return false;
  }
  return true;
}

/** Applies `op` through the writer (root) and to the model; the writer's success must match the model's. */
function applyChange(writer: Names, model: Map<string, Entry>, op: Exclude<Op, { op: 'open' } | { op: 'mine' }>): void {
  const depth = (p: string) => p.split('/').length - 1;
  if (op.op === 'create') {
    const isDir = depth(op.path) === 1;
    const parent = isDir ? '/' : op.path.slice(0, op.path.lastIndexOf('/'));
    const ok = !model.has(op.path) && (parent === '/' || model.get(parent)?.kind === 'dir') && rootReaches(model, op.path);
    const got = outcome(() => {
      if (isDir) writer.mkdir(op.path, { mode: op.mode });
      else {
        const h = writer.create(op.path, { sizeBytes: 4096, mode: op.mode });
        model.set(op.path, { kind: 'morsel', mode: op.mode, handle: formatHandle(h) });
        writer.close(h);
      }
    });
    assert.equal(got === 'ok', ok, `create ${op.path}: ${got}`);
    if (ok && isDir) model.set(op.path, { kind: 'dir', mode: op.mode });
  } else if (op.op === 'unlink') {
    const ok = model.get(op.path)?.kind === 'morsel' && rootReaches(model, op.path);
    assert.equal(outcome(() => void writer.unlink(op.path)) === 'ok', ok, `unlink ${op.path}`);
    if (ok) model.delete(op.path);
  } else if (op.op === 'chmod') {
    const ok = model.has(op.path) && rootReaches(model, op.path);
    assert.equal(outcome(() => writer.chmod(op.path, op.mode)) === 'ok', ok, `chmod ${op.path}`);
    if (ok) model.get(op.path)!.mode = op.mode;
  } else {
    const { from, to } = op;
    const src = model.get(from);
    const toParent = depth(to) === 1 ? '/' : to.slice(0, to.lastIndexOf('/'));
    const moves = !model.has(to) && (toParent === '/' || model.get(toParent)?.kind === 'dir') && !to.startsWith(from + '/');
    const ok = src !== undefined && (from === to || moves) && rootReaches(model, from) && rootReaches(model, to);
    const got = outcome(() => writer.rename(from, to));
    assert.equal(got === 'ok', ok, `rename ${from} ${to}: ${got}`);
    if (!ok || from === to) return;
    for (const [p, e] of [...model]) {
      if (p !== from && !p.startsWith(from + '/')) continue;
      model.delete(p);
      model.set(to + p.slice(from.length), e);
    }
  }
}

test('model: random create/unlink/rename/chmod by another Names, opens through a cache, match a Map of paths', () => {
  fc.assert(
    fc.property(fc.array(modeArb, { minLength: 4, maxLength: 4 }), fc.array(opArb, { minLength: 10, maxLength: 80 }), (modes, ops) => {
      const m = Memory.volatile(32 * MiB);
      const writer = new Names(m.morsels, m.names.ns, { cred: ROOT });
      const reader = new Names(m.morsels, new Namespace(m.region, m.alloc), { cred: OTHER });
      const model = new Map<string, Entry>();
      for (const d of DIRS.slice(0, 2)) {
        writer.mkdir(d, { mode: 0o755 });
        model.set(d, { kind: 'dir', mode: 0o755 });
      }
      ['/a/x', '/a/y', '/b/x', '/b/y'].forEach((p, i) => applyChange(writer, model, { op: 'create', path: p, mode: modes[i] }));
      for (const op of ops) {
        if (op.op === 'mine') {
          const want = expectedMine(model, op.act, op.path);
          let handle = '';
          const got = outcome(() => {
            if (op.act === 'unlink') return void reader.unlink(op.path);
            const h = reader.create(op.path, { sizeBytes: 4096, mode: 0o644 });
            handle = formatHandle(h);
            reader.close(h);
          });
          assert.equal(got, want, `${op.act} ${op.path} by the reader`);
          if (got === 'ok' && op.act === 'create') model.set(op.path, { kind: 'morsel', mode: 0o644, handle });
          if (got === 'ok' && op.act === 'unlink') model.delete(op.path);
          continue;
        }
        if (op.op !== 'open') {
          applyChange(writer, model, op);
          continue;
        }
        for (let twice = 0; twice < 2; twice++) {
          const want = expectedOpen(model, op.path);
          let handle = '';
          const got = outcome(() => {
            const h = reader.open(op.path);
            handle = formatHandle(h);
            reader.close(h);
          });
          assert.equal(got, want, `open ${op.path} (#${twice + 1})`);
          if (got === 'ok') assert.equal(handle, model.get(op.path)!.handle, `open ${op.path}: the name's current incarnation`);
        }
      }
    }),
    { numRuns: 150 },
  );
});
