import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { HammerPlan } from './workers/refcount-worker.js';
import { Memory } from '../src/memory.js';
import { openRefCounts, type RefCountTable, type RefTableKind } from '../src/alloc/refcount/index.js';
import { MorselError, isMorselError } from '../src/errors.js';
import { LOCK_TIMEOUT_MS } from '../src/alloc/refcount/lock.js';
import { DIR_FIRST_WORD, MAGIC_BASE, MAGIC_V1_BASE, W_MAGIC } from '../src/alloc/refcount/anchor.js';
import { hashFrame, homeOf, type BucketArray } from '../src/alloc/refcount/table.js';
import { MiB, type Frame } from '../src/units.js';
import { takeAll, tempDir } from './helpers.js';

const KINDS: RefTableKind[] = ['chained', 'rosebush'];

/** A fresh volatile memory and a zeroed anchor frame. */
function fresh(sizeBytes = 64 * MiB): { m: Memory; anchor: Frame } {
  const m = Memory.volatile(sizeBytes);
  const anchor = m.alloc.alloc(0);
  m.region.zeroFrame(anchor);
  return { m, anchor };
}

/** The table's entries as a Map (asserting no frame is listed twice). */
function entries(t: RefCountTable): Map<number, number> {
  const out = new Map<number, number>();
  t.forEach((f, c) => {
    assert.ok(!out.has(f), `frame ${f} listed once`);
    out.set(f, c);
  });
  return out;
}

for (const kind of KINDS) {
  test(`${kind}: counts follow a Map model across resizes (fast-check)`, () => {
    let resized = 0;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('inc', 'inc', 'dec', 'get'), fc.integer({ min: 0, max: 1500 })), { minLength: 1, maxLength: 3000, size: 'max' }), (ops) => {
        const { m, anchor } = fresh();
        const free0 = m.alloc.freeFrames();
        const t = openRefCounts(m.region, m.alloc, anchor, { kind });
        const model = new Map<number, number>();
        for (const [op, x] of ops) {
          const f = 300 + x * 7;
          const have = model.get(f) ?? 1;
          if (op === 'inc') {
            assert.equal(t.increment(f), have + 1);
            model.set(f, have + 1);
          } else if (op === 'dec') {
            const want = have - 1;
            assert.equal(t.decrement(f), want);
            if (want >= 2) model.set(f, want);
            else model.delete(f);
          } else assert.equal(t.get(f), have);
        }
        for (const [f, c] of model) assert.equal(t.get(f), c);
        assert.deepEqual(entries(t), model);
        assert.equal(t.stats().entries, model.size);
        if (t.stats().resizes > 0) resized++;
        t.reset();
        assert.equal(m.alloc.freeFrames(), free0, 'reset frees every storage frame');
        assert.equal(t.get(300), 1);
      }),
      { numRuns: 25 },
    );
    assert.ok(resized > 0, 'some runs crossed a resize');
  });

  test(`${kind}: many entries grow the table through several resizes; storage is listed`, () => {
    const { m, anchor } = fresh(128 * MiB);
    const t = openRefCounts(m.region, m.alloc, anchor, { kind });
    const n = 20_000;
    for (let i = 0; i < n; i++) t.increment(1000 + i);
    for (let i = 0; i < n; i += 2) t.increment(1000 + i);
    for (let i = 0; i < n; i++) assert.equal(t.get(1000 + i), i % 2 === 0 ? 3 : 2);
    const s = t.stats();
    assert.equal(s.entries, n);
    let frames = 0;
    t.forEachStorageFrame((f) => {
      assert.ok(m.alloc.isAllocated(f as Frame));
      frames++;
    });
    assert.ok(frames * 4096 >= s.storageBytes && frames > 0);
    for (let i = 0; i < n; i++) assert.equal(t.decrement(1000 + i), i % 2 === 0 ? 2 : 1);
    assert.equal(t.stats().entries, n / 2);
    const again = openRefCounts(m.region, m.alloc, anchor);
    assert.equal(again.kind, kind, 'the kind is recorded in the anchor');
    assert.equal(again.get(1000), 2);
    assert.throws(() => openRefCounts(m.region, m.alloc, anchor, { kind: kind === 'chained' ? 'rosebush' : 'chained' }), (e) => isMorselError(e, 'EINVAL'));
  });
}

const workerUrl = new URL('./workers/refcount-worker.js', import.meta.url);

/** A plan for participant p: `shared` frames common to all, `ownCount` frames of its own. */
function plan(p: number, shared: number[], ownCount: number): HammerPlan {
  const own = Array.from({ length: ownCount }, (_, i) => 5000 + p * ownCount + i);
  return { shared, own, rounds: 3, drops: 1 };
}

/** Checks the totals after `participants` ran plan(p, ...): no count lost or duplicated. */
function checkTotals(t: RefCountTable, participants: number, shared: number[], ownCount: number): void {
  const want = new Map<number, number>();
  for (const f of shared) want.set(f, 1 + participants * (3 - 1));
  for (let p = 0; p < participants; p++) for (const f of plan(p, shared, ownCount).own) want.set(f, 4);
  for (const [f, c] of want) assert.equal(t.get(f), c, `frame ${f}`);
  assert.deepEqual(entries(t), want);
  assert.equal(t.stats().entries, want.size);
}

for (const kind of KINDS) {
  test(`${kind}: ENOSPC when storage cannot grow leaves every count unchanged`, () => {
    const { m, anchor } = fresh(4 * MiB);
    const t = openRefCounts(m.region, m.alloc, anchor, { kind });
    t.increment(1000);
    const hoard = takeAll(m.alloc);
    let failed = -1;
    for (let f = 0; f < m.region.frameCount && failed < 0; f++) {
      if (f === 1000) continue;
      const before = entries(t);
      try {
        t.increment(f);
      } catch (e) {
        assert.ok(isMorselError(e, 'ENOSPC'), String(e));
        failed = f;
        assert.deepEqual(entries(t), before, 'nothing changed');
        assert.equal(t.get(f), 1);
        assert.equal(t.stats().entries, before.size);
      }
    }
    assert.ok(failed > 0, 'the table ran out of room');
    for (const f of hoard) m.alloc.free(f);
    assert.equal(t.increment(failed), 2, 'with frames back it grows');
    assert.throws(() => t.incrementMany([failed, 2 ** 31], 2), (e) => isMorselError(e, 'EINVAL'));
    assert.equal(t.get(failed), 2, 'a rejected batch changes nothing');
  });

  test(`${kind}: two worker threads on the same and different frames during resizes: exact counts`, async () => {
    const { m, anchor } = fresh(128 * MiB);
    const t = openRefCounts(m.region, m.alloc, anchor, { kind });
    const gateFrame = m.alloc.alloc(0);
    m.region.zeroFrame(gateFrame);
    const shared = Array.from({ length: 300 }, (_, i) => 2000 + i);
    const ownCount = 6000;
    const free0 = m.alloc.freeFrames();
    const workers = [0, 1].map((p) => new Worker(workerUrl, { workerData: { share: m.share(), anchor, kind, plan: plan(p, shared, ownCount), gateFrame } }));
    const done = workers.map((w) => new Promise((res, rej) => w.once('message', res).once('error', rej)));
    const gw = m.region.words(gateFrame);
    const gi = m.region.wordIndex(gateFrame, 0);
    while (Atomics.load(gw, gi) < 2) await new Promise((r) => setTimeout(r, 1));
    Atomics.store(gw, gi + 1, 1);
    await Promise.all(done);
    await Promise.all(workers.map((w) => w.terminate()));
    assert.ok(t.stats().resizes >= 3, 'the run crossed several resizes');
    checkTotals(t, 2, shared, ownCount);
    let storage = 0;
    t.forEachStorageFrame(() => storage++);
    assert.equal(free0 - m.alloc.freeFrames(), storage, 'every old array was freed: no storage leaked');
  });
}

/** Runs the refcount worker as a child process on `file`. */
function child(file: string, anchor: number, kind: RefTableKind, mode: string, arg: string): ChildProcess {
  return fork(workerUrl, [file, String(anchor), kind, mode, arg], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

const message = (c: ChildProcess): Promise<any> => new Promise((res, rej) => c.once('message', res).once('exit', (code) => rej(new Error(`child exited ${code}`))));

for (const kind of KINDS) {
  test(`${kind}: two processes on one file-backed region: exact totals`, async () => {
    const dir = tempDir('morsel-refcount-');
    const file = path.join(dir, 'r.region');
    try {
      const m = Memory.create(file, 64 * MiB);
      const anchor = m.alloc.alloc(0);
      m.region.zeroFrame(anchor);
      const gateFrame = m.alloc.alloc(0);
      m.region.zeroFrame(gateFrame);
      const shared = Array.from({ length: 200 }, (_, i) => 2000 + i);
      const ownCount = 3000;
      const kids = [0, 1].map((p) => child(file, anchor, kind, 'hammer', JSON.stringify({ plan: plan(p, shared, ownCount), gateFrame })));
      const done = kids.map(message);
      const gw = m.region.words(gateFrame);
      const gi = m.region.wordIndex(gateFrame, 0);
      for (let i = 0; i < 30_000 && Atomics.load(gw, gi) < 2; i++) await new Promise((r) => setTimeout(r, 1));
      Atomics.store(gw, gi + 1, 1);
      await Promise.all(done);
      const t = openRefCounts(m.region, m.alloc, anchor);
      assert.equal(t.kind, kind);
      checkTotals(t, 2, shared, ownCount);
      m.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`${kind}: a process killed while holding a bucket lock: the survivor breaks the lock`, async () => {
    const dir = tempDir('morsel-refcount-');
    const file = path.join(dir, 'r.region');
    try {
      const m = Memory.create(file, 64 * MiB);
      const anchor = m.alloc.alloc(0);
      m.region.zeroFrame(anchor);
      const target = 3000;
      const holder = child(file, anchor, kind, 'hold', String(target));
      assert.deepEqual(await message(holder), { locked: true });
      const exited = new Promise((r) => holder.once('exit', r));
      holder.kill('SIGKILL');
      await exited;
      const t = openRefCounts(m.region, m.alloc, anchor);
      const started = performance.now();
      assert.equal(t.get(target), 1, 'the stalled increment never applied');
      assert.equal(t.increment(target), 2);
      assert.equal(t.get(target + 1), 2, "the dead holder's earlier increment stands");
      assert.ok(performance.now() - started < 2000, 'the dead lock was broken promptly');
      m.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a live holder keeping a bucket lock too long: ETIMEDOUT, then the lock works again', async () => {
  const { m, anchor } = fresh();
  const t = openRefCounts(m.region, m.alloc, anchor, { kind: 'rosebush' });
  const target = 4000;
  t.increment(target + 1); // storage exists
  const w = new Worker(workerUrl, { workerData: { share: m.share(), anchor, kind: 'rosebush', hold: { frame: target, ms: LOCK_TIMEOUT_MS + 1500 } } });
  const messages: unknown[] = [];
  const done = new Promise((res, rej) => w.on('message', (msg) => (messages.push(msg), (msg as { done?: boolean }).done && res(msg))).once('error', rej));
  while (messages.length === 0) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(messages[0], { locked: true });
  const started = performance.now();
  assert.throws(() => t.increment(target), (e) => isMorselError(e, 'ETIMEDOUT'));
  assert.ok(performance.now() - started >= LOCK_TIMEOUT_MS, 'waited the bound out');
  assert.equal(t.get(target + 1), 2, 'other buckets stay usable');
  await done;
  await w.terminate();
  assert.equal(t.get(target), 2, "the holder's increment landed once it let go");
  assert.equal(t.increment(target), 3);
});

/** A Rosebush table written by the build before size classes (anchor layout 1): test/fixtures/rosebush-layout1.json. */
interface Layout1Fixture {
  storageFrame: number;
  anchor: [number, number][];
  bucket: [number, number][];
  keys: number[];
  counts: number[];
}

test('rosebush: a table in anchor layout 1 (written before size classes) reads, grows by doubling, empties; reset makes the next table layout 2', () => {
  const fx = JSON.parse(fs.readFileSync(new URL('../../test/fixtures/rosebush-layout1.json', import.meta.url), 'utf8')) as Layout1Fixture;
  const { m, anchor } = fresh();
  const free0 = m.alloc.freeFrames();
  const bucketFrame = m.alloc.alloc(0); // the table owns it from here, as its first array
  m.region.zeroFrame(bucketFrame);
  const put = (f: Frame, words: [number, number][]): void => {
    const w = m.region.words(f);
    for (const [i, v] of words) w[m.region.wordIndex(f, i)] = v === fx.storageFrame && f === anchor && i === DIR_FIRST_WORD ? bucketFrame : v;
  };
  put(anchor, fx.anchor);
  put(bucketFrame, fx.bucket);
  const magic = (): number => m.region.words(anchor)[m.region.wordIndex(anchor, W_MAGIC)];
  assert.equal(magic(), MAGIC_V1_BASE + 2);
  const t = openRefCounts(m.region, m.alloc, anchor);
  assert.equal(t.kind, 'rosebush');
  fx.keys.forEach((k, i) => assert.equal(t.get(k), fx.counts[i], `frame ${k}`));
  const frames: number[] = [];
  t.forEachStorageFrame((f) => frames.push(f));
  assert.deepEqual(frames, [bucketFrame]);
  // Growing a layout-1 table keeps layout 1 (power-of-two arrays, its hash and window).
  const more = Array.from({ length: 3000 }, (_, i) => 2_000_000 + i * 7);
  for (const f of more) t.increment(f);
  for (const f of more.slice(0, 100)) t.increment(f);
  assert.equal(magic(), MAGIC_V1_BASE + 2);
  const st = t.stats();
  assert.ok(st.resizes >= 4, `grew (${st.resizes} resizes)`);
  assert.ok(Number.isInteger(Math.log2(st.storageBytes / 4096)) || st.resizing, `power-of-two storage: ${st.storageBytes}`);
  fx.keys.forEach((k, i) => assert.equal(t.get(k), fx.counts[i], `frame ${k} after growth`));
  more.forEach((f, i) => assert.equal(t.get(f), i < 100 ? 3 : 2));
  for (const [i, k] of fx.keys.entries()) for (let c = fx.counts[i]; c > 1; c--) t.decrement(k);
  for (const [i, f] of more.entries()) for (let c = i < 100 ? 3 : 2; c > 1; c--) t.decrement(f);
  assert.equal(t.stats().entries, 0);
  assert.equal(entries(t).size, 0);
  t.reset();
  t.increment(5);
  assert.equal(magic(), MAGIC_BASE + 2, 'a table made after the reset is layout 2');
  assert.equal(t.get(5), 2);
  t.reset();
  assert.equal(m.alloc.freeFrames(), free0, 'every storage frame freed, the first array included');
});

test('rosebush: growth by size classes keeps storage near 9-12 bytes per counter, and a lookup takes 2 dependent accesses', () => {
  const { m, anchor } = fresh(256 * MiB);
  const t = openRefCounts(m.region, m.alloc, anchor, { kind: 'rosebush' });
  const keyOf = (i: number): number => Math.imul(i, 0x2545f491) & 0x3fffffff;
  const bytes: number[] = [];
  let n = 0;
  for (let target = 20_000; target <= 400_000; target = Math.round(target * 1.15)) {
    for (; n < target; n++) t.increment(keyOf(n));
    const before = t.stats();
    for (let i = 0; i < 2000; i++) assert.equal(t.get(keyOf((i * 7919) % n)), 2);
    const after = t.stats();
    bytes.push(before.bytesPerEntry);
    if (!before.resizing) assert.equal((after.probes - before.probes) / (after.lookups - before.lookups), 2, `dependent accesses at ${n}`);
    assert.ok(after.lines - before.lines >= after.probes - before.probes, 'every dependent access is a line read');
  }
  const mean = bytes.reduce((a, b) => a + b, 0) / bytes.length;
  // Doubling (layout 1) averages 19.2 bytes over these sizes, the size classes 11.0 (one sample falls mid-resize, with both arrays allocated).
  assert.ok(mean <= 12, `mean ${mean.toFixed(2)} bytes per counter over ${bytes.map((b) => b.toFixed(1)).join(', ')}`);
  t.reset();
});

for (const [kind, copier] of [['rosebush', 'claim'], ['chained', 'insert']] as const) {
  test(`${kind}: a migration that stops midway marks its bucket partial; the next migrator overwrites the copies made, never inserting a key twice`, () => {
    const { m, anchor } = fresh();
    const t = openRefCounts(m.region, m.alloc, anchor, { kind });
    const inner = t as unknown as Record<string, (...args: unknown[]) => unknown> & { old: { buckets: number } | null; snapshot(): number; migrateOld(b: number): void };
    const model = new Map<number, number>();
    const bump = (f: number): void => {
      t.increment(f);
      model.set(f, (model.get(f) ?? 1) + 1);
    };
    const r0 = t.stats().resizes;
    for (let f = 0; t.stats().resizes === r0; f++) {
      bump(f * 13);
      if (f % 3 === 0) bump(f * 13);
    }
    inner.snapshot();
    const old = inner.old!;
    assert.ok(old !== null, 'a resize is running');
    // The old bucket in the upper half (not yet handed out by the migration cursor) with the most keys.
    const perHome = new Map<number, number>();
    for (const f of model.keys()) {
      const h = homeOf(hashFrame(f), old as BucketArray);
      if (h >= old.buckets / 2) perHome.set(h, (perHome.get(h) ?? 0) + 1);
    }
    const [b, keys] = [...perHome].reduce((best, e) => (e[1] > best[1] ? e : best));
    assert.ok(keys >= 2, `bucket ${b} holds ${keys} keys`);
    const stopAt = Math.min(3, keys); // the copy that throws: at least one was made before it
    const copy = inner[copier];
    let copies = 0;
    inner[copier] = function (this: unknown, ...args: unknown[]): unknown {
      if (++copies === stopAt) throw new MorselError('ENOSPC', 'test: the migration stops here');
      return copy.apply(this, args);
    };
    assert.throws(() => inner.migrateOld(b), (e) => isMorselError(e, 'ENOSPC'));
    inner[copier] = copy;
    assert.equal(copies, stopAt, 'keys were copied before the stop');
    for (let i = 0; i < old.buckets; i++) inner.migrateOld(i);
    assert.deepEqual(entries(t), model, 'every key once, with its count');
    for (const [f, c] of model) assert.equal(t.get(f), c);
  });
}
