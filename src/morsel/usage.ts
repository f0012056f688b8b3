/**
 * Region-wide usage counts of morsels: open handles plus mappings, kept per
 * process in that process's usage registries (Registries rooted in the
 * SLOT_USAGE_ROOTS fields of its user-slot record, keyed by the data morsel's
 * root frame, permuted inside its leaf: entryKey). The region-wide count of a
 * morsel is the sum over LIVE user slots, so a crashed process's counts stop
 * counting when its slot is dead and can never stay stuck or underflow.
 *
 * Lanes: a slot has USAGE_LANES registries, and a process's count of a
 * morsel is the sum over them. A thread adds in its own lane (worker
 * threadId mod USAGE_LANES), so two threads counting uses of one morsel
 * write different cache lines. Any lane may be changed by any thread of the
 * owner (every change is a CAS), so a lane is only a placement: a use is
 * given back in the thread's own lane when that lane counts one, else in
 * any lane that does (a sum does not care where), and a sub's "left" is the
 * lane's, 0 meaning "maybe the process's last" (the caller's reap decides
 * on the whole sum).
 *
 * Registry value of one key (a 64-bit entry, changed by one CAS):
 *   lo = (count << 5) | (claims << 1) | 1
 *        present bit; claims: destroys of this process (threads) holding or
 *        taking DYING on the morsel (< 16, see Morsels.destroy); this
 *        process's count (< 2^27)
 *   hi = the frame holding the morsel word (the ID's root frame) when it is
 *        not the key (meta morsels: the meta page), else 0
 * An entry with count 0 and no claims is removed (CAS to empty).
 *
 * The claim makes a dead destroyer's DYING recoverable while others live:
 * a destroyer sets its claim BEFORE it CASes DYING in and clears it AFTER it
 * let DYING go, so DYING held by a live process always has a live claim.
 * Whoever reaps a dead slot clears DYING on the words the dead slot claimed
 * unless a live slot claims them too (Morsels.releaseDeadDying).
 *
 * Only threads of the owning process change its registries; others only read them.
 */
import { MorselError, assert } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import { threadId } from 'node:worker_threads';
import { SLOT_PID, SLOT_USAGE_ROOTS, USAGE_LANES, USER_SLOTS, USER_SLOT_BYTES, metaLayout } from '../physical/layout.js';
import { NO_SLOT, type Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import { isPresent } from '../paging/entry.js';
import { ENTRIES_PER_TABLE } from '../paging/walk.js';
import { Registry, userSlotRoot } from './registry.js';

/** CAS attempts on one count before giving up (each failure means another thread of this process won). */
const COUNT_RETRIES = 1 << 16;
const MAX_COUNT = 2 ** 27 - 1;
const MAX_CLAIMS = 15;
/**
 * Lane scans in one sub before giving up: a scan finds no count only when
 * other threads of ours gave back uses between its reads (each pass is
 * someone else's progress), and our own use keeps the sum positive.
 */
const LANE_PASSES = 1024;

/**
 * A morsel's key in a usage registry: its data root frame with the index
 * inside its 512-entry leaf permuted (low 6 bits up, high 3 bits down), so
 * that consecutive root frames (morsels created one after another) fall in
 * different 64-byte lines: threads counting uses of neighbouring morsels do
 * not write one cache line. The leaf (frame / 512) is unchanged.
 */
const entryKey = (frame: number): number => frame - (frame % ENTRIES_PER_TABLE) + (((frame & 63) << 3) | ((frame >>> 6) & 7));
/** The data root frame of usage-registry key `key` (entryKey's inverse). */
const frameOfEntry = (key: number): number => key - (key % ENTRIES_PER_TABLE) + (((key & 7) << 6) | ((key >>> 3) & 63));

const countOf = (lo: number): number => lo >>> 5;
const claimsOf = (lo: number): number => (lo >>> 1) & MAX_CLAIMS;
const makeLo = (count: number, claims: number): number => ((count << 5) | (claims << 1) | 1) | 0;
const hasCount = (lo: number): boolean => countOf(lo) > 0;
const hasClaim = (lo: number): boolean => claimsOf(lo) > 0;

export class Usage {
  /** every slot's registries, read-only use (index = user slot, then lane) */
  private readonly all: Registry[][] = [];
  /** this thread's lane */
  readonly lane: number = threadId % USAGE_LANES;

  /** the user-slot table's int32 window and the index of slot 0's pid word in it (a scan of 64 pids stays cheap) */
  private readonly slotWords: Int32Array;
  private readonly pid0: number;

  /**
   * Per lane of our slot, its leaf tables by leaf index (key / 512; 0 = not
   * looked up; allocated on the lane's first use), valid for the slot
   * leafSlot while the lane's registry root is leafRoots[lane]. A
   * registry's tables are freed only after its root is unlinked
   * (dropRegistry: this process's close, which reaps PENDING morsels
   * afterwards, or a reap of the slot after this process died), so checking
   * the root on every use keeps a cached leaf from outliving its table.
   * Sums read every lane: lanes that exited threads left behind cost a root
   * load and a cache hit, not a walk.
   */
  private readonly leafCaches: (Int32Array | null)[] = new Array<Int32Array | null>(USAGE_LANES).fill(null);
  private readonly leafRoots = new Int32Array(USAGE_LANES);
  private leafSlot = -1;

  constructor(
    private readonly region: Region,
    alloc: FrameAllocator,
  ) {
    for (let s = 0; s < USER_SLOTS; s++) this.all.push(SLOT_USAGE_ROOTS.map((field) => new Registry(region, alloc, userSlotRoot(region, s, field))));
    const usersFrame = metaLayout(region.frameCount).usersFrame as Frame;
    this.slotWords = region.words(usersFrame);
    this.pid0 = region.wordIndex(usersFrame, SLOT_PID);
  }

  /** The leaf table of this thread's lane holding `key` (built when `create`; null if absent), cached. */
  private myLeaf(key: number, create: boolean): Frame | null {
    return this.laneLeaf(this.lane, key, create);
  }

  /** The leaf table of lane `lane` of our slot holding `key` (built when `create`; null if absent), cached (leafCaches). */
  private laneLeaf(lane: number, key: number, create: boolean): Frame | null {
    const slot = this.ownSlot();
    const root = this.region.loadSlotRoot(slot, SLOT_USAGE_ROOTS[lane]) | 0;
    if (this.leafSlot !== slot) {
      this.leafCaches.fill(null);
      this.leafRoots.fill(0);
      this.leafSlot = slot;
    }
    if (root === 0 && !create) return null; // no registry in this lane
    let cache = this.leafCaches[lane];
    if (cache === null) cache = this.leafCaches[lane] = new Int32Array(Math.ceil(this.region.frameCount / ENTRIES_PER_TABLE));
    if (this.leafRoots[lane] !== root) {
      cache.fill(0);
      this.leafRoots[lane] = root;
    }
    const li = Math.floor(key / ENTRIES_PER_TABLE);
    const cached = cache[li];
    if (cached !== 0) return cached as Frame;
    const leaf = this.all[slot][lane].leaf(key, create);
    if (leaf !== null && root !== 0) cache[li] = leaf; // a leaf built under root 0 is cached once the root is seen
    return leaf;
  }

  /** This process's slot (claimed after construction, so looked up on use). */
  private ownSlot(): number {
    const slot = this.region.userSlot;
    if (!(slot >= 0 && slot < USER_SLOTS)) throw new MorselError('EACCES', 'this process holds no user slot (region opened read-only or for inspection): it cannot open or map morsels');
    return slot;
  }

  /**
   * The leaf of a lane of ours whose entry for `k` satisfies `holds` (a
   * count or a claim to give back): this thread's lane first, then the
   * others; null if none does.
   */
  private leafHolding(k: number, holds: (lo: number) => boolean): Frame | null {
    for (let i = 0; i < USAGE_LANES; i++) {
      const leaf = this.laneLeaf((this.lane + i) % USAGE_LANES, k, false);
      if (leaf !== null && holds(this.region.loadLo(leaf, k % ENTRIES_PER_TABLE))) return leaf;
    }
    return null;
  }

  /** Adds one use of the data morsel rooted at `key`, whose morsel word is in `wordFrame`, in this thread's lane. */
  add(key: number, wordFrame: number): void {
    const hi = wordFrame === key ? 0 : wordFrame | 0;
    const k = entryKey(key);
    const leaf = this.myLeaf(k, true)!;
    const idx = k % ENTRIES_PER_TABLE;
    for (let attempt = 0; attempt < COUNT_RETRIES; attempt++) {
      const lo = this.region.loadLo(leaf, idx);
      if (!isPresent(lo)) {
        if (this.region.casEntry(leaf, idx, 0, 0, makeLo(1, 0), hi)) return;
        continue;
      }
      assert(this.region.loadHi(leaf, idx) === hi, 'usage entry names the same morsel word');
      if (countOf(lo) >= MAX_COUNT) throw new MorselError('EBUSY', `morsel rooted at frame ${key} has ${MAX_COUNT} uses in this thread`);
      if (this.region.casEntry(leaf, idx, lo, hi, makeLo(countOf(lo) + 1, claimsOf(lo)), hi)) return;
    }
    throw new MorselError('EBUSY', `usage count of frame ${key}: ${COUNT_RETRIES} lost CAS races`);
  }

  /** The frame of the morsel word of `key`, whose use this process holds (asserted). */
  wordFrameOf(key: number): number {
    const k = entryKey(key);
    const leaf = this.leafHolding(k, hasCount);
    assert(leaf !== null, 'a use is held');
    const hi = this.region.loadHi(leaf, k % ENTRIES_PER_TABLE);
    return hi === 0 ? key : hi >>> 0;
  }

  /**
   * Removes one use, from this thread's lane if it counts one, else from
   * another lane of this process that does, and returns the count left in
   * that lane (0: maybe the process's last use). The caller must hold a use (asserted).
   */
  sub(key: number): number {
    const k = entryKey(key);
    const idx = k % ENTRIES_PER_TABLE;
    const mine = this.myLeaf(k, false);
    for (let pass = 0; pass < LANE_PASSES; pass++) {
      // Ours first; then any lane that counts one (another thread of ours counted this use, or took ours first).
      const leaf = pass === 0 && mine !== null ? mine : (this.leafHolding(k, hasCount) ?? mine);
      assert(leaf !== null, 'usage count never negative');
      const left = this.subIn(leaf, idx, key);
      if (left >= 0) return left;
    }
    throw new MorselError('EBUSY', `usage count of frame ${key}: no lane kept a count for ${LANE_PASSES} passes`);
  }

  /** One use less in the entry at (leaf, idx); the count left, or -1 when the entry counts none (any more). */
  private subIn(leaf: Frame, idx: number, key: number): number {
    for (let attempt = 0; attempt < COUNT_RETRIES; attempt++) {
      const lo = this.region.loadLo(leaf, idx);
      if (!isPresent(lo) || countOf(lo) === 0) return -1;
      const hi = this.region.loadHi(leaf, idx);
      const left = countOf(lo) - 1;
      const gone = left === 0 && claimsOf(lo) === 0;
      if (this.region.casEntry(leaf, idx, lo, hi, gone ? 0 : makeLo(left, claimsOf(lo)), gone ? 0 : hi)) return left;
    }
    throw new MorselError('EBUSY', `usage count of frame ${key}: ${COUNT_RETRIES} lost CAS races`);
  }

  /**
   * Adds (`on`, in this thread's lane) or removes (from a lane holding one)
   * one DYING claim of this process on the morsel of `key` (word in `wordFrame`).
   */
  claim(key: number, wordFrame: number, on: boolean): void {
    const hi = wordFrame === key ? 0 : wordFrame | 0;
    const k = entryKey(key);
    const idx = k % ENTRIES_PER_TABLE;
    const leaf = on ? this.myLeaf(k, true) : this.leafHolding(k, hasClaim);
    assert(leaf !== null, 'a claim is cleared only by its holder');
    for (let attempt = 0; attempt < COUNT_RETRIES; attempt++) {
      const lo = this.region.loadLo(leaf, idx);
      if (!isPresent(lo)) {
        assert(on, 'a claim is cleared only by its holder');
        if (this.region.casEntry(leaf, idx, 0, 0, makeLo(0, 1), hi)) return;
        continue;
      }
      const claims = claimsOf(lo) + (on ? 1 : -1);
      assert(claims >= 0, 'a claim is removed only by its holder');
      if (claims > MAX_CLAIMS) throw new MorselError('EBUSY', `morsel rooted at frame ${key}: ${MAX_CLAIMS} destroys in this thread at once`);
      const gone = claims === 0 && countOf(lo) === 0;
      if (this.region.casEntry(leaf, idx, lo, hi, gone ? 0 : makeLo(countOf(lo), claims), gone ? 0 : hi)) return;
    }
    throw new MorselError('EBUSY', `usage entry of frame ${key}: ${COUNT_RETRIES} lost CAS races`);
  }

  /** Whether a live slot other than `except` claims the morsel of `key`. */
  claimedByLive(key: number, except: number): boolean {
    for (let s = 0; s < USER_SLOTS; s++) {
      if (s === except) continue;
      const free = Atomics.load(this.slotWords, this.pid0 + (s * USER_SLOT_BYTES) / 4) === 0;
      if (s !== this.region.userSlot && (free || !this.region.slotAlive(s))) continue;
      if (this.sumIn(s, key, claimsOf) > 0) return true;
    }
    return false;
  }

  /** (key, word frame) of every morsel slot `slot` claims (once each, whichever lanes hold the claims). */
  forEachClaim(slot: number, visit: (key: number, wordFrame: number) => void): void {
    const seen = new Set<number>();
    for (const registry of this.all[slot]) {
      registry.forEach((k, lo, hi) => {
        const key = frameOfEntry(k);
        if (claimsOf(lo) === 0 || seen.has(key)) return;
        seen.add(key);
        visit(key, hi === 0 ? key : hi >>> 0);
      });
    }
  }

  /** This process's uses of `key` (all lanes). */
  mineCount(key: number): number {
    return this.region.userSlot === NO_SLOT ? 0 : this.sumIn(this.region.userSlot, key, countOf);
  }

  /**
   * Uses of `key` summed over every live user slot. A slot whose process
   * died is skipped: its counts died with it. (A slot reaped and reused while
   * we read it can only make the sum too high: a spurious EBUSY, never a
   * missed user.)
   */
  total(key: number): number {
    return this.sum(key, false);
  }

  /**
   * Uses of `key` still recorded in the slots of processes that died and
   * were not reaped yet. They count for nothing (see total), but such a use
   * may belong to an unlink that died between marking the morsel PENDING and
   * removing its name: see Morsels.decide.
   */
  deadTotal(key: number): number {
    return this.sum(key, true);
  }

  /** Counts of `key` over the occupied slots that are live (dead: false) or dead (true); this process's slot is live. */
  private sum(key: number, dead: boolean): number {
    if (this.region.onlyOwnSlot()) {
      // No other slot holds counts: ours alone (a scan would read 64 pid words, ~6 ns per atomic load).
      return dead ? 0 : this.mineCount(key);
    }
    let sum = 0;
    for (let s = 0; s < USER_SLOTS; s++) {
      const free = Atomics.load(this.slotWords, this.pid0 + (s * USER_SLOT_BYTES) / 4) === 0;
      if (free && s !== this.region.userSlot) continue;
      if ((s !== this.region.userSlot && !this.region.slotAlive(s)) !== dead) continue;
      sum += this.sumIn(s, key, countOf);
    }
    return sum;
  }

  /**
   * `of` (countOf or claimsOf) of slot `s`'s entries for `key`, summed over
   * its lanes (no allocation: destroy decisions call this on every unlink).
   * # Warning: another process may free its usage tables under us: when it
   * dies and is reaped, or when it closes (emptyOwnSlot unlinks its registry
   * roots, then frees the tables). A table that fails validation (ECORRUPT)
   * then means those counts are gone: the slot is dead, or its registry
   * root moved while we read. Reading them as 0 is safe: a use counted in a
   * registry created after our root load was counted after the destroyer's
   * DYING, so that user's re-check backs off.
   */
  private sumIn(s: number, key: number, of: (lo: number) => number): number {
    const k = entryKey(key);
    let total = 0;
    for (let lane = 0; lane < USAGE_LANES; lane++) {
      if (s === this.region.userSlot) {
        const leaf = this.laneLeaf(lane, k, false); // our own lanes' tables, cached (see leafCaches)
        const lo = leaf === null ? 0 : this.region.loadLo(leaf, k % ENTRIES_PER_TABLE);
        if (isPresent(lo)) total += of(lo);
        continue;
      }
      const field = SLOT_USAGE_ROOTS[lane];
      const root = this.region.loadSlotRoot(s, field);
      if (root === 0) continue;
      try {
        const cur = this.all[s][lane].get(k);
        if (cur !== null) total += of(cur[0]);
      } catch (e) {
        const gone = !this.region.slotAlive(s) || this.region.loadSlotRoot(s, field) !== root;
        if (!(s !== this.region.userSlot && e instanceof MorselError && e.code === 'ECORRUPT' && gone)) throw e;
      }
    }
    return total;
  }

  /** Every (key, count summed over lanes, word frame) of this process. */
  forEachMine(visit: (key: number, count: number, wordFrame: number) => void): void {
    const mine = new Map<number, { count: number; wordFrame: number }>();
    for (const registry of this.all[this.ownSlot()]) {
      registry.forEach((k, lo, hi) => {
        const key = frameOfEntry(k);
        const cur = mine.get(key);
        if (cur === undefined) mine.set(key, { count: countOf(lo), wordFrame: hi === 0 ? key : hi >>> 0 });
        else cur.count += countOf(lo);
      });
    }
    for (const [key, { count, wordFrame }] of mine) visit(key, count, wordFrame);
  }
}

/** Visits the frames of user slot `slot`'s usage registries, every lane (for the recovery scanner). */
export function forEachUsageFrame(region: Region, alloc: FrameAllocator, slot: number, visit: (frame: Frame) => void): void {
  for (const field of SLOT_USAGE_ROOTS) new Registry(region, alloc, userSlotRoot(region, slot, field)).forEach(() => {}, visit);
}
