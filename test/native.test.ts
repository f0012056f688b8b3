import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { mapFile, syncFile, adviseFile, liveMappings, mapFd, lockByte, lockConflicts, reserveFile, zeroBytes, nativeCrc32c, nativeReadvCrc, EXCLUSIVE, SHARED, UNLOCK } from '../src/physical/native.js';
import { crc32c as portableCrc32c } from '@node-rs/crc32';
import fc from 'fast-check';
import { isMorselError } from '../src/errors.js';
import type { WorkerRequest } from './native-worker.js';
import { tempDir } from './helpers.js';

const MiB = 1 << 20;
const GiB = 2 ** 30;
const dir = tempDir('morsel-native-');

const nativeJs = fileURLToPath(new URL('../src/physical/native.js', import.meta.url));

let seq = 0;
/** A fresh zero-filled (sparse) file of `size` bytes. */
function region(size: number): string {
  const path = join(dir, `r${seq++}.region`);
  const fd = fs.openSync(path, 'w+');
  try {
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }
  return path;
}

function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => isMorselError(e) && e.code === code);
}

/** Runs ESM `body` in a fresh node process with `native` imported from dist. */
function child(body: string, args: string[] = []) {
  const code = `import * as native from ${JSON.stringify(nativeJs)};\n${body}`;
  return spawnSync(process.execPath, [...args, '--input-type=module', '-e', code], { encoding: 'utf8' });
}

test('writes through the mapping reach the file after sync', () => {
  const path = region(MiB);
  const sab = mapFile(path, MiB);
  assert.equal(sab.byteLength, MiB);
  const i32 = new Int32Array(sab);
  i32[0] = 0x01020304;
  i32[MiB / 4 - 1] = -1;
  syncFile(sab, 0, MiB);
  const bytes = fs.readFileSync(path);
  assert.equal(bytes.readInt32LE(0), 0x01020304);
  assert.equal(bytes.readInt32LE(MiB - 4), -1);
  // Unaligned sub-range rounds down to its page and still succeeds.
  syncFile(sab, 4097, 10);
  syncFile(sab, MiB, 0);
});

test('two mappings of one file see each other', () => {
  const path = region(MiB);
  const a = new Int32Array(mapFile(path, MiB));
  const b = new Int32Array(mapFile(path, MiB));
  a[100] = 42;
  assert.equal(b[100], 42);
  Atomics.add(b, 100, 1);
  assert.equal(Atomics.load(a, 100), 43);
});

test('a worker shares the posted SAB and its own mapping', async () => {
  const path = region(MiB);
  const sab = mapFile(path, MiB);
  const i32 = new Int32Array(sab);
  const adds = 100_000;
  const worker = new Worker(new URL('./native-worker.js', import.meta.url));
  try {
    const done = once(worker, 'message');
    worker.postMessage({ sab, path, byteLength: MiB, adds } satisfies WorkerRequest);
    for (let i = 0; i < adds; i++) Atomics.add(i32, 2, 1);
    assert.deepEqual(await done, ['done']);
  } finally {
    await worker.terminate();
  }
  assert.equal(i32[0], 1);
  assert.equal(i32[1], 0x600d);
  assert.equal(i32[3], 0x5e1f);
  assert.equal(Atomics.load(i32, 2), 2 * adds, 'no Atomics.add lost between threads');
});

test('a separate process sees and makes writes, surviving its SIGKILL', () => {
  const path = region(MiB);
  const i32 = new Int32Array(mapFile(path, MiB));
  i32[5] = 7;
  const r = child(`
    const v = new Int32Array(native.mapFile(${JSON.stringify(path)}, ${MiB}));
    if (v[5] !== 7) { console.error('child saw', v[5]); process.exit(3); }
    v[6] = 0x7e57;
    Atomics.add(v, 5, 1);
    process.kill(process.pid, 'SIGKILL'); // no sync, no exit handlers
  `);
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  assert.equal(i32[6], 0x7e57);
  assert.equal(i32[5], 8);
  assert.equal(fs.readFileSync(path).readInt32LE(6 * 4), 0x7e57, 'page cache holds the dead writer\'s data');
});

test('the deleter munmaps once the last SAB is collected', () => {
  const r = child(
    `
    const path = ${JSON.stringify(region(MiB))};
    const before = native.liveMappings();
    let sab = native.mapFile(path, ${MiB});
    const mapped = native.liveMappings();
    sab = null;
    let after = mapped;
    for (let i = 0; i < 100 && after !== before; i++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 10)); // array buffers are swept off-thread
      after = native.liveMappings();
    }
    console.log(JSON.stringify({ before, mapped, after }));
  `,
    ['--expose-gc'],
  );
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { before: 0, mapped: 1, after: 0 });
  assert.ok(liveMappings() >= 0);
});

test('errors carry codes', () => {
  const path = region(MiB);
  throwsCode(() => mapFile(path, 2 * MiB), 'ERANGE');
  throwsCode(() => mapFile(join(dir, 'missing.region'), MiB), 'ENOENT');
  assert.throws(() => mapFile(join(dir, 'missing.region'), MiB), /missing\.region/);
  throwsCode(() => mapFile(dir, 4096), 'EIO'); // EISDIR is not an ErrorCode
  for (const bad of [0, -4096, 4095, 4096.5, NaN, Infinity, 2 ** 60]) {
    throwsCode(() => mapFile(path, bad), 'EINVAL');
  }
  throwsCode(() => mapFile('a\0b', 4096), 'EINVAL');
  const sab = mapFile(path, MiB);
  throwsCode(() => syncFile(sab, MiB - 4, 8), 'ERANGE');
  throwsCode(() => syncFile(sab, MiB + 1, 0), 'ERANGE');
  throwsCode(() => syncFile(sab, -1, 1), 'EINVAL');
  throwsCode(() => adviseFile(sab, 0, 2 * MiB, 'willneed'), 'ERANGE');
  throwsCode(() => adviseFile(sab, 0, 1, 'bogus' as 'willneed'), 'EINVAL');
});

test('advise hints keep data intact', () => {
  const path = region(MiB);
  const sab = mapFile(path, MiB);
  const u8 = new Uint8Array(sab);
  adviseFile(sab, 0, MiB, 'populate');
  u8[12345] = 99;
  adviseFile(sab, 0, MiB, 'willneed');
  adviseFile(sab, 0, MiB, 'dontneed'); // shared file pages refault from the page cache
  assert.equal(u8[12345], 99);
});

test('a >4 GiB sparse file maps and round-trips past 4 GiB', () => {
  const size = 5 * GiB;
  const path = region(size);
  const sab = mapFile(path, size);
  assert.equal(sab.byteLength, size);
  const at = 4.5 * GiB;
  const view = new Uint8Array(sab, at, 4096); // views stay < 2^32 elements
  view[0] = 0xab;
  view[4095] = 0xcd;
  syncFile(sab, at, 4096);
  const buf = Buffer.alloc(4096);
  const fd = fs.openSync(path, 'r');
  try {
    assert.equal(fs.readSync(fd, buf, 0, 4096, at), 4096);
  } finally {
    fs.closeSync(fd);
  }
  assert.equal(buf[0], 0xab);
  assert.equal(buf[4095], 0xcd);
  assert.equal(new Uint8Array(mapFile(path, size), at, 1)[0], 0xab);
});

test('OFD locks: owned by the open file (two opens in one process conflict), converted in one step', () => {
  const path = region(MiB);
  const a = fs.openSync(path, 'r+');
  const b = fs.openSync(path, 'r+');
  try {
    assert.equal(lockByte(a, 0, EXCLUSIVE), true);
    assert.equal(lockByte(a, 0, EXCLUSIVE), true, 're-locking our own byte is fine');
    assert.equal(lockByte(b, 0, SHARED), false);
    assert.equal(lockByte(b, 0, EXCLUSIVE), false);
    assert.equal(lockConflicts(b, 0, SHARED), true);
    assert.equal(lockConflicts(a, 0, EXCLUSIVE), false, 'our own lock never conflicts');
    assert.equal(lockByte(b, 1, EXCLUSIVE), true, 'bytes are independent');
    assert.equal(lockByte(a, 0, SHARED), true, 'downgrade');
    assert.equal(lockByte(b, 0, SHARED), true);
    assert.equal(lockByte(a, 0, EXCLUSIVE), false, 'no upgrade while another shares it');
    assert.equal(lockConflicts(b, 0, SHARED), false, 'a shared probe passes shared holders');
    assert.equal(lockConflicts(b, 0, EXCLUSIVE), true);
    lockByte(b, 0, UNLOCK);
    assert.equal(lockByte(a, 0, EXCLUSIVE), true, 'upgrade once alone');
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
});

test('a killed process loses its OFD lock; a mapping keeps the open file (and its locks) until unlocked', () => {
  const path = region(MiB);
  const r = child(`
    const fd = (await import('node:fs')).openSync(${JSON.stringify(path)}, 'r+');
    native.lockByte(fd, 5, native.EXCLUSIVE);
    process.stdout.write('locked');
    process.kill(process.pid, 'SIGKILL');
  `);
  assert.equal(r.signal, 'SIGKILL');
  assert.equal(r.stdout, 'locked');
  const fd = fs.openSync(path, 'r+');
  try {
    assert.equal(lockConflicts(fd, 5, SHARED), false, 'the kernel dropped the dead holder\'s lock');
    const other = fs.openSync(path, 'r+');
    assert.equal(lockByte(other, 7, EXCLUSIVE), true);
    const sab = mapFd(other, MiB, true);
    fs.closeSync(other); // the mapping still references the open file
    assert.equal(lockConflicts(fd, 7, SHARED), true, 'closing the fd alone does not drop it: Membership unlocks first');
    assert.equal(sab.byteLength, MiB);
  } finally {
    fs.closeSync(fd);
  }
});

test('mapFd read-only, reserveFile, and typed errors for bad fds', () => {
  const path = region(2 * MiB);
  const fd = fs.openSync(path, 'r+');
  try {
    assert.ok(fs.fstatSync(fd).blocks * 512 < 2 * MiB, 'sparse');
    reserveFile(fd, 2 * MiB);
    assert.ok(fs.fstatSync(fd).blocks * 512 >= 2 * MiB, 'every block allocated');
    const ro = new Int32Array(mapFd(fd, MiB, false));
    const rw = new Int32Array(mapFd(fd, MiB, true));
    rw[3] = 42;
    assert.equal(ro[3], 42, 'a read-only mapping sees writes');
    throwsCode(() => mapFd(fd, 4 * MiB, false), 'ERANGE');
  } finally {
    fs.closeSync(fd);
  }
  throwsCode(() => lockByte(987_654, 0, SHARED), 'EBADF');
  throwsCode(() => mapFd(987_654, MiB, true), 'EBADF');
  throwsCode(() => lockByte(-1, 0, SHARED), 'EINVAL');
  // A store into a PROT_READ mapping is a SIGSEGV: why Region guards every mutator with EACCES first.
  const r = child(`
    const fd = (await import('node:fs')).openSync(${JSON.stringify(path)}, 'r');
    new Int32Array(native.mapFd(fd, 4096, false))[0] = 1;
  `);
  assert.equal(r.signal, 'SIGSEGV');
});

test('zeroBytes zeroes exactly the range of a view (SharedArrayBuffer or ArrayBuffer) and refuses one outside it', () => {
  for (const buf of [new SharedArrayBuffer(3 * 4096), new ArrayBuffer(3 * 4096)]) {
    new Uint8Array(buf).fill(7);
    const view = new Uint8Array(buf, 4096, 2 * 4096);
    assert.equal(zeroBytes(view, 100, 5000), true);
    assert.deepEqual([view[99], view[100], view[5099], view[5100]], [7, 0, 0, 7]);
    assert.equal(view.subarray(100, 5100).every((b) => b === 0), true);
    assert.throws(() => zeroBytes(view, 4096, 4097), /ERANGE/);
    assert.throws(() => zeroBytes(view, -1, 1), /ERANGE/);
    assert.equal(new Uint8Array(buf).filter((b) => b === 0).length, 5000, 'offsets are the view\'s: nothing outside the range touched');
  }
});

test('crc32c (SSE4.2 three chains; carry-less folding of long inputs where the CPU has VPCLMULQDQ) equals @node-rs/crc32 on any bytes, offset and chaining', (t) => {
  const crc = nativeCrc32c();
  if (crc === null) return t.skip('the native addon is not built or this CPU lacks SSE4.2: the JavaScript fallback serves');
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40_000 }), fc.nat(7), fc.nat(), fc.nat(40_000), (bytes, skew, init, cut) => {
      const view = bytes.subarray(Math.min(skew, bytes.length)); // unaligned starts
      const at = Math.min(cut, view.length);
      assert.equal(crc(view, init), portableCrc32c(Buffer.from(view), init));
      assert.equal(crc(view.subarray(at), crc(view.subarray(0, at))), portableCrc32c(Buffer.from(view)), 'crc(b, crc(a)) = crc(a ++ b)');
    }),
    { numRuns: 300 },
  );
  const big = new Uint8Array(new SharedArrayBuffer(3 * MiB + 5)).map((_, i) => (i * 131) >>> 3);
  assert.equal(crc(big), portableCrc32c(Buffer.from(big)), 'past many three-chain blocks, on a SharedArrayBuffer');
  // Every length and start around where folding begins (1024 bytes) and the ends of its 256-byte blocks.
  for (let n = 1000; n <= 1600; n++) for (const skew of [0, 3]) assert.equal(crc(big.subarray(skew, skew + n), n), portableCrc32c(Buffer.from(big.subarray(skew, skew + n)), n), `${n} bytes at ${skew}`);
});

test('readvCrc reads into views from a position (short at the end of the file), with the crc32c of what it read; errors carry the errno', async (t) => {
  const readv = nativeReadvCrc();
  if (readv === null) return t.skip('the native addon is not built or this CPU lacks SSE4.2: the JavaScript fallback serves');
  const path = join(dir, `readv${seq++}.bin`);
  const data = new Uint8Array(3 * MiB).map((_, i) => (i * 7) & 255);
  fs.writeFileSync(path, data);
  const fd = fs.openSync(path, 'r');
  try {
    const sab = new SharedArrayBuffer(2 * MiB);
    const parts = [new Uint8Array(sab, 0, MiB), new Uint8Array(new ArrayBuffer(100)), new Uint8Array(sab, MiB + 4096, MiB - 4096)];
    const r = await readv(fd, parts, 12345);
    assert.equal(r.bytes, 2 * MiB - 4096 + 100);
    const want = data.subarray(12345, 12345 + r.bytes);
    assert.deepEqual(Buffer.concat(parts.map((p) => Buffer.from(p))), Buffer.from(want));
    assert.equal(r.crc, portableCrc32c(Buffer.from(want)));
    assert.equal(r.fromDisk, false, 'just written: the page cache holds it');
    const tail = await readv(fd, [new Uint8Array(sab, 0, MiB)], 3 * MiB - 10);
    assert.deepEqual([tail.bytes, tail.crc], [10, portableCrc32c(Buffer.from(data.subarray(3 * MiB - 10)))], 'short read at the end of the file');
    const TMPFS_MAGIC = 0x01021994; // its pages never leave the page cache
    if (process.getuid?.() === 0 && fs.statfsSync(path).type !== TMPFS_MAGIC) {
      fs.fsyncSync(fd);
      // drop_caches is best effort (a page busy at that instant stays, as a CI run once showed): a few tries.
      let fromDisk = false;
      for (let attempt = 0; attempt < 5 && !fromDisk; attempt++) {
        fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
        const cold: { bytes: number; crc: number; fromDisk: boolean; direct: boolean } = await readv(fd, [new Uint8Array(sab, 0, MiB)], 0);
        assert.deepEqual([cold.bytes, cold.crc], [MiB, portableCrc32c(Buffer.from(data.subarray(0, MiB)))]);
        fromDisk = cold.fromDisk;
      }
      assert.equal(fromDisk, true, 'after a cache drop the read waits for the device');
      // With an O_DIRECT descriptor, what the cache lacks comes straight into page-aligned memory (a file mapping).
      const directFd = fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_DIRECT ?? 0));
      try {
        const aligned = new Uint8Array(mapFile(region(2 * MiB), 2 * MiB));
        let direct = false;
        for (let attempt = 0; attempt < 5 && !direct; attempt++) {
          fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
          const cold: { bytes: number; crc: number; direct: boolean } = await readv(fd, [aligned.subarray(0, MiB), aligned.subarray(MiB, 2 * MiB)], MiB, directFd);
          assert.deepEqual([cold.bytes, cold.crc], [2 * MiB, portableCrc32c(Buffer.from(data.subarray(MiB, 3 * MiB)))]);
          assert.deepEqual(Buffer.from(aligned), Buffer.from(data.subarray(MiB, 3 * MiB)));
          direct = cold.direct;
        }
        assert.equal(direct, true, 'after a cache drop the read goes through the O_DIRECT descriptor');
        aligned.fill(0);
        const known = await readv(fd, [aligned.subarray(0, MiB), aligned.subarray(MiB, 2 * MiB)], 0, directFd, false); // no page-cache attempt
        assert.deepEqual([known.bytes, known.fromDisk, known.direct], [2 * MiB, true, true]);
        assert.deepEqual(Buffer.from(aligned), Buffer.from(data.subarray(0, 2 * MiB)));
        // Unaligned memory (a plain ArrayBuffer's offset 1): the buffered descriptor serves, same bytes.
        const odd = new Uint8Array(new ArrayBuffer(MiB + 1), 1);
        fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
        const r2 = await readv(fd, [odd], 0, directFd);
        assert.deepEqual([r2.bytes, r2.crc, r2.direct], [MiB, portableCrc32c(Buffer.from(data.subarray(0, MiB))), false]);
      } finally {
        fs.closeSync(directFd);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  await assert.rejects(readv(fd, [new Uint8Array(16)], 0), (e: unknown) => (e as { code?: string; syscall?: string }).code === 'EBADF' && (e as { syscall?: string }).syscall === 'preadv');
});
