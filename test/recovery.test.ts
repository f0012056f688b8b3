import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { Region } from '../src/physical/region.js';
import { decodeIdBits, hex, type MorselId } from '../src/morsel/id.js';
import { META_DATA_ID_ENTRY } from '../src/morsel/meta.js';
import { INNER_FLAGS, PS, makeHi, makeLo, pfnOf } from '../src/paging/entry.js';
import { metaLayout } from '../src/physical/layout.js';
import { Mmu } from '../src/space/mmu.js';
import { forEachSlotFrame } from '../src/space/user-slots.js';
import { checkRegion, type CheckReport } from '../src/recovery/check.js';
import { runCheck } from '../src/cli/check.js';
import { CRASH_POINTS } from '../src/crash-point.js';
import { isMorselError } from '../src/errors.js';
import { MiB, type Frame } from '../src/units.js';
import { takeAll, tempDir } from './helpers.js';

const dir = tempDir('morsel-recovery-');
let seq = 0;
const fresh = (): string => path.join(dir, `r${seq++}.region`);
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const codes = (r: CheckReport): string[] => r.problems.map((p) => p.code);
const dist = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
const code = (c: string) => (e: unknown) => isMorselError(e) && e.code === c;

/** Runs an ESM snippet in a fresh process with `Memory` imported (and an optional crash point armed). */
function child(body: string, crashAt = '') {
  const src = `import { Memory } from ${JSON.stringify(dist('../src/memory.js'))};\nimport { Mmu } from ${JSON.stringify(dist('../src/space/mmu.js'))};\n${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', env: { ...process.env, MORSEL_CRASH_AT: crashAt } });
}

/** Marks a closed region as crashed, exactly as a killed process leaves it (state word still "open"). */
function markCrashed(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, Buffer.from([1, 0, 0, 0]), 0, 4, 48);
  } finally {
    fs.closeSync(fd);
  }
}

/** A region with a few morsels (plain and meta, with data) closed cleanly. */
function populated(): { file: string; ids: MorselId[] } {
  const file = fresh();
  const m = Memory.create(file, 16 * MiB);
  const ids = [m.morsels.create(0), m.morsels.create(1), m.morsels.create(2), m.morsels.createMeta(1, { address: 2 ** 40 })];
  const space = m.createSpace();
  const mmu = new Mmu(space);
  for (const id of ids) {
    const base = space.map(id);
    mmu.write(base + 100, new Uint8Array(5000).fill(0x5a).subarray(0, decodeIdBits(id).order === 0 && !decodeIdBits(id).meta ? 3000 : 5000));
    space.unmap(base);
  }
  space.destroy();
  m.close();
  return { file, ids };
}

/** Checks a closed region; `repair`: plans and applies the repair (`--repair --yes`). */
function check(file: string, repair = false): CheckReport {
  const m = Memory.open(file, { mode: repair ? 'exclusive' : 'readonly', recover: false });
  try {
    return checkRegion(m, { repair, apply: repair });
  } finally {
    m.close();
  }
}

/** Edits a closed region in place through a non-recovering open. */
function edit(file: string, fn: (m: Memory) => void): void {
  const m = Memory.open(file, { mode: 'exclusive', recover: false });
  try {
    fn(m);
  } finally {
    m.close();
  }
}

// --- lifecycle ---------------------------------------------------------------------------

test('clean close vs crash: live morsels and their data survive both', () => {
  const { file, ids } = populated();
  const again = Memory.open(file);
  assert.equal(again.report?.crashed, false);
  assert.deepEqual(new Set(again.morsels.list()), new Set(ids));
  again.close();
  // A process that creates, writes and is SIGKILLed before closing.
  const r = child(`
    const m = Memory.open(${JSON.stringify(file)});
    const id = m.morsels.create(1);
    const space = m.createSpace();
    const base = space.map(id);
    new Mmu(space).write(base + 8192, new TextEncoder().encode('survives SIGKILL'));
    process.stdout.write(id.toString());
    process.kill(process.pid, 'SIGKILL');
  `);
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  const id = BigInt(r.stdout) as MorselId;
  const rec = Memory.open(file);
  assert.equal(rec.report?.crashed, true);
  assert.equal(rec.report?.reapedSpaces, 1, "the dead process's space is dropped");
  assert.ok(rec.morsels.list().includes(id), 'a registered morsel is live after the crash');
  const space = rec.createSpace();
  const out = new Uint8Array(16);
  new Mmu(space).read(space.map(id) + 8192, out);
  assert.equal(new TextDecoder().decode(out), 'survives SIGKILL');
  space.destroy();
  const report = checkRegion(rec);
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  assert.equal(report.lostFrames, 0);
  rec.close();
  assert.equal(check(file).ok, true);
});

test('recovery reclaims frames in transit and nothing else', () => {
  const { file } = populated();
  const m = Memory.open(file);
  const usedBefore = m.alloc.totalAllocatable() - m.alloc.freeFrames();
  // The dead process's user slot (its space, the space registry's tables) is dropped by recovery.
  m.createSpace().map(m.morsels.list()[0]);
  let spaceTables = 0;
  forEachSlotFrame(m.morsels, () => spaceTables++);
  assert.ok(spaceTables > 2, 'registry tables, the space root and an inner table');
  assert.equal(m.alloc.totalAllocatable() - m.alloc.freeFrames(), usedBefore + spaceTables);
  for (let i = 0; i < 7; i++) m.alloc.alloc(0); // allocated, never linked: in transit at the "crash"
  m.alloc.release();
  m.abandon(); // no close: the region stays marked open, as after a kill
  const rec = Memory.open(file);
  assert.equal(rec.report?.crashed, true);
  assert.equal(rec.report?.reclaimedFrames, 7 + spaceTables);
  assert.equal(rec.report?.reapedSlots, 1);
  assert.equal(rec.alloc.totalAllocatable() - rec.alloc.freeFrames(), usedBefore);
  rec.close();
});

test('check without --repair leaves a crashed region crashed (and changes nothing)', () => {
  const { file } = populated();
  const m = Memory.open(file);
  m.alloc.alloc(0); // leak one frame, then "crash"
  m.abandon();
  const before = sha(file);
  const r = check(file);
  assert.equal(r.crashed, true);
  assert.ok(codes(r).includes('CRASHED'));
  assert.equal(r.lostFrames, 1);
  assert.equal(sha(file), before, 'inspection writes nothing');
  assert.equal(Region.openFile(file).crashed, true, 'the next open still recovers');
});

test('--repair finishes a pending recovery: spaces dropped, allocator rebuilt, marked clean', () => {
  const { file } = populated();
  const m = Memory.open(file);
  m.createSpace().map(m.morsels.list()[1]);
  m.alloc.alloc(0);
  m.abandon(); // crash
  const r = check(file, true);
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  assert.equal(r.before?.lostFrames, 1);
  assert.ok(r.repaired?.some((p) => p.code === 'CRASHED'));
  assert.equal(Region.openFile(file).crashed, false);
});

// --- detection ------------------------------------------------------------------------------

test('an entry pointing outside the region: ECORRUPT on recovery and on access, listed by check, quarantined by --repair', () => {
  const { file, ids } = populated();
  const root = decodeIdBits(ids[2]).rootFrame; // order 2: a level-2 root table
  edit(file, (m) => m.region.storeEntry(root, 300, makeLo(m.region.frameCount + 5, INNER_FLAGS), makeHi(m.region.frameCount + 5, 0)));
  markCrashed(file);
  const before = sha(file);
  assert.throws(() => Memory.open(file), (e: unknown) => isMorselError(e, 'ECORRUPT') && /outside the allocatable range/.test(e.message));
  assert.equal(sha(file), before, 'recovery refused without changing a byte');
  const r = check(file);
  assert.equal(r.ok, false);
  const p = r.problems.find((x) => x.code === 'ENTRY_RANGE');
  assert.ok(p && p.where.includes(`table ${root}[300]`), JSON.stringify(r.problems));
  assert.deepEqual(r.quarantined, [hex(ids[2])]);
  const plan = check(file); // inspection only
  assert.equal(plan.applied, undefined);
  const fixed = check(file, true);
  assert.equal(fixed.ok, false, 'the damage is kept for a human, not cleared');
  assert.deepEqual(fixed.quarantined, [hex(ids[2])]);
  assert.ok(!fixed.plan?.some((x) => x.what.startsWith('cleared')), JSON.stringify(fixed.plan));
  const m = Memory.open(file);
  assert.equal(m.morsels.list().length, ids.length, 'no morsel was dropped');
  assert.equal(m.region.loadLo(root, 300), makeLo(m.region.frameCount + 5, INNER_FLAGS), 'the quarantined entry is untouched');
  const space = m.createSpace();
  const mmu = new Mmu(space);
  const base = space.map(ids[2]);
  const out = new Uint8Array(4);
  mmu.read(base + 100, out);
  assert.deepEqual([...out], [0x5a, 0x5a, 0x5a, 0x5a], 'the intact part stays readable');
  // The walker refuses the damaged entry (the MMU's own walk needs validTableFrame: see src/paging/walk.ts).
  assert.throws(() => m.morsels.lookupPage(root, 2, 300 * 2 * MiB), code('ECORRUPT'));
  space.destroy();
  m.close();
});

test('--repair without --yes is a dry run: the plan lists what would change and be reclaimed, the file is untouched', () => {
  const { file } = populated();
  const m = Memory.open(file);
  m.alloc.alloc(0);
  m.alloc.alloc(0);
  m.close();
  const before = sha(file);
  const mem = Memory.open(file, { recover: false });
  let dry: CheckReport;
  try {
    dry = checkRegion(mem, { repair: true });
  } finally {
    mem.close();
  }
  assert.equal(sha(file), before, 'dry run writes nothing');
  assert.equal(dry.applied, false);
  assert.ok(dry.plan?.some((p) => p.code === 'ALLOCATOR' && /reclaimed 2 lost frame/.test(p.what)), JSON.stringify(dry.plan));
  assert.equal(dry.lostFrames, 2);
  const applied = check(file, true);
  assert.equal(applied.applied, true);
  assert.deepEqual(applied.plan?.map((p) => p.what), dry.plan?.map((p) => p.what), 'applying does what the dry run said');
  assert.equal(applied.ok, true);
});

test('a cycle (a table pointing at its ancestor) is detected without looping; the morsel is quarantined, not cleared', () => {
  const { file, ids } = populated();
  const d = decodeIdBits(ids[2]);
  edit(file, (m) => {
    const lo = m.region.loadLo(d.rootFrame, 0);
    const child = pfnOf(lo, m.region.loadHi(d.rootFrame, 0)) as Frame; // the populated level-1 table
    m.region.storeEntry(child, 400, makeLo(d.rootFrame, INNER_FLAGS), makeHi(d.rootFrame, 0));
    m.region.storeEntry(d.rootFrame, 401, makeLo(d.rootFrame, INNER_FLAGS), makeHi(d.rootFrame, 0)); // and a self-loop
  });
  const r = check(file);
  assert.deepEqual(codes(r).filter((c) => c === 'CYCLE').length, 2, JSON.stringify(r.problems));
  assert.equal(r.lostFrames, 0);
  const fixed = check(file, true);
  assert.deepEqual(codes(fixed).filter((c) => c === 'CYCLE').length, 2, 'kept for a human');
  assert.deepEqual(fixed.quarantined, [hex(d.id)]);
});

test('a frame referenced twice is reported, never "repaired" by freeing', () => {
  const { file, ids } = populated();
  const a = decodeIdBits(ids[1]).rootFrame; // order-1 roots: level-1 tables of data pages
  let page = 0;
  edit(file, (m) => {
    page = pfnOf(m.region.loadLo(a, 0), m.region.loadHi(a, 0));
    const other = m.morsels.create(1); // a second morsel sharing the data page
    m.region.storeEntry(decodeIdBits(other).rootFrame, 7, makeLo(page, INNER_FLAGS), makeHi(page, 0));
  });
  const r = check(file, true);
  const dup = r.problems.find((p) => p.code === 'DUPLICATE');
  assert.ok(dup && !dup.repairable && dup.what.includes(`frame ${page}`), JSON.stringify(r.problems));
  assert.equal(r.ok, false);
  const m = Memory.open(file);
  assert.ok(m.alloc.isAllocated(page as Frame), 'the shared frame stays allocated');
  m.close();
});

test('a leaked frame: lostFrames > 0, --repair brings it to 0', () => {
  const { file } = populated();
  const m = Memory.open(file);
  const leaked = m.alloc.alloc(0);
  m.close(); // clean close: recovery would never see it
  const r = check(file);
  assert.equal(r.ok, false);
  assert.equal(r.lostFrames, 1);
  assert.ok(r.problems.some((p) => p.code === 'LOST' && p.where.includes(String(leaked))));
  const fixed = check(file, true);
  assert.equal(fixed.lostFrames, 0);
  assert.equal(fixed.ok, true);
  assert.equal(check(file).ok, true);
});

test('allocator counters and bitfields: every mismatch is listed and rebuilt', () => {
  const { file, ids } = populated();
  const root = decodeIdBits(ids[1]).rootFrame;
  edit(file, (m) => {
    const l = metaLayout(m.region.frameCount);
    const child = new Int32Array(m.region.sab, l.childCountersByte, l.children);
    const tree = new Int32Array(m.region.sab, l.treeCountersByte, l.trees);
    child[3] += 5;
    tree[0] ^= 1 << 31; // left reserved
    const bits = new Int32Array(m.region.sab, l.bitfieldsByte, l.children * 16);
    bits[(root >>> 9) * 16 + ((root & 511) >>> 5)] &= ~(1 << (root & 31)); // a live root marked free
    bits[0] &= ~1; // the superblock marked free
  });
  const r = check(file);
  for (const c of ['CHILD_COUNTER', 'TREE_RESERVED', 'FREE_REFERENCED', 'FIXED_FREE']) assert.ok(codes(r).includes(c), `${c} in ${JSON.stringify(r.problems)}`);
  assert.ok(r.problems.some((p) => p.code === 'FREE_REFERENCED' && p.what.includes(`frame ${root} `)));
  assert.equal(check(file, true).ok, true);
});

test('entry flags: PS bit, stray bits, garbage in a non-present entry', () => {
  const { file, ids } = populated();
  const root = decodeIdBits(ids[2]).rootFrame;
  edit(file, (m) => {
    const lo = m.region.loadLo(root, 0);
    m.region.storeEntry(root, 0, lo | PS, m.region.loadHi(root, 0));
    m.region.storeEntry(root, 9, 0, 0x1234); // not present, not zero
  });
  const r = check(file);
  assert.ok(codes(r).includes('ENTRY_PS'));
  assert.ok(codes(r).includes('ENTRY_NOT_ZERO'));
  assert.equal(r.lostFrames, 0, 'a flagged entry is still followed: nothing below it counts as lost');
  const fixed = check(file, true);
  assert.deepEqual(codes(fixed), ['ENTRY_PS'], 'the garbage is cleared, the PS entry is left for a human');
  assert.equal(fixed.problems[0].repairable, false);
});

test('meta morsels: an interrupted destroy (data ID cleared) is finished by --repair; a bad page is reported', () => {
  const { file, ids } = populated();
  const meta = decodeIdBits(ids[3]);
  edit(file, (m) => m.region.storeEntry(meta.rootFrame, META_DATA_ID_ENTRY, 0, 0));
  markCrashed(file);
  assert.throws(() => Memory.open(file), code('ECORRUPT'));
  const r = check(file);
  assert.ok(codes(r).includes('META_NO_DATA'));
  const fixed = check(file, true);
  assert.equal(fixed.ok, true, JSON.stringify(fixed.problems));
  const m = Memory.open(file);
  assert.deepEqual(new Set(m.morsels.list()), new Set(ids.slice(0, 3)), 'the meta morsel is gone, the others stay');
  assert.equal(m.region.frame(decodeIdBits(ids[0]).rootFrame)[100], 0x5a, 'other data untouched');
  m.close();

  const second = populated();
  edit(second.file, (mm) => (mm.region.frame(decodeIdBits(second.ids[3]).rootFrame)[0] = 0)); // magic
  const bad = check(second.file, true);
  assert.ok(bad.problems.some((p) => p.code === 'BAD_META' && !p.repairable));
  assert.ok(bad.lostFrames > 0 && bad.lostFrames === bad.before?.lostFrames, 'nothing reclaimed while a data morsel cannot be followed');
  assert.ok(bad.problems.some((p) => p.code === 'LOST' && !p.repairable));
});

test('a live-table value that is not an ID: reported, kept, lost frames not reclaimed', () => {
  const { file, ids } = populated();
  const d = decodeIdBits(ids[1]);
  edit(file, (m) => {
    const top = m.region.loadRootFrame(0) as Frame;
    const leaf = pfnOf(m.region.loadLo(top, 0), m.region.loadHi(top, 0)) as Frame;
    m.region.storeEntry(leaf, d.rootFrame % 512, d.lo & ~(7 << 9), d.hi); // tag 0
  });
  const r = check(file, true);
  assert.ok(r.problems.some((p) => p.code === 'BAD_ID'));
  assert.ok(r.lostFrames > 0, 'its subtree looks lost but may not be: kept allocated');
  const m = Memory.open(file, { recover: false });
  assert.ok(m.alloc.isAllocated(d.rootFrame));
  m.close();
});

test('truncated file and flipped superblock: ECORRUPT, file untouched, never reformatted', () => {
  const { file } = populated();
  const bin = fs.readFileSync(file);
  const truncated = fresh();
  fs.writeFileSync(truncated, bin.subarray(0, bin.length - 4096));
  const flipped = fresh();
  const b = Buffer.from(bin);
  b[20] ^= 0x10; // a checksummed layout field
  fs.writeFileSync(flipped, b);
  for (const f of [truncated, flipped]) {
    const before = sha(f);
    const r = runCheck(f, { repair: true, apply: true });
    assert.equal(r.ok, false);
    assert.equal(r.problems[0].code, 'ECORRUPT', JSON.stringify(r.problems));
    assert.throws(() => Memory.open(f), code('ECORRUPT'));
    assert.equal(sha(f), before);
  }
});

test('error paths never leak: ENOSPC while registering frees the new roots', () => {
  const file = fresh();
  const m = Memory.create(file, 4 * MiB);
  const hoard = takeAll(m.alloc);
  const keep = (n: number): void => {
    while (m.alloc.freeFrames() < n) m.alloc.free(hoard.pop()!);
  };
  keep(1); // the root fits, the live table's first table does not
  assert.throws(() => m.morsels.create(1), code('ENOSPC'));
  assert.throws(() => m.morsels.createMeta(0, { address: 0 }), code('ENOSPC')); // data root fits, meta page does not
  keep(2);
  assert.throws(() => m.morsels.createMeta(0, { address: 0 }), code('ENOSPC')); // both fit, registering does not
  while (m.alloc.freeFrames() > 1) hoard.push(m.alloc.alloc(0));
  assert.throws(() => m.createSpace(), code('ENOSPC')); // the space root fits, the registry's leaf table does not
  for (const f of hoard) m.alloc.free(f);
  m.close();
  const r = check(file);
  assert.equal(r.lostFrames, 0, JSON.stringify(r.problems));
  assert.equal(r.ok, true);
});

// --- crash points -------------------------------------------------------------------------

test('crash points: an unknown name is refused, an armed one kills at its k-th hit', () => {
  const bad = child('', 'no-such-point:1');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /MORSEL_CRASH_AT/);
  assert.equal(new Set(CRASH_POINTS).size, CRASH_POINTS.length);
});

/**
 * Each lifecycle window, hit deterministically in a child: after recovery
 * the operation is either fully there or fully absent, and nothing is lost.
 */
test('every create/destroy/populate window is rolled back or completed', () => {
  // absent: no frame more than before is allocated; present: the victim keeps what was linked before the crash.
  const cases: { point: string; op: string; expect: 'absent' | 'present' }[] = [
    { point: 'create:before-register:1', op: 'm.morsels.create(2)', expect: 'absent' },
    { point: 'createMeta:before-meta-page:1', op: 'm.morsels.createMeta(1, { address: 2 ** 41 })', expect: 'absent' },
    { point: 'createMeta:before-register:1', op: 'm.morsels.createMeta(1, { address: 2 ** 41 })', expect: 'absent' },
    { point: 'destroy:after-unregister:1', op: 'm.morsels.destroy(victim)', expect: 'absent' },
    { point: 'free:after-bit-clear:1', op: 'm.morsels.destroy(victim)', expect: 'absent' }, // the leaf table's pages: bits cleared in one batch, counters not yet raised
    { point: 'destroy:after-unlink:1', op: 'm.morsels.destroy(victim)', expect: 'absent' }, // the leaf table unlinked, not yet freed
    { point: 'destroy:meta-after-clear-id:1', op: 'm.morsels.destroy(victimMeta)', expect: 'absent' },
    { point: 'destroy:before-free-root:1', op: 'm.morsels.destroy(victim)', expect: 'absent' },
    { point: 'populate:before-link:2', op: 'm.morsels.populate(victim, 0, 1 << 22)', expect: 'present' },
    { point: 'registry:before-link-table:1', op: 'm.createSpace()', expect: 'absent' }, // spaces die with their process
  ];
  for (const c of cases) {
    const file = fresh();
    const setup = Memory.create(file, 16 * MiB);
    const victim = setup.morsels.create(2);
    setup.morsels.populate(victim, 0, 3 * 4096);
    const victimMeta = setup.morsels.createMeta(1, { address: 2 ** 40 });
    setup.morsels.populate(victimMeta, 0, 5 * 4096);
    setup.close();
    const before = check(file);
    const reopened = Memory.open(file);
    const pagesBefore = reopened.morsels.stats(victim).dataPages;
    reopened.close();
    const r = child(
      `const m = Memory.open(${JSON.stringify(file)}); const victim = ${victim}n; const victimMeta = ${victimMeta}n; ${c.op}; process.exit(7);`,
      c.point,
    );
    assert.equal(r.signal, 'SIGKILL', `${c.point}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`morsel-crash-point ${c.point.replace(/:\d+$/, '')}`));
    const m = Memory.open(file);
    assert.equal(m.report?.crashed, true);
    const report = checkRegion(m);
    assert.equal(report.ok, true, `${c.point}: ${JSON.stringify(report.problems)}`);
    const live = m.morsels.list().length;
    if (c.op.includes('destroy')) assert.equal(live, 1, `${c.point}: the destroy completed`);
    else if (c.point.startsWith('create')) assert.equal(live, 2, `${c.point}: the create rolled back`);
    else assert.equal(live, 2, c.point);
    if (c.expect === 'absent') assert.ok(report.frames.allocated <= before.frames.allocated, `${c.point}: no frame kept`);
    else assert.ok(m.morsels.stats(victim).dataPages > pagesBefore, `${c.point}: the page linked before the crash is kept`);
    m.close();
  }
});

// --- the CLI ------------------------------------------------------------------------------

/** `morsel check ...` through registerCheck on a bare commander program (independent of main.ts). */
function cli(args: string[]) {
  const src = `import { Command } from 'commander';
    import { registerCheck } from ${JSON.stringify(dist('../src/cli/check.js'))};
    const program = new Command('morsel');
    registerCheck(program);
    await program.parseAsync(process.argv.slice(1), { from: 'user' });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src, ...args], { encoding: 'utf8', cwd: dist('../..') });
  let json: any = null;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    /* text mode */
  }
  return { status: r.status, out: r.stdout, err: r.stderr, json };
}

test('morsel check: JSON report, exit status 0 / 1 / error class, --repair', () => {
  const { file } = populated();
  const ok = cli(['check', '--region', file, '--json']);
  assert.equal(ok.status, 0, ok.out + ok.err);
  assert.deepEqual({ ok: ok.json.ok, lostFrames: ok.json.lostFrames, problems: ok.json.problems }, { ok: true, lostFrames: 0, problems: [] });
  assert.equal(ok.json.morsels, 4);

  const m = Memory.open(file);
  m.alloc.alloc(0);
  m.close();
  const lost = cli(['check', '--region', file, '--json']);
  assert.equal(lost.status, 1);
  assert.equal(lost.json.lostFrames, 1);
  assert.ok(lost.json.problems.every((p: any) => typeof p.code === 'string' && typeof p.what === 'string' && typeof p.where === 'string'));
  const text = cli(['check', '--region', file]);
  assert.equal(text.status, 1);
  assert.match(text.out, /LOST: 1 frame\(s\) allocated but unreachable/);
  const dry = cli(['check', '--region', file, '--repair', '--json']);
  assert.equal(dry.status, 1, dry.out);
  assert.equal(dry.json.applied, false);
  assert.equal(cli(['check', '--region', file, '--json']).json.lostFrames, 1, 'the dry run changed nothing');
  assert.match(cli(['check', '--region', file, '--repair']).out, /dry run: nothing was changed/);
  assert.equal(cli(['check', '--region', file, '--yes']).status, 2, '--yes alone is refused');
  const fixed = cli(['check', '--region', file, '--repair', '--yes', '--json']);
  assert.equal(fixed.status, 0, fixed.out);
  assert.equal(fixed.json.before.lostFrames, 1);
  assert.equal(cli(['check', '--region', file, '--json']).status, 0);

  const missing = cli(['check', '--region', path.join(dir, 'nope.region'), '--json']);
  assert.equal(missing.status, 3, 'ENOENT exits with its class (src/cli/common.ts)');
  assert.equal(missing.json.error.code, 'ENOENT');

  const truncated = fresh();
  fs.writeFileSync(truncated, fs.readFileSync(file).subarray(0, 8192));
  const before = sha(truncated);
  const bad = cli(['check', '--region', truncated, '--repair', '--json']);
  assert.equal(bad.status, 1);
  assert.equal(bad.json.problems[0].code, 'ECORRUPT');
  assert.equal(sha(truncated), before);
});

test('a count table of 2 MiB and 4 KiB segments: check finds every storage frame owned; after SIGKILL recovery frees them and recounts', () => {
  const file = fresh();
  Memory.create(file, 256 * MiB).close();
  // 250,000 counts need a 2.5 MiB Rosebush array: one 2 MiB segment and 128 frames of 4 KiB.
  const r = child(`
    const m = Memory.open(${JSON.stringify(file)});
    const refs = m.morsels.cow.refs;
    for (let i = 0; i < 250_000; i++) refs.increment(1_000_000 + 3 * i);
    const orders = [];
    refs.forEachStorageSegment((f, order) => orders.push(order));
    process.stdout.write(JSON.stringify(orders));
    process.kill(process.pid, 'SIGKILL');
  `);
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  const orders = JSON.parse(r.stdout) as number[];
  assert.ok(orders.includes(9) && orders.includes(0), `mixed segments: ${orders.length}`);
  const ro = Memory.open(file, { mode: 'readonly', recover: false });
  const live = checkRegion(ro);
  assert.equal(live.lostFrames, 0, 'every storage frame is reached from the anchor');
  assert.ok(codes(live).every((c) => ['REFCOUNT', 'CRASHED', 'TREE_RESERVED'].includes(c)), codes(live).join(', ')); // the fake counts, and what a crash leaves
  ro.close();
  const rec = Memory.open(file);
  assert.equal(rec.report?.crashed, true);
  assert.equal(rec.morsels.cow.refs.stats().entries, 0, 'no tree shares a frame: the recount stores nothing');
  const after = checkRegion(rec);
  assert.equal(after.ok, true, JSON.stringify(after.problems));
  assert.equal(after.lostFrames, 0);
  rec.close();
});
