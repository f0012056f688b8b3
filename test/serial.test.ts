import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { Memory } from '../src/memory.js';
import { MorselError } from '../src/errors.js';
import { MiB, PAGE_SIZE } from '../src/units.js';
import { save } from '../src/serial/save.js';
import { load } from '../src/serial/load.js';
import { PMap } from '../src/serial/pmap.js';
import { bytesSource, fileSink, fileSource, memorySink } from '../src/serial/streams.js';
import { IMAGE_VERSION, TRAILER_BYTES, type ImageHeader } from '../src/serial/format.js';
import { imageOf, partsOf } from './serial-helpers.js';
import { freeFrames, takeAll, tempDir } from './helpers.js';

const MORSEL = fileURLToPathSafe(new URL('../../bin/morsel.js', import.meta.url));

function fileURLToPathSafe(u: URL): string {
  return decodeURIComponent(u.pathname);
}

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

async function saveBytes(m: Memory, target: string, chunkPages?: number): Promise<Uint8Array> {
  const sink = memorySink();
  await save(m, target, sink, { chunkPages });
  return sink.bytes();
}

function readAll(m: Memory, p: string): Uint8Array {
  const h = m.names.open(p);
  try {
    return m.names.read(h, 0, h.sizeBytes);
  } finally {
    m.names.close(h);
  }
}

/** Expects a MorselError with one of `codes`. */
async function rejectsWith(p: Promise<unknown>, codes: string[]): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof MorselError, `a MorselError, got ${String(e)}`);
    assert.ok(codes.includes(e.code), `code ${e.code} (${e.message}) is one of ${codes.join(', ')}`);
    return e.code;
  }
  assert.fail('expected a rejection');
}

test('dense roundtrip through a file: same bytes, same pages, saved name and mode', async () => {
  const m = Memory.volatile(64 * MiB);
  const dir = tempDir('serial-test-');
  const data = pattern(3 * MiB + 123, 1);
  const h = m.names.create('/dense', { sizeBytes: data.length, mode: 0o640 });
  m.names.write(h, 0, data);
  m.names.close(h);
  const file = path.join(dir, 'dense.img');
  const r = await save(m, '/dense', fileSink(file));
  assert.equal(r.pages, Math.ceil(data.length / PAGE_SIZE));
  assert.equal(fs.statSync(file).size, r.bytes);
  assert.deepEqual(fs.readdirSync(dir), ['dense.img'], 'the temporary file was renamed');
  m.names.unlink('/dense');
  const src = fileSource(file);
  const l = await load(m, src); // the saved name
  src.close();
  assert.equal(l.name, '/dense');
  assert.deepEqual(readAll(m, '/dense').subarray(0, data.length), data);
  const st = m.names.stat('/dense');
  assert.equal(st.mode, 0o640);
  assert.equal(st.sizeBytes, data.length);
  assert.equal(st.dataPages, r.pages);
  m.close();
});

test('a file image read ahead and checksummed on the thread pool: a flipped data bit in any of several chunks is ECORRUPT, every frame returned', async () => {
  const m = Memory.volatile(96 * MiB);
  const dir = tempDir('serial-test-');
  const data = pattern(10 * MiB + 5 * PAGE_SIZE, 3); // three 4 MiB chunks and a short one: reads overlap
  const h = m.names.create('/multi', { sizeBytes: data.length });
  m.names.write(h, 0, data);
  m.names.close(h);
  const file = path.join(dir, 'multi.img');
  await save(m, '/multi', fileSink(file));
  const good = fs.readFileSync(file);
  const dataAt = good.length - TRAILER_BYTES - Math.ceil(data.length / PAGE_SIZE) * PAGE_SIZE;
  const before = freeFrames(m);
  for (const at of [dataAt, dataAt + 4 * MiB + 17, good.length - TRAILER_BYTES - 1]) {
    const bad = Buffer.from(good);
    bad[at] ^= 0x10;
    fs.writeFileSync(file, bad);
    const src = fileSource(file);
    assert.equal(await rejectsWith(load(m, src, { name: '/copy' }), ['ECORRUPT']), 'ECORRUPT');
    src.close();
    assert.equal(freeFrames(m), before, `flip at ${at}: every frame of the failed load returned`);
  }
  fs.writeFileSync(file, good);
  const src = fileSource(file);
  await load(m, src, { name: '/copy' });
  src.close();
  assert.deepEqual(readAll(m, '/copy').subarray(0, data.length), data);
  m.close();
});

test('sparse roundtrip: the image holds only populated pages; tables rebuilt alike', async () => {
  const m = Memory.volatile(64 * MiB);
  const h = m.names.create('/sparse', { sizeBytes: 2 ** 30 }); // order 2
  const offsets = [0, 5 * PAGE_SIZE, 6 * PAGE_SIZE, 300 * MiB + 17, 1023 * MiB];
  offsets.forEach((o, i) => m.names.write(h, o, pattern(100, i + 7)));
  m.names.close(h);
  const image = await saveBytes(m, '/sparse', 2);
  const before = m.names.stat('/sparse');
  assert.ok(image.length < 8 * PAGE_SIZE, `${image.length} bytes for ${before.dataPages} pages`);
  await load(m, bytesSource(image), { name: '/sparse2' });
  const after = m.names.stat('/sparse2');
  assert.equal(after.dataPages, before.dataPages);
  assert.equal(after.tableFrames, before.tableFrames);
  const g = m.names.open('/sparse2');
  offsets.forEach((o, i) => assert.deepEqual(m.names.read(g, o, 100), pattern(100, i + 7)));
  assert.deepEqual(m.names.read(g, 100 * MiB, 8), new Uint8Array(8), 'holes read as zeros');
  m.names.close(g);
  m.close();
});

test('order-0 and empty morsels roundtrip', async () => {
  const m = Memory.volatile(32 * MiB);
  const h = m.names.create('/tiny', { sizeBytes: 100 });
  m.names.write(h, 0, pattern(100, 3));
  m.names.close(h);
  await load(m, bytesSource(await saveBytes(m, '/tiny')), { name: '/tiny2' });
  assert.deepEqual(readAll(m, '/tiny2'), pattern(100, 3));
  m.names.close(m.names.create('/empty', { sizeBytes: 4 * MiB }));
  await load(m, bytesSource(await saveBytes(m, '/empty')), { name: '/empty2' });
  assert.equal(m.names.stat('/empty2').dataPages, 0);
  m.close();
});

test('fixed-address morsel: loaded at the same address; its reservation is EEXIST while the original lives, nothing leaks', async () => {
  const m = Memory.volatile(64 * MiB);
  const address = 2 ** 40;
  const h = m.names.create('/fixed', { sizeBytes: 4 * MiB, fixedAddress: address });
  m.names.write(h, 4 * PAGE_SIZE, pattern(5000, 9));
  m.names.close(h);
  const image = await saveBytes(m, '/fixed');
  const free = freeFrames(m);
  await rejectsWith(load(m, bytesSource(image), { name: '/other' }), ['EEXIST']);
  assert.equal(freeFrames(m), free, 'every frame of the failed load returned');
  assert.throws(() => m.names.stat('/other'), /ENOENT|no such/i);
  m.names.unlink('/fixed');
  await load(m, bytesSource(image));
  const st = m.names.stat('/fixed');
  assert.equal(st.fixedAddress, address);
  assert.deepEqual(readAll(m, '/fixed').subarray(4 * PAGE_SIZE, 4 * PAGE_SIZE + 5000), pattern(5000, 9));
  m.close();
});

test('pmap: saved, unlinked, loaded at its address and looked up at once, no fixup', async () => {
  const m = Memory.volatile(64 * MiB);
  const address = 2 ** 36;
  const map = PMap.create(m, '/pm', { address, sizeBytes: 8 * MiB, buckets: 256 });
  for (let i = 0; i < 2000; i++) map.set(`key-${i}`, pattern(10 + (i % 50), i));
  map.set('key-7', pattern(3, 99)); // replace
  assert.equal(map.size, 2000);
  map.close();
  const image = await saveBytes(m, '/pm');
  m.names.unlink('/pm');
  await load(m, bytesSource(image));
  const back = PMap.open(m, '/pm', { write: false });
  assert.equal(back.base, address);
  assert.equal(back.size, 2000);
  assert.deepEqual(back.get('key-1234'), pattern(10 + (1234 % 50), 1234));
  assert.deepEqual(back.get('key-7'), pattern(3, 99));
  assert.equal(back.get('absent'), undefined);
  back.close();
  m.close();
});

test('names: --name overrides, an existing name is EEXIST, a handle image needs a name; a morsel in use is saved as it was when the save began', async () => {
  const m = Memory.volatile(32 * MiB);
  const h = m.names.create('/n', { sizeBytes: 64 * 1024 });
  m.names.write(h, 0, pattern(64 * 1024, 5));
  // Open and written during the save: the image is the snapshot taken at its start (copy-on-write).
  const sink = memorySink();
  const saving = save(m, '/n', sink, { chunkPages: 1 });
  m.names.write(h, 0, pattern(64 * 1024, 9));
  await saving;
  m.names.close(h);
  const during = await load(m, bytesSource(sink.bytes()), { name: '/during' });
  assert.equal(during.name, '/during');
  assert.deepEqual(readAll(m, '/during').subarray(0, 64 * 1024), pattern(64 * 1024, 5), 'the write after the snapshot is not in the image');
  assert.deepEqual(readAll(m, '/n').subarray(0, 64 * 1024), pattern(64 * 1024, 9), 'and the morsel has it');
  m.names.unlink('/during');
  const w = m.names.open('/n', { write: true });
  m.names.write(w, 0, pattern(64 * 1024, 5));
  m.names.close(w);
  const image = await saveBytes(m, '/n');
  const free = freeFrames(m);
  await rejectsWith(load(m, bytesSource(image)), ['EEXIST']);
  assert.equal(freeFrames(m), free);
  const r = await load(m, bytesSource(image), { name: '/n2', mode: 0o600 });
  assert.equal(r.name, '/n2');
  const ref = m.names.open('/n2');
  m.names.close(ref);
  const fromHandle = memorySink();
  await save(m, ref, fromHandle);
  await rejectsWith(load(m, bytesSource(fromHandle.bytes())), ['EINVAL']);
  await load(m, bytesSource(fromHandle.bytes()), { name: '/n3' });
  assert.equal(m.names.stat('/n3').sizeBytes, 2 * MiB, 'a handle carries no logical size: the order span');
  assert.deepEqual(readAll(m, '/n3').subarray(0, 64 * 1024), pattern(64 * 1024, 5));
  m.close();
});

/** A well-formed image of `header` with one chunk holding `pages` (the first header.populatedPages pages). */
function craft(header: ImageHeader, pages: Uint8Array): Uint8Array {
  const runs = header.populatedPages === 0 ? [] : [{ firstPage: 0, pageCount: header.populatedPages }];
  return imageOf({ ...header, chunkPages: Math.max(1, header.populatedPages) }, { runs, leaves: [] }, pages);
}

test('bad input: not an image, other version, truncated, trailing bytes, no room, unmappable address: typed errors, allocator unchanged', async () => {
  const m = Memory.volatile(16 * MiB);
  const h = m.names.create('/src', { sizeBytes: 256 * 1024 });
  m.names.write(h, 0, pattern(256 * 1024, 11));
  m.names.close(h);
  const image = await saveBytes(m, '/src', 8);
  const expectFail = async (bytes: Uint8Array, codes: string[]): Promise<void> => {
    const free = freeFrames(m);
    await rejectsWith(load(m, bytesSource(bytes), { name: '/x' }), codes);
    assert.equal(freeFrames(m), free, `frames returned after ${codes.join('/')}`);
    assert.throws(() => m.names.stat('/x'), /ENOENT|no such/i);
  };
  await expectFail(new TextEncoder().encode('#!/bin/sh\necho this is not an image\n'.repeat(10)), ['ECORRUPT']);
  await expectFail(new Uint8Array(0), ['ECORRUPT']);
  const other = image.slice();
  new DataView(other.buffer, other.byteOffset).setUint32(8, IMAGE_VERSION + 1, true);
  await expectFail(other, ['EVERSION']);
  await expectFail(image.subarray(0, image.length - 1), ['ECORRUPT']);
  await expectFail(Buffer.concat([image, new Uint8Array(1)]), ['ECORRUPT']);
  const base = { version: IMAGE_VERSION, order: 1 as const, sizeBytes: 2 * MiB, fixedAddress: null, name: null, huge: false, populatedPages: 1, runCount: 1, leafCount: 0, chunkPages: 1 };
  assert.equal((await load(m, bytesSource(craft(base, pattern(PAGE_SIZE, 2))), { name: '/crafted' })).pages, 1, 'the crafted image is valid');
  m.names.unlink('/crafted');
  for (const version of [1, 2]) {
    // Older layouts (each chunk's checksum after it, data unaligned) still load, and are checked as strictly.
    const old = craft({ ...base, version }, pattern(PAGE_SIZE, 2));
    await load(m, bytesSource(old), { name: '/crafted' });
    const loaded = m.names.open('/crafted');
    assert.deepEqual(m.names.read(loaded, 0, PAGE_SIZE), pattern(PAGE_SIZE, 2), `version ${version} data`);
    m.names.close(loaded);
    m.names.unlink('/crafted');
    const flipped = old.slice();
    flipped[old.length - TRAILER_BYTES - 2] ^= 1; // the chunk's checksum
    await expectFail(flipped, ['ECORRUPT']);
  }
  const pages = 5000; // 20 MiB of pages: more than the 16 MiB region holds
  await expectFail(craft({ ...base, order: 2, sizeBytes: 2 ** 30, populatedPages: pages }, new Uint8Array(pages * PAGE_SIZE)), ['ENOSPC']);
  await expectFail(craft({ ...base, fixedAddress: 2 ** 53 }, pattern(PAGE_SIZE, 2)), ['ECORRUPT']); // beyond every address space (and JS numbers)
  await expectFail(craft({ ...base, fixedAddress: 2 ** 30 + PAGE_SIZE }, pattern(PAGE_SIZE, 2)), ['EMISALIGNED']);
  m.close();
});

test('fuzz: truncations and bit flips anywhere give ECORRUPT/EVERSION and return every frame', async () => {
  const m = Memory.volatile(32 * MiB);
  const h = m.names.create('/f', { sizeBytes: 2 * MiB, mode: 0o644 });
  for (const o of [0, PAGE_SIZE, 2 * PAGE_SIZE, 40 * PAGE_SIZE, 41 * PAGE_SIZE, 300 * PAGE_SIZE]) m.names.write(h, o, pattern(PAGE_SIZE, o));
  m.names.close(h);
  const image = await saveBytes(m, '/f', 2); // 3 runs, 3 chunks
  const { headerBytes, mapEnd, dataStart } = partsOf(image);
  assert.equal(dataStart % PAGE_SIZE, 0, 'the data starts page-aligned');
  const free = freeFrames(m);
  const regions = { header: [0, headerBytes], map: [headerBytes, mapEnd], padding: [mapEnd, dataStart], data: [dataStart, image.length - TRAILER_BYTES], trailer: [image.length - TRAILER_BYTES, image.length] };
  const flip = fc.tuple(fc.constantFrom(...Object.values(regions)), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), fc.integer({ min: 0, max: 7 })).map(([[a, b], at, bit]) => {
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
    { numRuns: 1000 },
  );
  assert.throws(() => m.names.stat('/fz'));
  await load(m, bytesSource(image), { name: '/fz' }); // the unmutated image still loads
  assert.deepEqual(readAll(m, '/fz'), readAll(m, '/f'));
  m.close();
});

test('CLI: save - | load - between processes, --json results, typed exit codes', () => {
  const dir = tempDir('serial-test-');
  const region = path.join(dir, 'r.region');
  const env = { ...process.env, MORSEL_REGION: region };
  const cli = (args: string[], input?: Buffer) => spawnSync(process.execPath, [MORSEL, ...args], { env, input, maxBuffer: 64 * MiB });
  assert.equal(cli(['init', region, '--size', '64MiB']).status, 0);
  assert.equal(cli(['create', '/a', '--size', '1MiB']).status, 0);
  const data = Buffer.from(pattern(300 * 1024, 4));
  assert.equal(cli(['write', '/a'], data).status, 0);
  const saved = cli(['save', '/a', '-', '--json']);
  assert.equal(saved.status, 0, String(saved.stderr));
  const result = JSON.parse(String(saved.stderr)) as { bytes: number; pages: number; seconds: number; bytesPerSecond: number };
  assert.equal(result.bytes, saved.stdout.length);
  assert.equal(result.pages, 75);
  const loaded = cli(['load', '-', '--name', '/b', '--json'], saved.stdout);
  assert.equal(loaded.status, 0, String(loaded.stderr));
  const lr = JSON.parse(String(loaded.stdout)) as { name: string; bytes: number; pages: number };
  assert.deepEqual([lr.name, lr.bytes, lr.pages], ['/b', result.bytes, 75]);
  const back = cli(['read', '/b', '--length', String(data.length)]);
  assert.deepEqual(back.stdout, data);
  const file = path.join(dir, 'a.img');
  assert.equal(cli(['save', '/a', file]).status, 0);
  assert.deepEqual(fs.readFileSync(file), saved.stdout, 'file and stream images are the same bytes');
  const unsynced = path.join(dir, 'a-nosync.img');
  assert.equal(cli(['save', '/a', unsynced, '--no-sync']).status, 0);
  assert.deepEqual(fs.readFileSync(unsynced), saved.stdout, '--no-sync writes the same image');
  const again = cli(['load', file, '--json']);
  assert.equal(again.status, 3, 'EEXIST exits 3');
  assert.equal((JSON.parse(String(again.stdout)) as { error: { code: string } }).error.code, 'EEXIST');
  const junk = cli(['load', '-', '--name', '/c', '--json'], Buffer.from('not an image'));
  assert.equal(junk.status, 6, 'ECORRUPT exits 6');
  const check = cli(['check', '--json']);
  assert.equal(check.status, 0, String(check.stdout));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('ENOSPC in the middle of a load (another user took the frames): every frame of the load returned', async () => {
  const m = Memory.volatile(16 * MiB);
  const h = m.names.create('/mid', { sizeBytes: 2 * MiB });
  m.names.write(h, 0, pattern(40 * PAGE_SIZE, 6));
  m.names.close(h);
  const image = await saveBytes(m, '/mid', 4);
  const free = freeFrames(m);
  let hog: number[] = [];
  const inner = bytesSource(image);
  let reads = 0;
  const source = {
    read: async (n: number) => {
      if (++reads === 5) hog = takeAll(m.alloc); // chunk 1 is being read: every free frame goes, as a concurrent user could take them
      return inner.read(n);
    },
    close: () => {},
  };
  await rejectsWith(load(m, source, { name: '/mid2' }), ['ENOSPC']);
  assert.ok(hog.length > 0);
  for (const f of hog) m.alloc.free(f as never);
  assert.equal(freeFrames(m), free);
  assert.throws(() => m.names.stat('/mid2'));
  m.close();
});

test('file sources (reads straight into frames): truncated or flipped images are ECORRUPT, frames returned', async () => {
  const m = Memory.volatile(16 * MiB);
  const dir = tempDir('serial-test-');
  const h = m.names.create('/file', { sizeBytes: 2 * MiB });
  m.names.write(h, 0, pattern(20 * PAGE_SIZE, 8));
  m.names.close(h);
  const image = await saveBytes(m, '/file', 4);
  const free = freeFrames(m);
  const variants: Uint8Array[] = [image.subarray(0, image.length - 100), image.subarray(0, 300), image.subarray(0, image.length - 2)];
  for (const at of [200, 5000, 9 * PAGE_SIZE, image.length - 40, image.length - 3]) {
    const bad = image.slice();
    bad[at] ^= 0x10;
    variants.push(bad);
  }
  for (const [i, bytes] of variants.entries()) {
    const file = path.join(dir, `bad${i}.img`);
    fs.writeFileSync(file, bytes);
    const src = fileSource(file);
    await rejectsWith(load(m, src, { name: '/file2' }), ['ECORRUPT']);
    src.close();
    assert.equal(freeFrames(m), free, `variant ${i}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  m.close();
});

test('a file save sends the data with direct I/O where it can (page-aligned frames of a mapped region, a file system with O_DIRECT), else buffered: the same image bytes either way, and it loads', async () => {
  const dir = tempDir('serial-direct-');
  const supportsDirect = ((): boolean => {
    const probe = path.join(dir, 'probe');
    fs.writeFileSync(probe, '');
    try {
      fs.closeSync(fs.openSync(probe, fs.constants.O_WRONLY | (fs.constants.O_DIRECT ?? 0)));
      return fs.constants.O_DIRECT !== undefined;
    } catch {
      return false;
    }
  })();
  for (const [kind, m] of [['file-backed', Memory.create(path.join(dir, 'r'), 32 * MiB)], ['volatile', Memory.volatile(32 * MiB)]] as const) {
    const h = m.names.create('/d', { sizeBytes: 3 * MiB + 5 * PAGE_SIZE });
    m.names.write(h, 0, pattern(3 * MiB, 7));
    m.names.write(h, 3 * MiB + 4 * PAGE_SIZE, pattern(PAGE_SIZE, 8)); // a second run: the data after it stays aligned
    m.names.close(h);
    const file = path.join(dir, `${kind}.img`);
    const result = await save(m, '/d', fileSink(file), { chunkPages: 256 });
    if (kind === 'file-backed') assert.equal(result.directIo, supportsDirect, 'a mapped region sends its frames with direct I/O when the file system has it');
    const inMemory = memorySink();
    await save(m, '/d', inMemory, { chunkPages: 256 });
    assert.deepEqual(new Uint8Array(fs.readFileSync(file)), inMemory.bytes(), `${kind}: the file holds the same image (direct: ${result.directIo})`);
    const src = fileSource(file);
    await load(m, src, { name: '/back' });
    src.close();
    assert.deepEqual(readAll(m, '/back'), readAll(m, '/d'));
    m.close();
  }
});

test('the package entry exports save and load: a page-cache-only save (durable: false) replaces the previous image whole and loads back', async () => {
  const api = await import('../src/index.js');
  const m = api.Memory.volatile(64 * MiB);
  const dir = tempDir('serial-test-');
  try {
    const file = path.join(dir, 'w.img');
    const h = m.names.create('/w', { sizeBytes: 2 * MiB });
    m.names.write(h, 0, pattern(5 * PAGE_SIZE, 7));
    await api.save(m, '/w', api.fileSink(file)); // durable, the previous image
    m.names.write(h, 0, pattern(9 * PAGE_SIZE, 8));
    m.names.close(h);
    const r = await api.save(m, '/w', api.fileSink(file, { durable: false }));
    assert.equal(r.pages, 9);
    assert.equal(r.directIo, false, 'no direct I/O without durability');
    assert.deepEqual(fs.readdirSync(dir), ['w.img'], 'renamed over the previous image, no temporary file left');
    const src = api.fileSource(file);
    try {
      const l = await api.load(m, src, { name: '/w2' });
      assert.equal(l.pages, 9);
    } finally {
      src.close();
    }
    assert.deepEqual(readAll(m, '/w2').subarray(0, 9 * PAGE_SIZE), pattern(9 * PAGE_SIZE, 8));
  } finally {
    m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('load of an image not in the page cache: its chunks come with direct I/O into the region file\'s frames, byte-exact, and a failed one returns every frame', async (t) => {
  const TMPFS_MAGIC = 0x01021994; // its pages never leave the page cache
  const dir = tempDir('morsel-serial-direct-');
  if (process.getuid?.() !== 0 || fs.statfsSync(dir).type === TMPFS_MAGIC) return t.skip('needs root (drop_caches) and a file system that is not tmpfs');
  const m = Memory.create(path.join(dir, 'r.region'), 64 * MiB); // a mapped file: page-aligned frames, as direct I/O needs
  const data = pattern(24 * MiB + 3 * PAGE_SIZE, 7);
  const h = m.names.create('/d', { sizeBytes: data.length });
  m.names.write(h, 0, data);
  m.names.close(h);
  const file = path.join(dir, 'd.img');
  await save(m, '/d', fileSink(file));
  const dropped = (): void => {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
  };
  dropped();
  const src = fileSource(file);
  const reads: boolean[] = [];
  const readInto = src.readInto!.bind(src);
  src.readInto = async (parts) => {
    const r = await readInto(parts);
    reads.push(r.direct);
    return r;
  };
  await load(m, src, { name: '/copy' }).finally(() => src.close());
  assert.ok(reads.filter((d) => d).length >= reads.length - 1, `chunks read with direct I/O: ${reads.join(' ')}`); // a page or so may be cached again by then
  const copy = m.names.open('/copy');
  assert.deepEqual(m.names.read(copy, 0, data.length), data);
  m.names.close(copy);
  m.names.unlink('/copy');
  // A flipped byte in the data: ECORRUPT from the direct path too, nothing kept.
  const bytes = fs.readFileSync(file);
  bytes[bytes.length - TRAILER_BYTES - 5] ^= 1;
  fs.writeFileSync(file, bytes);
  fs.fsyncSync(fs.openSync(file, 'r'));
  const free = freeFrames(m);
  dropped();
  const bad = fileSource(file);
  await assert.rejects(load(m, bad, { name: '/bad' }).finally(() => bad.close()), (e: unknown) => e instanceof MorselError && e.code === 'ECORRUPT');
  assert.equal(freeFrames(m), free, 'every frame of the failed load returned');
  m.close();
});
