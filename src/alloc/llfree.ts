/**
 * A lock-free page-frame allocator in the style of LLFree (Wrenger et al.,
 * USENIX ATC'23). All shared state lives in the region, so worker threads
 * share it through the SharedArrayBuffer and a file-backed region keeps it
 * across runs; there are no locks and no logs. Every change is one atomic
 * operation (CAS loop, Atomics.or/and on a bitfield word, Atomics.add/sub on
 * a counter), and every loop is bounded.
 *
 * Geometry (src/physical/layout.ts): a child is 512 frames (2 MiB) with a
 * 512-bit bitfield (16 int32 words, bit set = allocated) and a child counter
 * word; a tree is 32 children with a tree counter word.
 *
 *   child counter   bits 0..9   free frames (0..512)
 *                   bit 30      huge: the child is handed out whole as one
 *                               order-9 frame (free field 0, bitfield all 0)
 *   tree counter    bits 0..29  free frames of the tree that are not held in
 *                               the owner's local reservation, stored with a
 *                               bias of 2^29 (see below)
 *                   bit 31      reserved by some thread
 *
 * Per-thread reservation (LLFree's key idea): an allocator instance (one per
 * thread) reserves a tree by moving its shared free count n into a private
 * counter `local` ({n, 0} -> {0, reserved}). Order-0 allocations from that
 * tree then decrement only `local`, so threads do not bounce a shared
 * counter's cache line. Frees add to the shared tree counter, except that a
 * free into the freeing instance's own reserved tree adds to its `local`
 * (as in LLFree): the tree counters are packed 16 to a cache line, so
 * shared-counter frees would make every thread's frees contend.
 *
 * Held units, one level down (LLFree's local free counter, as Linux's
 * per-CPU page lists): the owner takes up to HOLD_UNITS free-frame units of
 * one child of its tree by one counter CAS (`held`, part of `local`). An
 * order-0 allocation then costs one atomic, the bit, and the owner's free
 * of a frame of that child one, the bit, with `held` and `local` raised
 * instead of the child counter. A thread's alloc/free pair thus pays two
 * atomics where a locked list pays four (lock and unlock, twice).
 *
 * The accounting invariant, exact whenever no operation is in flight:
 *
 *   for every tree t:  F(t) + local(owner of t) = sum of t's child free counts + held(owner)
 *   for every child c: free(c) + held(owner, if c is its held child) = clear bits of c (0 and no bits if huge)
 *
 * Any thread may also take frames from a tree it has not reserved ("steal":
 * needed for order-9 allocations, and for order 0 when every tree with free
 * frames is reserved by someone else). A thief wins the child first and then
 * subtracts from F(t). If the tree is reserved, F(t) may drop below zero: the
 * owner's `local` now overstates the tree (a "phantom" quota). The owner
 * notices when it finds no child with free frames despite local > 0; it then
 * unreserves, adding `local` back to F(t), which restores F(t) = sum exactly.
 * The bias keeps F(t) representable while it is negative and lets frees and
 * thieves use plain Atomics.add/sub on the word without ever borrowing into
 * the reserved bit (|F| stays far below 2^29).
 *
 * Ordering that makes a counter a promise: allocation decrements a counter
 * before it claims the thing counted (tree quota -> child counter -> bit),
 * a free releases the thing before it increments the counter (bit -> child
 * counter -> tree counter). So whoever holds a decremented unit is
 * guaranteed that a matching free resource exists (except for tree quota
 * made phantom by a thief, who goes child first; handled as above).
 *
 * Order 9 takes a wholly free child by CAS {512} -> {huge, 0} (own tree
 * first, then trees whose shared field shows >= 512, then trees reserved by
 * others) and then debits 512: from `local` when it is the own tree and
 * `local` covers it, else from F(t) with Atomics.sub (the steal rule above).
 * Freeing it is CAS {huge, 0} -> {512} and +512 on the tree's count.
 *
 * Hot-path reads: in V8 an Atomics.load is a builtin call as costly as an
 * Atomics.or, so first guesses are plain reads; every decision is then made
 * by the read-modify-write that follows (which returns the true old value),
 * and "nothing here" is confirmed atomically before giving up. Error and
 * assertion messages are built only on failure.
 *
 * Crash consistency: bitfields and the huge flag are the truth. Reservations
 * and counters are rebuilt from them on open (rebuildCounters), which also
 * drops the reservations of threads that no longer exist.
 */
import { threadId } from 'node:worker_threads';
import { MorselError, assert } from '../errors.js';
import { GiB, PAGE_SIZE, type Frame } from '../units.js';
import { BITFIELD_WORDS, CHILD_FRAMES, CHILD_SHIFT, TREE_CHILDREN, TREE_FRAMES, firstAllocatableFrame, metaLayout } from '../physical/layout.js';
import type { Region } from '../physical/region.js';
import { claimClearBit, countSet, popcount32, testBit, tryClearBit, writeBitfield } from './bitfield.js';
import { crashPoint } from '../crash-point.js';

export type Order = 0 | 9;

// --- counter encodings --------------------------------------------------------

export const CHILD_FREE_MASK = 0x3ff;
export const CHILD_HUGE = 1 << 30;
export const TREE_FREE_MASK = 0x3fffffff;
export const TREE_FREE_BIAS = 1 << 29;
/** Bit 31: as an int32 this is the sign bit, so `word < 0` means reserved. */
export const TREE_RESERVED = 1 << 31;

/** Sanity bound for a tree's shared free field (real values stay within +-TREE_FRAMES + in-flight steals). */
const TREE_FREE_LIMIT = 4 * TREE_FRAMES;

export const childFree = (word: number): number => word & CHILD_FREE_MASK;
export const childIsHuge = (word: number): boolean => (word & CHILD_HUGE) !== 0;
export const treeFree = (word: number): number => (word & TREE_FREE_MASK) - TREE_FREE_BIAS;
export const treeIsReserved = (word: number): boolean => (word & TREE_RESERVED) !== 0;

export function treeWord(free: number, reserved: boolean): number {
  if (!(Number.isInteger(free) && Math.abs(free) <= TREE_FREE_LIMIT)) assert(false, `tree free count ${free} in range`);
  return (reserved ? TREE_RESERVED : 0) | (free + TREE_FREE_BIAS);
}

// Failure paths live in their own functions: messages are built only on
// failure, and the hot functions stay small enough for V8 to inline.
// A word of the region that breaks an invariant is damaged metadata (a bit
// flip, a foreign write): a typed ECORRUPT, never an assertion.
function corruptMeta(what: string): never {
  throw new MorselError('ECORRUPT', `allocator metadata: ${what} (run \`morsel check\`)`);
}

function badWord(what: string, word: number): never {
  corruptMeta(`${what} 0x${(word >>> 0).toString(16)} out of range`);
}

function notAllocatable(frame: number): never {
  corruptMeta(`the bitfield handed out frame ${frame}, which is reserved or past the end`);
}

function badOrder(order: unknown): never {
  throw new MorselError('EINVAL', `unsupported order ${String(order)} (0 or 9)`);
}

function checkChildWord(word: number): void {
  if ((word & ~(CHILD_FREE_MASK | CHILD_HUGE)) !== 0 || childFree(word) > CHILD_FRAMES) badWord('child counter', word);
  if (childIsHuge(word) && childFree(word) !== 0) badWord('huge child counter', word);
}

function checkTreeWord(word: number): void {
  if ((word & (1 << 30)) !== 0 || !(Math.abs(treeFree(word)) <= TREE_FREE_LIMIT)) badWord('tree counter', word);
}

// --- bounds on retries ----------------------------------------------------------

/** CAS retries on one word while others keep changing it (each failure is someone else's progress). */
const CAS_RETRIES = 10_000;
/** Rounds over a child's 16 words when claiming a bit we hold a counter unit for. */
const BIT_ROUNDS = 1_000;
/** Free-frame units of one child an instance takes at once (holdUnits): frames others cannot see meanwhile, per instance. */
const HOLD_UNITS = 32;
/** Minimum shared free count for a partially filled tree to be preferred for reservation. */
const PARTIAL_MIN = CHILD_FRAMES / 8;

// --- metadata views ---------------------------------------------------------------

/** Typed views over the allocator's metadata in the region, plus its geometry. */
interface Meta {
  frameCount: number;
  children: number;
  trees: number;
  /** first allocatable frame: [0, first) are reserved or metadata */
  first: number;
  bits: Int32Array;
  childCounters: Int32Array;
  treeCounters: Int32Array;
}

function openMeta(region: Region): Meta {
  const frameCount = region.frameCount;
  const layout = metaLayout(frameCount);
  const first = firstAllocatableFrame(frameCount);
  const endByte = layout.treeCountersByte + layout.trees * 4;
  // The metadata must lie inside the metadata frames, and (per the region's
  // window scheme) inside its first 1 GiB window. It is 68 bytes per 2 MiB
  // from 1 MiB on, so this holds for regions up to 16 TiB.
  assert(endByte <= first * PAGE_SIZE, 'allocator metadata fits the metadata frames');
  assert(endByte <= GiB, 'allocator metadata lies in the first 1 GiB window');
  assert(layout.bitfieldsByte % 64 === 0, 'bitfields are cache-line aligned');
  return {
    frameCount,
    children: layout.children,
    trees: layout.trees,
    first,
    bits: new Int32Array(region.sab, layout.bitfieldsByte, layout.children * BITFIELD_WORDS),
    childCounters: new Int32Array(region.sab, layout.childCountersByte, layout.children),
    treeCounters: new Int32Array(region.sab, layout.treeCountersByte, layout.trees),
  };
}

/** Whether `frame` is allocated: its bit is set, or its child is an order-9 frame. */
function allocatedIn(m: Meta, frame: number): boolean {
  const c = frame >>> CHILD_SHIFT;
  return childIsHuge(Atomics.load(m.childCounters, c)) || testBit(m.bits, c * BITFIELD_WORDS, frame & (CHILD_FRAMES - 1));
}

/** log2(TREE_CHILDREN): child index -> tree index. */
const TREE_SHIFT = 5;
const childLo = (tree: number): number => tree * TREE_CHILDREN;
const childHi = (m: Meta, tree: number): number => Math.min((tree + 1) * TREE_CHILDREN, m.children);
const treeOfChild = (child: number): number => child >>> TREE_SHIFT;
assert(1 << TREE_SHIFT === TREE_CHILDREN, 'TREE_SHIFT matches TREE_CHILDREN');

/** Whether frame `frame` (possibly past the region's end) is never handed out. */
const isFixedFrame = (m: Meta, frame: number): boolean => frame < m.first || frame >= m.frameCount;

/** Whether child `c` consists of allocatable frames only (so it can be an order-9 frame). */
const childFullyAllocatable = (m: Meta, c: number): boolean => c * CHILD_FRAMES >= m.first && (c + 1) * CHILD_FRAMES <= m.frameCount;

/** Allocatable frames in tree `t` (its free count when nothing is allocated). */
function treeCapacity(m: Meta, t: number): number {
  const lo = Math.max(t * TREE_FRAMES, m.first);
  const hi = Math.min((t + 1) * TREE_FRAMES, m.frameCount);
  return Math.max(0, hi - lo);
}

/** Sets the bits of reserved/metadata/tail frames (they are allocated forever). Idempotent. */
function markFixedFrames(m: Meta): void {
  const markRange = (lo: number, hi: number): void => {
    for (let f = lo; f < hi; f++) Atomics.or(m.bits, (f >>> CHILD_SHIFT) * BITFIELD_WORDS + ((f & (CHILD_FRAMES - 1)) >>> 5), 1 << (f & 31));
  };
  markRange(0, m.first);
  markRange(m.frameCount, m.children * CHILD_FRAMES);
}

// --- per-instance start positions -------------------------------------------------

let instancesInThisThread = 0;
const GOLDEN = 0.6180339887498949;

/** A start tree spread over [0, trees) by thread and instance (golden-ratio sequence). */
function startTree(trees: number): number {
  const k = threadId + instancesInThisThread++;
  return Math.floor(((k * GOLDEN) % 1) * trees) % trees;
}

// --- the allocator -------------------------------------------------------------------

export class FrameAllocator {
  private readonly m: Meta;
  /** false for a read-only region: alloc and free throw EACCES. */
  private readonly writable: boolean;
  /** Reserved tree, or -1. Private to this instance (one instance per thread). */
  private tree = -1;
  /** Free frames of the reserved tree that this instance holds (not visible to others). */
  private local = 0;
  private treeHint: number;
  private childHint = 0;
  private wordHint = 0;
  /** The child of the reserved tree whose counter units this instance holds (-1: none), and how many: held <= local. */
  private heldChild = -1;
  private held = 0;
  /** takeInTree's second result: the units it took. */
  private taken = 0;
  /** freeSmallBatch's per-child bit masks (scratch, one word per bitfield word). */
  private readonly batchMasks = new Int32Array(BITFIELD_WORDS);

  constructor(readonly region: Region) {
    this.writable = region.writable;
    this.m = openMeta(region);
    this.treeHint = startTree(this.m.trees);
    this.childHint = childLo(this.treeHint);
  }

  // --- formatting and recovery (static: no instance may be active) -----------------

  /** Format: mark frames [0, firstAllocatableFrame(frameCount)) and the non-existent tail frames of the last child as allocated; set child/tree counters. Called once on a fresh region. */
  static format(region: Region): void {
    const m = openMeta(region);
    for (let c = 0; c < m.children; c++) {
      writeBitfield(m.bits, c * BITFIELD_WORDS, (i) => isFixedFrame(m, c * CHILD_FRAMES + i));
      Atomics.store(m.childCounters, c, 0); // not huge; rebuildCounters computes the count
    }
    FrameAllocator.rebuildCounters(region);
  }

  /**
   * Rebuild child counters (a child with the huge bit keeps it and counts 0
   * free) and tree counters from the bitfields, and clear all tree
   * 'reserved' bits. Used on open (tree reservations are per-process state)
   * and after a crash. No allocator instance may be in use meanwhile, and
   * instances created before should release() before allocating again.
   * Throws ECORRUPT (before changing anything) if a huge child has bits set
   * or cannot be an order-9 frame.
   */
  static rebuildCounters(region: Region): void {
    const m = openMeta(region);
    for (let c = 0; c < m.children; c++) {
      if (!childIsHuge(Atomics.load(m.childCounters, c))) continue;
      if (!childFullyAllocatable(m, c)) throw new MorselError('ECORRUPT', `child ${c} is marked huge but holds reserved or missing frames`);
      if (countSet(m.bits, c * BITFIELD_WORDS) !== 0) throw new MorselError('ECORRUPT', `child ${c} is marked huge but has frames allocated in its bitfield`);
    }
    markFixedFrames(m); // repair: these frames must never be handed out
    for (let t = 0; t < m.trees; t++) {
      let sum = 0;
      for (let c = childLo(t); c < childHi(m, t); c++) {
        if (childIsHuge(Atomics.load(m.childCounters, c))) {
          Atomics.store(m.childCounters, c, CHILD_HUGE);
          continue;
        }
        const free = CHILD_FRAMES - countSet(m.bits, c * BITFIELD_WORDS);
        Atomics.store(m.childCounters, c, free);
        crashPoint('open:rebuild-counters');
        sum += free;
      }
      if (sum > treeCapacity(m, t)) corruptMeta(`tree ${t}: ${sum} free exceeds its capacity ${treeCapacity(m, t)}`);
      Atomics.store(m.treeCounters, t, treeWord(sum, false));
    }
  }

  /**
   * Replace the whole allocation state from a predicate over frames (crash
   * recovery: the set of frames reachable from live structures). `isUsed` is
   * called once for every allocatable frame outside `hugeChildren`;
   * reserved/metadata/tail frames stay allocated; the children listed in
   * `hugeChildren` become allocated order-9 frames (EINVAL, before anything
   * changes, for an index that cannot be one). Then rebuildCounters.
   */
  static rebuildFrom(region: Region, isUsed: (frame: number) => boolean, hugeChildren: Iterable<number> = []): void {
    const m = openMeta(region);
    const huge = new Set<number>();
    for (const c of hugeChildren) {
      if (!(Number.isInteger(c) && c >= 0 && c < m.children)) throw new MorselError('EINVAL', `huge child ${c} outside 0..${m.children - 1}`);
      if (!childFullyAllocatable(m, c)) throw new MorselError('EINVAL', `child ${c} holds reserved or missing frames; it cannot be an order-9 frame`);
      huge.add(c);
    }
    for (let c = 0; c < m.children; c++) {
      const base = c * CHILD_FRAMES;
      if (huge.has(c)) {
        writeBitfield(m.bits, c * BITFIELD_WORDS, () => false);
        Atomics.store(m.childCounters, c, CHILD_HUGE);
      } else {
        writeBitfield(m.bits, c * BITFIELD_WORDS, (i) => isFixedFrame(m, base + i) || isUsed(base + i));
        Atomics.store(m.childCounters, c, 0); // not huge; recomputed below
        crashPoint('recover:rebuild-bitfields');
      }
    }
    FrameAllocator.rebuildCounters(region);
  }

  /**
   * Consistency check of a quiescent region (no instance holds a reservation
   * and no operation is in flight). Returns the problems found as text;
   * empty means the counters agree with the bitfields.
   */
  static verify(region: Region): string[] {
    return new AllocatorView(region).problems().map((p) => `${p.where}: ${p.what}`);
  }

  // --- allocation ----------------------------------------------------------------

  /** Allocates one frame of `order` (0: 4 KiB, 9: a 2 MiB-aligned 512-frame block). Throws ENOSPC when nothing fits. */
  alloc(order: Order = 0): Frame {
    if (order === 0 && this.held > 0 && this.writable) {
      // Fast path: a unit of the held child, paid from `local`: one atomic
      // (the bit). Everything else is in allocSlow, so that this stays small
      // enough for V8 to inline.
      const frame = this.takeHeld();
      if (!(frame >= this.m.first && frame < this.m.frameCount)) notAllocatable(frame);
      return frame as Frame;
    }
    return this.allocSlow(order);
  }

  /**
   * Appends `count` order-0 frames to `out`: a wholly free child of this
   * instance's reserved tree (512 contiguous frames) at a time while one is
   * free and `count` covers it, else one alloc(0) per frame. A whole child
   * costs one counter CAS ({512} -> {0}) and one atomic store per bitfield
   * word instead of a counter CAS and a bit CAS per frame (a loader takes
   * its pages this way). The frames are ordinary order-0 frames, each freed
   * alone. ENOSPC part-way leaves the frames taken so far in `out`: the
   * caller owns them.
   */
  allocSmallBatch(count: number, out: Frame[]): void {
    assert(Number.isSafeInteger(count) && count >= 0, 'allocSmallBatch of a frame count');
    let left = count;
    while (left >= CHILD_FRAMES && this.writable) {
      const c = this.takeWholeChildSmall();
      if (c < 0) break;
      for (let f = c * CHILD_FRAMES, end = f + CHILD_FRAMES; f < end; f++) out.push(f as Frame);
      left -= CHILD_FRAMES;
    }
    for (; left > 0; left--) out.push(this.alloc(0));
  }

  /**
   * A wholly free child of the reserved tree taken as 512 order-0 frames;
   * -1 when there is none (or no reservation covering 512 frames).
   * # Warning
   * Two steps: the counter CAS makes the child ours (no one takes or frees a
   * bit of a child whose counter reads 0 and all of whose bits are clear),
   * then the bits are set. A crash between leaves clear bits under a zero
   * counter: rebuildCounters recounts from the bits, so the frames are free
   * again, as for a crash between alloc(0)'s counter and bit steps.
   */
  private takeWholeChildSmall(): number {
    if (this.tree < 0 && !this.reserveTree()) return -1;
    if (this.local - this.held + treeFree(Atomics.load(this.m.treeCounters, this.tree)) < CHILD_FRAMES) return -1;
    const lo = childLo(this.tree);
    const hi = childHi(this.m, this.tree);
    for (let c = lo; c < hi; c++) {
      if (this.m.childCounters[c] !== CHILD_FRAMES) continue; // plain read filters; the CAS decides
      if (Atomics.compareExchange(this.m.childCounters, c, CHILD_FRAMES, 0) !== CHILD_FRAMES) continue;
      if (this.local - this.held >= CHILD_FRAMES) this.local -= CHILD_FRAMES;
      else Atomics.sub(this.m.treeCounters, this.tree, CHILD_FRAMES);
      crashPoint('alloc:after-counter');
      for (let w = c * BITFIELD_WORDS, end = w + BITFIELD_WORDS; w < end; w++) {
        if (Atomics.exchange(this.m.bits, w, -1) !== 0) corruptMeta(`child ${c} counted 512 free frames but word ${w - c * BITFIELD_WORDS} of its bitfield has bits set`);
      }
      this.childHint = c + 1 < hi ? c + 1 : lo;
      return c;
    }
    return -1;
  }

  /** alloc without the fast path: write access and order checks, then a reservation or a steal (order 0) or an order-9 frame. */
  private allocSlow(order: Order): Frame {
    if (!this.writable) this.region.denyWrite(); // before any store: the mapping is PROT_READ
    if (order !== 0 && order !== 9) badOrder(order);
    const frame = order === 0 ? this.allocSmall() : this.allocHuge();
    if (!(frame >= this.m.first && frame < this.m.frameCount)) notAllocatable(frame);
    return frame as Frame;
  }

  private allocSmall(): number {
    // Each failed attempt gives a tree back, and reservation only picks trees
    // showing free frames, so a handful of attempts covers every real case.
    for (let attempt = 0; attempt < this.m.trees + 2; attempt++) {
      if (this.tree < 0 && !this.reserveTree()) break;
      const frame = this.allocFromReserved();
      if (frame >= 0) return frame;
      this.unreserve(); // reserved tree exhausted, or only phantom quota left
    }
    const frame = this.stealSmall();
    if (frame >= 0) return frame;
    throw new MorselError('ENOSPC', 'no free 4 KiB frame');
  }

  /** One frame from the reserved tree, paid from `local` (refilled from the shared count); -1 if the tree has none. */
  private allocFromReserved(): number {
    if (this.local === 0 && !this.refill()) return -1;
    assert(this.local > 0, 'local reservation positive before use');
    // No child with a free frame despite local > 0: phantom quota (a thief
    // took the frames it counted); allocSmall unreserves.
    if (this.held === 0 && !this.holdUnits()) return -1;
    return this.takeHeld();
  }

  /** A frame for one of the held units, paid from `local`: the bit is the only atomic. */
  private takeHeld(): number {
    this.held--;
    this.local--;
    return this.claimInChild(this.heldChild);
  }

  /**
   * Takes up to HOLD_UNITS free-frame units of one child of the reserved
   * tree (never more than `local` covers) by one counter CAS, so that the
   * next allocations set bits only, and frees of those frames by this
   * instance add to `held` (freeSmall). False when no child has a free
   * frame.
   * # Warning
   * While units are held, the child's counter is below its clear bits by
   * `held`: thieves and order-9 allocations do not see those frames (at
   * most HOLD_UNITS per instance), and `check` reads it as the owner's
   * share of a reserved tree. A crash drops them with the reservation:
   * rebuildCounters recounts from the bits.
   */
  private holdUnits(): boolean {
    assert(this.held === 0 && this.local > 0, 'hold units only when none are held and local covers one');
    const c = this.takeInTree(this.tree, Math.min(HOLD_UNITS, this.local));
    if (c < 0) return false;
    this.heldChild = c;
    this.held = this.taken;
    return true;
  }

  /**
   * Takes up to `want` free-frame units of the first child of tree `t`, from
   * the hinted child on (wrapping around once), whose counter has any; the
   * count taken is left in `taken`. -1 when no child has a free frame.
   */
  private takeInTree(t: number, want: number): number {
    const lo = childLo(t);
    const hi = childHi(this.m, t);
    let c = this.childHint >= lo && this.childHint < hi ? this.childHint : lo;
    for (let i = lo; i < hi; i++, c = c + 1 === hi ? lo : c + 1) {
      const got = this.takeChildUnits(c, want);
      if (got > 0) {
        this.taken = got;
        return c;
      }
    }
    return -1;
  }

  /**
   * CAS-takes up to `want` units of child `c`'s free count; how many (0: none
   * free, huge children read 0, or contention persists). The first guess is
   * a plain read (an Atomics.load costs a builtin call); the CAS validates
   * it, and "none free" is confirmed with an atomic read.
   */
  private takeChildUnits(c: number, want: number): number {
    const counters = this.m.childCounters;
    let word = counters[c]; // a guess; the CAS decides
    for (let i = 0; i < CAS_RETRIES; i++) {
      if (childFree(word) === 0) {
        word = Atomics.load(counters, c);
        if (childFree(word) === 0) return 0;
      }
      checkChildWord(word);
      const got = Math.min(want, childFree(word));
      const prev = Atomics.compareExchange(counters, c, word, word - got);
      if (prev === word) return got;
      word = prev;
    }
    return 0;
  }

  /** Returns the held units to their child's counter (before the reservation goes back). */
  private returnHeld(): void {
    if (this.held > 0) Atomics.add(this.m.childCounters, this.heldChild, this.held);
    this.heldChild = -1;
    this.held = 0;
  }

  /**
   * Order 0 without a reservation (all trees with free frames are reserved by
   * others): take a frame from any tree's children, then debit its shared
   * counter. Trees that are unreserved and show no free frames are skipped.
   */
  private stealSmall(): number {
    assert(this.tree < 0, 'steal only without a reservation');
    for (let i = 0; i < this.m.trees; i++) {
      const t = (this.treeHint + i) % this.m.trees;
      const word = Atomics.load(this.m.treeCounters, t);
      if (!treeIsReserved(word) && treeFree(word) <= 0) continue;
      const frame = this.takeSmallInTree(t);
      if (frame >= 0) {
        Atomics.sub(this.m.treeCounters, t, 1);
        return frame;
      }
    }
    return -1;
  }

  /** Claims one frame in tree `t` without its quota (a steal): child counter, then bit. -1 if no child has free frames. */
  private takeSmallInTree(t: number): number {
    const c = this.takeInTree(t, 1);
    return c < 0 ? -1 : this.claimInChild(c);
  }

  /** Claims a clear bit of child `c` for a caller that has decremented its counter; returns the frame. */
  private claimInChild(c: number): number {
    crashPoint('alloc:after-counter');
    const bit = claimClearBit(this.m.bits, c * BITFIELD_WORDS, this.wordHint, BIT_ROUNDS);
    if (bit < 0) this.noClearBit(c);
    this.childHint = c;
    this.wordHint = bit >>> 5;
    return c * CHILD_FRAMES + bit;
  }

  /** claimInChild's failure: the unit taken is given back (to `held` or the counter) before the broken invariant is reported. */
  private noClearBit(c: number): never {
    if (c === this.heldChild) {
      this.held++;
      this.local++;
    } else Atomics.add(this.m.childCounters, c, 1);
    corruptMeta(`child ${c}'s counter promised a free frame but its bitfield has none`);
  }

  private allocHuge(): number {
    // Own tree first (keeps a thread's memory together), paid from `local`
    // when it covers 512, else from the shared field (F + local stays exact).
    if (this.tree >= 0 && this.local - this.held + treeFree(Atomics.load(this.m.treeCounters, this.tree)) >= CHILD_FRAMES) {
      const c = this.takeHugeInTree(this.tree);
      if (c >= 0) {
        if (this.local - this.held >= CHILD_FRAMES) this.local -= CHILD_FRAMES;
        else Atomics.sub(this.m.treeCounters, this.tree, CHILD_FRAMES);
        return c * CHILD_FRAMES;
      }
    }
    // Then other trees: first those whose shared field shows 512 free, then
    // (stealing) trees reserved by others, whose free frames sit in their
    // owners' `local`. An unreserved tree showing < 512 has no free child.
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < this.m.trees; i++) {
        const t = (this.treeHint + i) % this.m.trees;
        if (t === this.tree) continue;
        const word = Atomics.load(this.m.treeCounters, t);
        const showsChild = treeFree(word) >= CHILD_FRAMES;
        if (pass === 0 ? !showsChild : showsChild || !treeIsReserved(word)) continue;
        const c = this.takeHugeInTree(t);
        if (c < 0) continue;
        Atomics.sub(this.m.treeCounters, t, CHILD_FRAMES);
        this.treeHint = t;
        return c * CHILD_FRAMES;
      }
    }
    throw new MorselError('ENOSPC', 'no free 2 MiB frame');
  }

  /** Takes a wholly free child of tree `t` as an order-9 frame ({512} -> {huge, 0}); -1 if none. */
  private takeHugeInTree(t: number): number {
    const lo = childLo(t);
    const n = childHi(this.m, t) - lo;
    const start = this.childHint >= lo && this.childHint < lo + n ? this.childHint - lo : 0;
    for (let i = 0; i < n; i++) {
      const c = lo + ((start + i) % n);
      // A plain read filters (a stale value only costs a CAS or a skipped
      // child); one CAS per child: a failure means it is no longer wholly free.
      if (this.m.childCounters[c] !== CHILD_FRAMES) continue;
      if (Atomics.compareExchange(this.m.childCounters, c, CHILD_FRAMES, CHILD_HUGE) === CHILD_FRAMES) {
        this.childHint = c; // the next search starts here instead of rescanning taken children
        return c;
      }
    }
    return -1;
  }

  // --- tree reservation -------------------------------------------------------------

  /** Reserves a tree: partially filled ones first (LLFree: keeps empty trees for huge frames), then empty, then any with free frames. */
  private reserveTree(): boolean {
    assert(this.tree < 0 && this.local === 0, 'no reservation held');
    for (let pass = 0; pass < 3; pass++) {
      for (let i = 0; i < this.m.trees; i++) {
        const t = (this.treeHint + i) % this.m.trees;
        if (this.tryReserve(t, pass)) return true;
      }
    }
    return false;
  }

  private wantTree(t: number, free: number, pass: number): boolean {
    const capacity = treeCapacity(this.m, t);
    if (free <= 0) return false;
    if (pass === 0) return free >= PARTIAL_MIN && free < capacity;
    if (pass === 1) return free >= capacity;
    return true;
  }

  /** CAS {free n, unreserved} -> {free 0, reserved}, keeping n locally. False when taken or not wanted. */
  private tryReserve(t: number, pass: number): boolean {
    const counters = this.m.treeCounters;
    for (let i = 0; i < CAS_RETRIES; i++) {
      const word = Atomics.load(counters, t);
      checkTreeWord(word);
      if (treeIsReserved(word)) return false;
      const free = treeFree(word);
      if (!this.wantTree(t, free, pass)) return false;
      if (Atomics.compareExchange(counters, t, word, treeWord(0, true)) === word) {
        this.tree = t;
        crashPoint('alloc:after-reserve');
        this.local = free;
        this.treeHint = t;
        if (this.childHint < childLo(t) || this.childHint >= childHi(this.m, t)) this.childHint = childLo(t);
        return true;
      }
    }
    return false;
  }

  /** Local count ran out: take the frees that arrived at the reserved tree meanwhile ({F, reserved} -> {0, reserved}). */
  private refill(): boolean {
    const counters = this.m.treeCounters;
    for (let i = 0; i < CAS_RETRIES; i++) {
      const word = Atomics.load(counters, this.tree);
      checkTreeWord(word);
      if (!treeIsReserved(word)) corruptMeta(`tree ${this.tree} lost the reservation this instance holds`);
      const free = treeFree(word);
      if (free <= 0) return false;
      if (Atomics.compareExchange(counters, this.tree, word, treeWord(0, true)) === word) {
        this.local = free;
        return true;
      }
    }
    return false;
  }

  /** Gives the reservation back: the held units to their child, then F += local and clear the reserved bit, in one CAS. */
  private unreserve(): void {
    if (this.tree < 0) return;
    const counters = this.m.treeCounters;
    // After a rebuild (see below) the held units are stale too: drop them.
    if (treeIsReserved(Atomics.load(counters, this.tree))) this.returnHeld();
    this.heldChild = -1;
    this.held = 0;
    // Only frees and thieves change the word meanwhile (each a finished
    // operation of someone else), so this terminates; the bound catches bugs.
    for (let i = 0; ; i++) {
      assert(i < 100 * CAS_RETRIES, 'unreserve makes progress');
      const word = Atomics.load(counters, this.tree);
      checkTreeWord(word);
      // Only the owner clears the bit, except rebuildCounters/rebuildFrom,
      // which recount everything from the bitfields (our `local` included):
      // then the reservation is already gone and `local` is stale, so drop it.
      if (!treeIsReserved(word)) break;
      const next = treeWord(treeFree(word) + this.local, false);
      if (Atomics.compareExchange(counters, this.tree, word, next) === word) break;
    }
    this.tree = -1;
    this.local = 0;
  }

  // --- free -------------------------------------------------------------------------

  /** Frees a frame of `order`. EINVAL, before anything changes, for a frame outside the allocatable range, a misaligned order-9 frame, or a double free. */
  free(frame: Frame, order: Order = 0): void {
    // Fast path: an order-0 frame that passes every check of freeChecked.
    if (order === 0 && this.writable && frame >= this.m.first && frame < this.m.frameCount && Number.isInteger(frame)) this.freeSmall(frame);
    else this.freeChecked(frame, order);
  }

  /** free without the fast path: the checks in order (write access, order, range), then the free. */
  private freeChecked(frame: number, order: Order): void {
    if (!this.writable) this.region.denyWrite();
    if (order !== 0 && order !== 9) badOrder(order);
    if (!(Number.isInteger(frame) && frame >= this.m.first && frame < this.m.frameCount)) this.rejectRange(frame);
    if (order === 0) this.freeSmall(frame);
    else this.freeHuge(frame);
  }

  private freeSmall(frame: number): void {
    const c = frame >>> CHILD_SHIFT;
    // The atomic clear is the double-free test: clearing a clear bit changes
    // nothing, so a rejected free leaves the state untouched, and of two
    // racing frees of one frame exactly one wins. (A huge child's bits are all
    // clear, so a frame inside an order-9 frame is rejected here too.)
    if (!tryClearBit(this.m.bits, c * BITFIELD_WORDS, frame & (CHILD_FRAMES - 1))) this.rejectSmallFree(frame);
    crashPoint('free:after-bit-clear');
    const t = treeOfChild(c);
    if (c === this.heldChild && treeFree(this.m.treeCounters[t]) >= 0) {
      // A frame of the child whose units we hold: held, and paid into `local`, as the alloc took it (no counter atomic).
      this.held++;
      this.local++;
      return;
    }
    const old = Atomics.add(this.m.childCounters, c, 1);
    if (childIsHuge(old) || childFree(old) >= CHILD_FRAMES) badWord('child counter before a free', old);
    this.creditTree(t, 1);
  }

  /**
   * Credits `n` freed frames to tree `t`. A free into our own reserved tree
   * is counted locally (as in LLFree): F + local = sum of child counts holds
   * either way, and it keeps the packed tree-counter cache line, shared by
   * all threads, out of the path. Except while thieves have driven F
   * negative: then the free pays that debt, or an owner that frees what
   * thieves took would let F drift down without bound while its `local`
   * grows (seen with two workers populating and a third thread destroying).
   */
  private creditTree(t: number, n: number): void {
    if (t === this.tree && treeFree(this.m.treeCounters[t]) >= 0) this.local += n;
    else Atomics.add(this.m.treeCounters, t, n);
  }

  /**
   * Frees the order-0 frames `frames[0..count)` that are allocated as such,
   * and returns how many were not (out of range, bit already clear, inside
   * an order-9 frame): those are skipped, nothing else changes for them.
   * One Atomics.and per bitfield word and one counter add per child for
   * each stretch of frames within one child, instead of two atomics per
   * frame (destroy frees a table's pages this way: frames taken in batches
   * lie in few children). A crash between a word's clear and the counter
   * add is free()'s 'free:after-bit-clear' window: the bits are the truth.
   */
  freeSmallBatch(frames: Int32Array, count: number): number {
    if (!this.writable) this.region.denyWrite();
    assert(Number.isSafeInteger(count) && count >= 0 && count <= frames.length, 'freeSmallBatch count within the array');
    const masks = this.batchMasks;
    let rejected = 0;
    for (let i = 0; i < count; ) {
      const c = frames[i] >>> CHILD_SHIFT;
      masks.fill(0);
      for (; i < count && frames[i] >>> CHILD_SHIFT === c; i++) {
        const frame = frames[i];
        const w = (frame >>> 5) & (BITFIELD_WORDS - 1);
        const bit = 1 << (frame & 31);
        if (!(frame >= this.m.first && frame < this.m.frameCount) || (masks[w] & bit) !== 0) rejected++; // out of range, or twice in the batch
        else masks[w] |= bit;
      }
      rejected += this.freeMasked(c, masks);
    }
    return rejected;
  }

  /** Clears child `c`'s bits set in `masks` (one word each) and credits the frames freed; returns how many masked bits were already clear. */
  private freeMasked(c: number, masks: Int32Array): number {
    let freed = 0;
    let asked = 0;
    for (let w = 0; w < BITFIELD_WORDS; w++) {
      const mask = masks[w];
      if (mask === 0) continue;
      asked += popcount32(mask);
      freed += popcount32(Atomics.and(this.m.bits, c * BITFIELD_WORDS + w, ~mask) & mask);
    }
    if (freed === 0) return asked;
    crashPoint('free:after-bit-clear');
    const old = Atomics.add(this.m.childCounters, c, freed);
    if (childIsHuge(old) || childFree(old) + freed > CHILD_FRAMES) badWord('child counter before a free', old);
    this.creditTree(treeOfChild(c), freed);
    return asked - freed;
  }

  private rejectRange(frame: number): never {
    throw new MorselError('EINVAL', `frame ${frame} is outside the allocatable range ${this.m.first}..${this.m.frameCount - 1}`);
  }

  /** Why an order-0 free was refused (slow path: builds the message). */
  private rejectSmallFree(frame: number): never {
    if (childIsHuge(Atomics.load(this.m.childCounters, frame >>> CHILD_SHIFT))) {
      throw new MorselError('EINVAL', `frame ${frame} lies in an order-9 frame; free that with order 9`);
    }
    throw new MorselError('EINVAL', `double free of frame ${frame}`);
  }

  private freeHuge(frame: number): void {
    if (frame % CHILD_FRAMES !== 0) throw new MorselError('EINVAL', `order-9 frame ${frame} is not 512-aligned`);
    const c = frame >>> CHILD_SHIFT;
    if (!childFullyAllocatable(this.m, c)) throw new MorselError('EINVAL', `frame ${frame} cannot be an order-9 frame`);
    const old = Atomics.compareExchange(this.m.childCounters, c, CHILD_HUGE, CHILD_FRAMES);
    if (old !== CHILD_HUGE) throw new MorselError('EINVAL', `frame ${frame} is not an allocated order-9 frame (double free?)`);
    this.creditTree(treeOfChild(c), CHILD_FRAMES); // as order 0
  }

  // --- queries ------------------------------------------------------------------------

  /** Whether `frame` is allocated: its bit is set, or its child is an order-9 frame. Reserved frames count as allocated. */
  isAllocated(frame: Frame): boolean {
    this.region.checkFrame(frame);
    return allocatedIn(this.m, frame);
  }

  /**
   * Sum of the tree counters plus this instance's local count. Exact when
   * quiescent (no operation in flight and no other instance holds a
   * reservation). Each tree contributes max(0, ...): a tree reserved by
   * another thread can show a negative shared field after a steal (its
   * owner's local count, invisible here, covers it), so the sum is a lower
   * bound then and never negative.
   */
  freeFrames(): number {
    let sum = 0;
    for (let t = 0; t < this.m.trees; t++) {
      const word = Atomics.load(this.m.treeCounters, t);
      const free = treeFree(word) + (t === this.tree ? this.local : 0);
      sum += Math.max(0, free);
    }
    return sum;
  }

  /** frameCount - reserved - metadata (tail frames lie beyond frameCount). */
  totalAllocatable(): number {
    return this.m.frameCount - this.m.first;
  }

  /** The tree this instance holds reserved, or -1 (diagnostics and tests). */
  get reservedTree(): number {
    return this.tree;
  }

  /** Frames held in this instance's local reservation (diagnostics and tests). */
  get localFree(): number {
    return this.local;
  }

  /**
   * Give this thread's reservation back (thread exit). The instance stays
   * usable. After rebuildCounters/rebuildFrom (which drop every reservation)
   * this only forgets the stale reservation; do not allocate through an
   * instance between such a rebuild and its release().
   */
  release(): void {
    this.unreserve();
  }
}

// --- read-only view (recovery scanner, table walker, check) ---------------------------

export type AllocProblemCode = 'FIXED_FREE' | 'CHILD_COUNTER' | 'HUGE' | 'TREE_RESERVED' | 'TREE_COUNTER';

export interface AllocProblem {
  code: AllocProblemCode;
  what: string;
  where: string;
}

/**
 * A read-only view of the allocator's metadata: never asserts on a corrupt
 * word and never writes, so the scanner and `check` read a damaged region
 * through the allocator's own geometry instead of re-deriving it.
 */
export class AllocatorView {
  private readonly m: Meta;

  constructor(region: Region) {
    this.m = openMeta(region);
  }

  get first(): number {
    return this.m.first;
  }

  get frameCount(): number {
    return this.m.frameCount;
  }

  /** Frames covered by the bitfields (the last child may reach past frameCount). */
  get coveredFrames(): number {
    return this.m.children * CHILD_FRAMES;
  }

  /**
   * Whether `frame` (0 <= frame < coveredFrames) is allocated: bit set or
   * inside an order-9 frame. No range check: callers bound it. Plain reads
   * (an Atomics.load costs a builtin call): a snapshot that may race with an
   * allocation or free in flight, which is what a validity check or a scan
   * of a live region can know anyway.
   */
  isAllocated(frame: number): boolean {
    const c = frame >>> CHILD_SHIFT;
    return (this.m.childCounters[c] & CHILD_HUGE) !== 0 || (this.m.bits[c * BITFIELD_WORDS + ((frame & (CHILD_FRAMES - 1)) >>> 5)] & (1 << (frame & 31))) !== 0;
  }

  /** Whether `frame` is the first frame of an allocated order-9 block (2 MiB-aligned, its child marked huge). Plain read, as isAllocated. */
  isHugeBlock(frame: number): boolean {
    return (frame & (CHILD_FRAMES - 1)) === 0 && (this.m.childCounters[frame >>> CHILD_SHIFT] & CHILD_HUGE) !== 0;
  }

  /** Whether `frame` is allocated as an order-0 frame (its bit is set; a frame inside an order-9 block is not). Plain read, as isAllocated. */
  isSmallAllocated(frame: number): boolean {
    return (this.m.bits[(frame >>> CHILD_SHIFT) * BITFIELD_WORDS + ((frame & (CHILD_FRAMES - 1)) >>> 5)] & (1 << (frame & 31))) !== 0;
  }

  /** Children (2 MiB areas of CHILD_FRAMES frames) the bitfields cover. */
  get children(): number {
    return this.m.children;
  }

  /**
   * Allocated frames of child `c` (0 <= c < children) by its bitfield, all
   * of them when it is huge. Plain reads: a snapshot, as isAllocated.
   */
  allocatedInChild(c: number): number {
    if (childIsHuge(this.m.childCounters[c])) return CHILD_FRAMES;
    return countSet(this.m.bits, c * BITFIELD_WORDS);
  }

  /**
   * Sum of the child counters' free fields: every order-0 allocation and
   * free changes it, also those inside another thread's or process's
   * reservation (which the tree counters do not show). Plain reads, O(children).
   */
  childFreeSum(): number {
    let sum = 0;
    for (let c = 0; c < this.m.children; c++) sum += childFree(this.m.childCounters[c]);
    return sum;
  }

  /** Children marked huge (allocated whole as order-9 frames). */
  hugeChildren(): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.m.children; c++) if (childIsHuge(Atomics.load(this.m.childCounters, c))) out.push(c);
    return out;
  }

  /**
   * Every disagreement between counters and bitfields, reserved frames
   * marked free and trees left reserved. Exact only on a quiescent region:
   * with live users, reservations and in-flight operations show here too.
   */
  problems(): AllocProblem[] {
    const m = this.m;
    const out: AllocProblem[] = [];
    for (let f = 0; f < this.coveredFrames; f++) {
      if (isFixedFrame(m, f) && !this.isAllocated(f)) {
        out.push({ code: 'FIXED_FREE', what: `${f < m.first ? 'reserved' : 'nonexistent tail'} frame ${f} is marked free`, where: `allocator child ${f >>> CHILD_SHIFT}` });
      }
    }
    for (let t = 0; t < m.trees; t++) {
      let sum = 0;
      const reserved = treeIsReserved(Atomics.load(m.treeCounters, t));
      for (let c = childLo(t); c < childHi(m, t); c++) {
        const word = Atomics.load(m.childCounters, c);
        const set = countSet(m.bits, c * BITFIELD_WORDS);
        const where = `allocator child ${c}`;
        if ((word & ~(CHILD_FREE_MASK | CHILD_HUGE)) !== 0) out.push({ code: 'CHILD_COUNTER', what: `counter 0x${(word >>> 0).toString(16)} has stray bits`, where });
        if (childIsHuge(word)) {
          if (childFree(word) !== 0 || set !== 0) out.push({ code: 'HUGE', what: `huge child with free count ${childFree(word)} and ${set} bit(s) set`, where });
          continue;
        }
        // In a reserved tree the owner may hold units of one child (holdUnits): its counter reads low, never high.
        const held = reserved && childFree(word) < CHILD_FRAMES - set;
        if (childFree(word) !== CHILD_FRAMES - set && !held) out.push({ code: 'CHILD_COUNTER', what: `counter says ${childFree(word)} free, bitfield says ${CHILD_FRAMES - set}`, where });
        sum += CHILD_FRAMES - set;
      }
      const word = Atomics.load(m.treeCounters, t);
      const where = `allocator tree ${t}`;
      if (treeIsReserved(word)) out.push({ code: 'TREE_RESERVED', what: 'tree still reserved by a thread that no longer exists', where });
      else if (treeFree(word) !== sum) out.push({ code: 'TREE_COUNTER', what: `counter says ${treeFree(word)} free, children say ${sum}`, where });
    }
    return out;
  }
}
