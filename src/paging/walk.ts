/**
 * The one table walker (as xv6 routes every page-table access through
 * `walk()`). Every walk and every install of an inner entry in morsels,
 * registries, address spaces and the conventional model goes through here:
 *
 *   descend(root, level, addr, stopLevel)  follow present entries down to the
 *                                          table at stopLevel (or -1)
 *   ensureChild(table, index, point)       the child, created if missing:
 *                                          allocate, zero, CAS, free on loss
 *   forEachPresent(table, visit)           every present entry, once (a native scan)
 *   forEachOwned(table, visit)             the same for a table only the caller uses
 *   ownedPages(table, out, other)          a dying level-1 table's own pages
 *   followHuge(table, index, lo, hi)       a 2 MiB leaf's order-9 frame
 *
 * Trust rule: a frame number read from the region is validated before it is
 * followed. It must lie in [firstAllocatableFrame, frameCount) (never the
 * superblock, boot scratch, allocator metadata, user slots or morsel words,
 * never past the end) and be allocated as an order-0 frame (a free frame is
 * tomorrow's someone else's; an order-9 block is never a table or 4 KiB
 * page, only a 2 MiB leaf, and a 2 MiB leaf is always one: followHuge). A
 * violation throws ECORRUPT naming the table frame and index; nothing is
 * followed, nothing is written. Every loop is bounded by ENTRIES_PER_TABLE
 * and the level count. Hot walks with their own loop (the MMU) use
 * validTableFrame, the range half of the rule, which costs two compares.
 *
 * What this cannot see: a PFN flipped to another *allocated* frame of the
 * allocatable range (another morsel's page, a registry table). That is a
 * cross-link only a whole-region scan detects (`morsel check`: DUPLICATE).
 */
import { MorselError, assert } from '../errors.js';
import { AllocatorView, type FrameAllocator } from '../alloc/llfree.js';
import { SUPERBLOCK_FRAME, firstAllocatableFrame } from '../physical/layout.js';
import { OWNED_ROOT_SLOTS, sealRoots } from '../physical/superblock.js';
import type { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import { crashPoint, type CrashPointName } from '../crash-point.js';
import { nativePresentEntries } from '../physical/native.js';
import { HUGE_LEAF_FLAGS, INNER_FLAGS, RW, isHugeLeaf, isPresent, makeHi, makeLo, pfnOf } from './entry.js';

/** The address bits one level indexes, and so the entries of one 4 KiB table. */
export const INDEX_BITS = 9;
export const ENTRIES_PER_TABLE = 1 << INDEX_BITS;
/** The most paging levels a walk crosses (5-level paging). */
export const MAX_LEVELS = 5;
/**
 * 2 MiB leaves (huge pages): entries of a level-2 table with PS set, each
 * an order-9 frame of HUGE_FRAMES 4 KiB frames (src/morsel/huge.ts).
 */
export const HUGE_LEVEL = 2;
export const HUGE_FRAMES = ENTRIES_PER_TABLE;
export const HUGE_ALLOC_ORDER = 9;

/** Whether present entry `lo` of a level-`level` table is a 2 MiB leaf (PS at HUGE_LEVEL), not a table or page. */
export const isLeafEntry = (level: number, lo: number): boolean => level === HUGE_LEVEL && isHugeLeaf(lo);

/**
 * Bytes covered by one entry of a level-L table (L = 1..5), index L; index 0
 * is one byte. Precomputed: `2 ** x` with a variable exponent is a slow
 * pow() call on the translate path. 2^48 is exact below 2^53.
 */
const LEVEL_SPAN = [1, 2 ** 12, 2 ** 21, 2 ** 30, 2 ** 39, 2 ** 48, 2 ** 57];

/** Bytes covered by one entry of a level-`level` table. */
export const levelSpan = (level: number): number => LEVEL_SPAN[level];

/** The addon's presentEntries, or null without the addon (forEachPresent then scans in JavaScript). */
const presentEntries = nativePresentEntries();
/** How deep forEachPresent calls nest: a walk descends at most MAX_LEVELS tables; a visitor walking a second tree (a clone's copy) doubles that. */
const MAX_PRESENT_DEPTH = 4 * MAX_LEVELS;

/** Index into the level-`level` table for byte `addr` (level 1 = PT). Division, not shifts: addresses exceed 32 bits. */
export function indexAt(addr: number, level: number): number {
  return Math.floor(addr / LEVEL_SPAN[level]) % ENTRIES_PER_TABLE;
}

/**
 * The cheap half of the trust rule, for hot walks that keep their own loop
 * (the MMU): whether `frame` lies in the allocatable range [first, end).
 * Inline-able; no allocation.
 */
export function validTableFrame(frame: number, first: number, end: number): boolean {
  return frame >= first && frame < end;
}

/** [first, end) of the frames an entry may reference in `region`: compute once, pass to validTableFrame. */
export function allocatableRange(region: Region): { first: number; end: number } {
  return { first: firstAllocatableFrame(region.frameCount), end: region.frameCount };
}

/** Visitor of one present entry: its index and its two halves. */
export type EntryVisitor = (index: number, lo: number, hi: number) => void;

export class Walker {
  readonly first: number;
  readonly end: number;
  private readonly view: AllocatorView;
  /** Frames this walker linked by a winning CAS (population reports the difference). */
  linkedFrames = 0;
  /** forEachPresent's (index, lo, hi) triples, one buffer per nesting depth (visitors descend): this thread's, never in the region. */
  private readonly presentBuffers: Int32Array[] = [];
  private presentDepth = 0;

  constructor(
    readonly region: Region,
    readonly alloc: FrameAllocator,
  ) {
    this.first = firstAllocatableFrame(region.frameCount);
    this.end = region.frameCount;
    this.view = new AllocatorView(region);
  }

  /**
   * Whether `frame` may be followed: allocatable range and allocated as an
   * order-0 frame (every table and page of a morsel, registry or space is
   * one; a frame inside an order-9 block is someone's bulk data).
   */
  trusted(frame: number): boolean {
    return frame >= this.first && frame < this.end && this.view.isSmallAllocated(frame);
  }

  /** The frame a present entry (lo, hi) at `table[index]` references, validated. */
  follow(table: Frame, index: number, lo: number, hi: number): Frame {
    const frame = pfnOf(lo, hi);
    if (!this.trusted(frame)) this.corrupt(table, index, frame);
    return frame as Frame;
  }

  /** Whether `frame` may be a 2 MiB leaf: the first frame of an allocated order-9 block inside the allocatable range. */
  trustedHuge(frame: number): boolean {
    return frame >= this.first && frame + HUGE_FRAMES <= this.end && this.view.isHugeBlock(frame);
  }

  /** The order-9 frame a 2 MiB leaf (lo, hi) at `table[index]` references, validated. */
  followHuge(table: Frame, index: number, lo: number, hi: number): Frame {
    const frame = pfnOf(lo, hi);
    if (!this.trustedHuge(frame)) throw new MorselError('ECORRUPT', `table frame ${table} entry ${index} is a 2 MiB leaf of frame ${frame}, ${this.whyHuge(frame)}`);
    return frame as Frame;
  }

  /** The child of present entry (lo, hi) at `table[index]` of a level-`level` table, validated: a 2 MiB leaf's order-9 frame, or a table or page. */
  followChild(table: Frame, index: number, lo: number, hi: number, level: number): Frame {
    return isLeafEntry(level, lo) ? this.followHuge(table, index, lo, hi) : this.follow(table, index, lo, hi);
  }

  /** Whether the child of present entry (lo, hi) of a level-`level` table may be followed (followChild would not throw). */
  trustedChild(level: number, lo: number, hi: number): boolean {
    const frame = pfnOf(lo, hi);
    return isLeafEntry(level, lo) ? this.trustedHuge(frame) : this.trusted(frame);
  }

  /** A root frame read from a root cell, validated like an entry; `what` names the cell (built only on failure). */
  root(frame: number, what: () => string): Frame {
    if (!this.trusted(frame)) {
      throw new MorselError('ECORRUPT', `${what()} holds frame ${frame}, ${this.why(frame)}`);
    }
    return frame as Frame;
  }

  /** The child of `table[index]`, or -1 if the entry is not present. */
  child(table: Frame, index: number): number {
    const lo = this.region.loadLo(table, index);
    if (!isPresent(lo)) return -1;
    return this.follow(table, index, lo, this.region.loadHi(table, index));
  }

  /**
   * Follows present entries from `root` (a level-`level` table) towards
   * `addr` and returns the level-`stopLevel` table reached (stopLevel 0: the
   * data page), or -1 at the first missing entry. Never allocates.
   */
  descend(root: Frame, level: number, addr: number, stopLevel: number): number {
    assert(level <= MAX_LEVELS && stopLevel >= 0 && stopLevel <= level, 'descend levels in range');
    let table: number = root;
    for (let l = level; l > stopLevel; l--) {
      const index = indexAt(addr, l);
      const lo = this.region.loadLo(table as Frame, index);
      if (!isPresent(lo)) return -1;
      const hi = this.region.loadHi(table as Frame, index);
      if (isLeafEntry(l, lo)) {
        // A 2 MiB leaf: the data frame lies inside it; there is no table below.
        return stopLevel === 0 ? this.followHuge(table as Frame, index, lo, hi) + indexAt(addr, 1) : -1;
      }
      table = this.follow(table as Frame, index, lo, hi);
    }
    return table;
  }

  /**
   * The child of `table[index]`, created if missing: allocate, zero, CAS;
   * a lost CAS frees the fresh frame and takes the winner's. `point` is the
   * crash window between the zeroing and the CAS (null for volatile-only
   * structures), `lostPoint` (optional)
   * the one between a lost CAS and the free.
   *
   * # Warning
   * Between alloc and the CAS the fresh frame is allocated and unreachable:
   * a crash there leaves it for recovery (reachability rebuild) to reclaim.
   */
  ensureChild(table: Frame, index: number, point: CrashPointName | null, lostPoint: CrashPointName | null = null): Frame {
    const region = this.region;
    let lo = region.loadLo(table, index);
    if (isPresent(lo)) return this.follow(table, index, lo, region.loadHi(table, index));
    const fresh = this.createChild(table, index, point, lostPoint);
    if (fresh >= 0) return fresh as Frame;
    lo = region.loadLo(table, index);
    if (!isPresent(lo)) this.notZero(table, index); // lost to a writer that left garbage, not a child
    return this.follow(table, index, lo, region.loadHi(table, index));
  }

  /**
   * The creating half of ensureChild for the empty entry `table[index]`:
   * allocate, zero, CAS; returns the new child, or -1 when another writer
   * filled the entry first (the fresh frame is freed; the caller reads the
   * entry again, which may be a table or a 2 MiB leaf).
   */
  createChild(table: Frame, index: number, point: CrashPointName | null, lostPoint: CrashPointName | null = null): number {
    const region = this.region;
    if (!this.stillEmpty(table, index)) return -1;
    const fresh = this.zeroedFrame();
    if (point !== null) crashPoint(point);
    if (region.casEntry(table, index, 0, 0, makeLo(fresh, INNER_FLAGS), makeHi(fresh, 0))) {
      this.linkedFrames++;
      return fresh;
    }
    if (lostPoint !== null) crashPoint(lostPoint);
    this.alloc.free(fresh); // another thread was faster: its child stands
    return -1;
  }

  /**
   * Before a creator allocates for the entry `table[index]` it saw empty:
   * true if it still is; false if another writer linked something since
   * (a lost race: read the entry again). Writers keep a non-present entry
   * all zero: anything else is damage no CAS could replace (ECORRUPT).
   */
  stillEmpty(table: Frame, index: number): boolean {
    const region = this.region;
    const lo = region.loadLo(table, index);
    if (isPresent(lo)) return false;
    if (lo === 0 && region.loadHi(table, index) === 0) return true;
    if (isPresent(region.loadLo(table, index))) return false; // the hi half of a link in progress
    this.notZero(table, index);
  }

  /**
   * Links `frame`, allocated and already filled by the caller, into the
   * empty entry `table[index]` by one CAS. False when the entry is taken
   * (the caller still owns `frame`). For builders of private trees (the
   * image loader): no zeroing of a frame about to be overwritten. With
   * `huge`, `frame` is a filled order-9 frame linked as a 2 MiB leaf
   * (`table` is a level-2 table).
   */
  link(table: Frame, index: number, frame: Frame, huge = false): boolean {
    if (!this.region.casEntry(table, index, 0, 0, makeLo(frame, huge ? HUGE_LEAF_FLAGS : INNER_FLAGS), makeHi(frame, 0))) return false;
    this.linkedFrames += huge ? HUGE_FRAMES : 1;
    return true;
  }

  /**
   * Links frames[from, from + count) as the 4 KiB pages at entries
   * index, index + 1, ... of level-1 table `table` of a tree only the caller
   * writes (the image loader's PENDING morsel), with plain stores: the high
   * word, then the low word that holds the present bit. All or nothing: false,
   * with nothing written, when one of the entries is taken. The caller
   * publishes the tree with a seq-cst atomic afterwards (commitCreate's CAS).
   */
  linkPrivate(table: Frame, index: number, frames: readonly number[], from: number, count: number): boolean {
    assert(index >= 0 && count >= 0 && index + count <= ENTRIES_PER_TABLE && from + count <= frames.length, 'linkPrivate stays inside one table and the frame list');
    if (!this.region.writable) this.region.denyWrite();
    const words = this.region.words(table);
    const base = this.region.wordIndex(table, 2 * index);
    for (let i = 0; i < count; i++) if ((words[base + 2 * i] | words[base + 2 * i + 1]) !== 0) return false;
    for (let i = 0; i < count; i++) {
      const frame = frames[from + i];
      words[base + 2 * i + 1] = makeHi(frame, 0);
      words[base + 2 * i] = makeLo(frame, INNER_FLAGS);
    }
    this.linkedFrames += count;
    return true;
  }

  /** A fresh zeroed frame from the allocator (ENOSPC when none is left). */
  zeroedFrame(): Frame {
    const frame = this.alloc.alloc(0);
    this.region.zeroFrame(frame);
    return frame;
  }

  /**
   * Calls `visit(index, lo, hi)` for each present entry of `table`, in index
   * order, as read by one 64-bit acquire load per entry (the addon's
   * presentEntries, all entries before the first visit; ~1 ns an entry,
   * against ~12 ns for two Atomics.load) or, without the addon, two atomic
   * loads per entry as it is reached. Either is a snapshot of each entry, so
   * a visitor sees the entry as it was read and changes only its own.
   * Frames are not validated: use follow() on what you descend into.
   */
  forEachPresent(table: Frame, visit: EntryVisitor): void {
    const words = this.region.words(table);
    const base = this.region.wordIndex(table, 0);
    if (presentEntries !== null) {
      assert(this.presentDepth < MAX_PRESENT_DEPTH, 'forEachPresent nests no deeper than the tables do');
      const out = (this.presentBuffers[this.presentDepth] ??= new Int32Array(3 * ENTRIES_PER_TABLE));
      const n = presentEntries(words, base, out);
      if (n >= 0) {
        this.presentDepth++;
        try {
          for (let i = 0; i < n; i++) visit(out[3 * i], out[3 * i + 1], out[3 * i + 2]);
        } finally {
          this.presentDepth--;
        }
        return;
      }
    }
    for (let index = 0; index < ENTRIES_PER_TABLE; index++) {
      const lo = Atomics.load(words, base + 2 * index);
      if (isPresent(lo)) visit(index, lo, Atomics.load(words, base + 2 * index + 1));
    }
  }

  /**
   * forEachPresent for a table whose caller alone reads and writes it (a
   * destroy after its decision), with plain reads: every write to the table
   * happened before the caller's decision (a seq-cst atomic), and none can
   * follow it. (An atomic load costs ~6 ns here: 3 µs per table.)
   */
  forEachOwned(table: Frame, visit: EntryVisitor): void {
    const words = this.region.words(table);
    const base = this.region.wordIndex(table, 0);
    for (let index = 0; index < ENTRIES_PER_TABLE; index++) {
      const lo = words[base + 2 * index];
      if (isPresent(lo)) visit(index, lo, words[base + 2 * index + 1]);
    }
  }

  /**
   * For a level-1 table whose caller alone reads and writes it (as
   * forEachOwned): puts the frames of its present writable entries (pages
   * it references alone) into `out` and returns their count; `other` gets
   * every other present entry (shared copy-on-write pages). Frames are not
   * validated (freeSmallBatch refuses what is not an allocated order-0
   * frame).
   */
  ownedPages(table: Frame, out: Int32Array, other: EntryVisitor): number {
    assert(out.length >= ENTRIES_PER_TABLE, 'ownedPages has room for a whole table');
    // forEachOwned's loop, not a call through it: with a second callback shape
    // there, destroying the pipeline's 4 KiB buffers took 4.6-5.6 ms, not 2.2.
    const words = this.region.words(table);
    const base = this.region.wordIndex(table, 0);
    let count = 0;
    for (let index = 0; index < ENTRIES_PER_TABLE; index++) {
      const lo = words[base + 2 * index];
      if (!isPresent(lo)) continue;
      const hi = words[base + 2 * index + 1];
      if ((lo & RW) === 0) other(index, lo, hi);
      else out[count++] = pfnOf(lo, hi);
    }
    return count;
  }

  private why(frame: number): string {
    if (!(frame >= this.first && frame < this.end)) return `outside the allocatable range [${this.first}, ${this.end})`;
    return this.view.isAllocated(frame) ? 'which lies in an order-9 block' : 'which the allocator has free';
  }

  private whyHuge(frame: number): string {
    if (!(frame >= this.first && frame + HUGE_FRAMES <= this.end)) return `outside the allocatable range [${this.first}, ${this.end})`;
    return 'which is not an allocated order-9 block';
  }

  private notZero(table: Frame, index: number): never {
    throw new MorselError('ECORRUPT', `table frame ${table} entry ${index} is not present but not zero`);
  }

  private corrupt(table: Frame, index: number, frame: number): never {
    throw new MorselError('ECORRUPT', `table frame ${table} entry ${index} references frame ${frame}, ${this.why(frame)}`);
  }
}

/**
 * Format time, before any other use of the region: one allocated, zeroed
 * table per owned root slot, sealed into the superblock (root checksum).
 * Root slots never change afterwards.
 */
export function formatRootTables(walker: Walker): void {
  const roots: number[] = [];
  for (let slot = 0; slot < OWNED_ROOT_SLOTS; slot++) roots.push(walker.zeroedFrame());
  sealRoots(walker.region.frame(SUPERBLOCK_FRAME as Frame), roots);
}

/**
 * Open time: every owned root slot's table is allocated (the superblock
 * check already proved them distinct, allocatable and checksummed).
 * ECORRUPT naming the slot otherwise.
 */
export function checkRootTables(walker: Walker): void {
  for (let slot = 0; slot < OWNED_ROOT_SLOTS; slot++) walker.root(walker.region.loadRootFrame(slot), () => `superblock root slot ${slot}`);
}
