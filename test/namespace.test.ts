import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { Namespace, type NodeKind } from '../src/manage/namespace.js';
import { type Model, applyOp, arbOp, codeOf, dirRec, expectedRecords, modelOp, morselRec, snapshotTree, sortedModel } from './namespace-model.js';
import { MorselError, isMorselError, type ErrorCode } from '../src/errors.js';
import { MiB } from '../src/units.js';


function fresh(sizeBytes = 8 * MiB): { m: Memory; ns: Namespace } {
  const m = Memory.volatile(sizeBytes);
  return { m, ns: new Namespace(m.region, m.alloc) };
}


test('create, lookup, resolve, list, update, rename, remove', () => {
  const { ns } = fresh();
  assert.deepEqual(ns.lookup('/'), { kind: 'dir', id: 0n, generation: 0, sizeBytes: 0, uid: 0, gid: 0, mode: 0o755, ctimeMs: 0, mtimeMs: 0, fixedAddress: null });
  ns.create('/models', dirRec());
  ns.create('/models/llama', { ...morselRec(0x1234_5678_9abc_def0n, 5 * 2 ** 40), fixedAddress: 2 ** 47 - 4096 });
  const got = ns.lookup('/models/llama');
  assert.equal(got.id, 0x1234_5678_9abc_def0n);
  assert.equal(got.sizeBytes, 5 * 2 ** 40);
  assert.equal(got.fixedAddress, 2 ** 47 - 4096);
  assert.equal(got.mtimeMs, 1700000000456);
  assert.deepEqual(ns.resolve('/models/llama').map((r) => r.kind), ['dir', 'dir', 'morsel']);
  assert.deepEqual(ns.list('/').map((e) => e.name), ['models']);
  assert.deepEqual(ns.list('/models').map((e) => e.name), ['llama']);
  const after = ns.update('/models/llama', (r) => ({ ...r, mode: 0o600, sizeBytes: 7 }));
  assert.equal(after.mode, 0o600);
  assert.equal(ns.lookup('/models/llama').sizeBytes, 7);
  ns.create('/b', dirRec());
  ns.rename('/models', '/b/m');
  assert.equal(codeOf(() => ns.lookup('/models')), 'ENOENT');
  assert.equal(ns.lookup('/b/m/llama').sizeBytes, 7, 'children follow a renamed directory');
  ns.update('/b/m', (r) => ({ ...r, mode: 0o700 }));
  assert.equal(ns.lookup('/b/m/llama').mode, 0o600, 'children follow an updated directory');
  assert.equal(ns.remove('/b/m/llama', 'morsel').id, 0x1234_5678_9abc_def0n);
  ns.remove('/b/m', 'dir');
  ns.remove('/b', 'dir');
  ns.update('/', (r) => ({ ...r, uid: 7, mode: 0o1777 }));
  assert.equal(ns.lookup('/').mode, 0o1777);
  assert.deepEqual(ns.list('/'), []);
  assert.equal(ns.stats().keptKeys, 3, 'the removed names keep their keys');
  assert.equal(ns.stats().records, 2 + 3, 'the root object, the root record and the kept keys remain');
  assert.equal(expectedRecords(ns), 5);
  assert.deepEqual({ ...ns.collectGarbage(), tombstonesDropped: 0, keysDropped: 0 }, { freedRecords: 0, renamesCommitted: 0, renamesRolledBack: 0, dyingRemoved: 0, orphansRemoved: 0, countsFixed: 0, tombstonesDropped: 0, keysDropped: 0 });
});

test('bad input: typed error and no byte of the region changes', () => {
  const { m, ns } = fresh();
  ns.create('/d', dirRec());
  ns.create('/d/f', morselRec(5n));
  ns.create('/e', dirRec());
  const long = 'x'.repeat(256);
  const cases: [string, ErrorCode, () => unknown][] = [
    ['empty path', 'EINVAL', () => ns.lookup('')],
    ['relative', 'EINVAL', () => ns.create('d/g', morselRec(1n))],
    ['empty component', 'EINVAL', () => ns.create('/d//g', morselRec(1n))],
    ['trailing slash', 'EINVAL', () => ns.create('/d/g/', morselRec(1n))],
    ['dot', 'EINVAL', () => ns.create('/d/./g', morselRec(1n))],
    ['dotdot', 'EINVAL', () => ns.rename('/d/f', '/d/../f')],
    ['NUL', 'EINVAL', () => ns.create('/d/a\0b', morselRec(1n))],
    ['lone surrogate', 'EINVAL', () => ns.create('/d/\ud800', morselRec(1n))],
    ['not a string', 'EINVAL', () => ns.lookup(42 as unknown as string)],
    ['component 256 bytes', 'ENAMETOOLONG', () => ns.create(`/d/${long}`, morselRec(1n))],
    ['component 128 x 2-byte chars', 'ENAMETOOLONG', () => ns.create(`/d/${'é'.repeat(128)}`, morselRec(1n))],
    ['path over 4096 bytes', 'ENAMETOOLONG', () => ns.create(`${'/abcdefg'.repeat(512)}/x`, morselRec(1n))],
    ['missing parent', 'ENOENT', () => ns.create('/nope/f', morselRec(1n))],
    ['missing name', 'ENOENT', () => ns.remove('/d/nope', 'morsel')],
    ['existing', 'EEXIST', () => ns.create('/d/f', morselRec(1n))],
    ['existing dir', 'EEXIST', () => ns.create('/d', dirRec())],
    ['create root', 'EEXIST', () => ns.create('/', dirRec())],
    ['parent is a morsel', 'ENOTDIR', () => ns.create('/d/f/g', morselRec(1n))],
    ['unlink a directory', 'EISDIR', () => ns.remove('/d', 'morsel')],
    ['rmdir a morsel', 'ENOTDIR', () => ns.remove('/d/f', 'dir')],
    ['rmdir non-empty', 'ENOTEMPTY', () => ns.remove('/d', 'dir')],
    ['rmdir root', 'EBUSY', () => ns.remove('/', 'dir')],
    ['list a morsel', 'ENOTDIR', () => ns.list('/d/f')],
    ['rename onto existing', 'EEXIST', () => ns.rename('/e', '/d')],
    ['rename missing', 'ENOENT', () => ns.rename('/nope', '/x')],
    ['rename into itself', 'EINVAL', () => ns.rename('/d', '/d/sub')],
    ['rename into a morsel', 'ENOTDIR', () => ns.rename('/e', '/d/f/x')],
    ['rename root', 'EBUSY', () => ns.rename('/', '/x')],
    ['bad mode', 'EINVAL', () => ns.create('/d/g', { ...morselRec(1n), mode: 0o10000 })],
    ['bad kind', 'EINVAL', () => ns.create('/d/g', { ...morselRec(1n), kind: 'file' as NodeKind })],
    ['dir with an id', 'EINVAL', () => ns.create('/d/g', { ...dirRec(), id: 4n })],
    ['id too large', 'EINVAL', () => ns.create('/d/g', morselRec(1n << 64n))],
    ['negative size', 'EINVAL', () => ns.create('/d/g', morselRec(1n, -1))],
    ['update changes kind', 'EINVAL', () => ns.update('/d', () => morselRec(1n))],
    ['update callback refuses', 'EACCES', () => ns.update('/d/f', () => { throw new MorselError('EACCES', 'denied'); })],
    ['bad remove kind', 'EINVAL', () => ns.remove('/d/f', 'file' as NodeKind)],
  ];
  for (const [what, code, f] of cases) {
    const before = new Uint8Array(m.region.sab).slice();
    let got: string;
    try {
      f();
      got = 'ok';
    } catch (e) {
      got = isMorselError(e) ? e.code : String(e);
    }
    assert.equal(got, code, what);
    assert.ok(Buffer.from(before).equals(Buffer.from(new Uint8Array(m.region.sab))), `${what}: region unchanged`);
  }
  // at the limits: exactly 255-byte component and a 4096-byte path are fine
  ns.create(`/d/${'y'.repeat(255)}`, morselRec(1n));
  let path = '';
  while (path.length + 200 <= 4096) path += `/${'z'.repeat(199)}`;
  path += `/${'w'.repeat(4096 - path.length - 1)}`;
  assert.equal(Buffer.byteLength(path), 4096);
  const parts = path.split('/').slice(1);
  for (let i = 1; i < parts.length; i++) ns.create(`/${parts.slice(0, i).join('/')}`, dirRec());
  ns.create(path, morselRec(2n));
  assert.equal(ns.lookup(path).id, 2n);
});

test('two directories rename into each other: EINVAL, and a renamed dir keeps its children', () => {
  const { ns } = fresh();
  ns.create('/a', dirRec());
  ns.create('/a/b', dirRec());
  ns.create('/a/b/c', morselRec(9n));
  assert.equal(codeOf(() => ns.rename('/a', '/a/b/x')), 'EINVAL');
  ns.rename('/a/b', '/b');
  assert.equal(codeOf(() => ns.rename('/a', '/b/c/x')), 'ENOTDIR');
  ns.rename('/a', '/b/a');
  assert.equal(codeOf(() => ns.rename('/b', '/b/a/q')), 'EINVAL');
  assert.equal(ns.lookup('/b/c').id, 9n);
  ns.rename('/b/c', '/b/a/c');
  ns.rename('/b/a/c', '/c');
  assert.deepEqual(ns.list('/b').map((e) => e.name), ['a']);
  assert.deepEqual(ns.list('/').map((e) => e.name), ['b', 'c']);
});

test('frames: a namespace emptied again keeps only its tables, and forEachFrame sees all it allocated', () => {
  const { m, ns } = fresh(32 * MiB);
  const free0 = m.alloc.freeFrames();
  ns.create('/d', dirRec());
  for (let i = 0; i < 2000; i++) ns.create(`/d/n${i}`, morselRec(BigInt(i)));
  let frames = 0;
  ns.forEachFrame(() => frames++);
  // The header is root slot 2's table, allocated at format: every other frame the namespace took is visited.
  assert.equal(free0 - m.alloc.freeFrames(), frames - 1, 'every frame the namespace took is visited');
  for (let i = 0; i < 2000; i++) ns.remove(`/d/n${i}`, 'morsel');
  ns.remove('/d', 'dir');
  assert.equal(ns.stats().keptKeys, 2001, 'every removed name keeps its key (under the bound)');
  assert.equal(ns.stats().records, 1 + 2001, 'the root directory object and the kept keys stay claimed');
  const gc = ns.collectGarbage({ compact: true });
  assert.equal(gc.tombstonesDropped, 2001);
  assert.equal(gc.keysDropped, 2001);
  assert.equal(ns.stats().records, 1, 'only the root directory object stays claimed');
  assert.equal(ns.stats().usedSlots, 0);
  ns.create('/again', dirRec());
  assert.equal(ns.lookup('/again').kind, 'dir');
});

test('ENOSPC when the table reaches its load bound; collectGarbage compacts tombstones', () => {
  const { ns } = fresh(4 * MiB); // 1024 frames -> 4096 slots, 3072 usable
  let made = 0;
  let code = codeOf(() => {
    for (;; made++) ns.create(`/n${made}`, morselRec(1n));
  });
  assert.equal(code, 'ENOSPC');
  assert.equal(made, 3072);
  for (let i = 0; i < made; i++) ns.remove(`/n${i}`, 'morsel');
  code = codeOf(() => ns.create('/x', morselRec(1n)));
  assert.equal(code, 'ENOSPC', 'tombstones count against the bound');
  ns.collectGarbage();
  ns.create('/x', morselRec(1n));
});

test('create + remove of the same names revives their slots: the table never fills and probe chains stay short', () => {
  const { ns } = fresh(4 * MiB); // 4096 slots, 3072 usable, 256 kept keys
  ns.create('/d', dirRec());
  const names = Array.from({ length: 200 }, (_, i) => `/d/k${i}`);
  for (const p of names) ns.create(p, morselRec(1n));
  const used = ns.stats().usedSlots;
  for (let round = 0; round < 50; round++) {
    // 50 x 200 = 10,000 creates: without revival the 3,072-slot bound is hit in round 15.
    for (const p of names) ns.remove(p, 'morsel');
    assert.equal(ns.stats().keptKeys, names.length);
    assert.equal(codeOf(() => ns.lookup(names[round])), 'ENOENT', 'a kept key is not visible');
    for (const p of names) ns.create(p, morselRec(BigInt(round)));
    assert.equal(codeOf(() => ns.create(names[round], morselRec(0n))), 'EEXIST', 'a revived name is unique');
  }
  assert.equal(ns.stats().usedSlots, used, 'no slot taken by a re-create');
  assert.equal(ns.lookup(names[7]).id, 49n);
  assert.equal(ns.stats().records, expectedRecords(ns));
  ns.rename(names[0], '/d/renamed'); // a rename into a kept key revives it too
  ns.remove('/d/renamed', 'morsel');
  ns.rename(names[1], '/d/renamed');
  assert.equal(ns.lookup('/d/renamed').id, 49n);
  assert.equal(ns.stats().usedSlots, used + 1, 'the rename target took one slot, once');
});

test('kept keys are bounded: past capacity / 16 a removed name leaves a keyless tombstone', () => {
  const { ns } = fresh(4 * MiB); // 4096 slots: at most 256 kept keys
  for (let i = 0; i < 400; i++) ns.create(`/n${i}`, morselRec(1n));
  for (let i = 0; i < 400; i++) ns.remove(`/n${i}`, 'morsel');
  const s = ns.stats();
  assert.equal(s.keptKeys, 256);
  assert.equal(s.tombstones, 400);
  assert.equal(s.records, expectedRecords(ns));
  for (let i = 0; i < 400; i++) ns.create(`/n${i}`, morselRec(2n)); // 256 revive, 144 take new slots
  assert.equal(ns.stats().usedSlots, 400 + 144);
  assert.equal(ns.stats().keptKeys, 0);
  assert.equal(ns.stats().records, expectedRecords(ns));
});

// --- model-based property test ---------------------------------------------------------

test('property: the namespace behaves like a map of paths (errors included), and leaves no garbage', () => {
  fc.assert(
    fc.property(fc.array(arbOp, { minLength: 1, maxLength: 60 }), (ops) => {
      const { ns } = fresh();
      const model: Model = new Map();
      ops.forEach((op, i) => assert.equal(applyOp(ns, op, i), modelOp(model, op, i), `op ${i}: ${JSON.stringify(op)}`));
      assert.deepEqual(snapshotTree(ns), sortedModel(model));
      assert.equal(ns.stats().records, expectedRecords(ns));
      const gc = ns.collectGarbage();
      assert.deepEqual({ ...gc, tombstonesDropped: 0, keysDropped: 0 }, { freedRecords: 0, renamesCommitted: 0, renamesRolledBack: 0, dyingRemoved: 0, orphansRemoved: 0, countsFixed: 0, tombstonesDropped: 0, keysDropped: 0 });
      assert.deepEqual(snapshotTree(ns), sortedModel(model), 'unchanged by collectGarbage');
    }),
    { numRuns: 150 },
  );
});

// --- two worker threads ------------------------------------------------------------------

async function runWorkers(m: Memory, job: string, seeds: number[], ops: number): Promise<Record<string, number>[]> {
  const url = new URL('./workers/namespace-worker.js', import.meta.url);
  const barrier = new SharedArrayBuffer(8);
  const workers = seeds.map((seed) => new Worker(url, { workerData: { region: m.share(), job, seed, ops, barrier } }));
  const results = workers.map((w) => new Promise<Record<string, number>>((res, rej) => w.once('message', res).once('error', rej)));
  const gate = new Int32Array(barrier);
  while (Atomics.load(gate, 0) < seeds.length) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(gate, 1, 1);
  Atomics.notify(gate, 1);
  return Promise.all(results);
}

test('two worker threads: concurrent creates, renames, removes, updates and lookups stay consistent', async () => {
  const { m, ns } = fresh(32 * MiB);
  for (const d of ['/a', '/b', '/a/x', '/b/y']) ns.create(d, dirRec());
  const results = await runWorkers(m, 'mixed', [1, 2], 20000);
  for (const r of results) assert.ok(r.ok > 1000, `each worker completes operations: ${JSON.stringify(r)}`);
  const tree = snapshotTree(ns);
  assert.equal(ns.stats().records, expectedRecords(ns), 'no record leaked or lost');
  const gc = ns.collectGarbage();
  assert.deepEqual({ ...gc, tombstonesDropped: 0, keysDropped: 0 }, { freedRecords: 0, renamesCommitted: 0, renamesRolledBack: 0, dyingRemoved: 0, orphansRemoved: 0, countsFixed: 0, tombstonesDropped: 0, keysDropped: 0 });
  assert.deepEqual(snapshotTree(ns), tree);
});

test('two worker threads: creates and removes of the same names revive kept keys, never twice', async () => {
  const { m, ns } = fresh(32 * MiB);
  ns.create('/v', dirRec());
  const results = await runWorkers(m, 'revive-race', [5, 6], 20000);
  const listed = ns.list('/v').map((e) => e.name);
  assert.equal(new Set(listed).size, listed.length, `no name listed twice: ${listed.join(' ')}`);
  for (let k = 0; k < 4; k++) {
    const net = results.reduce((sum, r) => sum + (r[`net${k}`] ?? 0), 0);
    assert.equal(net, listed.includes(`n${k}`) ? 1 : 0, `n${k}: successful creates minus removes is what exists`);
  }
  assert.equal(ns.stats().usedSlots, 1 + 4, 'one slot per name, whatever the number of operations');
  assert.equal(ns.stats().records, expectedRecords(ns), 'no record leaked or lost');
});

test('two worker threads: rmdir racing creates in that directory never orphans a name', async () => {
  const { m, ns } = fresh(32 * MiB);
  const results = await runWorkers(m, 'rmdir-race', [3, 4], 20000);
  const total = results.reduce((n, r) => n + r.rmdirOk + r.createOk, 0);
  assert.ok(results.every((r) => r.rmdirOk > 0 && r.createOk > 0), `both outcomes happen: ${JSON.stringify(results)}`);
  assert.ok(total > 0);
  snapshotTree(ns);
  const gc = ns.collectGarbage();
  assert.equal(gc.orphansRemoved, 0, 'no name under a removed directory');
  assert.equal(gc.countsFixed, 0, 'child counts exact');
  assert.equal(gc.freedRecords, 0);
});

test('two worker threads: a reader racing updates, renames and removes never sees a torn record', async () => {
  const { m, ns } = fresh(32 * MiB);
  ns.create('/t', { ...morselRec(1n), generation: 1, sizeBytes: 1, uid: 1, gid: 1, ctimeMs: 1, mtimeMs: 1, fixedAddress: 1 });
  const [writer, reader] = await runWorkers(m, 'torn', [5, 6], 30000);
  assert.ok(writer.ok > 1000, `writer made progress: ${JSON.stringify(writer)}`);
  assert.ok(reader.ok > 1000, `reader saw records: ${JSON.stringify(reader)}`);
  assert.equal(ns.stats().records, expectedRecords(ns));
});
