/**
 * Chained reference counts, rhashtable-like: an array of bucket heads, each
 * bucket a linked list of entries allocated from an entry pool in the
 * region. A bucket is 2 int32 words (lock word, head entry index); an entry
 * is 4 words (next, key = frame + 1, count, unused): 16 bytes, as a kernel
 * hash node with its pointer. A lookup reads the directory, the bucket and
 * one entry per chain step.
 *
 * Entry pool: segments listed in the anchor's pool directory; the first
 * SMALL_POOL_SEGS are order-0 frames (254 entries each), the rest order-9
 * frames (130,048 entries each), so a small table stays small. A segment
 * starts with a bitmap of its entries (set = in use); entries are claimed
 * lock-free by an atomic OR and released by an atomic AND, as the frame
 * allocator's bitfields. Entry index = segment << 17 | slot; 0 is null
 * (slot 0 of segment 0 lies in its bitmap).
 *
 * # Warning
 * An insert fills its entry before one store publishes it as the bucket's
 * head; a removal unlinks with one store before it frees the entry; a
 * migration copies into the new array (overwriting copies a dead migrator
 * left) and frees the old chain only after the old bucket is marked
 * migrated. A crash between two of these steps leaks a pool entry (until
 * reset), never loses or duplicates a count.
 */
import { MorselError, assert } from '../../errors.js';
import { bitIndex, lowestClearBit, tryClearBit } from '../../alloc/bitfield.js';
import { PAGE_SIZE, type Frame } from '../../units.js';
import { DIR_SLOTS, POOL_GROUP, W_POOL_LOCK, W_POOL_SEGS, classOfLog2, dirWord } from './anchor.js';
import { isMigrated } from './lock.js';
import { RACY, TableBase, allocZeroed, hashFrame, homeOf, type BucketArray, type RefTableKind } from './table.js';

const BUCKET_WORDS = 2;
const W_HEAD = 1;
const ENTRY_WORDS = 4;
const E_NEXT = 0;
const E_KEY = 1;
const E_COUNT = 2;
const SLOT_SHIFT = 17;
const SLOT_MASK = (1 << SLOT_SHIFT) - 1;
const SMALL_POOL_SEGS = 64;
/** Double the bucket array beyond this many entries per bucket (rhashtable: 75%). */
const MAX_LOAD = 0.75;
/** Bound on a chain walk; a longer chain seen lock-free is a torn read, under the lock corruption. */
const MAX_CHAIN = 1 << 16;

interface PoolSeg {
  frame: number;
  order: 0 | 9;
  words: Int32Array;
  base: number;
  entries: number;
  bitmapWords: number;
}

function poolGeometry(seg: number): { order: 0 | 9; entries: number; bitmapWords: number; reserved: number } {
  const order = seg < SMALL_POOL_SEGS ? 0 : 9;
  const entries = ((order === 9 ? 512 : 1) * PAGE_SIZE) / (ENTRY_WORDS * 4);
  const bitmapWords = entries / 32;
  return { order, entries, bitmapWords, reserved: (bitmapWords * 4) / (ENTRY_WORDS * 4) };
}

export class ChainedTable extends TableBase {
  readonly kind: RefTableKind = 'chained';
  protected readonly bucketWords = BUCKET_WORDS;
  protected readonly minClass = classOfLog2(9); // 512 buckets: one 4 KiB frame
  protected readonly dirSlotsV2 = DIR_SLOTS; // group 2 is the entry pool's
  protected readonly fineGrowth = false; // doubling: old bucket b's keys go to 2b and 2b + 1 only (migrate)
  private pool: PoolSeg[] = [];
  private segHint = 0;
  private wordHint = 0;
  // entry located by entry(): window and word index of word 0
  private ew: Int32Array = new Int32Array(0);
  private ei = 0;

  // --- pool -----------------------------------------------------------------------

  /** Rereads the pool directory (segments are only ever appended, except by a reset: a longer cached pool is stale). */
  private refreshPool(): void {
    const n = this.aload(W_POOL_SEGS);
    if (this.pool.length > n) this.shapeChanged();
    for (let s = this.pool.length; s < n; s++) {
      const f = this.aload(dirWord(POOL_GROUP, s)) as Frame;
      const g = poolGeometry(s);
      this.pool.push({ frame: f, order: g.order, words: this.region.words(f), base: this.region.wordIndex(f, 0), entries: g.entries, bitmapWords: g.bitmapWords });
    }
  }

  /** Points ew/ei at entry e; false for an index outside the pool (a torn lock-free read). */
  private entry(e: number): boolean {
    const seg = e >>> SLOT_SHIFT;
    if (seg >= this.pool.length) this.refreshPool();
    if (seg >= this.pool.length || (e & SLOT_MASK) >= this.pool[seg].entries || e <= 0) return false;
    const p = this.pool[seg];
    this.ew = p.words;
    this.ei = p.base + (e & SLOT_MASK) * ENTRY_WORDS;
    return true;
  }

  /**
   * Claims a free entry; grows the pool when every segment is full (ENOSPC
   * when it cannot, nothing changed). Every round without a claim appends a
   * segment (ours or another thread's), so the rounds are bounded by the
   * directory's DIR_SLOTS; a fixed small bound failed spuriously when another
   * thread filled each new segment while this one was descheduled.
   */
  private claimEntry(): number {
    for (let round = 0; round <= DIR_SLOTS; round++) {
      this.refreshPool();
      const n = this.pool.length;
      for (let i = 0; i < n; i++) {
        const seg = (this.segHint + i) % n;
        const e = this.claimIn(seg);
        if (e > 0) return e;
      }
      this.growPool(n);
    }
    throw new MorselError('ENOSPC', 'chained reference-count pool: no entry free after growing');
  }

  private claimIn(seg: number): number {
    const p = this.pool[seg];
    const start = seg === this.segHint ? this.wordHint : 0;
    for (let k = 0; k < p.bitmapWords; k++) {
      const w = (start + k) % p.bitmapWords;
      let word = p.words[p.base + w];
      for (let tries = 0; tries < 32 && word !== -1; tries++) {
        const mask = lowestClearBit(word);
        const old = Atomics.or(p.words, p.base + w, mask);
        if ((old & mask) === 0) {
          this.segHint = seg;
          this.wordHint = w;
          return (seg << SLOT_SHIFT) | (w * 32 + bitIndex(mask));
        }
        word = old | mask;
      }
    }
    return 0;
  }

  private freeEntry(e: number): void {
    const p = this.pool[e >>> SLOT_SHIFT];
    const ok = tryClearBit(p.words, p.base, e & SLOT_MASK);
    assert(ok, 'a freed pool entry was in use');
  }

  /** Appends a pool segment unless another thread did since we saw `seen` segments. ENOSPC: nothing changed. */
  private growPool(seen: number): void {
    const lock = this.alock(W_POOL_LOCK);
    try {
      const n = this.aload(W_POOL_SEGS);
      if (n !== seen) return;
      if (n >= DIR_SLOTS) throw new MorselError('ENOSPC', `chained reference-count pool is at its ${DIR_SLOTS} segments`);
      const g = poolGeometry(n);
      const [f] = allocZeroed(this.region, this.alloc, g.order, 1);
      const words = this.region.words(f as Frame);
      const base = this.region.wordIndex(f as Frame, 0);
      for (let r = 0; r < g.reserved; r++) Atomics.or(words, base + (r >>> 5), 1 << (r & 31));
      this.astore(dirWord(POOL_GROUP, n), f);
      this.astore(W_POOL_SEGS, n + 1);
    } finally {
      this.aunlock(W_POOL_LOCK, lock);
    }
  }

  /** A reset elsewhere may have freed and replaced the pool: keep only the cached segments the directory still names. */
  protected override shapeChanged(): void {
    const n = Math.min(this.pool.length, this.aload(W_POOL_SEGS));
    let keep = 0;
    while (keep < n && this.pool[keep].frame === this.aload(dirWord(POOL_GROUP, keep)) >>> 0) keep++;
    this.pool.length = keep;
    if (this.segHint >= keep) {
      this.segHint = 0;
      this.wordHint = 0;
    }
  }

  protected override initExtra(): void {
    if (this.aload(W_POOL_SEGS) === 0) this.growPool(0);
  }

  protected override resetExtra(): void {
    const n = this.aload(W_POOL_SEGS);
    for (let s = 0; s < n; s++) {
      this.alloc.free(this.aload(dirWord(POOL_GROUP, s)) as Frame, poolGeometry(s).order);
      this.astore(dirWord(POOL_GROUP, s), 0);
    }
    this.astore(W_POOL_SEGS, 0);
    this.astore(W_POOL_LOCK, 0);
    this.pool = [];
    this.segHint = 0;
    this.wordHint = 0;
  }

  protected override forEachExtraSegment(visit: (frame: number, order: 0 | 9) => void): void {
    const n = this.aload(W_POOL_SEGS);
    for (let s = 0; s < n; s++) visit(this.aload(dirWord(POOL_GROUP, s)) >>> 0, poolGeometry(s).order);
  }

  // --- buckets ----------------------------------------------------------------------

  protected find(arr: BucketArray, b: number, key: number): number {
    this.locate(arr, b);
    this.probes++;
    this.lines++;
    let e = this.bw[this.bi + W_HEAD];
    for (let steps = 0; e !== 0; steps++) {
      if (steps >= MAX_CHAIN || !this.entry(e)) return RACY;
      this.probes++; // each node's address is the previous one's next word
      this.lines++;
      if (this.ew[this.ei + E_KEY] === key) return this.ew[this.ei + E_COUNT];
      e = this.ew[this.ei + E_NEXT];
    }
    return 0;
  }

  /** Under the lock: the entry of key in bucket b (ew/ei located) and its predecessor (0: the head), or -1. */
  private seek(arr: BucketArray, b: number, key: number): number {
    this.locate(arr, b);
    let prev = 0;
    let e = Atomics.load(this.bw, this.bi + W_HEAD);
    for (let steps = 0; e !== 0; steps++) {
      if (steps >= MAX_CHAIN || !this.entry(e)) throw new MorselError('ECORRUPT', `chained reference-count bucket ${b}: chain broken at entry ${e}`);
      if (Atomics.load(this.ew, this.ei + E_KEY) === key) return prev;
      prev = e;
      e = Atomics.load(this.ew, this.ei + E_NEXT);
    }
    return -1;
  }

  protected apply(arr: BucketArray, b: number, key: number, delta: number): number {
    const prev = this.seek(arr, b, key);
    if (prev >= 0) {
      const here = this.ei;
      const words = this.ew;
      const c = Atomics.load(words, here + E_COUNT);
      if (delta > 0 || c > 2) {
        Atomics.store(words, here + E_COUNT, c + delta);
        return c + delta;
      }
      const next = Atomics.load(words, here + E_NEXT);
      const e = this.unlink(arr, b, prev, next, words, here);
      this.freeEntry(e);
      return 1;
    }
    if (delta < 0) return 0;
    this.insert(arr, b, key, 2);
    return 2;
  }

  /** Unlinks the entry at (words, here) whose predecessor is prev; returns its index. */
  private unlink(arr: BucketArray, b: number, prev: number, next: number, words: Int32Array, here: number): number {
    this.locate(arr, b);
    let e: number;
    if (prev === 0) {
      e = Atomics.load(this.bw, this.bi + W_HEAD);
      Atomics.store(this.bw, this.bi + W_HEAD, next);
    } else {
      this.entry(prev);
      e = Atomics.load(this.ew, this.ei + E_NEXT);
      Atomics.store(this.ew, this.ei + E_NEXT, next);
    }
    this.entry(e);
    assert(this.ew === words && this.ei === here, 'unlinked the entry found');
    return e;
  }

  /** Fills a fresh entry and publishes it as bucket b's head (ENOSPC from the pool: nothing changed). */
  private insert(arr: BucketArray, b: number, key: number, count: number): void {
    const e = this.claimEntry();
    this.locate(arr, b);
    const head = Atomics.load(this.bw, this.bi + W_HEAD);
    this.entry(e);
    Atomics.store(this.ew, this.ei + E_NEXT, head);
    Atomics.store(this.ew, this.ei + E_KEY, key);
    Atomics.store(this.ew, this.ei + E_COUNT, count);
    this.locate(arr, b);
    Atomics.store(this.bw, this.bi + W_HEAD, e);
  }

  protected migrate(old: BucketArray, b: number, neu: BucketArray, partial: boolean): void {
    // New buckets 2b and 2b+1 only receive keys of old bucket b: no lock
    // needed there, and no reader looks until b is marked migrated.
    this.forEachChain(old, b, (key, count) => {
      const nb = homeOf(hashFrame(key - 1), neu);
      if (partial && this.seek(neu, nb, key) >= 0) Atomics.store(this.ew, this.ei + E_COUNT, count);
      else this.insert(neu, nb, key, count);
    });
  }

  protected override releaseMigrated(old: BucketArray, b: number): void {
    const entries: number[] = [];
    this.forEachChain(old, b, () => {}, entries);
    for (const e of entries) this.freeEntry(e);
  }

  /** Every (key, count) of bucket b's chain; collects the entry indexes into `entries` if given. */
  private forEachChain(arr: BucketArray, b: number, visit: (key: number, count: number) => void, entries?: number[]): void {
    this.locate(arr, b);
    let e = Atomics.load(this.bw, this.bi + W_HEAD);
    for (let steps = 0; e !== 0; steps++) {
      if (steps >= MAX_CHAIN || !this.entry(e)) throw new MorselError('ECORRUPT', `chained reference-count bucket ${b}: chain broken at entry ${e}`);
      const key = Atomics.load(this.ew, this.ei + E_KEY);
      const count = Atomics.load(this.ew, this.ei + E_COUNT);
      const next = Atomics.load(this.ew, this.ei + E_NEXT);
      entries?.push(e);
      visit(key, count);
      e = next;
    }
  }

  protected forEachIn(arr: BucketArray, visit: (key: number, count: number) => void, skipMigrated: boolean): void {
    for (let b = 0; b < arr.buckets; b++) {
      this.locate(arr, b);
      if (skipMigrated && isMigrated(Atomics.load(this.bw, this.bi))) continue;
      this.forEachChain(arr, b, visit);
    }
  }

  protected overloaded(entries: number, arr: BucketArray): boolean {
    return entries > MAX_LOAD * arr.buckets;
  }

  protected load(entries: number, arr: BucketArray): number {
    return entries / (arr.buckets);
  }
}

