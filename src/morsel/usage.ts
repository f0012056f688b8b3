/**
 * Region-wide usage counts of morsels: open handles plus mappings, kept per
 * process in that process's usage registry (a Registry rooted in field
 * SLOT_USAGE_ROOT of its user-slot record, keyed by the data morsel's root
 * frame, permuted inside its leaf: entryKey). The region-wide count of a morsel is the sum over LIVE user slots,
 * so a crashed process's counts stop counting when its slot is dead and can
 * never stay stuck or underflow.
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
 * Only threads of the owning process change its registry; others only read it.
 */
import { MorselError, assert } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import { SLOT_PID, SLOT_USAGE_ROOT, USER_SLOTS, USER_SLOT_BYTES, metaLayout } from '../physical/layout.js';
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

export class Usage {
  /** every slot's registry, read-only use (index = user slot) */
  private readonly all: Registry[] = [];

  /** the user-slot table's int32 window and the index of slot 0's pid word in it (a scan of 64 pids stays cheap) */
  private readonly slotWords: Int32Array;
  private readonly pid0: number;

  /**
   * This process's leaf tables by leaf index (key / 512; 0 = not looked up),
   * valid for the slot leafSlot while its registry root is leafRoot. A
   * registry's tables are freed only after its root is unlinked (dropRegistry:
   * this process's close, which reaps PENDING morsels afterwards, or a reap
   * of the slot after this process died), so checking the root on every use
   * keeps a cached leaf from outliving its table.
   */
  private readonly leafCache: Int32Array;
  private leafSlot = -1;
  private leafRoot = 0;

  constructor(
    private readonly region: Region,
    alloc: FrameAllocator,
  ) {
    for (let s = 0; s < USER_SLOTS; s++) this.all.push(new Registry(region, alloc, userSlotRoot(region, s, SLOT_USAGE_ROOT)));
    const usersFrame = metaLayout(region.frameCount).usersFrame as Frame;
    this.slotWords = region.words(usersFrame);
    this.pid0 = region.wordIndex(usersFrame, SLOT_PID);
    this.leafCache = new Int32Array(Math.ceil(region.frameCount / ENTRIES_PER_TABLE));
  }

  /** The leaf table of this process's registry holding `key` (built when `create`; null if absent), cached. */
  private myLeaf(key: number, create: boolean): Frame | null {
    const mine = this.mine;
    const slot = this.region.userSlot;
    const root = this.region.loadSlotRoot(slot, SLOT_USAGE_ROOT);
    if (this.leafSlot !== slot || this.leafRoot !== root) {
      this.leafCache.fill(0);
      this.leafSlot = slot;
      this.leafRoot = root;
    }
    const li = Math.floor(key / ENTRIES_PER_TABLE);
    const cached = this.leafCache[li];
    if (cached !== 0) return cached as Frame;
    const leaf = mine.leaf(key, create);
    if (leaf !== null) this.leafCache[li] = leaf;
    return leaf;
  }

  /** This process's registry (its slot is claimed after construction, so looked up on use). */
  private get mine(): Registry {
    const slot = this.region.userSlot;
    if (!(slot >= 0 && slot < USER_SLOTS)) throw new MorselError('EACCES', 'this process holds no user slot (region opened read-only or for inspection): it cannot open or map morsels');
    return this.all[slot];
  }

  /** Adds one use of the data morsel rooted at `key`, whose morsel word is in `wordFrame`. */
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
      if (countOf(lo) >= MAX_COUNT) throw new MorselError('EBUSY', `morsel rooted at frame ${key} has ${MAX_COUNT} uses in this process`);
      if (this.region.casEntry(leaf, idx, lo, hi, makeLo(countOf(lo) + 1, claimsOf(lo)), hi)) return;
    }
    throw new MorselError('EBUSY', `usage count of frame ${key}: ${COUNT_RETRIES} lost CAS races`);
  }

  /** The frame of the morsel word of `key`, whose use this process holds (asserted). */
  wordFrameOf(key: number): number {
    const k = entryKey(key);
    const leaf = this.myLeaf(k, false);
    assert(leaf !== null && countOf(this.region.loadLo(leaf, k % ENTRIES_PER_TABLE)) > 0, 'a use is held');
    const hi = this.region.loadHi(leaf, k % ENTRIES_PER_TABLE);
    return hi === 0 ? key : hi >>> 0;
  }

  /** Removes one use and returns this process's count left. The caller must hold a use (asserted). */
  sub(key: number): number {
    const k = entryKey(key);
    const leaf = this.myLeaf(k, false);
    assert(leaf !== null, 'usage count never negative');
    const idx = k % ENTRIES_PER_TABLE;
    for (let attempt = 0; attempt < COUNT_RETRIES; attempt++) {
      const lo = this.region.loadLo(leaf, idx);
      const hi = this.region.loadHi(leaf, idx);
      assert(isPresent(lo) && countOf(lo) > 0, 'usage count never negative');
      const left = countOf(lo) - 1;
      const gone = left === 0 && claimsOf(lo) === 0;
      if (this.region.casEntry(leaf, idx, lo, hi, gone ? 0 : makeLo(left, claimsOf(lo)), gone ? 0 : hi)) return left;
    }
    throw new MorselError('EBUSY', `usage count of frame ${key}: ${COUNT_RETRIES} lost CAS races`);
  }

  /** Adds (`on`) or removes one DYING claim of this process on the morsel of `key` (word in `wordFrame`). */
  claim(key: number, wordFrame: number, on: boolean): void {
    const hi = wordFrame === key ? 0 : wordFrame | 0;
    const k = entryKey(key);
    const leaf = this.myLeaf(k, on)!;
    const idx = k % ENTRIES_PER_TABLE;
    for (let attempt = 0; attempt < COUNT_RETRIES; attempt++) {
      const lo = this.region.loadLo(leaf, idx);
      if (!isPresent(lo)) {
        assert(on, 'a claim is cleared only by its holder');
        if (this.region.casEntry(leaf, idx, 0, 0, makeLo(0, 1), hi)) return;
        continue;
      }
      const claims = claimsOf(lo) + (on ? 1 : -1);
      assert(claims >= 0, 'a claim is removed only by its holder');
      if (claims > MAX_CLAIMS) throw new MorselError('EBUSY', `morsel rooted at frame ${key}: ${MAX_CLAIMS} destroys in this process at once`);
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
      const cur = this.countIn(s, key);
      if (cur !== null && claimsOf(cur[0]) > 0) return true;
    }
    return false;
  }

  /** (key, word frame) of every claim slot `slot` holds. */
  forEachClaim(slot: number, visit: (key: number, wordFrame: number) => void): void {
    this.all[slot].forEach((k, lo, hi) => {
      const key = frameOfEntry(k);
      if (claimsOf(lo) > 0) visit(key, hi === 0 ? key : hi >>> 0);
    });
  }

  /** This process's uses of `key`. */
  mineCount(key: number): number {
    const cur = this.mine.get(entryKey(key));
    return cur === null ? 0 : countOf(cur[0]);
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
      if (dead || this.region.userSlot === NO_SLOT) return 0;
      const cur = this.countIn(this.region.userSlot, key);
      return cur === null ? 0 : countOf(cur[0]);
    }
    let sum = 0;
    for (let s = 0; s < USER_SLOTS; s++) {
      const free = Atomics.load(this.slotWords, this.pid0 + (s * USER_SLOT_BYTES) / 4) === 0;
      if (free && s !== this.region.userSlot) continue;
      if ((s !== this.region.userSlot && !this.region.slotAlive(s)) !== dead) continue;
      const cur = this.countIn(s, key);
      if (cur !== null && isPresent(cur[0])) sum += countOf(cur[0]);
    }
    return sum;
  }

  /**
   * Slot `s`'s entry for `key`. # Warning: another process may free its
   * usage tables under us: when it dies and is reaped, or when it closes
   * (emptyOwnSlot unlinks its registry root, then frees the tables). A table
   * that fails validation (ECORRUPT) then means those counts are gone: the
   * slot is dead, or its registry root moved while we read. Reading them as
   * 0 is safe: a use counted in a registry created after our root load was
   * counted after the destroyer's DYING, so that user's re-check backs off.
   */
  private countIn(s: number, key: number): [number, number] | null {
    const k = entryKey(key);
    if (s === this.region.userSlot) {
      const leaf = this.myLeaf(k, false); // our own tables, cached (see leafCache)
      const lo = leaf === null ? 0 : this.region.loadLo(leaf, k % ENTRIES_PER_TABLE);
      return isPresent(lo) ? [lo, this.region.loadHi(leaf!, k % ENTRIES_PER_TABLE)] : null;
    }
    const root = this.region.loadSlotRoot(s, SLOT_USAGE_ROOT);
    try {
      return this.all[s].get(k);
    } catch (e) {
      const gone = !this.region.slotAlive(s) || this.region.loadSlotRoot(s, SLOT_USAGE_ROOT) !== root;
      if (s !== this.region.userSlot && e instanceof MorselError && e.code === 'ECORRUPT' && gone) return null;
      throw e;
    }
  }

  /** Every (key, count) of this process. */
  forEachMine(visit: (key: number, count: number, wordFrame: number) => void): void {
    this.mine.forEach((k, lo, hi) => {
      const key = frameOfEntry(k);
      visit(key, countOf(lo), hi === 0 ? key : hi >>> 0);
    });
  }
}

/** Visits the frames of user slot `slot`'s usage registry (for the recovery scanner). */
export function forEachUsageFrame(region: Region, alloc: FrameAllocator, slot: number, visit: (frame: Frame) => void): void {
  new Registry(region, alloc, userSlotRoot(region, slot, SLOT_USAGE_ROOT)).forEach(() => {}, visit);
}
