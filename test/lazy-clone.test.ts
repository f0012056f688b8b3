// Deferred clone counts (src/morsel/lazy.ts): a clone raises no count; each
// side counts its shared references before it decides on them; destroy,
// clones of clones, SIGKILL and concurrent cloners keep every count exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { checkRegion } from '../src/recovery/check.js';
import { scanRegion } from '../src/recovery/reachable.js';
import { LAZY_REF, LAZY_SRC } from '../src/paging/entry.js';
import { decodeIdBits, type MorselId } from '../src/morsel/id.js';
import { MiB, PAGE_SIZE, type Frame } from '../src/units.js';
import { freeFrames, tempDir } from './helpers.js';

const dir = tempDir('morsel-lazy-');
const dist = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));

const PAGES = [0, 600, 1500]; // three level-1 tables
const byteAt = (m: Memory, id: bigint, page: number): number => {
  const out = new Uint8Array(1);
  m.morsels.read(id, page * PAGE_SIZE, out);
  return out[0];
};
const exact = (m: Memory, what: string): void => {
  const r = checkRegion(m);
  assert.ok(r.ok, `${what}: ${JSON.stringify(r.problems.slice(0, 3))}`);
};
/** Root entries of `id` with the lazy bit `bit`. */
const lazyEntries = (m: Memory, id: bigint, bit: number): number => {
  const root = decodeIdBits(id).rootFrame as Frame;
  let n = 0;
  for (let i = 0; i < 512; i++) if ((m.region.loadLo(root, i) & bit) !== 0) n++;
  return n;
};

test('a clone raises no count; either side counts the shared references before it writes; check is exact at every step', () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const src = m.morsels.create(2);
  for (const p of PAGES) m.morsels.write(src, p * PAGE_SIZE, Uint8Array.of(p & 0xff));
  const counts = m.morsels.cow.refs.stats().entries;
  const a = m.morsels.clone(src);
  const b = m.morsels.clone(src);
  assert.equal(m.morsels.cow.refs.stats().entries, counts, 'two clones raised no count');
  assert.equal(lazyEntries(m, a, LAZY_REF), PAGES.length);
  assert.equal(lazyEntries(m, src, LAZY_SRC), PAGES.length);
  exact(m, 'after two clones');
  const c = m.morsels.clone(a); // a is a clone itself: its references are counted and it is detached first
  assert.equal(lazyEntries(m, a, LAZY_REF), 0);
  assert.equal(lazyEntries(m, c, LAZY_REF), PAGES.length);
  exact(m, 'after a clone of a clone');
  m.morsels.write(src, 0, Uint8Array.of(9)); // the source's side: every clone's entry 0 counted first, then the copy
  exact(m, 'after a source write');
  assert.equal(lazyEntries(m, b, LAZY_REF), PAGES.length - 1);
  m.morsels.write(b, 600 * PAGE_SIZE, Uint8Array.of(7)); // the clone's side: its own reference counted, then the copy
  exact(m, 'after a clone write');
  for (const [id, p, v] of [[src, 0, 9], [a, 0, 0], [b, 0, 0], [c, 0, 0], [b, 600, 7], [src, 600, 600 & 0xff], [a, 600, 600 & 0xff], [c, 1500, 1500 & 0xff]] as const) {
    assert.equal(byteAt(m, id, p), v, `morsel ${id === src ? 'src' : id === a ? 'a' : id === b ? 'b' : 'c'} page ${p}`);
  }
  m.morsels.destroy(src); // a source with clones attached: their references counted, then its own dropped
  exact(m, 'after the source is destroyed');
  assert.equal(byteAt(m, b, 1500), 1500 & 0xff);
  m.morsels.destroy(c); // a clone still attached to a (uncounted references: dropped without a count change)
  exact(m, 'after a clone of a clone is destroyed');
  m.morsels.destroy(a);
  m.morsels.destroy(b);
  assert.equal(freeFrames(m), start, 'every frame back');
  assert.equal(m.morsels.cow.refs.stats().entries, 0, 'no count left');
});

test('repeated clones of one source: each takes one root frame and no count; destroy in any order returns everything', () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  const src = m.morsels.create(2);
  m.morsels.populate(src, 0, 8 * MiB);
  const clones = [m.morsels.clone(src)]; // the first may grow the lazy-clone registry
  const before = freeFrames(m);
  for (let i = 0; i < 9; i++) clones.push(m.morsels.clone(src));
  assert.equal(before - freeFrames(m), 9, 'one root frame per clone');
  m.morsels.write(clones[4], 0, Uint8Array.of(1));
  m.morsels.write(src, 3 * MiB, Uint8Array.of(2));
  exact(m, 'ten clones, two writes');
  for (const i of [0, 9, 5, 4, 1, 2, 3, 6, 7, 8]) {
    m.morsels.destroy(clones[i]); // first, last and middle of the source's list
    exact(m, `after destroying clone ${i}`);
  }
  assert.equal(byteAt(m, src, (3 * MiB) / PAGE_SIZE), 2);
  m.morsels.destroy(src);
  assert.equal(freeFrames(m), start);
  assert.equal(m.morsels.cow.refs.stats().entries, 0);
});

/** Runs an ESM snippet in a fresh process with `Memory` imported (and an optional crash point armed). */
function child(body: string, crashAt = '') {
  const src = `import { Memory } from ${JSON.stringify(dist('../src/memory.js'))};\n${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', env: { ...process.env, MORSEL_CRASH_AT: crashAt } });
}

// Hits of clone:after-capture in the child: the first clone, the write's lazy copy of a level-1 table, then the second clone.
for (const [what, crashAt, morsels, written] of [
  ['killed with lazy clones attached', '', 3, 7],
  ['killed inside a write\'s lazy table copy (captured, not attached)', 'clone:after-capture:2', 2, 600 & 0xff],
  ['killed inside a clone (entries captured, not attached)', 'clone:after-capture:3', 2, 7],
] as const) {
  test(`SIGKILL ${what}: recovery counts every reference, clears the lazy bits, loses no data`, () => {
    const file = path.join(dir, `${crashAt.replace(/:/g, "-") || "plain"}.region`);
    Memory.create(file, 32 * MiB).close();
    const r = child(
      `const m = Memory.open(${JSON.stringify(file)});
      const src = m.morsels.create(2);
      for (const p of [0, 600, 1500]) m.morsels.write(src, p * 4096, Uint8Array.of(p & 0xff));
      const a = m.morsels.clone(src);
      process.stdout.write(JSON.stringify([src.toString(), a.toString()]) + '\\n');
      m.morsels.write(a, 600 * 4096, Uint8Array.of(7));
      m.morsels.clone(src);
      process.kill(process.pid, 'SIGKILL');`,
      crashAt,
    );
    assert.equal(r.signal, 'SIGKILL', r.stderr);
    const [src, a] = (JSON.parse(r.stdout.split('\n')[0]) as string[]).map((s) => BigInt(s) as MorselId);
    const m = Memory.open(file);
    assert.equal(m.report?.crashed, true);
    const scan = scanRegion(m.region, { spaces: false });
    assert.deepEqual(scan.lazyTables, [], 'no lazy bit survives recovery');
    const report = checkRegion(m);
    assert.ok(report.ok, JSON.stringify(report.problems.slice(0, 3)));
    assert.equal(report.lostFrames, 0);
    assert.equal(m.morsels.list().length, morsels, 'an interrupted clone never became a morsel');
    for (const [id, p, v] of [[src, 600, 600 & 0xff], [a, 600, written], [a, 1500, 1500 & 0xff], [src, 0, 0]] as const) assert.equal(byteAt(m, id, p), v);
    m.morsels.write(src, 1500 * PAGE_SIZE, Uint8Array.of(1)); // copy-on-write after recovery, from exact counts
    assert.equal(byteAt(m, a, 1500), 1500 & 0xff);
    for (const id of m.morsels.list()) m.morsels.destroy(id);
    assert.equal(m.morsels.cow.refs.stats().entries, 0);
    assert.ok(checkRegion(m).ok);
    m.close();
  });
}

test('two cloners and a writer on one source at once: every clone keeps its snapshot, marks stay private, counts exact', async () => {
  const m = Memory.volatile(256 * MiB);
  const start = freeFrames(m);
  const pages = 48;
  const src = m.morsels.create(2);
  for (let p = 0; p < pages; p++) m.morsels.write(src, p * 2 * MiB, Uint8Array.of(0));
  const run = (role: string, worker: number, rounds: number) =>
    new Promise<{ problems: string[] }>((res, rej) => {
      const w = new Worker(new URL('./workers/lazy-cloner.js', import.meta.url), { workerData: { region: m.share(), role, src, pages, rounds, worker } });
      w.once('message', res).once('error', rej);
    });
  const results = await Promise.all([run('writer', 0, 80), run('cloner', 0, 60), run('cloner', 1, 60)]);
  assert.deepEqual(results.flatMap((r) => r.problems), []);
  const out = new Uint8Array(2);
  for (let p = 0; p < pages; p++) {
    m.morsels.read(src, p * 2 * MiB, out);
    assert.deepEqual([...out], [80, 0], `source page ${p}: the writer's last round, no clone's mark`);
  }
  exact(m, 'after the race');
  m.morsels.destroy(src);
  assert.equal(freeFrames(m), start, 'every clone and copy freed');
  assert.equal(m.morsels.cow.refs.stats().entries, 0);
});

test('orders 1 and 3 and 2 MiB leaves at the root: clones stay isolated and every count exact', () => {
  const m = Memory.volatile(64 * MiB);
  const start = freeFrames(m);
  for (const [order, huge, span] of [[1, false, PAGE_SIZE], [3, false, 1024 * MiB], [2, true, 2 * MiB], [3, true, 1024 * MiB]] as const) {
    const s = m.morsels.create(order, { huge });
    for (let i = 0; i < 3; i++) m.morsels.write(s, i * span + 5, Uint8Array.of(10 + i));
    const a = m.morsels.clone(s);
    const b = m.morsels.clone(s);
    m.morsels.write(s, 5, Uint8Array.of(99));
    m.morsels.write(a, span + 5, Uint8Array.of(77));
    const at = (id: bigint, off: number): number => {
      const out = new Uint8Array(1);
      m.morsels.read(id, off, out);
      return out[0];
    };
    const what = `order ${order}${huge ? ' huge' : ''}`;
    assert.deepEqual([at(s, 5), at(a, 5), at(b, 5), at(a, span + 5), at(b, span + 5), at(s, span + 5)], [99, 10, 10, 77, 11, 11], what);
    exact(m, what);
    m.morsels.destroy(s);
    exact(m, `${what}, source destroyed`);
    assert.deepEqual([at(a, 5), at(b, 2 * span + 5)], [10, 12], what);
    m.morsels.destroy(b);
    m.morsels.destroy(a);
  }
  assert.equal(freeFrames(m), start);
  assert.equal(m.morsels.cow.refs.stats().entries, 0);
});
