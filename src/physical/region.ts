/**
 * A region: physical memory as an array of 4 KiB frames in one shared buffer.
 *
 * Two backings behind one class: a SharedArrayBuffer (volatile; V8 commits it
 * lazily, so a generous reserve costs nothing until touched) or a file mapped
 * MAP_SHARED by the native addon (persistent; shared by threads and
 * processes, survives SIGKILL). A typed-array view holds at most 2^32
 * elements, so the region is seen through 1 GiB windows; frame N lives in
 * window N >> 18.
 *
 * The region knows nothing about allocation or page tables: it reads and
 * writes frames and 64-bit entries, atomically where it matters.
 */
import * as fs from 'node:fs';
import { MorselError, assert, check, isMorselError } from '../errors.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { MAX_REGION_FRAMES, MIN_REGION_BYTES, USER_SLOTS, USER_SLOT_BYTES, metaLayout } from './layout.js';
import { adviseFile, mapFile, syncFile } from './native.js';
import { joinUsers, leaveUsers } from './users.js';
import {
  SB_ROOTS_BYTE,
  SB_STATE_I32,
  STATE_CLEAN,
  STATE_OPEN,
  readSuperblock,
  writeSuperblock,
  ROOT_SLOTS,
} from './superblock.js';

/** 2^18 frames = 1 GiB per window; frames in one window are contiguous in one view. */
export const WINDOW_FRAME_SHIFT = 18;
const WINDOW_FRAMES = 1 << WINDOW_FRAME_SHIFT;
const WINDOW_FRAME_MASK = WINDOW_FRAMES - 1;
const WINDOW_BYTES = WINDOW_FRAMES * PAGE_SIZE;
const ZERO_PAGE = new Uint8Array(PAGE_SIZE);
/** int32 words per frame / per entry */
const FRAME_I32 = PAGE_SIZE / 4;

/** What a worker thread needs to see the same region (postMessage-able). */
export interface RegionShare {
  sab: SharedArrayBuffer;
  mapCounts: SharedArrayBuffer;
  frameCount: number;
  path: string | null;
  /** the sharing process's user slot */
  userSlot: number;
}

export class Region {
  readonly frameCount: number;
  readonly sab: SharedArrayBuffer;
  /** File path when persistent, null for a volatile region. */
  readonly path: string | null;
  /**
   * Per-process count of address-space mappings per root frame (like Linux'
   * struct page mapcount). Volatile on purpose: mappings do not survive the
   * process; destroy() refuses while a root's count is non-zero.
   */
  readonly mapCounts: Int32Array;
  private readonly u8w: Uint8Array[] = [];
  private readonly i32w: Int32Array[] = [];
  private readonly i64w: BigInt64Array[] = [];
  /** Entries' high halves are all zero below 2^20 frames: int32 CAS suffices. */
  readonly smallPfn: boolean;
  /**
   * This process's user slot (0..USER_SLOTS-1): the record in the user-slot
   * table that holds its per-process roots. Threads of one process share it.
   */
  userSlot = 0;
  private readonly usersFrame: Frame;

  private constructor(share: RegionShare) {
    this.sab = share.sab;
    this.frameCount = share.frameCount;
    this.path = share.path;
    this.mapCounts = new Int32Array(share.mapCounts);
    this.smallPfn = share.frameCount <= 0x100000;
    this.usersFrame = metaLayout(share.frameCount).usersFrame as Frame;
    assert(share.sab.byteLength === share.frameCount * PAGE_SIZE, 'region buffer size matches frame count');
    for (let off = 0; off < share.sab.byteLength; off += WINDOW_BYTES) {
      const len = Math.min(WINDOW_BYTES, share.sab.byteLength - off);
      this.u8w.push(new Uint8Array(share.sab, off, len));
      this.i32w.push(new Int32Array(share.sab, off, len / 4));
      this.i64w.push(new BigInt64Array(share.sab, off, len / 8));
    }
  }

  get persistent(): boolean {
    return this.path !== null;
  }

  get byteLength(): number {
    return this.frameCount * PAGE_SIZE;
  }

  share(): RegionShare {
    return { sab: this.sab, mapCounts: this.mapCounts.buffer as SharedArrayBuffer, frameCount: this.frameCount, path: this.path, userSlot: this.userSlot };
  }

  /** Re-creates the views in another thread. No validation: the owner did it. */
  static fromShare(share: RegionShare): Region {
    const region = new Region(share);
    region.userSlot = share.userSlot;
    return region;
  }

  /** A fresh formatted volatile region of `sizeBytes`. */
  static createVolatile(sizeBytes: number): Region {
    const frameCount = validateSize(sizeBytes);
    const sab = new SharedArrayBuffer(sizeBytes);
    backWithHugePages(sab);
    const region = new Region({
      sab,
      mapCounts: new SharedArrayBuffer(frameCount * 4),
      frameCount,
      path: null,
      userSlot: 0,
    });
    writeSuperblock(region.frame(0 as Frame), frameCount);
    Atomics.store(region.i32w[0], SB_STATE_I32, STATE_OPEN);
    return region;
  }

  /**
   * Creates and formats a region file. Refuses (EEXIST) to overwrite an
   * existing file unless `force`. The file is sparse: frames cost disk space
   * only once written.
   */
  static createFile(path: string, sizeBytes: number, opts: { force?: boolean } = {}): Region {
    const frameCount = validateSize(sizeBytes);
    let fd: number;
    try {
      fd = fs.openSync(path, opts.force ? 'w+' : 'wx+');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new MorselError('EEXIST', `${path} exists (use --force to overwrite)`);
      throw new MorselError(code === 'ENOENT' ? 'ENOENT' : code === 'EACCES' ? 'EACCES' : 'EIO', `cannot create ${path}: ${(e as Error).message}`);
    }
    try {
      fs.ftruncateSync(fd, sizeBytes);
    } finally {
      fs.closeSync(fd);
    }
    const region = new Region({
      sab: mapFile(path, sizeBytes),
      mapCounts: new SharedArrayBuffer(frameCount * 4),
      frameCount,
      path,
      userSlot: 0,
    });
    writeSuperblock(region.frame(0 as Frame), frameCount);
    Atomics.store(region.i32w[0], SB_STATE_I32, STATE_OPEN);
    joinUsers(path);
    return region;
  }

  /**
   * Opens an existing region file. The superblock is validated from a copy
   * read with plain I/O before anything is mapped, so a file that is not a
   * region is never modified. Returns whether the last user crashed (the
   * state was still "open" and no process that registered as a user is
   * alive: the caller runs recovery then), or whether live processes use it
   * (`joined`: the caller must leave shared state alone).
   */
  static openFile(path: string): { region: Region; crashed: boolean; joined: boolean } {
    let size: number;
    const head = new Uint8Array(PAGE_SIZE);
    let got = 0;
    try {
      size = fs.statSync(path).size;
      const fd = fs.openSync(path, 'r');
      try {
        got = fs.readSync(fd, head, 0, PAGE_SIZE, 0);
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new MorselError(code === 'ENOENT' ? 'ENOENT' : code === 'EACCES' ? 'EACCES' : 'EIO', `cannot open ${path}: ${(e as Error).message}`);
    }
    const info = readSuperblock(head.subarray(0, got), size, path);
    const region = new Region({
      sab: mapFile(path, size),
      mapCounts: new SharedArrayBuffer(info.frameCount * 4),
      frameCount: info.frameCount,
      path,
      userSlot: 0,
    });
    const { othersAlive } = joinUsers(path);
    const wasOpen = Atomics.exchange(region.i32w[0], SB_STATE_I32, STATE_OPEN) !== STATE_CLEAN;
    return { region, crashed: wasOpen && !othersAlive, joined: othersAlive };
  }

  /**
   * Flushes the region and, when this process is its last user, marks it
   * cleanly closed (unless `markClean` is false: a crashed region inspected
   * without recovery stays marked crashed). Views stay valid until GC.
   */
  close(opts: { markClean?: boolean } = {}): void {
    this.sync();
    if (this.path === null) return;
    const { last, dirty } = leaveUsers(this.path);
    if (!last || dirty || opts.markClean === false) return;
    Atomics.store(this.i32w[0], SB_STATE_I32, STATE_CLEAN);
    this.sync(0, PAGE_SIZE);
  }

  /** msync for persistent regions (durability against power loss, not needed against SIGKILL). */
  sync(offsetBytes = 0, lengthBytes = this.byteLength): void {
    if (this.path !== null) syncFile(this.sab, offsetBytes, lengthBytes);
  }

  // --- frames -------------------------------------------------------------

  checkFrame(frame: number): void {
    check(Number.isInteger(frame) && frame >= 0 && frame < this.frameCount, 'EINVAL', () => `frame ${frame} outside the region (0..${this.frameCount - 1})`);
  }

  /** Zero-copy byte view of one frame. */
  frame(frame: Frame): Uint8Array {
    const w = frame >>> WINDOW_FRAME_SHIFT;
    const off = (frame & WINDOW_FRAME_MASK) * PAGE_SIZE;
    return this.u8w[w].subarray(off, off + PAGE_SIZE);
  }

  /** The window holding `frame` and the frame's byte offset in it, for bulk copies without a subarray. */
  bytesOf(frame: Frame): Uint8Array {
    return this.u8w[frame >>> WINDOW_FRAME_SHIFT];
  }

  byteOffsetInWindow(frame: Frame): number {
    return (frame & WINDOW_FRAME_MASK) * PAGE_SIZE;
  }

  /** Int32 window + word index of word `word` (0..1023) of `frame`. */
  words(frame: Frame): Int32Array {
    return this.i32w[frame >>> WINDOW_FRAME_SHIFT];
  }

  wordIndex(frame: Frame, word: number): number {
    return (frame & WINDOW_FRAME_MASK) * FRAME_I32 + word;
  }

  /**
   * Touches every frame once so the host commits its memory now, not on the
   * first measured access (host first-touch costs 4.5-13 us per page here).
   * An atomic add of 0 changes no byte, so it is safe on a live region.
   */
  prefault(): void {
    for (const words of this.i32w) for (let i = 0; i < words.length; i += FRAME_I32) Atomics.add(words, i, 0);
  }

  zeroFrame(frame: Frame): void {
    // Copying a zero page with set() beats Int32Array.fill (~1.6x) and
    // Uint8Array.fill (~4.5x) on a SharedArrayBuffer (measured here).
    this.u8w[frame >>> WINDOW_FRAME_SHIFT].set(ZERO_PAGE, (frame & WINDOW_FRAME_MASK) * PAGE_SIZE);
  }

  // --- 64-bit entries -----------------------------------------------------
  // Entry i of table frame f is int32 words 2i (lo) and 2i+1 (hi).

  loadLo(table: Frame, index: number): number {
    return Atomics.load(this.i32w[table >>> WINDOW_FRAME_SHIFT], (table & WINDOW_FRAME_MASK) * FRAME_I32 + 2 * index);
  }

  loadHi(table: Frame, index: number): number {
    return Atomics.load(this.i32w[table >>> WINDOW_FRAME_SHIFT], (table & WINDOW_FRAME_MASK) * FRAME_I32 + 2 * index + 1);
  }

  /**
   * Compare-and-swap of a whole 64-bit entry. When both high halves are zero
   * (always, in regions under 4 GiB) a 32-bit CAS on the low half is exact:
   * an all-zero entry is the only non-present form, so lo decides. Otherwise
   * a 64-bit BigInt CAS (allocates; rare).
   */
  casEntry(table: Frame, index: number, expectLo: number, expectHi: number, newLo: number, newHi: number): boolean {
    const w = table >>> WINDOW_FRAME_SHIFT;
    const word = (table & WINDOW_FRAME_MASK) * FRAME_I32 + 2 * index;
    if ((expectHi | newHi) === 0 && this.smallPfn) {
      return Atomics.compareExchange(this.i32w[w], word, expectLo, newLo) === expectLo;
    }
    const expect = (BigInt(expectHi >>> 0) << 32n) | BigInt(expectLo >>> 0);
    const next = (BigInt(newHi >>> 0) << 32n) | BigInt(newLo >>> 0);
    return Atomics.compareExchange(this.i64w[w], word >>> 1, BigInt.asIntN(64, expect), BigInt.asIntN(64, next)) === BigInt.asIntN(64, expect);
  }

  /** Unconditional 64-bit store of an entry (single-copy atomic). */
  storeEntry(table: Frame, index: number, lo: number, hi: number): void {
    const w = table >>> WINDOW_FRAME_SHIFT;
    const word = (table & WINDOW_FRAME_MASK) * FRAME_I32 + 2 * index;
    if (this.smallPfn && hi === 0 && Atomics.load(this.i32w[w], word + 1) === 0) {
      Atomics.store(this.i32w[w], word, lo);
      return;
    }
    const v = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    Atomics.store(this.i64w[w], word >>> 1, BigInt.asIntN(64, v));
  }

  // --- user slots ----------------------------------------------------------

  /** Int32 index of word `word` of user slot `slot`'s record in words(usersFrame). */
  private slotWord(slot: number, word: number): number {
    assert(Number.isInteger(slot) && slot >= 0 && slot < USER_SLOTS, 'user slot in range');
    assert(word >= 0 && word < USER_SLOT_BYTES / 4, 'user slot word in range');
    return this.wordIndex(this.usersFrame, (slot * USER_SLOT_BYTES) / 4 + word);
  }

  /** A frame-valued field (SLOT_*_ROOT) of user slot `slot`. */
  loadSlotRoot(slot: number, field: number): number {
    return Atomics.load(this.words(this.usersFrame), this.slotWord(slot, field)) >>> 0;
  }

  casSlotRoot(slot: number, field: number, expect: number, next: number): boolean {
    return Atomics.compareExchange(this.words(this.usersFrame), this.slotWord(slot, field), expect | 0, next | 0) === (expect | 0);
  }

  /**
   * Whether the process owning user slot `slot` is alive. (Single-process
   * placeholder: only this process's slot is; the membership layer replaces it.)
   */
  slotAlive(slot: number): boolean {
    return slot === this.userSlot;
  }

  // --- superblock roots ----------------------------------------------------

  loadRoot(slot: number): bigint {
    assert(slot >= 0 && slot < ROOT_SLOTS, 'root slot in range');
    return Atomics.load(this.i64w[0], SB_ROOTS_BYTE / 8 + slot);
  }

  /** A root slot holding a frame number (< 2^32): one int32 load, no BigInt. */
  loadRootFrame(slot: number): number {
    assert(slot >= 0 && slot < ROOT_SLOTS, 'root slot in range');
    const i = SB_ROOTS_BYTE / 4 + 2 * slot;
    assert(Atomics.load(this.i32w[0], i + 1) === 0, 'frame-valued root slot has a zero high half');
    return Atomics.load(this.i32w[0], i) >>> 0;
  }

  casRoot(slot: number, expect: bigint, next: bigint): boolean {
    assert(slot >= 0 && slot < ROOT_SLOTS, 'root slot in range');
    return Atomics.compareExchange(this.i64w[0], SB_ROOTS_BYTE / 8 + slot, expect, next) === expect;
  }
}

/**
 * Asks the host to back a volatile region with transparent huge pages (THP
 * is "madvise"-only on these VMs). The region is our physical memory: host
 * 4 KiB paging under it only adds host TLB misses and run-to-run noise.
 * Best effort: without the addon or THP the region works the same.
 */
function backWithHugePages(sab: SharedArrayBuffer): void {
  try {
    adviseFile(sab, 0, sab.byteLength, 'hugepage');
  } catch (e) {
    if (!isMorselError(e)) throw e;
  }
}

function validateSize(sizeBytes: number): number {
  check(Number.isSafeInteger(sizeBytes) && sizeBytes > 0, 'EINVAL', () => `region size must be a positive integer, got ${sizeBytes}`);
  check(sizeBytes % PAGE_SIZE === 0, 'EINVAL', () => `region size ${sizeBytes} is not a multiple of ${PAGE_SIZE}`);
  check(sizeBytes >= MIN_REGION_BYTES, 'EINVAL', () => `region size ${sizeBytes} is below the minimum ${MIN_REGION_BYTES}`);
  const frameCount = sizeBytes / PAGE_SIZE;
  check(frameCount <= MAX_REGION_FRAMES, 'EINVAL', () => `region of ${frameCount} frames exceeds ${MAX_REGION_FRAMES}`);
  return frameCount;
}
