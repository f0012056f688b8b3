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
import { MAX_REGION_FRAMES, MIN_REGION_BYTES, SLOT_CLAIMS, SLOT_PID, USER_SLOTS, USER_SLOT_BYTES, metaLayout } from './layout.js';
import { Membership, slotByte, type OpenMode } from './membership.js';
import { SHARED, adviseFile, futexWait, futexWake, lockConflicts, mapFd, reserveFile, syncFile, zeroBytes, type WaitResult } from './native.js';
import {
  SB_ROOTS_BYTE,
  SB_OCCUPIED_I32,
  SB_SHOOTDOWN_I32,
  SB_STATE_I32,
  STATE_CLEAN,
  STATE_DIRTY,
  STATE_OPEN,
  readSuperblock,
  writeSuperblock,
  ROOT_SLOTS,
} from './superblock.js';

export type { OpenMode } from './membership.js';
export type { WaitResult } from './native.js';
/** Region.userSlot of a region that holds no user slot (read-only, or an inspection session). */
export const NO_SLOT = -1;
/** int32 words of one user-slot record. */
const SLOT_WORDS = USER_SLOT_BYTES / 4;

/** 2^18 frames = 1 GiB per window; frames in one window are contiguous in one view. */
export const WINDOW_FRAME_SHIFT = 18;
const WINDOW_FRAMES = 1 << WINDOW_FRAME_SHIFT;
const WINDOW_FRAME_MASK = WINDOW_FRAMES - 1;
const WINDOW_BYTES = WINDOW_FRAMES * PAGE_SIZE;
const ZERO_PAGE = new Uint8Array(PAGE_SIZE);
/** Runs of at least this many frames are zeroed by one native memset (native.zeroBytes); shorter ones by set() per frame. */
const NATIVE_ZERO_MIN_FRAMES = 16;
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
  /** the owner's region fd (process-wide, so threads can probe slot locks; valid while the owner is open); -1 when volatile */
  fd: number;
  /** false: mapped PROT_READ, every mutator throws EACCES */
  writable: boolean;
}

export class Region {
  readonly frameCount: number;
  readonly sab: SharedArrayBuffer;
  /** File path when persistent, null for a volatile region. */
  readonly path: string | null;
  /**
   * Per-process count of mappings per frame, for the conventional baseline
   * only (src/conventional: Linux' struct page mapcount). Morsels count their
   * uses region-wide in the user slots instead (src/morsel/usage.ts).
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
  userSlot: number;
  /** false: mapped PROT_READ; every mutator throws EACCES before touching memory (a write would be SIGSEGV). */
  readonly writable: boolean;
  private readonly fd: number;
  private readonly usersFrame: Frame;
  /** This process's membership (locks); null in worker threads and for volatile regions. */
  private membership: Membership | null = null;

  private constructor(share: RegionShare) {
    this.userSlot = share.userSlot;
    this.writable = share.writable;
    this.fd = share.fd;
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
    return { sab: this.sab, mapCounts: this.mapCounts.buffer as SharedArrayBuffer, frameCount: this.frameCount, path: this.path, userSlot: this.userSlot, fd: this.fd, writable: this.writable };
  }

  /** Re-creates the views in another thread (sharing the process's slot; the owner keeps the locks). No validation: the owner did it. */
  static fromShare(share: RegionShare): Region {
    return new Region(share);
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
      userSlot: 0, // one process: slot 0, always alive
      fd: -1,
      writable: true,
    });
    writeSuperblock(region.frame(0 as Frame), frameCount);
    Atomics.store(region.i32w[0], SB_STATE_I32, STATE_OPEN);
    return region;
  }

  /**
   * Creates and formats a region file, holding it exclusively; the caller
   * formats the allocator and then calls admit(). Refuses (EEXIST) to
   * overwrite an existing file unless `force`, and (EBUSY) to overwrite one
   * another process uses. Every block is reserved now (posix_fallocate): a
   * full file system gives ENOSPC here, and no file is left behind.
   */
  static createFile(path: string, sizeBytes: number, opts: { force?: boolean } = {}): Region {
    const frameCount = validateSize(sizeBytes);
    // O_CREAT without O_TRUNC: an existing region is only truncated once we hold it exclusively.
    const { O_RDWR, O_CREAT, O_EXCL } = fs.constants;
    const fd = openFd(path, O_RDWR | O_CREAT | (opts.force ? 0 : O_EXCL), 'create');
    let membership: Membership;
    try {
      membership = Membership.join(fd, path, 'exclusive');
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    let sab: SharedArrayBuffer;
    try {
      fs.ftruncateSync(fd, 0);
      fs.ftruncateSync(fd, sizeBytes);
      reserveBlocks(fd, sizeBytes, path);
      sab = mapFd(fd, sizeBytes, true);
    } catch (e) {
      membership.abandon();
      fs.rmSync(path, { force: true }); // a half-made region is junk
      throw e;
    }
    const region = new Region({ sab, mapCounts: new SharedArrayBuffer(frameCount * 4), frameCount, path, userSlot: NO_SLOT, fd, writable: true });
    region.membership = membership;
    writeSuperblock(region.frame(0 as Frame), frameCount);
    Atomics.store(region.i32w[0], SB_STATE_I32, STATE_OPEN);
    return region;
  }

  /**
   * Opens an existing region file and joins its users (see membership.ts).
   * The superblock is validated from a copy read with plain I/O before
   * anything is mapped, so a file that is not a region is never modified.
   * `alone`: this process holds the region exclusively (the first user, or
   * an exclusive session): `crashed` then says the state is not clean and the
   * caller recovers (or not) before admit(). Joined users never recover.
   * A read-only open (mode 'readonly', or a file this user can only read when
   * no mode is given) maps PROT_READ and reports `crashed` when the region is
   * not clean and no read-write user holds it: recovery is pending.
   */
  static openFile(path: string, opts: { mode?: OpenMode } = {}): { region: Region; crashed: boolean; joined: boolean; alone: boolean } {
    let mode: OpenMode = opts.mode ?? 'shared';
    let fd: number;
    try {
      fd = openFd(path, mode === 'readonly' ? 'r' : 'r+', 'open');
    } catch (e) {
      if (!isMorselError(e, 'EACCES') || opts.mode !== undefined) throw e;
      mode = 'readonly'; // this user may only read the file
      fd = openFd(path, 'r', 'open');
    }
    let membership: Membership;
    try {
      membership = Membership.join(fd, path, mode);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    let region: Region;
    try {
      const size = fs.fstatSync(fd).size;
      const head = new Uint8Array(PAGE_SIZE);
      const got = fs.readSync(fd, head, 0, PAGE_SIZE, 0);
      const info = readSuperblock(head.subarray(0, got), size, path);
      const writable = mode !== 'readonly';
      if (writable) reserveBlocks(fd, size, path);
      const sab = mapFd(fd, size, writable);
      region = new Region({ sab, mapCounts: new SharedArrayBuffer(info.frameCount * 4), frameCount: info.frameCount, path, userSlot: NO_SLOT, fd, writable });
    } catch (e) {
      membership.abandon();
      if (isMorselError(e)) throw e;
      throw new MorselError('EIO', `cannot open ${path}: ${(e as Error).message}`, { cause: e });
    }
    region.membership = membership;
    const state = region.state;
    const alone = membership.alone;
    // Alone, any recorded user is dead: a clean state with an occupied slot cannot come from a clean close either.
    const crashed = alone ? state !== STATE_CLEAN || region.anySlotOccupied() : mode === 'readonly' && state !== STATE_CLEAN && !membership.othersUsing();
    // Marked before anything else happens: from here on a crash must read as one
    // (and a recovery interrupted by one must run again).
    if (alone && region.writable && state === STATE_CLEAN) Atomics.store(region.i32w[0], SB_STATE_I32, crashed ? STATE_DIRTY : STATE_OPEN);
    return { region, crashed, joined: !alone && mode !== 'readonly', alone };
  }

  /** The superblock state word (STATE_*). */
  get state(): number {
    return Atomics.load(this.i32w[0], SB_STATE_I32);
  }

  /** Whether another process (or another open in this one) uses the region read-write: a probe of the member lock. */
  othersUsing(): boolean {
    return this.membership?.othersUsing() ?? false;
  }

  /** This process holds the region exclusively (first user before admit(), or an exclusive session). */
  get alone(): boolean {
    return this.membership?.alone ?? false;
  }

  /**
   * Makes this process a user: an alone opener that recovered (or found the
   * region clean) marks it open; a slot is claimed unless `claim` is false;
   * then, unless `keepExclusive`, others may join (exclusive -> shared).
   * Dead slots found while claiming are left to reapDeadSlots
   * (src/space/user-slots.ts).
   */
  admit(opts: { claim: boolean; markOpen: boolean; keepExclusive: boolean }): void {
    const membership = this.membership;
    assert(membership !== null && this.writable, 'admit: an owned, writable region');
    if (membership.alone && opts.markOpen) Atomics.store(this.i32w[0], SB_STATE_I32, STATE_OPEN);
    if (membership.alone) this.recountOccupied();
    if (opts.claim) this.claimSlot(membership);
    if (!opts.keepExclusive) membership.downgrade();
  }

  /** Claims the first free user slot: lock byte 1+i, then record pid and bump claims. EBUSY when all are taken. */
  private claimSlot(membership: Membership): void {
    for (let slot = 0; slot < USER_SLOTS; slot++) {
      if (!membership.tryLockSlot(slot)) continue; // a live user's
      if (this.slotOccupied(slot)) {
        membership.unlockSlot(slot); // a dead user's record: reapDeadSlots clears it
        continue;
      }
      const words = this.words(this.usersFrame);
      Atomics.add(this.i32w[0], SB_OCCUPIED_I32, 1); // before the record holds anything (onlyOwnSlot)
      Atomics.store(words, this.slotWord(slot, SLOT_PID), process.pid);
      Atomics.add(words, this.slotWord(slot, SLOT_CLAIMS), 1);
      this.userSlot = slot;
      return;
    }
    throw new MorselError('EBUSY', `all ${USER_SLOTS} user slots of ${this.path} are taken`);
  }

  /**
   * Flushes the region and leaves it. The slot must already be emptied by
   * the layers above (spaces destroyed, registries dropped). If this was the
   * last read-write user, marks the region clean, unless `markClean` is false
   * (a crashed region inspected without recovery stays crashed), the region
   * is dirty, or a dead user's record remains (then it is marked dirty).
   * Views stay valid until GC.
   */
  close(opts: { markClean?: boolean } = {}): void {
    if (this.writable) this.sync();
    const membership = this.membership;
    if (membership === null) return;
    this.membership = null;
    if (this.userSlot !== NO_SLOT) this.releaseSlot(membership);
    membership.leave(() => {
      if (!this.writable || opts.markClean === false) return;
      if (this.anySlotOccupied()) this.markDirty();
      else if (Atomics.compareExchange(this.i32w[0], SB_STATE_I32, STATE_OPEN, STATE_CLEAN) !== STATE_OPEN) return;
      this.sync(0, PAGE_SIZE);
    });
  }

  /**
   * Leaves without any cleanup, exactly as a killed process does (the kernel
   * drops its locks; its slot record stays for a reaper). For crash tests.
   */
  abandon(): void {
    this.membership?.abandon();
    this.membership = null;
  }

  private releaseSlot(membership: Membership): void {
    const slot = this.userSlot;
    this.clearSlot(slot);
    membership.unlockSlot(slot);
    this.userSlot = NO_SLOT;
  }

  /** msync for persistent regions (durability against power loss, not needed against SIGKILL). */
  sync(offsetBytes = 0, lengthBytes = this.byteLength): void {
    if (this.path !== null) syncFile(this.sab, offsetBytes, lengthBytes);
  }

  /** EACCES for a write to a read-only region; thrown before any store (which would be a SIGSEGV). */
  denyWrite(): never {
    throw new MorselError('EACCES', `${this.path} is open read-only`);
  }

  // --- wait / notify --------------------------------------------------------

  /**
   * Sleeps while the int32 at `byteOffset` holds `expected`, up to
   * `timeoutMs` (Infinity: no limit), until a notify() on the same word.
   * Pairs across threads and processes: a file region uses a shared futex
   * (keyed by file and offset, so separate mappings of the file pair up);
   * a volatile region Atomics.wait (one process).
   */
  wait(byteOffset: number, expected: number, timeoutMs: number): WaitResult {
    this.checkWord(byteOffset);
    check(Number.isInteger(expected) && expected >= -(2 ** 31) && expected < 2 ** 32, 'EINVAL', () => `expected ${expected} is not an int32`);
    check(timeoutMs >= 0, 'EINVAL', () => `timeoutMs ${timeoutMs} must be >= 0 (or Infinity)`);
    if (this.path !== null) return futexWait(this.sab, byteOffset, expected | 0, timeoutMs);
    return Atomics.wait(this.i32w[Math.floor(byteOffset / WINDOW_BYTES)], (byteOffset % WINDOW_BYTES) / 4, expected | 0, timeoutMs);
  }

  /** Wakes up to `count` waiters on the int32 at `byteOffset`; returns how many woke. */
  notify(byteOffset: number, count: number): number {
    this.checkWord(byteOffset);
    check(Number.isInteger(count) && count >= 0, 'EINVAL', () => `count ${count} must be a non-negative integer`);
    if (this.path !== null) return futexWake(this.sab, byteOffset, count);
    return Atomics.notify(this.i32w[Math.floor(byteOffset / WINDOW_BYTES)], (byteOffset % WINDOW_BYTES) / 4, count);
  }

  private checkWord(byteOffset: number): void {
    check(Number.isSafeInteger(byteOffset) && byteOffset >= 0 && byteOffset % 4 === 0 && byteOffset < this.byteLength, 'EINVAL', () => `byte offset ${byteOffset} is not an aligned int32 inside the region`);
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
    if (!this.writable) return; // an atomic add faults a PROT_READ page
    for (const words of this.i32w) for (let i = 0; i < words.length; i += FRAME_I32) Atomics.add(words, i, 0);
  }

  zeroFrame(frame: Frame): void {
    if (!this.writable) this.denyWrite();
    // Copying a zero page with set() beats Int32Array.fill (~1.6x) and
    // Uint8Array.fill (~4.5x) on a SharedArrayBuffer (measured here).
    this.u8w[frame >>> WINDOW_FRAME_SHIFT].set(ZERO_PAGE, (frame & WINDOW_FRAME_MASK) * PAGE_SIZE);
  }

  /**
   * Zeroes frames [frame, frame + count), which must lie in one window (an
   * order-9 block always does: windows are 2^WINDOW_FRAME_SHIFT frames).
   */
  zeroFrames(frame: Frame, count: number): void {
    assert(count >= 1 && (frame & WINDOW_FRAME_MASK) + count <= WINDOW_FRAME_MASK + 1, 'zeroFrames: a run inside one window');
    if (!this.writable) this.denyWrite();
    if (count >= NATIVE_ZERO_MIN_FRAMES && zeroBytes(this.u8w[frame >>> WINDOW_FRAME_SHIFT], (frame & WINDOW_FRAME_MASK) * PAGE_SIZE, count * PAGE_SIZE)) return;
    for (let i = 0; i < count; i++) this.zeroFrame((frame + i) as Frame);
  }

  /** Copies frames [from, from + count) onto [to, to + count); each run lies in one window (as zeroFrames). */
  copyFrames(from: Frame, to: Frame, count: number): void {
    if (!this.writable) this.denyWrite();
    assert(count >= 1 && (from & WINDOW_FRAME_MASK) + count <= WINDOW_FRAME_MASK + 1 && (to & WINDOW_FRAME_MASK) + count <= WINDOW_FRAME_MASK + 1, 'copyFrames: runs inside one window');
    const src = (from & WINDOW_FRAME_MASK) * PAGE_SIZE;
    this.u8w[to >>> WINDOW_FRAME_SHIFT].set(this.u8w[from >>> WINDOW_FRAME_SHIFT].subarray(src, src + count * PAGE_SIZE), (to & WINDOW_FRAME_MASK) * PAGE_SIZE);
  }

  // --- shootdown epoch ----------------------------------------------------

  /** The region-wide shootdown epoch (superblock byte 52): every Mmu flushes its TLB when it moves. */
  loadShootdown(): number {
    return Atomics.load(this.i32w[0], SB_SHOOTDOWN_I32);
  }

  /** Moves the shootdown epoch: a translation of a shared morsel page changed (copy-on-write). */
  bumpShootdown(): void {
    if (!this.writable) this.denyWrite();
    Atomics.add(this.i32w[0], SB_SHOOTDOWN_I32, 1);
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
    if (!this.writable) this.denyWrite();
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
    if (!this.writable) this.denyWrite();
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
    if (!this.writable) this.denyWrite();
    return Atomics.compareExchange(this.words(this.usersFrame), this.slotWord(slot, field), expect | 0, next | 0) === (expect | 0);
  }

  /**
   * Whether the process owning user slot `slot` is alive: its lock byte is
   * held (probed with F_OFD_GETLK each time: nothing cached, so the answer
   * is as fresh as the kernel's). Our own slot is alive (our own lock never
   * shows as a conflict); a volatile region has one process, slot 0. A slot
   * whose lock this process holds to reap it reads as dead, as it is.
   */
  slotAlive(slot: number): boolean {
    assert(Number.isInteger(slot) && slot >= 0 && slot < USER_SLOTS, 'user slot in range');
    if (slot === this.userSlot) return true;
    if (this.fd < 0) return false;
    return lockConflicts(this.fd, slotByte(slot), SHARED);
  }

  /** Whether slot `slot`'s record holds anything (pid or any root). */
  slotOccupied(slot: number): boolean {
    const words = this.words(this.usersFrame);
    const base = this.slotWord(slot, 0);
    for (let w = 0; w < SLOT_WORDS; w++) if (w !== SLOT_CLAIMS && Atomics.load(words, base + w) !== 0) return true;
    return false;
  }

  private anySlotOccupied(): boolean {
    return this.occupiedSlots() > 0;
  }

  /** How many user slots' records hold anything. */
  private occupiedSlots(): number {
    let occupied = 0;
    for (let slot = 0; slot < USER_SLOTS; slot++) if (this.slotOccupied(slot)) occupied++;
    return occupied;
  }

  /** The pid recorded in slot `slot` (0 = free). */
  slotPid(slot: number): number {
    return Atomics.load(this.words(this.usersFrame), this.slotWord(slot, SLOT_PID));
  }

  /**
   * Takes slot `slot` to reap it: true when the slot is not ours, its record
   * is occupied and its lock was free (so its owner is dead), and marks the
   * region dirty first (the dead owner's in-flight frames wait for a full
   * recovery). The caller empties the slot's roots, then finishReap().
   */
  tryReap(slot: number): boolean {
    // Owner thread only (membership !== null): see reapDeadSlots.
    if (slot === this.userSlot || this.membership === null || !this.slotOccupied(slot)) return false;
    if (!this.membership.tryLockSlot(slot)) return false; // alive
    if (!this.slotOccupied(slot)) {
      this.membership.unlockSlot(slot); // another reaper finished first
      return false;
    }
    this.markDirty();
    return true;
  }

  /** Clears a reaped slot's record (its roots already emptied) and lets it be claimed again. */
  finishReap(slot: number): void {
    assert(this.membership !== null, 'finishReap: an owned region');
    this.clearSlot(slot);
    this.membership.unlockSlot(slot);
  }

  /**
   * Clears every user slot record. Only under the exclusive lock (recovery,
   * repair): every recorded user is then dead, and the frames of their
   * registries are reclaimed by the rebuild from reachability.
   */
  clearAllSlots(): number {
    assert(this.alone, 'clearAllSlots: only while holding the region exclusively');
    let cleared = 0;
    for (let slot = 0; slot < USER_SLOTS; slot++) {
      if (!this.slotOccupied(slot)) continue;
      const words = this.words(this.usersFrame);
      for (let w = 0; w < SLOT_WORDS; w++) if (w !== SLOT_CLAIMS) Atomics.store(words, this.slotWord(slot, w), 0);
      cleared++;
    }
    this.recountOccupied();
    return cleared;
  }

  /**
   * Whether no user slot but this process's own can hold a record (counts,
   * claims, spaces): then region-wide sums over the slots are this
   * process's alone. One load of the occupied-slot word, which bounds the
   * occupied slots from above: a claimer adds 1 BEFORE its record holds
   * anything, and whoever empties a slot (its owner, or the one reaper that
   * holds its lock) subtracts 1 AFTER. A crash between leaves the bound too
   * high (slower sums, never a missed slot); an exclusive admit recounts.
   * Atomics are sequentially consistent: a slot claimed after a reader's
   * load records its first use after that load (the Dekker argument of
   * Morsels.use holds as for a slot the scan reads).
   */
  onlyOwnSlot(): boolean {
    if (this.fd < 0) return true; // volatile: one process, slot 0
    return Atomics.load(this.i32w[0], SB_OCCUPIED_I32) === (this.userSlot === NO_SLOT ? 0 : 1);
  }

  /** Exclusive holder only: the occupied-slot word := the slots whose records hold anything now. */
  private recountOccupied(): void {
    assert(this.alone, 'the occupied-slot word is recounted only while holding the region exclusively');
    Atomics.store(this.i32w[0], SB_OCCUPIED_I32, this.occupiedSlots());
  }

  /** Empties slot `slot`'s record: its roots must be 0 already; pid last, so a crash before leaves it visibly occupied. */
  private clearSlot(slot: number): void {
    if (!this.writable) this.denyWrite();
    const words = this.words(this.usersFrame);
    for (let w = 0; w < SLOT_WORDS; w++) {
      if (w === SLOT_PID || w === SLOT_CLAIMS) continue;
      assert(Atomics.load(words, this.slotWord(slot, w)) === 0, 'a released user slot has no roots left');
    }
    Atomics.store(words, this.slotWord(slot, SLOT_PID), 0);
    Atomics.sub(this.i32w[0], SB_OCCUPIED_I32, 1); // after the record is empty (onlyOwnSlot)
  }

  /** Marks the region dirty: recovered at the next exclusive open. OPEN -> DIRTY only (CLEAN cannot be seen by a user). */
  private markDirty(): void {
    Atomics.compareExchange(this.i32w[0], SB_STATE_I32, STATE_OPEN, STATE_DIRTY);
  }

  // --- superblock roots ----------------------------------------------------

  loadRoot(slot: number): bigint {
    assert(slot >= 0 && slot < ROOT_SLOTS, 'root slot in range');
    return Atomics.load(this.i64w[0], SB_ROOTS_BYTE / 8 + slot);
  }

  /** A root slot holding a frame number (< 2^32): one int32 load, no BigInt. ECORRUPT when its high half is not zero (a damaged superblock). */
  loadRootFrame(slot: number): number {
    assert(slot >= 0 && slot < ROOT_SLOTS, 'root slot in range');
    const i = SB_ROOTS_BYTE / 4 + 2 * slot;
    check(Atomics.load(this.i32w[0], i + 1) === 0, 'ECORRUPT', () => `superblock root slot ${slot} holds more than a frame number`);
    return Atomics.load(this.i32w[0], i) >>> 0;
  }

  casRoot(slot: number, expect: bigint, next: bigint): boolean {
    if (!this.writable) this.denyWrite();
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

/** Opens `path` with fs flags, turning errors into MorselError. */
function openFd(path: string, flags: string | number, verb: string): number {
  try {
    return fs.openSync(path, flags);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new MorselError('EEXIST', `${path} exists (use --force to overwrite)`);
    const typed = code === 'ENOENT' || code === 'EACCES' ? code : code === 'EISDIR' ? 'EINVAL' : 'EIO';
    throw new MorselError(typed, `cannot ${verb} ${path}: ${(e as Error).message}`);
  }
}

/**
 * Makes sure every block of the region file is allocated, so no page fault
 * can ever hit a full file system (SIGBUS). A sparse file (made elsewhere,
 * or copied sparsely) is reserved now; ENOSPC if the file system cannot.
 */
function reserveBlocks(fd: number, sizeBytes: number, path: string): void {
  const st = fs.fstatSync(fd);
  if (st.blocks * 512 >= sizeBytes) return;
  try {
    reserveFile(fd, sizeBytes);
  } catch (e) {
    if (isMorselError(e, 'ENOSPC')) throw new MorselError('ENOSPC', `${path}: the file system has no room to reserve the region's ${sizeBytes} bytes`);
    throw e;
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
