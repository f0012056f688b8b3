/**
 * Typed wrapper over the morsel_mmap addon (src/physical/native/mmap.cc):
 * a file mapped MAP_SHARED, exposed as a SharedArrayBuffer. Writes through it
 * land in the kernel page cache, so they are seen by every worker the SAB is
 * posted to and by every other process mapping the same file, and survive the
 * writer being SIGKILLed. Only `syncFile` makes them survive a host crash.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MorselError, type ErrorCode } from '../errors.js';

export type AdviseKind = 'willneed' | 'dontneed' | 'populate' | 'hugepage';

interface Addon {
  map(path: string, byteLength: number): SharedArrayBuffer;
  sync(sab: SharedArrayBuffer, offset: number, length: number): void;
  advise(sab: SharedArrayBuffer, offset: number, length: number, kind: AdviseKind): void;
  liveMappings(): number;
  mapFd(fd: number, byteLength: number, writable: boolean): SharedArrayBuffer;
  lock(fd: number, byte: number, kind: LockKind, wait: boolean): boolean;
  conflicts(fd: number, byte: number, kind: LockKind): boolean;
  reserve(fd: number, byteLength: number): void;
  futexWait(sab: SharedArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): WaitResult;
  futexWake(sab: SharedArrayBuffer, byteOffset: number, count: number): number;
  forkCost(bytes: number): number;
  hostMapCost(bytes: number, mode: number, reps: number): Float64Array;
  sumInt32(view: ArrayBufferView): number;
  zeroBytes(view: ArrayBufferView, byteOffset: number, byteLength: number): void;
  scanRun(words: Int32Array, base: number, first: number, end: number, need: number, checkNx: boolean, next: number): number;
  presentEntries(words: Int32Array, base: number, out: Int32Array): number;
  /** present only where the CPU has SSE4.2 */
  crc32c?(view: ArrayBufferView, crc: number): number;
  readvCrc?(fd: number, views: ArrayBufferView[], position: number, callback: (err: string | null, bytes: number, crc: number, fromDisk: boolean, direct: boolean) => void, directFd: number, probe: boolean): void;
}

/** OFD lock kinds (values shared with mmap.cc). */
export const UNLOCK = 0;
export const SHARED = 1;
export const EXCLUSIVE = 2;
export type LockKind = typeof UNLOCK | typeof SHARED | typeof EXCLUSIVE;

/** What a wait ended with (the strings of Atomics.wait). */
export type WaitResult = 'ok' | 'not-equal' | 'timed-out';

/** Errno names the addon may report that ErrorCode also knows; others become EIO. */
const PASSTHROUGH: ReadonlySet<string> = new Set<ErrorCode>([
  'EINVAL', 'ENOENT', 'EACCES', 'ERANGE', 'EEXIST', 'EBUSY', 'ENOSPC', 'ENOTSUP', 'EIO', 'EBADF',
]);

let addon: Addon | undefined;

/**
 * Walks up from this module to the package root instead of hard-coding
 * `../../..`, so it works from dist/src/physical as well as from src/physical.
 */
function packageRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

function load(): Addon {
  if (addon !== undefined) return addon;
  const root = packageRoot();
  try {
    if (root === undefined) throw new Error('package.json not found above ' + import.meta.url);
    addon = createRequire(import.meta.url)(join(root, 'build', 'Release', 'morsel_mmap.node')) as Addon;
  } catch (cause) {
    throw new MorselError('ENOTSUP', 'native addon not built: run npm ci (needs g++ and node-gyp)', { cause });
  }
  return addon;
}

/** Calls into the addon, turning its errno-style errors into MorselError. */
function call<T>(fn: (a: Addon) => T): T {
  const a = load();
  try {
    return fn(a);
  } catch (e) {
    const err = e as { code?: unknown; syscall?: unknown; message?: unknown };
    if (typeof err?.code !== 'string') throw e;
    const known = PASSTHROUGH.has(err.code);
    // node::ErrnoException messages start with "CODE, "; MorselError adds its
    // own "CODE: " prefix, so drop the duplicate but keep unknown codes visible.
    let msg = String(err.message);
    if (known && msg.startsWith(err.code + ', ')) msg = msg.slice(err.code.length + 2);
    if (typeof err.syscall === 'string') msg = `${err.syscall}: ${msg}`;
    throw new MorselError(known ? (err.code as ErrorCode) : 'EIO', msg, { cause: e });
  }
}

/**
 * Maps `path` read/write MAP_SHARED. `byteLength` must be a positive multiple
 * of 4096 (may exceed 4 GiB) and no larger than the file, which is never
 * resized here (ERANGE otherwise). The mapping is released when the last SAB
 * referencing it, in any thread, is garbage-collected. Typed-array views are
 * capped at 2^32 elements each, so view a large mapping in windows.
 */
export function mapFile(path: string, byteLength: number): SharedArrayBuffer {
  return call((a) => a.map(path, byteLength));
}

/** msync(MS_SYNC) over the pages covering [offset, offset + length). */
export function syncFile(sab: SharedArrayBuffer, offset: number, length: number): void {
  call((a) => a.sync(sab, offset, length));
}

/**
 * Paging hint over the pages covering [offset, offset + length): 'willneed'
 * starts read-ahead, 'dontneed' drops the pages from this process (data stays
 * in the file/page cache), 'populate' prefaults them writable.
 */
export function adviseFile(sab: SharedArrayBuffer, offset: number, length: number, kind: AdviseKind): void {
  call((a) => a.advise(sab, offset, length, kind));
}

/** Mappings not yet unmapped, process-wide (diagnostic: shows GC ran the deleter). */
export function liveMappings(): number {
  return call((a) => a.liveMappings());
}

/**
 * Maps the file behind `fd` MAP_SHARED, PROT_READ only unless `writable`
 * (a JS write into a read-only mapping is a SIGSEGV: callers guard writes).
 */
export function mapFd(fd: number, byteLength: number, writable: boolean): SharedArrayBuffer {
  return call((a) => a.mapFd(fd, byteLength, writable));
}

/**
 * Sets (kind SHARED/EXCLUSIVE) or drops (UNLOCK) this open file
 * description's OFD lock on byte `byte` of the file; converts a held lock in
 * one step. Non-blocking unless `wait`: false when another holder conflicts.
 */
export function lockByte(fd: number, byte: number, kind: LockKind, wait = false): boolean {
  return call((a) => a.lock(fd, byte, kind, wait));
}

/** Whether ANOTHER open file description holds a lock on `byte` conflicting with `kind` (a probe). */
export function lockConflicts(fd: number, byte: number, kind: LockKind): boolean {
  return call((a) => a.conflicts(fd, byte, kind));
}

/** posix_fallocate(fd, 0, byteLength): allocates every block now (ENOSPC) instead of at a page fault (SIGBUS). */
export function reserveFile(fd: number, byteLength: number): void {
  call((a) => a.reserve(fd, byteLength));
}

/**
 * futex(FUTEX_WAIT) on the int32 at `byteOffset` of a file mapping, shared
 * (no FUTEX_PRIVATE_FLAG): pairs with futexWake from any thread or process
 * mapping the same file. `timeoutMs` may be Infinity.
 */
export function futexWait(sab: SharedArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): WaitResult {
  return call((a) => a.futexWait(sab, byteOffset, expected, timeoutMs));
}

/** futex(FUTEX_WAKE): wakes up to `count` waiters on the int32 at `byteOffset`; returns how many woke. */
export function futexWake(sab: SharedArrayBuffer, byteOffset: number, count: number): number {
  return call((a) => a.futexWake(sab, byteOffset, count));
}

/**
 * Nanoseconds of one fork() of this process while it holds `bytes` of
 * populated private anonymous memory (the child exits at once): the host
 * kernel's copy-on-write fork, for the `cow` benchmark. Linux copies every
 * page-table entry of the private memory and raises each page's count.
 */
export function forkCostNs(bytes: number): number {
  return call((a) => a.forkCost(bytes));
}

/** What hostMapCosts measures: lazy mmap of a filled object, MAP_POPULATE, or first touch of a fresh one. */
export type HostMapMode = 'lazy' | 'populate' | 'first-touch';

/**
 * The host kernel's figures for the map, file-cache and population
 * benchmarks: `reps` times mmap(MAP_SHARED) of a memfd of `bytes`, one byte
 * per page read (first-touch: written, into a fresh object each time), and
 * munmap; nanoseconds of each phase per repetition.
 */
export function hostMapCosts(bytes: number, mode: HostMapMode, reps: number): { map: number[]; access: number[]; unmap: number[] } {
  const t = call((a) => a.hostMapCost(bytes, ['lazy', 'populate', 'first-touch'].indexOf(mode), reps));
  const out = { map: [] as number[], access: [] as number[], unmap: [] as number[] };
  for (let r = 0; r < reps; r++) (out.map.push(t[3 * r]), out.access.push(t[3 * r + 1]), out.unmap.push(t[3 * r + 2]));
  return out;
}

/**
 * The wrapping sum of a view's int32 words (four lanes), natively: the
 * pipeline's checksum work at memory speed, on every variant alike. Byte
 * length a multiple of 16.
 */
export function sumInt32(view: ArrayBufferView): number {
  return call((a) => a.sumInt32(view));
}

let noNativeZero = false;

/**
 * Zeroes [byteOffset, +byteLength) of `view` with a native memset (1.5x
 * TypedArray.set of a zero page per 4 KiB for a 2 MiB block, measured here;
 * slower than set for a single page: the call costs ~150 ns). False when
 * the addon is not built: the caller zeroes in JavaScript.
 */
export function zeroBytes(view: Uint8Array, byteOffset: number, byteLength: number): boolean {
  if (noNativeZero) return false;
  if (addonOrNull() === null) {
    noNativeZero = true;
    return false;
  }
  call((a) => a.zeroBytes(view, byteOffset, byteLength));
  return true;
}

/** The addon, or null where it is not built (callers of the optional fast paths below fall back to JavaScript). */
function addonOrNull(): Addon | null {
  try {
    return load();
  } catch {
    return null;
  }
}

/**
 * The addon's crc32c(bytes, crc) (SSE4.2, three chains), or null where the
 * addon is not built or the CPU lacks SSE4.2 (src/serial/crc.ts then uses
 * @node-rs/crc32). Errors (none for a Uint8Array and a uint32) stay raw:
 * the call is on the load and save hot path.
 */
export function nativeCrc32c(): ((bytes: Uint8Array, crc?: number) => number) | null {
  const fn = addonOrNull()?.crc32c;
  return fn === undefined ? null : (bytes, crc = 0) => fn(bytes, crc >>> 0);
}

/** What nativeReadvCrc read: the byte count (short only at the end of the file), the crc32c of those bytes, and whether some were not in the page cache. */
export interface ReadCrc {
  bytes: number;
  crc: number;
  fromDisk: boolean;
  /** the bytes the page cache lacked came through the O_DIRECT descriptor */
  direct: boolean;
}

/**
 * The addon's readvCrc: a preadv of `views` at `position` (to full or the
 * end of the file) on a thread-pool thread, then the crc32c of the bytes
 * read on that thread; a first RWF_NOWAIT attempt tells whether the read
 * had to wait for the device (fromDisk); those bytes are read through
 * `directFd` (an O_DIRECT descriptor of the same file; -1: none) where the
 * alignment allows (direct); probe false skips the page-cache attempt (the
 * caller knows the file is not cached). Null where the addon or SSE4.2 is missing. A
 * failure rejects with an Error carrying the errno name as `code` and
 * `syscall: 'preadv'` (what hostError maps).
 */
export function nativeReadvCrc(): ((fd: number, views: Uint8Array[], position: number, directFd?: number, probe?: boolean) => Promise<ReadCrc>) | null {
  const fn = addonOrNull()?.readvCrc;
  if (fn === undefined) return null;
  return (fd, views, position, directFd = -1, probe = true) =>
    new Promise<ReadCrc>((resolve, reject) =>
      fn(fd, views, position, (err, bytes, crc, fromDisk, direct) => (err === null ? resolve({ bytes, crc, fromDisk, direct }) : reject(Object.assign(new Error(`${err}: preadv failed`), { code: err, syscall: 'preadv' }))), directFd, probe),
    );
}

/**
 * The addon's presentEntries (see mmap.cc): a table's present entries as
 * (index, lo, hi) triples with one 64-bit acquire load per entry, or null
 * where the addon is not built (src/paging/walk.ts then scans in JavaScript).
 */
export function nativePresentEntries(): Addon['presentEntries'] | null {
  return addonOrNull()?.presentEntries ?? null;
}

/**
 * The addon's scanRun (see mmap.cc): the run-level translation's entry loop
 * with one 64-bit acquire load per entry, or null where the addon is not
 * built (src/space/mmu.ts then scans in JavaScript).
 */
export function nativeScanRun(): Addon['scanRun'] | null {
  return addonOrNull()?.scanRun ?? null;
}
