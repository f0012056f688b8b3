/**
 * Copy-on-write of morsel subtrees (table-level COW, as On-demand-fork):
 * a clone shares the source's children; a write through either copy copies
 * only the path it writes, one table per level, then the 4 KiB page. A table
 * or page whose count dropped to 1 is reused in place, never copied.
 *
 * Representation: an inner entry without RW references a child that may be
 * shared (src/paging/entry.ts: SHARED_FLAGS, SHARE_TOGGLE); how many tables
 * share a frame is its reference count (src/alloc/refcount: absent = 1, so
 * unshared frames cost nothing). An entry WITH RW references a child only
 * this table references: the invariant every fast path relies on.
 *
 *   clone:     root R -> fresh R' with R's entries, write-protected in both;
 *              the counts of the shared children are deferred (lazy.ts:
 *              raised when either side first writes there, or is destroyed)
 *   write:     top-down; at an entry without RW: count 1 -> set RW in place;
 *              count >= 2 -> copy the child (a table: lazily, as a clone
 *              copies a root; a page: its bytes), CAS the entry to the
 *              copy, then count-1 on the original (freeing it if that was
 *              the last)
 *   destroy:   an entry with RW: free the child's subtree; without: count-1,
 *              descend and free only when it reaches 0
 *
 * Crash consistency: a deferred reference is counted BEFORE its LAZY_REF
 * bit goes, and a count is lowered AFTER its reference is unlinked, so a
 * crash leaves counts too high (a leak), never too low (a frame freed while
 * referenced). Recovery recomputes every count from the live trees, where a
 * LAZY_REF entry is a reference like any (src/recovery).
 *
 * # Warning (the in-place race): "count is 1, so set RW" reads two words.
 * At an entry marked LAZY_SRC every decision runs under the source table's
 * lock, which a copy's capture (lazy.ts) holds. An entry a capture finds
 * shared without LAZY_SRC may meet a lock-free reuser: the capture's CAS
 * always changes the entry's value (SHARE_TOGGLE), so a reuser's CAS made
 * with the value read before fails; a reuser whose CAS won first is a write
 * that happened before the copy (a clone then waits for access sections:
 * Names.clone).
 *
 * # Warning (freed under a stale translation): the shootdown epoch makes
 * every LATER access section see a copy, but one already running in
 * another thread or process keeps its translations until it ends. When a
 * copy (or a destroy) drops an original's last reference, the original is
 * freed at once; unlike unmap, which waits for the readers of its space, a
 * drop here waits for no one, so such a section could write into a frame
 * already reused. It needs a section that spans another sharer's copy and
 * then the last sharer's destroy; a region-wide reader epoch would close it.
 *
 * 2 MiB leaves (PS entries of level-2 tables, order-9 frames) are shared,
 * reused and copied like 4 KiB pages, 2 MiB at a time; a leaf's count is
 * keyed by its first frame. With no order-9 frame free, the writer's copy
 * is split into a level-1 table of 4 KiB pages instead.
 */
import { MorselError, assert, isMorselError } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import { HUGE_LEAF_FLAGS, INNER_FLAGS, LAZY_BITS, LAZY_REF, LAZY_SRC, P, RW, SHARE_TOGGLE, isPresent, makeHi, makeLo } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, HUGE_ALLOC_ORDER, HUGE_FRAMES, HUGE_LEVEL, isLeafEntry, type Walker } from '../paging/walk.js';
import { ROOT_SLOT_REFCOUNTS } from '../physical/superblock.js';
import type { Region } from '../physical/region.js';
import { openRefCounts, type RefCountTable } from '../alloc/refcount/index.js';
import { crashPoint, type CrashPointName } from '../crash-point.js';
import type { Frame } from '../units.js';
import { LazyClones } from './lazy.js';

/** Attempts at making one entry writable; each failure means another thread changed the entry. */
const COW_RETRIES = 64;

/**
 * Module copies of the entry bits for capture()'s loop (and protectedLo in
 * it): V8 checks an imported binding on every use (it may still be
 * uninitialized), while it folds a module constant; measured here: 3.2 vs
 * 1.3 µs per 512 entries.
 */
const PROTECT_RW = RW;
const PROTECT_TOGGLE = SHARE_TOGGLE;
const CP = P;
const CREF = LAZY_REF;
const CSRC = LAZY_SRC;
const CAPTURE_DIRECT = RW | LAZY_SRC;
const CENTRIES = ENTRIES_PER_TABLE;

/** The write-protected form of a present inner entry's low half (RW cleared, toggle flipped). */
const protectedLo = (lo: number): number => ((lo & ~PROTECT_RW) ^ PROTECT_TOGGLE) | 0;

/** A shared entry's low half made writable in place (reuse: toggle and lazy bits cleared). */
const writableLo = (lo: number): number => (lo | RW) & ~(SHARE_TOGGLE | LAZY_BITS);

/** createHuge's answer when no order-9 frame is free: the caller builds 4 KiB leaves instead. */
const NO_HUGE_FRAME = -2;

export class Cow {
  private table: RefCountTable | null = null;
  private lazyClones: LazyClones | null = null;
  /** Set by writableChild: the frame it returned is a 2 MiB leaf's order-9 frame, not a table. */
  leafHuge = false;

  constructor(
    readonly region: Region,
    readonly alloc: FrameAllocator,
    readonly walker: Walker,
  ) {}

  /** The region's reference-count table (root slot 1), opened on first use. */
  get refs(): RefCountTable {
    this.table ??= openRefCounts(this.region, this.alloc, this.region.loadRootFrame(ROOT_SLOT_REFCOUNTS) as Frame);
    return this.table;
  }

  /** The region's deferred clone counts (lazy.ts), opened on first use. */
  get lazy(): LazyClones {
    this.lazyClones ??= new LazyClones(this.region, this.alloc, this.walker, this.region.loadRootFrame(ROOT_SLOT_REFCOUNTS) as Frame, () => this.refs);
    return this.lazyClones;
  }

  /**
   * The child of `table[idx]` (a level-`level` table; level 1: the child is a
   * data page), writable through this entry: created if missing, reused if
   * this entry is its only reference, else copied. Precondition: `table`
   * itself is private to the caller's morsel (callers go top-down). At an
   * entry of a lazy source (LAZY_SRC) the decision runs under the source's
   * lock, after its clones' references through the entry are counted.
   */
  writableChild(table: Frame, idx: number, level: number, point: CrashPointName | null, lostPoint: CrashPointName | null, huge = false): Frame {
    for (let attempt = 0; attempt < COW_RETRIES; attempt++) {
      const lo = this.region.loadLo(table, idx);
      const got =
        (lo & (RW | LAZY_SRC)) === LAZY_SRC
          ? this.lazy.locked(table, () => {
              this.lazy.materializeClonesAt(table, idx, level);
              return this.writableStep(table, idx, level, point, lostPoint, huge, true);
            })
          : this.writableStep(table, idx, level, point, lostPoint, huge, false);
      if (got >= 0) return got as Frame;
    }
    throw new MorselError('EBUSY', `table frame ${table} entry ${idx} kept changing during a copy-on-write fault`);
  }

  /** One attempt of writableChild: the child, or -1 when the entry changed (or needs the source's lock: `sourceLocked` false). */
  private writableStep(table: Frame, idx: number, level: number, point: CrashPointName | null, lostPoint: CrashPointName | null, huge: boolean, sourceLocked: boolean): number {
    const region = this.region;
    this.leafHuge = false; // each attempt decides afresh (writableHuge sets it)
    const lo = region.loadLo(table, idx);
    if ((lo & LAZY_BITS) !== 0 && (lo & RW) === 0) {
      if ((lo & LAZY_REF) !== 0) {
        this.lazy.materializeEntry(table, idx, level); // a clone's own reference: counted, then decided as any
        return -1;
      }
      if (!sourceLocked) return -1; // captured by a clone since the caller looked: decide under the lock
    }
    if (isLeafEntry(level, lo)) return this.writableHuge(table, idx, lo);
    if ((lo & (P | RW)) === (P | RW)) return this.walker.follow(table, idx, lo, region.loadHi(table, idx));
    if (!isPresent(lo)) {
      if (huge && level === HUGE_LEVEL) {
        const leaf = this.createHuge(table, idx, lostPoint);
        if (leaf >= 0) {
          this.leafHuge = true;
          return leaf;
        }
        if (leaf !== NO_HUGE_FRAME) return -1; // lost the CAS: read the winner's entry
      }
      return this.walker.createChild(table, idx, point, lostPoint);
    }
    const hi = region.loadHi(table, idx);
    const child = this.walker.follow(table, idx, lo, hi);
    if (this.refs.get(child) <= 1) {
      // Ours alone: reuse in place. The CAS fails if a clone write-protected it since `lo` was read.
      return region.casEntry(table, idx, lo, hi, writableLo(lo), hi) ? child : -1;
    }
    const copy = this.copyOf(child, level - 1);
    crashPoint('cow:before-link');
    if (region.casEntry(table, idx, lo, hi, makeLo(copy, INNER_FLAGS), makeHi(copy, 0))) {
      crashPoint('cow:after-link');
      // Other threads and processes may hold translations through the original: they flush.
      region.bumpShootdown();
      this.drop(child, level - 1);
      return copy;
    }
    this.drop(copy, level - 1); // lost to another writer or a clone: undo the copy's counts, free it
    return -1;
  }

  /**
   * A copy of `src` (a level-`level` table, level >= 1: a morsel's root, or
   * a shared table a write fault copies): a fresh table holding src's
   * entries, write-protected on both sides, with no count raised (lazy.ts:
   * the copy's entries carry LAZY_REF, src's LAZY_SRC). One pass over one
   * table, whatever lies below. A source that is itself a lazy copy gets its
   * references counted and is detached first.
   */
  private lazyCopy(src: Frame, level: number): Frame {
    const lazy = this.lazy;
    if (lazy.sourceOf(src) >= 0) {
      lazy.materializeAll(src, level);
      lazy.detach(src);
    }
    const copy = this.alloc.alloc(0); // not zeroed: capture() stores every entry
    let captured = false;
    try {
      // Attached after the capture (both under the lock): a crash in between leaves an unreachable frame, never a half-built clone in the list.
      lazy.locked(src, () => {
        captured = true; // from here on `copy` is a valid table (capture() empties what it does not reach)
        this.capture(src, copy);
        lazy.attach(src, copy);
      });
    } catch (e) {
      if (captured) this.freeSubtree(copy, level); // unattached: its LAZY_REF references stay uncounted
      else this.alloc.free(copy); // the lock (or its slot) failed first: the frame holds garbage, nothing else
      throw e;
    }
    return copy;
  }

  /**
   * Under src's lock: every present entry of src write-protected with
   * LAZY_SRC and stored in `copy` with LAZY_REF; every other entry of
   * `copy` (not zeroed before) stored empty. Writable and LAZY_SRC
   * entries change only under this lock (lazy.ts), so they are stored
   * plainly; a shared entry without LAZY_SRC may meet a lock-free fault,
   * so it is captured by CAS (SHARE_TOGGLE flips: the in-place race).
   */
  private capture(src: Frame, copy: Frame): void {
    const region = this.region;
    const w = region.words(src);
    const base = region.wordIndex(src, 0);
    const cw = region.words(copy);
    const cbase = region.wordIndex(copy, 0);
    let idx = 0;
    try {
      for (; idx < CENTRIES; idx++) {
        const i = base + 2 * idx;
        const ci = cbase + 2 * idx;
        let lo = w[i];
        if ((lo & CP) !== 0 && ((lo & CAPTURE_DIRECT) === 0 || (lo & CREF) !== 0)) lo = this.captureShared(src, idx);
        else if ((lo & CP) !== 0) {
          lo = (protectedLo(lo) | CSRC) | 0;
          w[i] = lo; // stable under the lock: a plain store (ordered before the unlock's atomic store)
        }
        // A hole stays one: a fill from now on is a write after the clone.
        cw[ci] = (lo & CP) === 0 ? 0 : (lo & ~CSRC) | CREF;
        cw[ci + 1] = (lo & CP) === 0 ? 0 : w[i + 1];
      }
    } catch (e) {
      for (; idx < CENTRIES; idx++) cw[cbase + 2 * idx] = cw[cbase + 2 * idx + 1] = 0; // a valid table for freeSubtree
      throw e;
    }
    crashPoint('clone:after-capture');
  }

  /** capture() of a shared entry without LAZY_SRC (a lock-free fault may race): by CAS. Returns the captured low half, or 0 for a hole. */
  private captureShared(src: Frame, idx: number): number {
    const region = this.region;
    for (let attempt = 0; attempt < COW_RETRIES; attempt++) {
      const lo = region.loadLo(src, idx);
      if (!isPresent(lo)) return 0;
      assert((lo & LAZY_REF) === 0, 'a clone source holds no uncounted reference');
      const hi = region.loadHi(src, idx);
      const shared = (protectedLo(lo) | LAZY_SRC) | 0;
      if (region.casEntry(src, idx, lo, hi, shared, hi)) return shared;
    }
    throw new MorselError('EBUSY', `table frame ${src} entry ${idx} kept changing while being cloned`);
  }

  /**
   * A 2 MiB leaf in the empty entry `table[idx]` (level 2): an order-9
   * frame, zeroed, linked by one CAS. Returns it, -1 when another writer
   * filled the entry first (the frame is freed), or NO_HUGE_FRAME when no
   * order-9 frame is free.
   * # Warning: between alloc and the CAS the block is allocated and
   * unreachable; a crash there leaves it to recovery, as for any frame.
   */
  private createHuge(table: Frame, idx: number, lostPoint: CrashPointName | null): number {
    if (!this.walker.stillEmpty(table, idx)) return -1;
    let leaf: Frame;
    try {
      leaf = this.alloc.alloc(HUGE_ALLOC_ORDER);
    } catch (e) {
      if (isMorselError(e, 'ENOSPC')) return NO_HUGE_FRAME;
      throw e;
    }
    this.region.zeroFrames(leaf, HUGE_FRAMES);
    crashPoint('huge:before-link');
    if (this.region.casEntry(table, idx, 0, 0, makeLo(leaf, HUGE_LEAF_FLAGS), makeHi(leaf, 0))) {
      this.walker.linkedFrames += HUGE_FRAMES;
      return leaf;
    }
    if (lostPoint !== null) crashPoint(lostPoint);
    this.alloc.free(leaf, HUGE_ALLOC_ORDER);
    return -1;
  }

  /**
   * The existing 2 MiB leaf `lo` at `table[idx]`, writable through this
   * entry: as it is (RW), reused in place (count 1) or copied whole (when
   * no order-9 frame is free: split into a level-1 table of 512 private
   * 4 KiB copies). Returns the leaf's frame (leafHuge set) or the split
   * table's (leafHuge clear), or -1 when the entry changed meanwhile (retry).
   */
  private writableHuge(table: Frame, idx: number, lo: number): number {
    const region = this.region;
    const hi = region.loadHi(table, idx);
    const leaf = this.walker.followHuge(table, idx, lo, hi);
    this.leafHuge = true;
    if (lo & RW) return leaf;
    if (this.refs.get(leaf) <= 1) return region.casEntry(table, idx, lo, hi, writableLo(lo), hi) ? leaf : -1;
    let copy: Frame;
    try {
      copy = this.copyOf(leaf, 0, true);
    } catch (e) {
      if (!isMorselError(e, 'ENOSPC')) throw e;
      copy = this.splitCopy(leaf);
      this.leafHuge = false;
    }
    crashPoint('cow:before-link');
    if (!region.casEntry(table, idx, lo, hi, makeLo(copy, this.leafHuge ? HUGE_LEAF_FLAGS : INNER_FLAGS), makeHi(copy, 0))) {
      if (this.leafHuge) this.alloc.free(copy, HUGE_ALLOC_ORDER);
      else this.freeSubtree(copy, 1);
      return -1;
    }
    crashPoint('cow:after-link');
    region.bumpShootdown();
    this.drop(leaf, 0, true);
    return copy;
  }

  /**
   * A private level-1 table of 512 fresh 4 KiB copies of the 2 MiB leaf
   * `leaf` (a copy-on-write fault with no order-9 frame free). Unreachable
   * until linked; ENOSPC frees what it took.
   */
  private splitCopy(leaf: Frame): Frame {
    const split = this.walker.zeroedFrame();
    try {
      for (let i = 0; i < HUGE_FRAMES; i++) {
        const page = this.alloc.alloc(0);
        this.region.copyFrames((leaf + i) as Frame, page, 1);
        this.region.storeEntry(split, i, makeLo(page, INNER_FLAGS), makeHi(page, 0));
      }
    } catch (e) {
      this.freeSubtree(split, 1);
      throw e;
    }
    return split;
  }

  /**
   * A fresh private copy of `frame`: a data page at level 0 (with `huge`, a
   * 2 MiB leaf's order-9 frame), copied; a level-`level` table, a lazy copy
   * (lazyCopy: its children become shared, their counts deferred).
   */
  copyOf(frame: Frame, level: number, huge = false): Frame {
    if (level > 0) return this.lazyCopy(frame, level);
    const copy = this.alloc.alloc(huge ? HUGE_ALLOC_ORDER : 0);
    this.region.copyFrames(frame, copy, huge ? HUGE_FRAMES : 1);
    return copy;
  }

  /**
   * Gives up one reference to `frame` (a level-`level` table, a level-0
   * page, or with `huge` a 2 MiB leaf) that is no longer linked from where
   * it was counted. The last reference frees it, and a table's children
   * lose one reference each.
   */
  drop(frame: Frame, level: number, huge = false): void {
    if (this.refs.decrement(frame) > 0) return;
    if (huge) this.alloc.free(frame, HUGE_ALLOC_ORDER);
    else this.freeSubtree(frame, level);
  }

  /**
   * Frees `frame` and what only it references: children behind RW entries
   * are private (freed), the others lose one reference (a lazy copy's
   * LAZY_REF ones none: lazy.release detaches it first; a lazy source's
   * copies get their references counted first). Nothing references `frame`
   * any more, so its entries need no unlinking: after a crash recovery only
   * follows what live trees reach.
   */
  freeSubtree(frame: Frame, level: number): void {
    if (level > 0) {
      this.lazy.release(frame, level);
      this.walker.forEachPresent(frame, (idx, lo, hi) => {
        const child = this.walker.followChild(frame, idx, lo, hi, level);
        const leaf = isLeafEntry(level, lo);
        if ((lo & LAZY_REF) !== 0) return; // a detached clone's uncounted reference (lazy.ts)
        if ((lo & RW) === 0) this.drop(child, level - 1, leaf);
        else if (leaf) this.alloc.free(child, HUGE_ALLOC_ORDER);
        else this.freeSubtree(child, level - 1);
      });
    }
    this.alloc.free(frame);
  }

  /**
   * Recovery and repair (exclusive: no other user, this process's only
   * instance), step 1, before the allocator is rebuilt from reachability
   * (which frees the storage: the scan marks it USED_REBUILT): the table is
   * forgotten (its header zeroed). A crash after this leaves an empty table
   * and unreferenced storage, which the next recovery frees.
   */
  forgetCounts(): void {
    this.region.zeroFrame(this.region.loadRootFrame(ROOT_SLOT_REFCOUNTS) as Frame);
    this.table = null;
    this.lazyClones = null;
  }

  /**
   * Step 2, after the allocator rebuild: stores `shared` (frame ->
   * references, as the scan of the live trees found them) into the empty
   * table. Counts a crash left too high, and a table torn mid-update, are
   * gone. The lazy bits of `lazyTables` (the scan's roots holding them) are
   * cleared: the scan counted LAZY_REF entries as the references they are.
   */
  rebuildCounts(shared: Map<number, number>, lazyTables: Iterable<number>): void {
    for (const [frame, refs] of shared) for (let n = 1; n < refs; n++) this.refs.increment(frame);
    LazyClones.clearBits(this.region, lazyTables); // every LAZY_REF reference is counted now
  }
}
