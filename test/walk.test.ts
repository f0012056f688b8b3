import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import fc from 'fast-check';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { decodeIdBits } from '../src/morsel/id.js';
import { orderBytes, tableIndex } from '../src/morsel/order.js';
import { Registry, userSlotRoot } from '../src/morsel/registry.js';
import { INNER_FLAGS, makeHi, makeLo } from '../src/paging/entry.js';
import { ENTRIES_PER_TABLE, Walker, allocatableRange, indexAt, levelSpan, validTableFrame } from '../src/paging/walk.js';
import { SLOT_SPACES_ROOT, SLOT_USAGE_ROOTS, firstAllocatableFrame } from '../src/physical/layout.js';
import { OWNED_ROOT_SLOTS, sealRoots } from '../src/physical/superblock.js';
import { checkRegion } from '../src/recovery/check.js';
import { registerReachVisitor } from '../src/recovery/reachable.js';
import { runCheck } from '../src/cli/check.js';
import { isMorselError } from '../src/errors.js';
import { MiB, PAGE_SIZE, type Frame } from '../src/units.js';
import { tempDir } from './helpers.js';

const dir = tempDir('morsel-walk-');
let seq = 0;
const fresh = (): string => path.join(dir, `r${seq++}.region`);
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const corrupt = (pattern: RegExp) => (e: unknown) => isMorselError(e, 'ECORRUPT') && pattern.test(e.message);
const F = (n: number): Frame => n as Frame;

test('geometry: one definition of entries, spans and indices, shared with morsel orders', () => {
  assert.equal(ENTRIES_PER_TABLE, 512);
  for (let level = 1; level <= 5; level++) assert.equal(levelSpan(level), 2 ** (12 + 9 * (level - 1)));
  for (const order of [0, 1, 2, 3, 4] as const) assert.equal(orderBytes(order), levelSpan(order + 1));
  const addr = 3 * 2 ** 39 + 7 * 2 ** 30 + 511 * 2 ** 21 + 2 * 4096 + 5;
  assert.deepEqual([4, 3, 2, 1].map((l) => indexAt(addr, l)), [3, 7, 511, 2]);
  assert.equal(tableIndex(addr, 2), indexAt(addr, 2));
  const m = Memory.volatile(8 * MiB);
  const { first, end } = allocatableRange(m.region);
  assert.equal(first, firstAllocatableFrame(m.region.frameCount));
  assert.equal(end, m.region.frameCount);
  assert.ok(validTableFrame(first, first, end) && !validTableFrame(first - 1, first, end) && !validTableFrame(end, first, end) && !validTableFrame(0, first, end));
});

test('walker: ensureChild allocates once, descend follows, forEachPresent visits present entries in order', () => {
  const m = Memory.volatile(8 * MiB);
  const w = new Walker(m.region, m.alloc);
  const root = w.zeroedFrame();
  const free = m.alloc.freeFrames();
  const child = w.ensureChild(root, 9, 'populate:before-link');
  assert.equal(w.ensureChild(root, 9, 'populate:before-link'), child, 'the second call follows the first child');
  assert.equal(w.linkedFrames, 1);
  assert.equal(m.alloc.freeFrames(), free - 1);
  const page = w.ensureChild(child, 4, null);
  const addr = 9 * levelSpan(2) + 4 * levelSpan(1);
  assert.equal(w.descend(root, 2, addr, 0), page);
  assert.equal(w.descend(root, 2, addr, 1), child);
  assert.equal(w.descend(root, 2, addr + levelSpan(1), 0), -1, 'a missing entry ends the walk');
  w.ensureChild(root, 3, null);
  const seen: number[] = [];
  w.forEachPresent(root, (i) => seen.push(i));
  assert.deepEqual(seen, [3, 9]);
});

test('walker: forEachPresent reports exactly the present entries of any table, with both halves, and nests (a visitor walks another table)', () => {
  const m = Memory.volatile(8 * MiB);
  const w = new Walker(m.region, m.alloc);
  const table = w.zeroedFrame();
  const other = w.zeroedFrame();
  const words = m.region.words(table);
  const base = m.region.wordIndex(table, 0);
  m.region.words(other)[m.region.wordIndex(other, 2 * 7)] = 0x1001; // one present entry, index 7
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: ENTRIES_PER_TABLE - 1 }), fc.integer(), fc.integer()), { maxLength: 2 * ENTRIES_PER_TABLE }), (entries) => {
      words.fill(0, base, base + 2 * ENTRIES_PER_TABLE);
      for (const [i, lo, hi] of entries) {
        words[base + 2 * i] = lo;
        words[base + 2 * i + 1] = hi;
      }
      const want: [number, number, number][] = [];
      for (let i = 0; i < ENTRIES_PER_TABLE; i++) if ((words[base + 2 * i] & 1) !== 0) want.push([i, words[base + 2 * i], words[base + 2 * i + 1]]);
      const seen: [number, number, number][] = [];
      w.forEachPresent(table, (i, lo, hi) => {
        let nested = 0;
        w.forEachPresent(other, (j, lo) => void (nested++, assert.deepEqual([j, lo], [7, 0x1001]))); // a nested scan must not disturb this one
        assert.equal(nested, 1);
        seen.push([i, lo, hi]);
      });
      assert.deepEqual(seen, want);
    }),
    { numRuns: 200 },
  );
});

test('walker: linkPrivate links a run of pages all or nothing; ownedPages lists the writable ones', () => {
  const m = Memory.volatile(8 * MiB);
  const w = new Walker(m.region, m.alloc);
  const table = w.zeroedFrame();
  const frames = [w.zeroedFrame(), w.zeroedFrame(), w.zeroedFrame(), w.zeroedFrame()];
  const linked = w.linkedFrames;
  assert.equal(w.linkPrivate(table, 10, frames, 1, 3), true);
  assert.equal(w.linkedFrames, linked + 3);
  for (let i = 0; i < 3; i++) assert.equal(w.child(table, 10 + i), frames[1 + i]);
  const before = m.region.frame(table).slice();
  assert.equal(w.linkPrivate(table, 8, frames, 0, 3), false, 'entry 10 is taken');
  assert.deepEqual(m.region.frame(table), before, 'nothing written');
  const out = new Int32Array(ENTRIES_PER_TABLE);
  const others: number[] = [];
  assert.equal(w.ownedPages(table, out, (i) => others.push(i)), 3);
  assert.deepEqual([...out.subarray(0, 3)], frames.slice(1));
  assert.deepEqual(others, []);
  assert.equal(m.alloc.freeSmallBatch(out, 3), 0);
  assert.equal(m.alloc.freeSmallBatch(out, 3), 3, 'a second free of the same frames is refused');
});

test('walker: a frame outside the allocatable range, a free frame or garbage is ECORRUPT naming table and index; nothing changes', () => {
  const m = Memory.volatile(8 * MiB);
  const w = new Walker(m.region, m.alloc);
  const root = w.zeroedFrame();
  const freeFrame = m.alloc.alloc(0);
  m.alloc.free(freeFrame);
  const bad = [0, 1, w.first - 1, m.region.frameCount, m.region.frameCount + 100, 2 ** 39, freeFrame];
  for (const [i, frame] of bad.entries()) m.region.storeEntry(root, i, makeLo(frame, INNER_FLAGS), makeHi(frame, 0));
  m.region.storeEntry(root, 100, 0, 0x1234); // not present, not zero
  const free = m.alloc.freeFrames();
  for (const [i, frame] of bad.entries()) {
    const why = frame === freeFrame ? /which the allocator has free/ : /outside the allocatable range/;
    assert.throws(() => w.child(root, i), corrupt(new RegExp(`table frame ${root} entry ${i} references frame ${frame}, ${why.source}`)));
    assert.throws(() => w.ensureChild(root, i, null), corrupt(why));
    assert.throws(() => w.descend(root, 2, i * levelSpan(2), 0), corrupt(why));
  }
  assert.throws(() => w.ensureChild(root, 100, null), corrupt(new RegExp(`table frame ${root} entry 100 is not present but not zero`)));
  assert.equal(m.alloc.freeFrames(), free, 'no frame allocated or leaked by a refused walk');
  assert.throws(() => w.root(0, () => 'test cell'), corrupt(/test cell holds frame 0/));
});

test('the attack from issue 10: an order-1 morsel whose table points at the superblock cannot write it', () => {
  const m = Memory.volatile(8 * MiB);
  const id = m.morsels.create(1);
  const root = decodeIdBits(id).rootFrame;
  m.region.storeEntry(root, 0, makeLo(0, INNER_FLAGS), makeHi(0, 0));
  const sb = new Uint8Array(m.region.frame(F(0)));
  assert.throws(() => m.morsels.write(id, 0, new Uint8Array(64).fill(0xff)), corrupt(/references frame 0/));
  assert.throws(() => m.morsels.read(id, 0, new Uint8Array(8)), corrupt(/references frame 0/));
  assert.deepEqual(new Uint8Array(m.region.frame(F(0))), sb, 'superblock untouched');
  assert.throws(() => m.morsels.stats(id), corrupt(/references frame 0/));
});

test('Morsels.read/write: byte-exact, reads of unpopulated pages return zeros and populate nothing, ERANGE before anything changes', () => {
  const m = Memory.volatile(8 * MiB);
  const id = m.morsels.create(2);
  const data = crypto.randomBytes(3 * PAGE_SIZE + 17);
  m.morsels.write(id, 5 * 2 * MiB - 100, data);
  const back = new Uint8Array(data.length);
  m.morsels.read(id, 5 * 2 * MiB - 100, back);
  assert.deepEqual(Buffer.from(back), data);
  const free = m.alloc.freeFrames();
  const zeros = new Uint8Array(3 * PAGE_SIZE).fill(1);
  m.morsels.read(id, 100 * 2 * MiB, zeros);
  assert.ok(zeros.every((b) => b === 0));
  assert.equal(m.alloc.freeFrames(), free, 'reading never populates');
  assert.throws(() => m.morsels.write(id, orderBytes(2) - 1, new Uint8Array(2)), (e: unknown) => isMorselError(e, 'ERANGE'));
  assert.equal(m.alloc.freeFrames(), free);
});

/** Rewrites the superblock's owned root slots of a closed region file (resealed unless `reseal` is false). */
function editRoots(file: string, edit: (roots: number[]) => void, reseal = true): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const frame0 = new Uint8Array(PAGE_SIZE);
    fs.readSync(fd, frame0, 0, PAGE_SIZE, 0);
    const view = new DataView(frame0.buffer);
    const roots = Array.from({ length: OWNED_ROOT_SLOTS }, (_, s) => view.getUint32(64 + 8 * s, true));
    edit(roots);
    if (reseal) sealRoots(frame0, roots);
    else for (let s = 0; s < OWNED_ROOT_SLOTS; s++) view.setUint32(64 + 8 * s, roots[s], true);
    fs.writeSync(fd, frame0, 0, PAGE_SIZE, 0);
  } finally {
    fs.closeSync(fd);
  }
}

test('root slots: created at format, checksummed, distinct, allocated; a bad one is ECORRUPT at open and the file is untouched', () => {
  const file = fresh();
  const m = Memory.create(file, 8 * MiB);
  const roots = Array.from({ length: OWNED_ROOT_SLOTS }, (_, s) => m.region.loadRootFrame(s));
  assert.equal(new Set(roots).size, OWNED_ROOT_SLOTS);
  for (const r of roots) assert.ok(r >= firstAllocatableFrame(m.region.frameCount) && m.alloc.isAllocated(F(r)));
  m.morsels.create(1);
  const free = m.alloc.alloc(0);
  m.alloc.free(free);
  m.close();
  const pristine = fs.readFileSync(file);
  const cases: [string, (roots: number[]) => void, boolean, RegExp][] = [
    ['slot 1 set to slot 0 without the checksum', (r) => (r[1] = r[0]), false, /root checksum mismatch/],
    ['slot 1 set to slot 0, resealed', (r) => (r[1] = r[0]), true, /root slot 1 holds frame \d+, the table of root slot 0/],
    ['slot 2 at the superblock', (r) => (r[2] = 0), true, /root slot 2 holds frame 0, outside/],
    ['slot 3 past the end', (r) => (r[3] = 1 << 30), true, /root slot 3 holds frame \d+, outside/],
    ['slot 0 at a free frame', (r) => (r[0] = free), true, /superblock root slot 0 holds frame \d+, which the allocator has free/],
  ];
  for (const [what, edit, reseal, why] of cases) {
    fs.writeFileSync(file, pristine);
    editRoots(file, edit, reseal);
    const before = sha(file);
    assert.throws(() => Memory.open(file), corrupt(why), what);
    assert.equal(sha(file), before, `${what}: nothing written`);
    const r = runCheck(file, { repair: false, apply: false });
    assert.equal(r.ok, false, what);
  }
});

test('scanner: root slots 2 and 3 are owned (no problem), a registered visitor makes its frames reachable', () => {
  const file = fresh();
  const m = Memory.create(file, 8 * MiB);
  // The namespace and reservation visitors (registered by Memory) make their frames reachable.
  m.names.mkdir('/d');
  for (let i = 0; i < 50; i++) m.names.create(`/d/m${i}`, { sizeBytes: 4096 });
  let r = checkRegion(m);
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  // A frame nothing references is lost until a visitor claims it.
  const kept = m.alloc.alloc(0);
  m.region.zeroFrame(kept);
  m.alloc.release();
  r = checkRegion(m);
  assert.deepEqual(r.problems.map((p) => p.code), ['LOST']);
  let calls = 0;
  const unregister = registerReachVisitor({
    name: 'test structure',
    visit(ctx, top) {
      calls++;
      assert.equal(top, null, 'a visitor without a root slot finds its own roots');
      ctx.ref(kept, 'test structure', null);
    },
  });
  try {
    r = checkRegion(m);
  } finally {
    unregister();
  }
  assert.equal(calls, 1);
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  m.alloc.free(kept);
  m.close();
});

test('user-slot registries: reachable for check, dropped (fields cleared, frames reclaimed) by recovery', () => {
  const file = fresh();
  const m = Memory.create(file, 8 * MiB);
  const usage = new Registry(m.region, m.alloc, userSlotRoot(m.region, 0, SLOT_USAGE_ROOTS[0]));
  const spaces = new Registry(m.region, m.alloc, userSlotRoot(m.region, 3, SLOT_SPACES_ROOT));
  usage.add(12345, 0x77 | 1, 0);
  const root = m.alloc.alloc(0);
  m.region.zeroFrame(root);
  spaces.add(root, makeLo(root, INNER_FLAGS), makeHi(root, 0));
  const r = checkRegion(m);
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  assert.equal(r.spaces, 1);
  m.alloc.release();
  m.abandon(); // a crash: locks dropped, nothing cleaned up
  const rec = Memory.open(file);
  assert.equal(rec.report?.crashed, true);
  assert.equal(rec.region.loadSlotRoot(0, SLOT_USAGE_ROOTS[0]), 0);
  assert.equal(rec.region.loadSlotRoot(3, SLOT_SPACES_ROOT), 0);
  const after = checkRegion(rec);
  assert.equal(after.ok, true, JSON.stringify(after.problems));
  assert.equal(after.lostFrames, 0);
  rec.close();
  // A damaged user-slot root is followed by nobody: ECORRUPT, not a walk into metadata.
  const m2 = Memory.open(file);
  assert.ok(m2.region.casSlotRoot(1, SLOT_USAGE_ROOTS[0], 0, 7));
  assert.throws(() => new Registry(m2.region, m2.alloc, userSlotRoot(m2.region, 1, SLOT_USAGE_ROOTS[0])).get(5), corrupt(/user slot 1 field 4 holds frame 7/));
  assert.ok(checkRegion(m2).problems.some((p) => p.code === 'USER_SLOT_ROOT'));
  m2.region.casSlotRoot(1, SLOT_USAGE_ROOTS[0], 7, 0);
  m2.close();
});

const dist = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));

test('check on a region another process is busy with: read-only, no false problems; --repair is EBUSY', async () => {
  const file = fresh();
  Memory.create(file, 16 * MiB).close();
  const src = `import { Memory } from ${JSON.stringify(dist('../src/memory.js'))};
    const m = Memory.open(${JSON.stringify(file)});
    const data = new Uint8Array(3 * 4096).fill(9);
    m.alloc.alloc(0); // a leak: unreachable for the whole run
    process.stdout.write('ready\\n');
    const until = Date.now() + 2500;
    for (let i = 0; Date.now() < until; i++) {
      const id = m.morsels.create(i % 3);
      m.morsels.write(id, 0, data.subarray(0, i % 3 === 0 ? 4096 : data.length));
      if (i >= 8) m.morsels.destroy(id); // a few stay, the rest churn
    }
    m.close();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', src], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  await new Promise<void>((res) => child.stdout.once('data', () => res()));
  try {
    for (let round = 0; round < 4; round++) {
      const r = runCheck(file, { repair: false, apply: false });
      assert.equal(r.live, true, 'the check knows the region is in use');
      assert.deepEqual(r.problems, [], `round ${round}: no false problems`);
      assert.ok((r.suspectFrames ?? 0) >= 1, 'the leak is a suspect, not (yet) a problem');
      assert.throws(() => runCheck(file, { repair: true, apply: false }), (e: unknown) => isMorselError(e, 'EBUSY'));
    }
  } finally {
    assert.equal(await exited, 0);
  }
  const quiet = runCheck(file, { repair: false, apply: false });
  assert.equal(quiet.live, false);
  assert.deepEqual(quiet.problems.map((p) => p.code), ['LOST'], 'idle: the leak is confirmed, nothing else');
  assert.equal(quiet.lostFrames, 1);
});

test('address spaces: a damaged table entry is ECORRUPT on map, and teardown clears it instead of following it', () => {
  const m = Memory.volatile(8 * MiB);
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(1);
  const at = space.map(id, { address: 2 * MiB });
  const pml4 = space.rootFrame;
  const pdpt = m.region.loadLo(pml4, 0) >>> 12;
  m.region.storeEntry(F(pdpt), 1, makeLo(3, INNER_FLAGS), makeHi(3, 0)); // the PD slot of [1 GiB, 2 GiB) -> a reserved frame
  assert.throws(() => space.map(m.morsels.create(1), { address: 2 ** 30 }), corrupt(/references frame 3/));
  assert.throws(() => space.mappingAt(2 ** 30), corrupt(/references frame 3/));
  assert.equal(space.mappingAt(at)?.rootFrame, decodeIdBits(id).rootFrame, 'the intact mapping is still found');
  const free = m.alloc.freeFrames();
  space.destroy(); // clears the damaged entry, frees the intact tables, never touches frame 3
  assert.ok(m.alloc.freeFrames() > free);
  assert.equal(m.region.loadLo(F(pdpt), 1), 0);
  m.morsels.destroy(id);
});

test('destroying a damaged morsel completes: the damaged entry is cleared, never followed; check then reclaims what it hid', () => {
  const file = fresh();
  const m = Memory.create(file, 8 * MiB);
  const id = m.morsels.create(2);
  m.morsels.write(id, 0, new Uint8Array(10).fill(1));
  m.morsels.write(id, 3 * 2 * MiB, new Uint8Array(10).fill(2));
  const root = decodeIdBits(id).rootFrame;
  const hidden = m.region.loadLo(root, 3) >>> 12; // the level-1 table the damage will hide
  m.region.storeEntry(root, 3, makeLo(1, INNER_FLAGS), makeHi(1, 0)); // now names boot scratch
  const boot = new Uint8Array(m.region.frame(F(1)));
  m.morsels.destroy(id);
  assert.deepEqual(new Uint8Array(m.region.frame(F(1))), boot, 'frame 1 untouched');
  assert.ok(m.alloc.isAllocated(F(hidden)), 'what the damage hid stays allocated');
  m.close();
  const r = runCheck(file, { repair: false, apply: false });
  assert.equal(r.lostFrames, 2, 'the hidden table and its page');
  const fixed = runCheck(file, { repair: true, apply: true });
  assert.equal(fixed.ok, true, JSON.stringify(fixed.problems));
});
