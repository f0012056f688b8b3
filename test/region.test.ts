import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region } from '../src/physical/region.js';
import { Memory } from '../src/memory.js';
import { GiB, MiB, type Frame } from '../src/units.js';
import { makeHi, makeLo, pfnOf, INNER_FLAGS } from '../src/paging/entry.js';
import { tempDir } from './helpers.js';

const tmp = () => tempDir('morsel-region-');
const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;

test('a clean close is recorded; a process that dies leaves the region "crashed"', () => {
  const dir = tmp();
  const file = path.join(dir, 'r.region');
  try {
    const m = Memory.create(file, 8 * MiB);
    const id = m.morsels.create(1);
    m.close();
    const again = Memory.open(file);
    assert.equal(again.report?.crashed, false);
    assert.deepEqual(again.morsels.list(), [id], 'live morsels are reachable after a restart');
    // No close(): as if the process had been killed (the kernel drops its locks).
    again.abandon();
    const third = Region.openFile(file);
    assert.equal(third.crashed, true);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('region sizes are validated', () => {
  assert.throws(() => Region.createVolatile(1 * MiB), code('EINVAL'));
  assert.throws(() => Region.createVolatile(8 * MiB + 1), code('EINVAL'));
  assert.throws(() => Region.createVolatile(-4096), code('EINVAL'));
});

test('regions over 4 GiB: windowed views and 64-bit entry CAS above 2^20 frames', () => {
  // V8 commits a SharedArrayBuffer lazily: 6 GiB costs the pages touched.
  const r = Region.createVolatile(6 * GiB);
  assert.equal(r.smallPfn, false);
  const high = (5 * GiB) / 4096 + 3; // a frame in the sixth window
  const view = r.frame(high as Frame);
  view[10] = 0xaa;
  assert.equal(new Uint8Array(r.sab, 5 * GiB + 3 * 4096, 4096)[10], 0xaa);
  const table = ((5.5 * GiB) / 4096) as Frame;
  const lo = makeLo(high, INNER_FLAGS);
  const hi = makeHi(high, 0);
  assert.notEqual(hi, 0, 'PFN needs the high half');
  assert.ok(r.casEntry(table, 7, 0, 0, lo, hi));
  assert.ok(!r.casEntry(table, 7, 0, 0, lo, hi), 'second CAS from empty fails');
  assert.equal(pfnOf(r.loadLo(table, 7), r.loadHi(table, 7)), high);
  assert.ok(r.casEntry(table, 7, lo, hi, 0, 0));
  assert.equal(r.loadLo(table, 7), 0);
});
