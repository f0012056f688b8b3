/**
 * Rosebush-style reference counts (after Wilcox, 2024): fixed-size buckets
 * of inline keys and values scanned linearly, no chains. A bucket is one
 * 64-byte cache line of 16 int32 words:
 *
 *   word 0      lock word (lock.ts: lock, seqlock version, migrated mark)
 *   word 1      overflow: keys homed here that live in a later bucket
 *   words 2-15  7 slots of (key, count); key = frame + 1, 0 = empty;
 *               count 0 reads as 2 (a just-claimed slot)
 *
 * A key lives in its home bucket or, when that is full, in one of the next
 * WINDOW - 1 buckets (wrapping); the home's overflow word tells a lookup
 * whether to look further, so a lookup reads the directory and one bucket,
 * and a second bucket only for keys that overflowed. Only the home bucket is
 * locked: a slot is claimed by a CAS of its key word, so homes whose windows
 * overlap never take the same slot, and a key is only ever changed under its
 * home's lock. 8 bytes per slot plus 8 per bucket: 9.1 bytes per slot.
 *
 * # Warning
 * Stores are ordered so that every single one leaves the bucket valid and a
 * crash errs high: an insert is one CAS (the empty slot's count is already 0,
 * which reads as 2); a removal stores count 0 (reads as 2) before clearing
 * the key, and lowers the home's overflow only after; an overflowing insert
 * raises the overflow before claiming the slot.
 */
import { MorselError } from '../../errors.js';
import { isMigrated } from './lock.js';
import { FULL, TableBase, hashFrame, homeOf, type BucketArray, type RefTableKind } from './table.js';

/** int32 words per bucket: one 64-byte cache line. */
const BUCKET_WORDS = 16;
const W_OVERFLOW = 1;
const FIRST_SLOT_WORD = 2;
export const SLOTS = (BUCKET_WORDS - FIRST_SLOT_WORD) / 2;
/** Buckets a key may live in: its home and the next WINDOW - 1. */
const WINDOW = 8;
/** Double the array beyond this fraction of slots used. */
const MAX_LOAD = 0.8;

export class RosebushTable extends TableBase {
  readonly kind: RefTableKind = 'rosebush';
  protected readonly bucketWords = BUCKET_WORDS;
  protected readonly minLog2 = 6; // 64 buckets: one 4 KiB frame
  // slot located by seek(): window, word index of its key; -1 when absent
  private sw: Int32Array = new Int32Array(0);
  private si = -1;
  private sInHome = false;

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

  /** Finds key homed at b in its window; counts probes when `count`. */
  private seek(arr: BucketArray, b: number, key: number, count: boolean): boolean {
    this.locate(arr, b);
    if (count) this.probes++;
    this.sInHome = true;
    if (this.scanBucket(key)) return true;
    if (this.bw[this.bi + W_OVERFLOW] === 0) return false;
    this.sInHome = false;
    const mask = arr.buckets - 1;
    for (let j = 1; j < WINDOW; j++) {
      this.locate(arr, (b + j) & mask);
      if (count) this.probes++;
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
      Atomics.sub(this.bw, this.bi + W_OVERFLOW, 1);
    }
  }

  /** Claims an empty slot for key homed at b (count reads 2); false when the window is full (nothing changed). */
  private claim(arr: BucketArray, b: number, key: number): boolean {
    this.locate(arr, b);
    if (this.claimIn(key)) return true;
    this.locate(arr, b);
    const homeWords = this.bw;
    const homeOverflow = this.bi + W_OVERFLOW;
    Atomics.add(homeWords, homeOverflow, 1); // before the slot is claimed: a lookup must look further
    const mask = arr.buckets - 1;
    for (let j = 1; j < WINDOW; j++) {
      this.locate(arr, (b + j) & mask);
      if (this.claimIn(key)) return true;
    }
    Atomics.sub(homeWords, homeOverflow, 1);
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

  protected migrate(old: BucketArray, b: number, neu: BucketArray): void {
    this.forEachHomedAt(old, b, (key, count) => {
      const nb = homeOf(hashFrame(key - 1), neu.log2);
      // New buckets 2b and 2b+1 only receive keys of old bucket b: no lock
      // needed there, and no reader looks until b is marked migrated.
      if (!this.seek(neu, nb, key, false)) {
        if (!this.claim(neu, nb, key)) throw new MorselError('ENOSPC', `rosebush: no slot for frame ${key - 1} in the doubled array`);
      }
      Atomics.store(this.sw, this.si + 1, count);
    });
  }

  /** Every key homed at bucket b of arr with its count. */
  private forEachHomedAt(arr: BucketArray, b: number, visit: (key: number, count: number) => void): void {
    this.locate(arr, b);
    const overflowed = Atomics.load(this.bw, this.bi + W_OVERFLOW) !== 0;
    const mask = arr.buckets - 1;
    for (let j = 0; j < (overflowed ? WINDOW : 1); j++) {
      const bucket = (b + j) & mask;
      for (let slot = 0; slot < SLOTS; slot++) {
        this.locate(arr, bucket);
        const i = this.bi + FIRST_SLOT_WORD + 2 * slot;
        const key = Atomics.load(this.bw, i);
        if (key === 0 || homeOf(hashFrame(key - 1), arr.log2) !== b) continue;
        const c = Atomics.load(this.bw, i + 1);
        visit(key, c < 2 ? 2 : c);
      }
    }
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
