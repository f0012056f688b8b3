/**
 * Epoch-based reclamation for the software TLBs (RCU-style grace periods).
 *
 * The rule, enforced by AddressSpace.unmap and AddressSpace.destroy: a frame
 * that was reachable through a space's tables is freed (or the morsel behind
 * an unmapped entry may be destroyed) only after every thread that could hold
 * a translation through the old entry has passed a quiescent point. A
 * translation lives in an Mmu's TLB or walk cache, or in a frame number or
 * page view a caller still holds; all of them are protected only inside an
 * access section (Mmu.enter .. Mmu.exit, which every Mmu data access opens).
 *
 * Readers: each thread using a space owns one reader slot in the space's
 * shared reader table, found by its threadId: per thread, not per Mmu,
 * because a thread runs one access at a time (the slot's nesting depth
 * covers an Mmu access inside a caller's enter/exit), and however often the
 * thread received the space's SharedArrayBuffer. A slot's sequence word is
 * odd while its thread is inside a section, even otherwise.
 *   enter: seq += 1 (odd), then load the space's epoch (flush the TLB if it moved)
 *   exit:  seq += 1 (even)
 * Writer (unmap): clear the entry, bump the epoch, then wait until every
 * sequence that was odd has changed (`waitQuiescent`).
 * Why that suffices: JS Atomics are sequentially consistent. A reader whose
 * epoch load came before the bump had already stored its odd sequence, so the
 * writer's scan (after the bump) sees it odd, or sees it already changed, and
 * waits for its exit. A reader whose epoch load comes after the bump flushes
 * and walks the cleared tables: EFAULT, never the old frames. Cost: two
 * atomic adds per section (plus the epoch load the TLB always needed), none
 * per page; ~2x the cost of a lone read8/write8, nothing for bulk accesses.
 *
 * Table layout (int32 words, one 64-byte line per slot so readers on
 * different cores never share a line): line 0 = header (state, high water);
 * line 1 + s = slot s (owner, sequence, depth, users). Lives in the space's
 * control SharedArrayBuffer, so threads share it through space.share().
 * Only the owner writes depth and users (plain accesses); others read only
 * the owner and sequence words.
 *
 * Limits: a thread that ends without closing its Mmus keeps its slot
 * (quiescent, so it never delays an unmap, but it counts against
 * READER_SLOTS); a thread terminated inside a section makes every later
 * grace period of the space run into its bound (ETIMEDOUT).
 */
import { threadId } from 'node:worker_threads';
import { MorselError, assert, check } from '../errors.js';

/** Threads that can use one space at the same time. */
export const READER_SLOTS = 64;
const LINE_WORDS = 16;
export const READER_TABLE_BYTES = (1 + READER_SLOTS) * LINE_WORDS * 4;

/** Header words. */
const H_STATE = 0;
/** 1 + the highest slot ever claimed: the writer scans only [0, high water). */
const H_HIGH_WATER = 1;
const STATE_LIVE = 0;
const STATE_DEAD = 1;
/** Slot words (offsets inside the slot's line). */
const S_OWNER = 0; // 0 = free, else the owning thread's threadId + 1
const S_SEQ = 1;
const S_DEPTH = 2; // nested sections open (owner only)
const S_USERS = 3; // open Mmus of the owner on this slot; the slot is freed at 0 (owner only)
/** This thread's owner mark (threadIds are unique in a process and never reused; spaces are per process). */
const OWNER = threadId + 1;

/** Default bound on one grace period; see waitQuiescent. */
export const QUIESCE_TIMEOUT_MS = 5000;
/** Re-checks of a slot before the writer starts sleeping on it. */
const SPIN_CHECKS = 256;
/** Sleep between checks once spinning did not see the reader leave (exit does not notify: that would cost the hot path). */
const POLL_MS = 1;

/** The reader table at `byteOffset` of `buffer` (zeroed memory is a live table with no readers). */
export function readerTable(buffer: SharedArrayBuffer, byteOffset: number): Int32Array {
  return new Int32Array(buffer, byteOffset, READER_TABLE_BYTES / 4);
}

/** First word of slot `slot`'s line. */
function lineOf(slot: number): number {
  return (1 + slot) * LINE_WORDS;
}

/** This thread's slot in one reader table, shared by all of the thread's Mmus of that space. */
export interface ReaderSlot {
  readonly table: Int32Array;
  /** first word of the slot's line in `table` */
  readonly line: number;
}

/** Sections this thread has open over all tables: insideSection's fast path. */
let openSections = 0;

/** This thread's slot in `table`, claimed on first use. EBUSY when READER_SLOTS other threads hold one. */
export function joinReaders(table: Int32Array): ReaderSlot {
  const line = ownSlotLine(table) ?? claimSlot(table);
  table[line + S_USERS]++;
  return { table, line };
}

/** The line of the slot this thread owns in `table`, or null. */
function ownSlotLine(table: Int32Array): number | null {
  const slots = Atomics.load(table, H_HIGH_WATER);
  for (let slot = 0; slot < slots; slot++) {
    if (Atomics.load(table, lineOf(slot) + S_OWNER) === OWNER) return lineOf(slot);
  }
  return null;
}

function claimSlot(table: Int32Array): number {
  for (let slot = 0; slot < READER_SLOTS; slot++) {
    const line = lineOf(slot);
    if (Atomics.compareExchange(table, line + S_OWNER, 0, OWNER) !== 0) continue;
    assert((Atomics.load(table, line + S_SEQ) & 1) === 0 && table[line + S_DEPTH] === 0 && table[line + S_USERS] === 0, 'a free reader slot is quiescent and unused');
    // Raise the high water (bounded: it only grows, to at most READER_SLOTS).
    for (let seen = Atomics.load(table, H_HIGH_WATER); seen < slot + 1; seen = Atomics.load(table, H_HIGH_WATER)) {
      Atomics.compareExchange(table, H_HIGH_WATER, seen, slot + 1);
    }
    return line;
  }
  throw new MorselError('EBUSY', `${READER_SLOTS} threads already use this address space (close their Mmus to free a slot)`);
}

/** Drops one Mmu's use of the slot; the last one frees it (the slot must be quiescent). */
export function leaveReaders(mine: ReaderSlot): void {
  const t = mine.table;
  assert(t[mine.line + S_USERS] > 0, 'reader slot left more often than joined');
  if (--t[mine.line + S_USERS] > 0) return;
  assert(t[mine.line + S_DEPTH] === 0, 'reader slot released inside an access section');
  Atomics.store(t, mine.line + S_OWNER, 0);
}

/** Opens an access section of this thread on `mine` (the Mmu's hot path: one atomic add, outermost only). */
export function enterSection(mine: ReaderSlot): void {
  const t = mine.table;
  if (t[mine.line + S_DEPTH]++ !== 0) return;
  Atomics.add(t, mine.line + S_SEQ, 1); // odd: inside
  openSections++;
}

/** Closes the innermost section; EINVAL without one. */
export function exitSection(mine: ReaderSlot): void {
  const t = mine.table;
  check(t[mine.line + S_DEPTH] > 0, 'EINVAL', 'exit() without enter()');
  if (--t[mine.line + S_DEPTH] !== 0) return;
  openSections--;
  Atomics.add(t, mine.line + S_SEQ, 1); // even: quiescent
}

/** Sections this thread has open on `mine`'s slot. */
export function sectionDepth(mine: ReaderSlot): number {
  return mine.table[mine.line + S_DEPTH];
}

/** True while this thread is inside an access section of `table` (a grace period would wait for itself). */
export function insideSection(table: Int32Array): boolean {
  if (openSections === 0) return false;
  const line = ownSlotLine(table);
  return line !== null && table[line + S_DEPTH] > 0;
}

export function isLive(table: Int32Array): boolean {
  return Atomics.load(table, H_STATE) === STATE_LIVE;
}

/** Marks the table's space destroyed: the commit point of a space destroy. False if it already was. */
export function markDead(table: Int32Array): boolean {
  return Atomics.compareExchange(table, H_STATE, STATE_LIVE, STATE_DEAD) === STATE_LIVE;
}

/**
 * Waits until every reader that was inside a section when this was called
 * has left it (call after bumping the epoch). Returns -1 when quiescent, or
 * the slot that stayed inside for `timeoutMs`.
 * Bounds: SPIN_CHECKS re-checks per slot, then sleeps of POLL_MS until one
 * deadline shared by all slots, so at most ~timeoutMs in total. A slot that
 * times out belongs to a thread stuck (or terminated) inside an access:
 * freeing what it may still touch would be a use-after-free, so the caller
 * must keep those frames allocated (see AddressSpace.unmap).
 */
export function waitQuiescent(table: Int32Array, timeoutMs = QUIESCE_TIMEOUT_MS): number {
  const slots = Atomics.load(table, H_HIGH_WATER);
  let deadlineMs = -1;
  for (let slot = 0; slot < slots; slot++) {
    const i = lineOf(slot) + S_SEQ;
    const seen = Atomics.load(table, i);
    if ((seen & 1) === 0) continue; // quiescent (or free): holds no translation
    // Any change means the section that was open has ended (a new one began after the bump).
    for (let spins = 0; Atomics.load(table, i) === seen; spins++) {
      if (spins < SPIN_CHECKS) continue;
      const nowMs = performance.now();
      if (deadlineMs < 0) deadlineMs = nowMs + timeoutMs;
      if (nowMs >= deadlineMs) return slot;
      Atomics.wait(table, i, seen, Math.min(POLL_MS, deadlineMs - nowMs));
    }
  }
  return -1;
}

/** EBADF unless the table's space is live. */
export function checkLive(table: Int32Array, what: string): void {
  check(isLive(table), 'EBADF', () => `${what}: the address space was destroyed`);
}
