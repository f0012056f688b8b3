/**
 * The kv item store in-process (a volatile region): random operation
 * sequences against a Map model (fast-check), with "restarts" (a fresh
 * KvStore over the same mapped morsel: free lists dropped, epoch bumped)
 * in between, and md I (invalidate: a stale copy). Without memory
 * pressure the store must equal the model (stale marks included); under pressure (tiny -m, large values) keys may be evicted, but a present
 * key must hold exactly its last stored value.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { Mmu } from '../src/space/mmu.js';
import { KV_BASE, KV_ORDER, KvStore, hashKey, kvGeometry, type ItemView } from '../src/apps/kv/store.js';
import { MiB } from '../src/units.js';

const MEM_MIB = 1;

interface Harness {
  store: KvStore;
  mmu: Mmu;
  reopen(): void;
  close(): void;
}

function harness(): Harness {
  const m = Memory.volatile(96 * MiB);
  const geo = kvGeometry(MEM_MIB);
  const id = m.morsels.createMeta(KV_ORDER, { address: KV_BASE, sizeBytes: geo.sizeBytes });
  m.morsels.populate(id, 0, geo.sizeBytes);
  const space = m.createSpace({ levels: 4 });
  space.map(id);
  const mmu = new Mmu(space);
  const open = (): KvStore => {
    mmu.enter();
    try {
      return new KvStore(mmu, MEM_MIB);
    } finally {
      mmu.exit();
    }
  };
  const h: Harness = {
    store: open(),
    mmu,
    reopen: () => {
      mmu.enter();
      try {
        h.store.unlockAll(); // a restart: the old store's stripe lock goes with it
      } finally {
        mmu.exit();
      }
      h.store = open();
    },
    close: () => {
      mmu.close();
      m.close();
    },
  };
  return h;
}

const enc = (s: string): Buffer => Buffer.from(s, 'latin1');
const scratch = new Uint8Array(64 * 1024);
const view: ItemView = { flags: 0, nbytes: 0, cas: 0 };

function read(h: Harness, key: string): string | null {
  const k = enc(key);
  const it = h.store.find(k, 0, k.length, hashKey(k, 0, k.length));
  if (it === 0) return null;
  h.store.view(it, view);
  const out = Buffer.alloc(view.nbytes);
  h.store.copyOut(h.store.valueVa(it), out, 0, view.nbytes);
  return out.toString('latin1');
}

type Op = { kind: 'set' | 'append' | 'delete' | 'invalidate' | 'reopen'; key: number; len: number; fill: number };

const opArb = (keys: number, minLen: number, maxLen: number): fc.Arbitrary<Op> =>
  fc.record({
    kind: fc.constantFrom('set', 'set', 'set', 'append', 'delete', 'invalidate', 'reopen') as fc.Arbitrary<Op['kind']>,
    key: fc.integer({ min: 0, max: keys - 1 }),
    len: fc.integer({ min: minLen, max: maxLen }),
    fill: fc.integer({ min: 97, max: 122 }),
  });

/** Keys the model expects marked stale (md I; a store clears it). */
const staleKeys = new Set<string>();

/** Each of `keys` reads as the model says, stale mark included; absent is allowed (and learnt) unless strict. */
function checkKeys(h: Harness, model: Map<string, string>, strict: boolean, keys: string[]): void {
  for (const key of keys) {
    const want = model.get(key) ?? null;
    const got = read(h, key);
    if (got === null && !strict) {
      model.delete(key);
      continue;
    }
    assert.equal(got, want, `key ${key}`);
    if (got === null) continue;
    const k = enc(key);
    assert.equal(h.store.stale(h.store.find(k, 0, k.length, hashKey(k, 0, k.length))), staleKeys.has(key), `stale mark of ${key}`);
  }
}

// Under pressure: values of ~100 KiB fall in one or two slab classes, so 60
// keys overflow the -m 1 page (plus each class's first page) and evict.

/** Applies ops to store and model; `strict`: nothing may be evicted. Returns the evictions counted. */
function runOps(ops: Op[], strict: boolean): number {
  const h = harness();
  const model = new Map<string, string>();
  staleKeys.clear();
  try {
    for (const op of ops) {
      if (op.kind === 'reopen') {
        h.reopen();
        h.mmu.enter();
        try {
          checkKeys(h, model, strict, [...model.keys()]);
        } finally {
          h.mmu.exit();
        }
        continue;
      }
      const key = `key${op.key}`;
      const k = enc(key);
      const hash = hashKey(k, 0, k.length);
      h.mmu.enter();
      try {
        if (op.kind === 'invalidate') {
          const it = h.store.find(k, 0, k.length, hash);
          if (strict) assert.equal(it !== 0, model.has(key), `find ${key}`);
          const marked = it !== 0 && h.store.invalidate(it, k, 0, k.length, hash, 0, scratch);
          if (strict) assert.equal(marked, it !== 0, `md I ${key}`);
          if (marked) staleKeys.add(key);
          else if (h.store.find(k, 0, k.length, hash) === 0) model.delete(key); // absent, or evicted to make room for the copy
        } else if (op.kind === 'delete') {
          const removed = h.store.remove(k, 0, k.length, hash);
          if (strict) assert.equal(removed, model.has(key), `delete ${key}`);
          else if (removed) assert.ok(model.has(key), `deleted ${key}, which the model does not hold`);
          model.delete(key);
          staleKeys.delete(key);
        } else {
          staleKeys.delete(key); // a store replaces the item: a fresh one is not stale
          const v = String.fromCharCode(op.fill).repeat(op.len);
          const r = h.store.store(op.kind, k, 0, k.length, hash, 7, 0, enc(v), 0, v.length, 0, scratch);
          if (op.kind === 'set') {
            assert.equal(r, 'STORED');
            model.set(key, v);
          } else if (model.has(key) && r === 'STORED') {
            model.set(key, model.get(key)! + v);
          } else {
            assert.equal(r, 'NOT_STORED');
            if (strict) assert.ok(!model.has(key), `append to present ${key} failed`);
            model.delete(key); // evicted (not strict) or absent
          }
        }
        checkKeys(h, model, strict, [key]);
      } finally {
        h.mmu.exit();
      }
    }
    h.mmu.enter();
    try {
      checkKeys(h, model, strict, [...model.keys()]);
      return h.store.stats().evictions;
    } finally {
      h.mmu.exit();
    }
  } finally {
    h.close();
  }
}

test('without memory pressure the store equals the model, across reopens', () => {
  fc.assert(fc.property(fc.array(opArb(20, 0, 300), { maxLength: 120 }), (ops) => assert.equal(runOps(ops, true), 0)), { numRuns: 60 });
});

test('under eviction a present key always holds its last value, across reopens', () => {
  let evictions = 0;
  fc.assert(fc.property(fc.array(opArb(60, 100_000, 110_000), { minLength: 100, maxLength: 200 }), (ops) => void (evictions += runOps(ops, false))), { numRuns: 20 });
  assert.ok(evictions > 0, 'the runs evicted (else this test checks nothing more than the first)');
});
