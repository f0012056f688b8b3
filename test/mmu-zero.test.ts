import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { ZERO_FRAME } from '../src/physical/layout.js';
import { Access, Mmu } from '../src/space/mmu.js';
import { MiB } from '../src/units.js';
import { tempDir } from './helpers.js';

const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;
const allZero = (bytes: Uint8Array) => bytes.every((b) => b === 0);

test('reading never-written pages returns zeros and allocates nothing, even past the region size', () => {
  const m = Memory.volatile(64 * MiB);
  const space = m.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const id = m.morsels.create(3); // 512 GiB of address space over a 64 MiB region
  const base = space.map(id);
  const before = m.morsels.stats(id);
  const free = m.alloc.freeFrames();
  const out = new Uint8Array(96 * MiB).fill(0x55);
  mmu.read(base + 3 * MiB + 17, out);
  assert.ok(allZero(out), '96 MiB of zeros');
  assert.equal(mmu.read8(base + 2 ** 38), 0);
  assert.equal(mmu.read32(base + 2 ** 39 - 4), 0);
  assert.equal(mmu.translate(base + 12345, Access.Read), ZERO_FRAME);
  assert.ok(allZero(m.region.frame(mmu.translate(base, Access.Read))), 'the zero frame reads as zeros');
  assert.equal(m.alloc.freeFrames(), free, 'no frame allocated by reads');
  assert.deepEqual(m.morsels.stats(id), before, 'stat numbers unchanged by reads');
  assert.ok(mmu.counters.zeroReads > 0);
});

test('a read-only mapping never populates; a write populates and the next read sees it', () => {
  const m = Memory.volatile(16 * MiB);
  const space = m.createSpace();
  const id = m.morsels.create(1);
  const ro = space.map(id, { rights: { write: false } });
  const rw = space.map(id);
  const reader = new Mmu(space);
  const writer = new Mmu(space);
  const free = m.alloc.freeFrames();
  for (let off = 0; off < 2 * MiB; off += 4096) assert.equal(reader.read8(ro + off), 0);
  assert.equal(reader.pageView(ro + 4096).length, 4096);
  assert.throws(() => reader.write8(ro + 8192, 1), code('EACCES'));
  assert.throws(() => reader.pageView(ro + 8192, Access.Write), code('EACCES'));
  assert.equal(m.alloc.freeFrames(), free, 'reads, views and refused writes allocate nothing');
  assert.equal(m.morsels.stats(id).dataPages, 0);
  // The zero translation is not cached: a populate by another Mmu is seen at once.
  assert.equal(reader.read8(ro + 100), 0);
  writer.write8(rw + 100, 42);
  assert.equal(reader.read8(ro + 100), 42);
  assert.equal(m.morsels.stats(id).dataPages, 1);
});

test('pageView of a hole for reading is a private zero page, never the shared zero frame', () => {
  const m = Memory.volatile(16 * MiB);
  const space = m.createSpace();
  const mmu = new Mmu(space);
  const base = space.map(m.morsels.create(1));
  const free = m.alloc.freeFrames();
  const view = mmu.pageView(base + 4096 * 5);
  assert.ok(allZero(view));
  view.fill(0xab); // goes nowhere
  assert.equal(mmu.read8(base + 4096 * 5), 0);
  assert.ok(allZero(m.region.frame(mmu.translate(base + 4096 * 5, Access.Read))), 'the zero frame is untouched');
  assert.equal(m.alloc.freeFrames(), free);
  const writable = mmu.pageView(base + 4096 * 5, Access.Write); // populates, zero-copy
  writable[3] = 9;
  assert.equal(mmu.read8(base + 4096 * 5 + 3), 9);
  assert.equal(mmu.pageView(base + 4096 * 5)[3], 9, 'a populated page is viewed in place');
});

test('fast-check: random reads and writes agree with a model; only written pages are populated', () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({ write: fc.boolean(), page: fc.nat(511), offset: fc.nat(4095), length: fc.integer({ min: 1, max: 9000 }), value: fc.nat(255) }),
        { maxLength: 40 },
      ),
      (ops) => {
        const m = Memory.volatile(16 * MiB);
        const space = m.createSpace();
        const mmu = new Mmu(space);
        const id = m.morsels.create(1);
        const base = space.map(id);
        const model = new Uint8Array(2 * MiB);
        const written = new Set<number>();
        for (const op of ops) {
          const start = op.page * 4096 + op.offset;
          const length = Math.min(op.length, model.length - start);
          if (op.write) {
            mmu.fill(base + start, length, op.value);
            model.fill(op.value, start, start + length);
            for (let p = Math.floor(start / 4096); p <= Math.floor((start + length - 1) / 4096); p++) written.add(p);
          } else {
            const out = new Uint8Array(length);
            mmu.read(base + start, out);
            assert.deepEqual(out, model.subarray(start, start + length));
          }
        }
        assert.equal(m.morsels.stats(id).dataPages, written.size);
      },
    ),
    { numRuns: 60 },
  );
});

test('CLI: reading 100 MiB of an order-3 morsel in a 64 MiB region succeeds and changes no stat number', () => {
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/morsel.js');
  const dir = tempDir('morsel-zero-');
  const region = path.join(dir, 'r.region');
  const run = (...args: string[]) => {
    const r = spawnSync(process.execPath, [bin, ...args], { maxBuffer: 128 << 20 });
    assert.equal(r.status, 0, `morsel ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  try {
    run('init', region, '--size', '64MiB');
    const id = run('create', '--region', region, '--order', '3').toString().trim();
    run('read', '--region', region, id, '--length', '1'); // the first scratch space grows the spaces registry once
    const before = run('stat', '--region', region).toString();
    const out = run('read', '--region', region, id, '--offset', String(2 ** 30), '--length', String(100 * MiB));
    assert.equal(out.length, 100 * MiB);
    assert.ok(allZero(out));
    assert.equal(run('stat', '--region', region).toString(), before);
    assert.match(run('inspect', '--region', region, id).toString(), /dataPages: 0/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
