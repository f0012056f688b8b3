/**
 * Rosebush-style reference counts (after Wilcox, 2024): fixed-size buckets
 * of inline keys and values scanned linearly, no chains. A bucket is one
 * 64-byte cache line of 16 int32 words:
 *
 *   word 0      lock word (lock.ts: lock, seqlock version, migrated mark)
 *   word 1      overflow: how many keys homed here live in a later
 *               bucket, how far on, and a filter of their fingerprints
 *               (OVF_*; layout 1 kept the count only)
 *   words 2-15  7 slots of (key, count); key = frame + 1, 0 = empty;
 *               count 0 reads as 2 (a just-claimed slot)
 *
 * A key lives in its home bucket or, when that is full, in one of the next
 * WINDOW - 1 buckets (wrapping); the home's overflow word tells a lookup how
 * far to look, so a lookup reads the state word and the home bucket (two
 * dependent accesses), and the next buckets, whose addresses follow from the
 * hash, only for keys displaced from a full home. Only the home bucket is
 * locked: a slot is claimed by a CAS of its key word, so homes whose windows
 * overlap never take the same slot, and a key is only ever changed under its
 * home's lock. 8 bytes per slot plus 8 per bucket: 9.1 bytes per slot; the
 * array grows by size classes (table.ts), so the load stays between about
 * 0.8 and MAX_LOAD (10.1-11.4 bytes per counter) except after the x1.33
 * steps around 2 and 4 MiB of storage (0.68: 13.4 bytes).
 *
 * # Warning
 * Stores are ordered so that every single one leaves the bucket valid and a
 * crash errs high: an insert is one CAS (the empty slot's count is already 0,
 * which reads as 2); a removal stores count 0 (reads as 2) before clearing
 * the key, and lowers the home's overflow only after; an overflowing insert
 * raises the overflow (count, then distance as it moves on) before claiming
 * the slot. A crash can leave a distance or a count too high: a longer scan.
 */
import { MorselError, assert } from '../../errors.js';
import { PAGE_SIZE } from '../../units.js';
import { DIR_SLOTS, classOfLog2 } from './anchor.js';
import { isMigrated } from './lock.js';
import { FULL, TableBase, hashFrame, homeOf, type BucketArray, type RefTableKind } from './table.js';

/** int32 words per bucket: one 64-byte cache line. */
const BUCKET_WORDS = 16;
const W_OVERFLOW = 1;
const FIRST_SLOT_WORD = 2;
export const SLOTS = (BUCKET_WORDS - FIRST_SLOT_WORD) / 2;
/**
 * Buckets a key may live in: its home and the next WINDOW - 1. Wide, so
 * that a window fills only near MAX_LOAD (with 8, some window filled at a
 * load of 0.55-0.65 and forced every resize); a lookup scans only as far as
 * its home's overflow distance says.
 */
const WINDOW = 128;
/** The window of a layout-1 table (whose overflow word is a bare count). */
const WINDOW_V1 = 8;
/**
 * Overflow word (layout 2): bits 0-9 the keys homed here that live in a
 * later bucket, bits 10-16 how far the farthest of them may be, bits 17-31
 * a filter with one bit per displaced key's fingerprint (filterBit),
 * so a lookup of an absent key skips the scan unless its bit is set.
 * Distance and filter only grow until the count returns to 0.
 */
const OVF_COUNT = 0x3ff;
const OVF_DIST_SHIFT = 10;
const OVF_DIST_MASK = 0x7f;
const OVF_FILTER_SHIFT = 17;
const OVF_FILTER_BITS = 15;
/** Bound on an overflow word's CAS loop (its writers: the home's lock holder and migrators). */
const CAS_ATTEMPTS = 10_000;
/** Grow the array (to the next size class) beyond this fraction of slots used. */
const MAX_LOAD = 0.9;

assert(WINDOW - 1 <= OVF_DIST_MASK && (WINDOW - 1) * SLOTS <= OVF_COUNT && OVF_FILTER_SHIFT + OVF_FILTER_BITS === 32, 'overflow word fields hold their ranges');

/** The filter bit of a key with hash h: from bits 8-23 (the home uses the top bits; Fibonacci hashing mixes the lowest ones least). */
const filterBit = (h: number): number => 1 << (OVF_FILTER_SHIFT + (((h >>> 8) & 0xffff) % OVF_FILTER_BITS));

/** Directory slots per group in layout 2: no entry pool, so groups 0 and 1 share its words (2 x 384 = 3 x 256). */
const DIR_SLOTS_V2 = (DIR_SLOTS * 3) / 2;

/** Bucket index b (< 2 * buckets) wrapped into arr. */
const wrap = (b: number, arr: BucketArray): number => (b < arr.buckets ? b : b - arr.buckets);

export class RosebushTable extends TableBase {
  readonly kind: RefTableKind = 'rosebush';
  protected readonly bucketWords = BUCKET_WORDS;
  protected readonly minClass = classOfLog2(Math.log2(PAGE_SIZE / (BUCKET_WORDS * 4))); // 64 buckets: one 4 KiB frame
  protected readonly dirSlotsV2 = DIR_SLOTS_V2;
  protected readonly fineGrowth = true;
  // slot located by seek(): window, word index of its key; -1 when absent
  private sw: Int32Array = new Int32Array(0);
  private si = -1;
  private sInHome = false;
  /** forEachHomedAt's (key, count) pairs: at most every slot of a window */
  private readonly homed = new Int32Array(2 * SLOTS * WINDOW);

  /** Scans bucket b (bw/bi located) for key; sets sw/si. */
  private scanBucket(key: number): boolean {
    const w = this.bw;
    for (let i = this.bi + FIRST_SLOT_WORD, end = this.bi + BUCKET_WORDS; i < end; i += 2) {
      if (w[i] === key) {
        this.sw = w;
        this.si = i;
        return true;
      }
    }
    return false;
  }

  /** Finds key homed at b in its window; counts probes and lines when `count` (a neighbour is a line, not a dependent step). */
  private seek(arr: BucketArray, b: number, key: number, count: boolean): boolean {
    this.locate(arr, b);
    if (count) {
      this.probes++;
      this.lines++;
    }
    this.sInHome = true;
    if (this.scanBucket(key)) return true;
    const ovf = this.bw[this.bi + W_OVERFLOW];
    if (ovf === 0 || (!this.v1 && (ovf & filterBit(hashFrame(key - 1))) === 0)) return false;
    const reach = this.overflowReach(ovf);
    this.sInHome = false;
    for (let j = 1; j <= reach; j++) {
      this.locate(arr, wrap(b + j, arr));
      if (count) this.lines++;
      if (this.scanBucket(key)) return true;
    }
    return false;
  }

  private countAt(): number {
    const c = Atomics.load(this.sw, this.si + 1);
    return c < 2 ? 2 : c;
  }

  protected find(arr: BucketArray, b: number, key: number): number {
    if (!this.seek(arr, b, key, true)) return 0;
    const c = this.sw[this.si + 1]; // plain: the caller's closing lock-word read validates it
    return c < 2 ? 2 : c;
  }

  protected apply(arr: BucketArray, b: number, key: number, delta: number): number {
    if (this.seek(arr, b, key, false)) {
      const c = this.countAt();
      if (delta > 0 || c > 2) {
        Atomics.store(this.sw, this.si + 1, c + delta);
        return c + delta;
      }
      this.removeAt(arr, b);
      return 1;
    }
    if (delta < 0) return 0;
    return this.claim(arr, b, key) ? 2 : FULL;
  }

  /** Removes the located slot (count 2 -> 1) of a key homed at b. */
  private removeAt(arr: BucketArray, b: number): void {
    Atomics.store(this.sw, this.si + 1, 0);
    Atomics.store(this.sw, this.si, 0);
    if (!this.sInHome) {
      this.locate(arr, b);
      this.lowerOverflow(this.bw, this.bi + W_OVERFLOW);
    }
  }

  /** Buckets after the home that may hold keys homed there, from its overflow word (layout 1 keeps no distance: its whole window). */
  private overflowReach(w: number): number {
    if (w === 0) return 0;
    return this.v1 ? WINDOW_V1 - 1 : (w >>> OVF_DIST_SHIFT) & OVF_DIST_MASK;
  }

  /**
   * Before a key (filter bit `bit`) homed at the bucket whose overflow word
   * is words[i] is claimed `j` buckets on: the count raised and the bit set
   * once (`first`), the distance raised to at least j. A CAS loop: a
   * migrator of a neighbouring old bucket may update the same word without
   * the home's lock (migrate).
   */
  private raiseOverflow(words: Int32Array, i: number, j: number, first: boolean, bit: number): void {
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const w = Atomics.load(words, i);
      const dist = Math.max((w >>> OVF_DIST_SHIFT) & OVF_DIST_MASK, j);
      const n = this.v1 ? w + (first ? 1 : 0) : (w & ~(OVF_COUNT | (OVF_DIST_MASK << OVF_DIST_SHIFT))) | (first ? bit : 0) | (dist << OVF_DIST_SHIFT) | ((w & OVF_COUNT) + (first ? 1 : 0));
      if (n === w || Atomics.compareExchange(words, i, w, n) === w) return;
    }
    throw new MorselError('ETIMEDOUT', 'rosebush: an overflow word kept changing');
  }

  /** One key homed there left a later bucket: the count lowered; at 0 the distance and the filter are cleared too. */
  private lowerOverflow(words: Int32Array, i: number): void {
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const w = Atomics.load(words, i);
      const count = (w & OVF_COUNT) - 1;
      assert(count >= 0, 'rosebush: overflow count stays non-negative');
      const n = count === 0 ? 0 : (w & ~OVF_COUNT) | count;
      if (Atomics.compareExchange(words, i, w, n) === w) return;
    }
    throw new MorselError('ETIMEDOUT', 'rosebush: an overflow word kept changing');
  }

  /** Claims an empty slot for key homed at b (count reads 2); false when the window is full (nothing changed). */
  private claim(arr: BucketArray, b: number, key: number): boolean {
    this.locate(arr, b);
    if (this.claimIn(key)) return true;
    this.locate(arr, b);
    const homeWords = this.bw;
    const homeOverflow = this.bi + W_OVERFLOW;
    const window = Math.min(this.v1 ? WINDOW_V1 : WINDOW, arr.buckets); // a small array's window is the array (wrap needs j < buckets)
    const bit = this.v1 ? 0 : filterBit(hashFrame(key - 1));
    for (let j = 1; j < window; j++) {
      this.raiseOverflow(homeWords, homeOverflow, j, j === 1, bit); // before the slot is claimed: a lookup must look this far
      this.locate(arr, wrap(b + j, arr));
      if (this.claimIn(key)) return true;
    }
    this.lowerOverflow(homeWords, homeOverflow);
    return false;
  }

  private claimIn(key: number): boolean {
    const w = this.bw;
    for (let i = this.bi + FIRST_SLOT_WORD, end = this.bi + BUCKET_WORDS; i < end; i += 2) {
      if (w[i] === 0 && Atomics.compareExchange(w, i, 0, key) === 0) {
        this.sw = w;
        this.si = i;
        return true;
      }
    }
    return false;
  }

  protected migrate(old: BucketArray, b: number, neu: BucketArray, partial: boolean): void {
    this.forEachHomedAt(old, b, (key, count) => {
      const nb = homeOf(hashFrame(key - 1), neu);
      // No lock on the new bucket: a slot is claimed by CAS, so the migrators
      // of neighbouring old buckets (whose keys may share a new bucket when
      // the class grows by less than 2) and writers of already migrated keys
      // never take the same slot, and nobody reads or writes this key in the
      // new array until b is marked migrated.
      if (!partial || !this.seek(neu, nb, key, false)) {
        if (!this.claim(neu, nb, key)) throw new MorselError('ENOSPC', `rosebush: no slot for frame ${key - 1} in the grown array`);
      }
      Atomics.store(this.sw, this.si + 1, count);
    });
  }

  /**
   * Every key homed at bucket b of arr with its count. Collected first (the
   * visitor may move bw/bi), scanning the home and then the next buckets
   * only until the home's overflow count of displaced keys has been found.
   */
  private forEachHomedAt(arr: BucketArray, b: number, visit: (key: number, count: number) => void): void {
    this.locate(arr, b);
    const ovf = Atomics.load(this.bw, this.bi + W_OVERFLOW);
    const reach = this.overflowReach(ovf);
    let displaced = this.v1 ? ovf : ovf & OVF_COUNT; // never below the true number: raised before a claim, lowered after a removal
    const found = this.homed;
    let n = 0;
    for (let j = 0; j <= reach && (j === 0 || displaced > 0); j++) {
      this.locate(arr, wrap(b + j, arr));
      const w = this.bw;
      for (let i = this.bi + FIRST_SLOT_WORD, end = this.bi + BUCKET_WORDS; i < end; i += 2) {
        const key = w[i];
        if (key === 0 || homeOf(hashFrame(key - 1), arr) !== b) continue;
        const c = w[i + 1];
        found[n++] = key;
        found[n++] = c < 2 ? 2 : c;
        if (j > 0) displaced--;
      }
    }
    for (let k = 0; k < n; k += 2) visit(found[k], found[k + 1]);
  }

  protected forEachIn(arr: BucketArray, visit: (key: number, count: number) => void, skipMigrated: boolean): void {
    for (let b = 0; b < arr.buckets; b++) {
      this.locate(arr, b);
      if (skipMigrated && isMigrated(Atomics.load(this.bw, this.bi))) continue;
      this.forEachHomedAt(arr, b, visit);
    }
  }

  protected overloaded(entries: number, arr: BucketArray): boolean {
    return entries > MAX_LOAD * SLOTS * arr.buckets;
  }

  protected load(entries: number, arr: BucketArray): number {
    return entries / (SLOTS * arr.buckets);
  }
}
