import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { crc32c } from '@node-rs/crc32';
import { Memory } from '../src/memory.js';
import { MorselError } from '../src/errors.js';
import { MiB, PAGE_SIZE, type Frame } from '../src/units.js';
import { HUGE_ALLOC_ORDER, HUGE_FRAMES } from '../src/paging/walk.js';
import { save } from '../src/serial/save.js';
import { load } from '../src/serial/load.js';
import { bytesSource, fileSource, memorySink, type ImageSource } from '../src/serial/streams.js';
import { FLAG_HUGE, TRAILER_BYTES, type ImageMap } from '../src/serial/format.js';
import { imageOf, partsOf } from './serial-helpers.js';
import { freeFrames, takeAll, tempDir } from './helpers.js';

/** Deterministic bytes (a cheap LCG), different per seed. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

/** Takes every free order-9 frame (as another user could); release() gives them back. */
function hogHuge(m: Memory): { release: () => void } {
  const taken = takeAll(m.alloc, HUGE_ALLOC_ORDER);
  return { release: () => taken.forEach((f) => m.alloc.free(f, HUGE_ALLOC_ORDER)) };
}

/**
 * Fragments the free memory as a long-running region would: every 2 MiB
 * block keeps one allocated frame, so no order-9 frame is free while almost
 * every 4 KiB frame still is. release() gives the kept frames back.
 */
function fragment(m: Memory): { release: () => void } {
  const all = takeAll(m.alloc);
  const keep = new Map<number, Frame>(); // one frame per 2 MiB block
  for (const f of all) {
    if (!keep.has(Math.floor(f / HUGE_FRAMES))) keep.set(Math.floor(f / HUGE_FRAMES), f);
    else m.alloc.free(f);
  }
  return { release: () => keep.forEach((f) => m.alloc.free(f)) };
}

/** The bytes of `p` in [0, length). */
function readRange(m: Memory, p: string, length: number): Uint8Array {
  const h = m.names.open(p);
  try {
    return m.names.read(h, 0, length);
  } finally {
    m.names.close(h);
  }
}

function statsOf(m: Memory, p: string): { dataPages: number; hugeLeaves: number; tableFrames: number } {
  const h = m.names.open(p);
  try {
    return m.morsels.stats(h.id);
  } finally {
    m.names.close(h);
  }
}

/** Bytes that cover every populated page of hugeMorsel (and some holes). */
const SPAN_BYTES = 24 * MiB;

/**
 * A 1 GiB huge-policy morsel with 4 KiB pages (written while no order-9
 * frame was free: pages 0, 5, 1023 and 1536) and two 2 MiB leaves (pages
 * 1024.. written whole, 5120.. by one small write), so one run holds a
 * 4 KiB page, a whole leaf and another 4 KiB page.
 */
function hugeMorsel(m: Memory, p: string): void {
  const h = m.names.create(p, { sizeBytes: 2 ** 30, huge: true });
  const hog = hogHuge(m);
  for (const page of [0, 5, 1023, 1536]) m.names.write(h, page * PAGE_SIZE + 17, pattern(3000, page + 1));
  hog.release();
  m.names.write(h, 4 * MiB, pattern(2 * MiB, 77));
  m.names.write(h, 20 * MiB + 100, pattern(500, 78));
  m.names.close(h);
  const st = statsOf(m, p);
  assert.equal(st.hugeLeaves, 2, 'two leaves');
  assert.equal(st.dataPages, 4 + 2 * 512, 'four 4 KiB pages beside them');
}

async function saveBytes(m: Memory, target: string, chunkPages?: number): Promise<Uint8Array> {
  const sink = memorySink();
  await save(m, target, sink, { chunkPages });
  return sink.bytes();
}

async function rejectsWith(p: Promise<unknown>, codes: string[]): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof MorselError, `a MorselError, got ${String(e)}`);
    assert.ok(codes.includes(e.code), `code ${e.code} (${e.message}) is one of ${codes.join(', ')}`);
    return;
  }
  assert.fail('expected a rejection');
}

function tmpFile(bytes: Uint8Array): { source: () => ImageSource; remove: () => void } {
  const dir = tempDir('serial-huge-');
  const file = path.join(dir, 'image');
  fs.writeFileSync(file, bytes);
  return { source: () => fileSource(file), remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** `image` (current version) with its map replaced by `edit(map)`, written in `version`'s layout (default: the image's), every checksum right again (the data unchanged). */
function withMap(image: Uint8Array, edit: (map: ImageMap) => ImageMap, version?: number): Uint8Array {
  const { header, map, data } = partsOf(image);
  return imageOf({ ...header, version: version ?? header.version }, edit(map), data);
}

test('huge roundtrip: 2 MiB leaves and 4 KiB pages come back in the same shape, data identical (chunks across leaves, memory and file sources)', async () => {
  const m = Memory.volatile(64 * MiB);
  hugeMorsel(m, '/h');
  const want = readRange(m, '/h', SPAN_BYTES);
  const before = statsOf(m, '/h');
  for (const chunkPages of [300, undefined]) {
    const image = await saveBytes(m, '/h', chunkPages);
    assert.equal(new DataView(image.buffer, image.byteOffset).getUint8(17) & FLAG_HUGE, FLAG_HUGE, 'the policy is in the header');
    const file = tmpFile(image);
    for (const [kind, source] of [['bytes', () => bytesSource(image)], ['file', file.source]] as const) {
      const src = source();
      await load(m, src, { name: '/h2' });
      src.close();
      const after = statsOf(m, '/h2');
      assert.deepEqual([after.hugeLeaves, after.dataPages, after.tableFrames], [before.hugeLeaves, before.dataPages, before.tableFrames], `${kind}, chunk ${chunkPages}`);
      assert.deepEqual(readRange(m, '/h2', SPAN_BYTES), want, `${kind}, chunk ${chunkPages}: same bytes`);
      const g = m.names.open('/h2');
      assert.equal(m.morsels.decode(g.id).huge, true, 'the loaded morsel has the huge policy');
      m.names.close(g);
      m.names.unlink('/h2');
    }
    file.remove();
  }
  m.close();
});

test('huge image loaded while no order-9 frame is free: 4 KiB pages instead, data identical', async () => {
  const m = Memory.volatile(64 * MiB);
  hugeMorsel(m, '/h');
  const want = readRange(m, '/h', SPAN_BYTES);
  const image = await saveBytes(m, '/h', 300);
  const hog = fragment(m);
  assert.throws(() => m.alloc.alloc(HUGE_ALLOC_ORDER), /ENOSPC|no free/i, 'no order-9 frame is free');
  await load(m, bytesSource(image), { name: '/h2' });
  const st = statsOf(m, '/h2');
  assert.equal(st.hugeLeaves, 0);
  assert.equal(st.dataPages, statsOf(m, '/h').dataPages);
  assert.deepEqual(readRange(m, '/h2', SPAN_BYTES), want);
  hog.release();
  m.close();
});

test('failed loads of a huge image (bad chunk after a leaf, truncation inside a leaf, ENOSPC mid-leaf) return every frame, order-9 ones included', async () => {
  const m = Memory.volatile(64 * MiB);
  hugeMorsel(m, '/h');
  const image = await saveBytes(m, '/h', 300); // 1028 pages: chunks of 300 split both leaves
  const free = freeFrames(m);
  const { dataStart } = partsOf(image);
  const variants: Array<[string, Uint8Array]> = [];
  for (const chunk of [1, 2, 3]) {
    const bad = image.slice();
    bad[dataStart + chunk * 300 * PAGE_SIZE + 5] ^= 0x40; // chunk 1 (inside the first leaf), 2 (after it), 3 (the last)
    variants.push([`flip in chunk ${chunk}`, bad]);
  }
  variants.push(['truncated inside the first leaf', image.subarray(0, dataStart + 500 * PAGE_SIZE)]);
  variants.push(['truncated inside the second leaf', image.subarray(0, dataStart + 900 * PAGE_SIZE)]);
  for (const [what, bytes] of variants) {
    const file = tmpFile(bytes);
    for (const source of [() => bytesSource(bytes), file.source]) {
      const src = source();
      await rejectsWith(load(m, src, { name: '/x' }), ['ECORRUPT']);
      src.close();
      assert.equal(freeFrames(m), free, what);
    }
    file.remove();
  }
  // ENOSPC: while chunk 2 is read (the first leaf allocated, not linked), another user takes every frame.
  const inner = bytesSource(image);
  let hog: Frame[] = [];
  let reads = 0;
  const source: ImageSource = {
    read: async (n: number) => {
      if (++reads === 4) hog = takeAll(m.alloc);
      return inner.read(n);
    },
    close: () => {},
  };
  await rejectsWith(load(m, source, { name: '/x' }), ['ENOSPC']);
  assert.ok(hog.length > 0);
  hog.forEach((f) => m.alloc.free(f));
  assert.equal(freeFrames(m), free, 'ENOSPC');
  assert.throws(() => m.names.stat('/x'));
  m.close();
});

test('map checks: leaves misaligned, outside a run, out of order or in an order-1 morsel are ECORRUPT; a version-1 image still loads, a version-1 huge flag is EVERSION', async () => {
  const m = Memory.volatile(64 * MiB);
  hugeMorsel(m, '/h');
  const image = await saveBytes(m, '/h');
  const free = freeFrames(m);
  const edits: Array<[string, (map: ImageMap) => ImageMap]> = [
    ['misaligned', (map) => ({ ...map, leaves: [map.leaves[0] + 1, map.leaves[1]] })],
    ['outside a run', (map) => ({ ...map, leaves: [map.leaves[0], map.leaves[1] + 512] })],
    ['not whole in a run', (map) => ({ ...map, leaves: [0, map.leaves[1]] })],
    ['out of order', (map) => ({ ...map, leaves: [map.leaves[1], map.leaves[0]] })],
    ['twice', (map) => ({ ...map, leaves: [map.leaves[0], map.leaves[0]] })],
  ];
  for (const [what, edit] of edits) {
    await rejectsWith(load(m, bytesSource(withMap(image, edit)), { name: '/x' }), ['ECORRUPT']);
    assert.equal(freeFrames(m), free, what);
  }
  // The unedited map re-encoded loads (the edits above are what fails).
  await load(m, bytesSource(withMap(image, (map) => map)), { name: '/same' });
  assert.equal(statsOf(m, '/same').hugeLeaves, 2);
  // Version 1: a plain morsel's image (no leaves, no huge flag) is the same bytes but the version.
  const plain = m.names.create('/plain', { sizeBytes: 4 * MiB });
  m.names.write(plain, 3 * PAGE_SIZE, pattern(10000, 5));
  m.names.close(plain);
  const v1 = withMap(await saveBytes(m, '/plain'), (map) => map, 1);
  await load(m, bytesSource(v1), { name: '/v1' });
  assert.deepEqual(readRange(m, '/v1', 4 * MiB), readRange(m, '/plain', 4 * MiB));
  // From a file too: its data starts inside the loader's first read of the head (no padding before version 3).
  const file = path.join(tempDir('morsel-v1-'), 'v1.img');
  fs.writeFileSync(file, v1);
  const src = fileSource(file);
  await load(m, src, { name: '/v1-file' }).finally(() => src.close());
  assert.deepEqual(readRange(m, '/v1-file', 4 * MiB), readRange(m, '/plain', 4 * MiB));
  const free2 = freeFrames(m);
  await rejectsWith(load(m, bytesSource(withMap(image, (map) => ({ ...map, leaves: [] }), 1)), { name: '/x' }), ['EVERSION']);
  assert.equal(freeFrames(m), free2);
  m.close();
});

test('fuzz: bit flips and truncations of a huge image give ECORRUPT/EVERSION and return every frame', async () => {
  const m = Memory.volatile(64 * MiB);
  hugeMorsel(m, '/f');
  const image = await saveBytes(m, '/f', 300);
  const { headerBytes: hl, mapEnd, dataStart } = partsOf(image);
  const free = freeFrames(m);
  const regions = [[0, hl], [hl, mapEnd], [mapEnd, dataStart], [dataStart, image.length - TRAILER_BYTES], [image.length - TRAILER_BYTES, image.length]].filter(([a, b]) => b > a);
  const flip = fc.tuple(fc.constantFrom(...regions), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), fc.integer({ min: 0, max: 7 })).map(([[a, b], at, bit]) => {
    const bytes = image.slice();
    bytes[a + Math.floor(at * (b - a))] ^= 1 << bit;
    return bytes;
  });
  const truncate = fc.integer({ min: 0, max: image.length - 1 }).map((n) => image.subarray(0, n));
  await fc.assert(
    fc.asyncProperty(fc.oneof(flip, truncate), async (bytes) => {
      await rejectsWith(load(m, bytesSource(bytes), { name: '/fz' }), ['ECORRUPT', 'EVERSION']);
      assert.equal(freeFrames(m), free);
    }),
    { numRuns: 200 },
  );
  await load(m, bytesSource(image), { name: '/fz' }); // the unmutated image still loads
  assert.deepEqual(readRange(m, '/fz', SPAN_BYTES), readRange(m, '/f', SPAN_BYTES));
  assert.equal(statsOf(m, '/fz').dataPages, statsOf(m, '/f').dataPages);
  m.close();
});
