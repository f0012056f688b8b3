/**
 * Deferred counts for copied tables (issue 13: a clone in O(1) of the
 * source's size, and a write fault's table copy without 512 counts). A copy
 * of table R -> P (a clone's root, or a shared table a write copies) copies
 * R's entries into P write-protected and raises no count; the references P
 * shares are counted when first needed (P: "a clone" below, R: its source):
 *
 *   P's entry   LAZY_REF  this reference is not counted yet
 *   R's entry   LAZY_SRC  clones may hold uncounted references to this child
 *
 *   a write at P[i] (LAZY_REF), or a clone of P:   count+1, then clear the bit
 *   a write at R[i] (LAZY_SRC), under R's lock:     every attached clone's
 *                                                  entry i first, as above
 *   destroy of R: every attached clone's entries first; destroy of P: P is
 *   detached, its LAZY_REF entries are unlinked without a count change
 *
 * So an entry's count is exact whenever anyone decides on it: every decision
 * on a count (reuse in place, copy, free) reads it after the references it
 * covers are counted. P[i] keeps LAZY_REF only while R[i] still names the
 * same child (R materializes P[i] before it changes R[i]).
 *
 * The clones of R hang in a list kept in two registries keyed by table
 * frame, rooted in the reference-count anchor (words W_LAZY_SOURCES and
 * W_LAZY_CLONES), guarded by a lock word in R's slot (refcount/lock.ts:
 * crosses processes, a dead holder's lock is broken):
 *
 *   sources[R]   lo = P | head << 2 (first clone, 0: none)   hi = lock word
 *   clones[P]    lo = P | R << 2                             hi = next clone
 *
 * Two registries, so that a frame freed as a source and reused as a clone
 * never has one slot read both ways (a detach may still hold a stale
 * source's frame number). A source slot stays once made (head 0, unlocked).
 *
 * R's lock is held by: a clone's attach and capture of R's entries, a write
 * fault at an entry of R with LAZY_SRC (materialize, decide, CAS), R's
 * destroy, and detaching a clone of R. With the lock held, R's entries that
 * are writable or carry LAZY_SRC change only under the lock, so a capture
 * stores them plainly; only shared entries without LAZY_SRC (shared by an
 * eager copy, counted) can meet a lock-free fault, and those are captured by
 * CAS with SHARE_TOGGLE flipped (cow.ts, the in-place race).
 *
 * Crash consistency: recovery recomputes every count from the live trees
 * (where a LAZY_REF entry is a reference like any), clears the lazy bits of
 * the tables it names (Scan.lazyTables) and forgets the registries with
 * the anchor; so a crash anywhere in here leaves at worst counts too high or
 * a dead clone attached (a leak until recovery), never a count too low.
 *
 * # Warning
 * Live users go on after a crash until the region is recovered. A lock held
 * by a process killed mid-capture is broken by the next waiter; its clone
 * was not attached yet (the capture comes first), so what remains is source
 * entries marked LAZY_SRC (a lock at their next fault). A clone killed after
 * its attach stays attached: its frame stays allocated (only recovery frees
 * it) and later materializations count its references (a leak until
 * recovery). A write that passed a writable source entry before a capture
 * may land after it, in both copies: writers are not quiesced (Names.clone).
 */
import { MorselError, assert, check } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import { W_LAZY_ATTACHED, W_LAZY_CLONES, W_LAZY_SOURCES } from '../alloc/refcount/anchor.js';
import { holderBits, lockWord, unlockWord } from '../alloc/refcount/lock.js';
import type { RefCountTable } from '../alloc/refcount/index.js';
import { LAZY_REF, LAZY_SRC, P, isPresent } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, type Walker } from '../paging/walk.js';
import type { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import { Registry, type RootCell } from './registry.js';

const FRAME_SHIFT = 2;
/** Frames a slot can name (lo keeps 30 bits for a frame). */
const MAX_SLOT_FRAME = 2 ** 30 - 1;
/** Attempts at one entry's CAS; each failure means another thread changed it. */
const ENTRY_RETRIES = 64;
/** Bound on a list walk: more clones attached to one source than frames is corruption. */
const maxListSteps = (region: Region): number => region.frameCount;

const slotLo = (frame: number): number => (P | (frame << FRAME_SHIFT)) | 0;
const slotFrame = (lo: number): number => lo >>> FRAME_SHIFT;

/** A registry's root cell: anchor word `word` (0: no registry yet). */
function anchorCell(region: Region, anchor: Frame, word: number, name: string): RootCell {
  const words = region.words(anchor);
  const i = region.wordIndex(anchor, word);
  return {
    name: `lazy-clone ${name} (anchor ${anchor})`,
    load: () => Atomics.load(words, i) >>> 0,
    cas: (expect, next) => Atomics.compareExchange(words, i, expect | 0, next | 0) === (expect | 0),
  };
}

const registries = (region: Region, alloc: FrameAllocator, anchor: Frame): [Registry, Registry] => [
  new Registry(region, alloc, anchorCell(region, anchor, W_LAZY_SOURCES, 'sources')),
  new Registry(region, alloc, anchorCell(region, anchor, W_LAZY_CLONES, 'clones')),
];

/** Every frame of the lazy-clone registries anchored at `anchor`, read-only (reachability scans). */
export function forEachLazyTable(region: Region, alloc: FrameAllocator, anchor: Frame, visit: (frame: number) => void): void {
  for (const r of registries(region, alloc, anchor)) r.forEach(() => {}, visit);
}

export class LazyClones {
  private readonly sources: Registry;
  private readonly clones: Registry;
  private readonly anchorWords: Int32Array;
  private readonly attachedWord: number;
  // slot located by locate(): its leaf's words and the index of its lo word
  private sw: Int32Array = new Int32Array(0);
  private si = 0;

  constructor(
    private readonly region: Region,
    alloc: FrameAllocator,
    private readonly walker: Walker,
    anchor: Frame,
    private readonly refs: () => RefCountTable,
  ) {
    [this.sources, this.clones] = registries(region, alloc, anchor);
    this.anchorWords = region.words(anchor);
    this.attachedWord = region.wordIndex(anchor, W_LAZY_ATTACHED);
  }

  /** Points sw/si at `root`'s slot in `registry` (building the path when `create`); false when it has none. */
  private locate(registry: Registry, root: number, create: boolean): boolean {
    const leaf = registry.leaf(root, create);
    if (leaf === null) return false;
    this.sw = this.region.words(leaf);
    this.si = this.region.wordIndex(leaf, 2 * (root % ENTRIES_PER_TABLE));
    return true;
  }

  /** Every frame of the registries' own tables. */
  forEachTable(visit: (frame: number) => void): void {
    this.sources.forEach(() => {}, visit);
    this.clones.forEach(() => {}, visit);
  }

  /** Whether any clone may be attached anywhere (a hint: false means none is). */
  anyAttached(): boolean {
    return Atomics.load(this.anchorWords, this.attachedWord) !== 0;
  }

  /** The source `root` (a clone) is attached to, or -1 when it is none's clone. */
  sourceOf(root: number): number {
    if (!this.anyAttached() || !this.locate(this.clones, root, false)) return -1;
    const lo = Atomics.load(this.sw, this.si);
    return isPresent(lo) ? slotFrame(lo) : -1;
  }

  /** Whether clones are attached to `source` (lock-free; a hint for displays). */
  hasClones(source: number): boolean {
    if (!this.anyAttached() || !this.locate(this.sources, source, false)) return false;
    const lo = Atomics.load(this.sw, this.si);
    return isPresent(lo) && slotFrame(lo) !== 0;
  }

  /**
   * How many clones attached to `source` share its child at `idx` uncounted
   * (LAZY_REF there): what a display adds to the stored count. Walks the
   * clones under the lock; a session that cannot take locks (read-only)
   * walks without it, a racy answer good for a display only.
   */
  private uncountedAt(source: number, idx: number): number {
    if (!this.hasClones(source)) return 0;
    const count = (): number => {
      let n = 0;
      this.forEachClone(source, (clone) => {
        if ((this.region.loadLo(clone, idx) & LAZY_REF) !== 0) n++;
      });
      return n;
    };
    return this.region.writable && this.region.userSlot >= 0 ? this.locked(source as Frame, count) : count();
  }

  /**
   * The references to `table[idx]`'s child (low half `lo`) not counted yet:
   * for a copy's LAZY_REF entry, every copy's through its source's entry
   * idx (this one included); for a source's LAZY_SRC entry, its copies'.
   * Stored count + this = the child's references (displays).
   */
  uncountedRefs(table: Frame, idx: number, lo: number): number {
    if ((lo & LAZY_SRC) !== 0) return this.uncountedAt(table, idx);
    if ((lo & LAZY_REF) === 0) return 0;
    const source = this.sourceOf(table);
    return source < 0 ? 1 : this.uncountedAt(source, idx);
  }

  // --- the source's lock ------------------------------------------------------------------

  /** Runs `fn` holding `source`'s lock (creating its slot, with no clone, on first use). */
  locked<T>(source: Frame, fn: () => T): T {
    check(source <= MAX_SLOT_FRAME, 'EINVAL', () => `copy-on-write shares tables only below frame 2^30 (source frame ${source})`);
    this.locate(this.sources, source, true);
    Atomics.compareExchange(this.sw, this.si, 0, slotLo(0)); // made once; a loser finds the winner's
    const words = this.sw;
    const lock = this.si + 1;
    const before = lockWord(this.region, words, lock, holderBits(this.region));
    try {
      return fn();
    } finally {
      unlockWord(words, lock, before);
    }
  }

  /** Under `source`'s lock: the first clone of its list (0: none). */
  private head(source: number): number {
    this.locate(this.sources, source, false);
    return slotFrame(Atomics.load(this.sw, this.si));
  }

  /** The clone after `clone` in its source's list (0: none; also when its slot is gone, which only a walk without the lock can see). */
  private next(clone: number): number {
    if (!this.locate(this.clones, clone, false) || !isPresent(Atomics.load(this.sw, this.si))) return 0;
    return Atomics.load(this.sw, this.si + 1);
  }

  /** Calls visit for every clone attached to `source` (under its lock; uncountedAt also walks without it). Bounded by the region's frames. */
  private forEachClone(source: number, visit: (clone: Frame) => void): void {
    let steps = 0;
    for (let c = this.head(source); c !== 0; c = this.next(c)) {
      if (++steps > maxListSteps(this.region)) throw new MorselError('ECORRUPT', `lazy-clone list of source frame ${source} does not end`);
      visit(c as Frame);
    }
  }

  /** Under `source`'s lock, after the capture: puts `clone` (a fresh table) first in its list. */
  attach(source: Frame, clone: Frame): void {
    check(clone <= MAX_SLOT_FRAME, 'EINVAL', () => `copy-on-write shares tables only below frame 2^30 (copy frame ${clone})`);
    const first = this.head(source);
    this.locate(this.clones, clone, true);
    assert(!isPresent(Atomics.load(this.sw, this.si)), 'a fresh clone frame has no clone slot');
    Atomics.store(this.sw, this.si + 1, first); // hi first: no one reads an absent slot's hi
    Atomics.store(this.sw, this.si, slotLo(source));
    Atomics.add(this.anchorWords, this.attachedWord, 1);
    this.locate(this.sources, source, false);
    Atomics.store(this.sw, this.si, slotLo(clone)); // the commit: a lock holder now finds the clone
  }

  /** Takes `clone` off its source's list (no-op when it is none's clone). Its LAZY_REF entries are then uncounted and untouched by anyone but its owner. */
  detach(clone: Frame): void {
    const source = this.sourceOf(clone);
    if (source < 0) return;
    this.locked(source as Frame, () => {
      // The source's destroy may have detached it since (and its frame may root another source now).
      if (this.sourceOf(clone) !== source) return;
      let prev = -1;
      let steps = 0;
      for (let c = this.head(source); c !== 0; prev = c, c = this.next(c)) {
        if (++steps > maxListSteps(this.region)) throw new MorselError('ECORRUPT', `lazy-clone list of source frame ${source} does not end`);
        if (c !== clone) continue;
        this.unlink(source, prev, clone);
        return;
      }
      assert(false, 'an attached clone is in its source list');
    });
  }

  /** Under the lock: removes `clone` (after `prev`, -1: first) from `source`'s list and clears its slot. */
  private unlink(source: number, prev: number, clone: number): void {
    const after = this.next(clone);
    if (prev < 0) {
      this.locate(this.sources, source, false);
      Atomics.store(this.sw, this.si, slotLo(after));
    } else {
      this.locate(this.clones, prev, false);
      Atomics.store(this.sw, this.si + 1, after);
    }
    this.locate(this.clones, clone, false);
    Atomics.store(this.sw, this.si, 0); // lo first: an absent slot's hi is read by no one
    Atomics.store(this.sw, this.si + 1, 0);
    Atomics.sub(this.anchorWords, this.attachedWord, 1);
  }

  // --- materialization -----------------------------------------------------------------------

  /**
   * Counts `table[idx]`'s reference (a level-`level` table) if it still has
   * LAZY_REF: the count first, then the bit cleared by CAS (a crash errs
   * high). Lock-free: of two racing materializers one CAS wins and the
   * other gives its count back.
   */
  materializeEntry(table: Frame, idx: number, level: number): void {
    const region = this.region;
    for (let attempt = 0; attempt < ENTRY_RETRIES; attempt++) {
      const lo = region.loadLo(table, idx);
      if ((lo & LAZY_REF) === 0) return;
      const hi = region.loadHi(table, idx);
      const child = this.walker.followChild(table, idx, lo, hi, level);
      this.refs().increment(child);
      if (region.casEntry(table, idx, lo, hi, lo & ~LAZY_REF, hi)) return;
      assert(this.refs().decrement(child) > 0, 'a racing materializer counted the same reference');
    }
    throw new MorselError('EBUSY', `table frame ${table} entry ${idx} kept changing while its reference was counted`);
  }

  /** Every LAZY_REF entry of `table` (a level-`level` table) counted. */
  materializeAll(table: Frame, level: number): void {
    const region = this.region;
    for (let idx = 0; idx < ENTRIES_PER_TABLE; idx++) if ((region.loadLo(table, idx) & LAZY_REF) !== 0) this.materializeEntry(table, idx, level);
  }

  /** Under `source`'s lock, before a decision on `source[idx]`: every attached clone's reference through its entry idx counted. */
  materializeClonesAt(source: Frame, idx: number, level: number): void {
    this.forEachClone(source, (clone) => this.materializeEntry(clone, idx, level));
  }

  /**
   * Before `root` (a level-`level` table) is freed (a destroy, a dropped
   * last reference, a discarded copy):
   * a clone is detached (its LAZY_REF entries are then its own, uncounted),
   * a source's clones get every reference counted and are detached.
   */
  release(root: Frame, level: number): void {
    if (!this.anyAttached()) return;
    if (this.sourceOf(root) >= 0) this.detach(root); // a clone (never a source too: a copy of it detaches it first)
    if (!this.hasClones(root)) return;
    this.locked(root, () => {
      let steps = 0;
      for (let c = this.head(root); c !== 0; c = this.head(root)) {
        if (++steps > maxListSteps(this.region)) throw new MorselError('ECORRUPT', `lazy-clone list of source frame ${root} does not end`);
        this.materializeAll(c as Frame, level);
        this.unlink(root, -1, c);
      }
    });
  }

  /**
   * Recovery and repair (exclusive; the counts were just recomputed with
   * every LAZY_REF entry as a reference): clears the lazy bits of `tables`.
   * The registry went with the anchor (Cow.forgetCounts).
   */
  static clearBits(region: Region, tables: Iterable<number>): void {
    for (const t of tables) {
      for (let idx = 0; idx < ENTRIES_PER_TABLE; idx++) {
        const lo = region.loadLo(t as Frame, idx);
        if ((lo & (LAZY_REF | LAZY_SRC)) !== 0) region.storeEntry(t as Frame, idx, lo & ~(LAZY_REF | LAZY_SRC), region.loadHi(t as Frame, idx));
      }
    }
  }
}
