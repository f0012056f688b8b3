/**
 * Reference counts keyed by frame number, in the shared region: the common
 * machinery of both tables (chained.ts, rosebush.ts). Absent means count 1;
 * only counts >= 2 are stored, so an unshared frame costs nothing.
 *
 * Storage: bucket arrays whose bucket count is a size class (anchor.ts
 * classBuckets: m * 2^e buckets, m in 8..15), stored as many 2 MiB
 * (order-9) segments as fit and 4 KiB frames for the rest, all listed in
 * the anchor frame's directory (geometry); the chained table adds an entry
 * pool. A small table stays small (4 KiB to start). Lookups use each
 * process's cached copy of the directory, so a lookup reads the state word
 * and then the bucket. A key's home bucket is its hash scaled to the
 * bucket count (fastrange), so any class can be used: the chained table
 * doubles (class + CLASS_STEPS: bucket b splits into 2b and 2b + 1), the
 * Rosebush table grows to the next class whose storage fits the directory
 * (x1.06 to x1.33), which keeps its load factor near the limit instead of
 * halving it at every doubling; the price is more frequent resizes (about
 * 10 key moves per key inserted, against 2 when doubling).
 *
 * Concurrency: a per-bucket lock word (lock.ts) serializes updates of a
 * bucket; lookups take no lock (the lock word's version validates them).
 * Resize is incremental: the state word (anchor.ts) publishes a new array of
 * the next size class next to the old one; every update first migrates its
 * own key's old bucket and a few more (MIGRATE_BATCH), marking each migrated
 * old bucket; lookups read the old bucket, and the new one once the old is
 * marked. Whoever finds every old bucket handed out finishes: it sweeps for
 * buckets a dead migrator left, publishes the state without the old array,
 * waits until no writer that may still touch the old array is inside an
 * update (the write guards), and frees it.
 *
 * # Warning
 * A process killed inside an update leaves at worst a count too high, a
 * leaked pool entry or leaked storage frames (a crash between allocating an
 * array and publishing it, or before an old array is freed), never a count
 * too low: recovery recomputes the counts from the trees and reclaims
 * storage frames that forEachStorageFrame does not name.
 */
import { threadId } from 'node:worker_threads';
import type { FrameAllocator } from '../llfree.js';
import { MorselError, assert, check, isMorselError } from '../../errors.js';
import type { Region } from '../../physical/region.js';
import { CHILD_FRAMES } from '../../physical/layout.js';
import { MiB, PAGE_SIZE, type Frame } from '../../units.js';
import {
  DIR_SLOTS,
  GUARD_FIRST_WORD,
  GUARD_SHARDS,
  GUARD_STRIDE_WORDS,
  MAGIC_BASE,
  W_COUNT,
  W_CURSOR,
  W_MAGIC,
  W_RESIZES,
  W_RESIZE_LOCK,
  MAGIC_V1_BASE,
  W_STATE,
  decodeState,
  dirWord,
  nextState,
  CLASS_STEPS,
  classBuckets,
  type Shape,
} from './anchor.js';
import { PARTIAL, holderBits, isLocked, isMigrated, lockWord, pause, readStable, unlockWord } from './lock.js';

export type RefTableKind = 'chained' | 'rosebush';

export interface RefCountStats {
  entries: number;
  storageBytes: number;
  bytesPerEntry: number;
  resizing: boolean;
  /** dependent accesses on this instance's lookup path: the state word, the home bucket, each chain step */
  probes: number;
  /** cache lines read on this instance's lookup path: probes plus Rosebush neighbour buckets */
  lines: number;
  /** get() calls on this instance */
  lookups: number;
  /** entries per slot (rosebush) or per bucket (chained) of the current array */
  loadFactor: number;
  /** fraction of the old array's buckets handed out for migration (1 when not resizing) */
  resizeProgress: number;
  /** resizes started since the table was created (or reset) */
  resizes: number;
}

/** Largest key: frame + 1 must stay a positive int32. */
export const MAX_FRAME = 2 ** 31 - 2;

/** EINVAL unless `frame` is a frame number the tables can key (an integer in 0..MAX_FRAME). */
export function checkKey(frame: number): void {
  if (!(frame >= 0 && frame <= MAX_FRAME && Math.floor(frame) === frame)) badKey(frame); // no closure on the hot path
}

function badKey(frame: number): never {
  throw new MorselError('EINVAL', `frame ${frame} is not a frame number (0..${MAX_FRAME})`);
}

export interface RefCountTable {
  readonly kind: RefTableKind;
  /** The count of `frame`: 1 when absent. */
  get(frame: number): number;
  /** Adds one reference; returns the new count (>= 2). ENOSPC when storage cannot grow (nothing changed). */
  increment(frame: number): number;
  /** Drops one reference; returns the new count: 2 -> 1 removes the entry; absent (1) -> 0, nothing stored (the caller frees the frame). */
  decrement(frame: number): number;
  /** increment of the first `count` frames; on ENOSPC the ones done are undone. */
  incrementMany(frames: ArrayLike<number>, count: number): void;
  /** decrement of the first `count` frames; `onZero` for each frame whose count reached 0. */
  decrementMany(frames: ArrayLike<number>, count: number, onZero: (frame: number) => void): void;
  /** Every stored entry (count >= 2). Quiescent tables only (check). */
  forEach(visit: (frame: number, count: number) => void): void;
  /** Every 4 KiB frame the table's storage occupies (not the anchor), for recovery reachability. */
  forEachStorageFrame(visit: (frame: number) => void): void;
  /** Every storage allocation as the allocator sees it: base frame and order (recovery passes order-9 ones as huge children). */
  forEachStorageSegment(visit: (frame: number, order: 0 | 9) => void): void;
  /** Drops all entries and frees all storage; the caller guarantees exclusive use (other instances may stay open, idle). */
  reset(): void;
  stats(): RefCountStats;
}

export interface RefTableOptions {
  kind?: RefTableKind;
  /** Test hook: called while the bucket lock of an update of `frame` is held (crash tests). */
  onLocked?: (frame: number) => void;
}

export const KIND_CODE: Record<RefTableKind, number> = { chained: 1, rosebush: 2 };
/** The kind a magic word names (either anchor layout), or null. */
export function kindOfMagic(magic: number): RefTableKind | null {
  const code = magic - (magic >= MAGIC_BASE ? MAGIC_BASE : MAGIC_V1_BASE);
  return code === 1 ? 'chained' : code === 2 ? 'rosebush' : null;
}

const EMPTY_SHAPE: Shape = { sizeClass: 0, group: 0, resizing: false };

/** One bucket array: where bucket b's words are. */
export interface BucketArray {
  sizeClass: number;
  buckets: number;
  /** homeOf's factor: buckets / 2^32 (exact: m * 2^(e - 32)) */
  scale: number;
  /** segments 0..huge-1 are 2 MiB (hugeBytes in all), the rest 4 KiB */
  huge: number;
  hugeBytes: number;
  frames: number[];
  /** per segment: the region window and the index of the segment's word 0 in it */
  segWords: Int32Array[];
  segBase: number[];
}

/** An array's storage: `huge` 2 MiB segments, then `small` 4 KiB ones. */
interface Geometry {
  huge: number;
  small: number;
}

/** An update found no room (rosebush window full): make room and retry. */
export const FULL = -1;
/** A lock-free read saw a half-made structure: retry. */
export const RACY = -2;

const HUGE_BYTES = 2 * MiB;
const HUGE_SHIFT = 21;
const PAGE_SHIFT = 12;
/**
 * Old buckets an update migrates besides its own. More ends a resize sooner
 * (both arrays are allocated until it ends: at growth x1.1 a resize that
 * takes too long doubles the storage a good part of the time) but makes
 * each update during a resize slower (~0.6 us per Rosebush bucket).
 */
export const MIGRATE_BATCH = 16;
/** Bound on the retries of one operation (each retry follows a state transition or a racing writer). */
const MAX_ATTEMPTS = 10_000;
/** Updates of one batch (incrementMany/decrementMany) under one write guard: bounds how long a resize finisher waits. */
const BATCH_UPDATES = 64;
/** Lock-free read attempts before a lookup takes the bucket lock. */
const READ_ATTEMPTS = 8;
/** How long a finishing resizer waits for writers still inside the old array before leaking it. */
const GUARD_WAIT_MS = 500;
const GOLDEN = 0x9e3779b1 | 0;

/** Hash of a frame: Fibonacci hashing (its high bits, which homeOf uses, are the well-mixed ones; consecutive frames spread evenly). */
export const hashFrame = (frame: number): number => Math.imul(frame ^ (frame >>> 16), GOLDEN);

/**
 * Home bucket of hash h in arr: floor(h * buckets / 2^32) (fastrange), from
 * the hash's high bits. Exact in doubles: h * m < 2^36, times a power of 2.
 * With power-of-two counts it is the top log2 bits, as layout 1 homed keys.
 */
export const homeOf = (h: number, arr: BucketArray): number => Math.floor((h >>> 0) * arr.scale);

/**
 * The shared machinery: state, directory, guards, resize. A subclass lays
 * out buckets: `bucketWords` int32 words each, word 0 the lock word.
 */
export abstract class TableBase implements RefCountTable {
  abstract readonly kind: RefTableKind;
  protected abstract readonly bucketWords: number;
  /** Directory slots per group in layout 2. */
  protected abstract readonly dirSlotsV2: number;
  /** Size class of the first array (one 4 KiB frame). */
  protected abstract readonly minClass: number;
  /** Grow to the next usable class (else double: class + CLASS_STEPS). */
  protected abstract readonly fineGrowth: boolean;

  protected readonly anchorWords: Int32Array;
  protected readonly anchorBase: number;
  protected readonly me: number;
  private readonly guardWord: number;
  /** progress of the running incrementMany/decrementMany (updateBatch) */
  private batchDone = 0;
  /** the state the cached arrays were built for (0: none) */
  private cachedState = 0;
  /** whether the cached state is in anchor layout 1 (anchor.ts) */
  protected v1 = false;
  /** the cached state's shape, decoded */
  private shape: Shape = EMPTY_SHAPE;
  protected cur: BucketArray | null = null;
  protected old: BucketArray | null = null;
  /**
   * Instrumentation of the lookup path. `probes`: dependent accesses, reads
   * whose address needs data read before (the state word with the cached
   * directory, the home bucket, each chain step; a Rosebush neighbour bucket
   * is at an address known from the hash, so it adds a line, not a step).
   * `lines`: every cache line read.
   */
  protected probes = 0;
  protected lines = 0;
  private lookups = 0;
  // bucket located by locate(): its window and lock-word index
  protected bw: Int32Array = new Int32Array(0);
  protected bi = 0;

  constructor(
    protected readonly region: Region,
    protected readonly alloc: FrameAllocator,
    protected readonly anchor: Frame,
    protected readonly onLocked?: (frame: number) => void,
  ) {
    this.anchorWords = region.words(anchor);
    this.anchorBase = region.wordIndex(anchor, 0);
    this.me = region.userSlot >= 0 ? holderBits(region) : 0;
    const shard = (Math.max(0, region.userSlot) * 7 + threadId) % GUARD_SHARDS;
    this.guardWord = this.anchorBase + GUARD_FIRST_WORD + shard * GUARD_STRIDE_WORDS;
  }

  // --- per-kind bucket operations ------------------------------------------------

  /** Lock-free: the count of `key` (frame + 1) homed at bucket b of `arr`, 0 when absent, RACY on a torn read. Adds its probes. */
  protected abstract find(arr: BucketArray, b: number, key: number): number;
  /** Under b's lock: adds `delta` (+1/-1) to key's count; returns the new count (0: was absent), or FULL. */
  protected abstract apply(arr: BucketArray, b: number, key: number, delta: number): number;
  /**
   * Under old bucket b's lock: copies its entries into `neu`. `partial`: an
   * earlier migration of b stopped midway (died or threw), so some keys may
   * be in `neu` already: find and overwrite them instead of inserting twice.
   */
  protected abstract migrate(old: BucketArray, b: number, neu: BucketArray, partial: boolean): void;
  /** After old bucket b is marked migrated: releases what it held outside the array (pool entries). */
  protected releaseMigrated(_old: BucketArray, _b: number): void {}
  /** Every entry of `arr` (keys homed in migrated buckets skipped when `skipMigrated`). */
  protected abstract forEachIn(arr: BucketArray, visit: (key: number, count: number) => void, skipMigrated: boolean): void;
  /** Whether `entries` warrant growing `arr`. */
  protected abstract overloaded(entries: number, arr: BucketArray): boolean;
  /** Entries per slot (or per bucket) of `arr`. */
  protected abstract load(entries: number, arr: BucketArray): number;
  /** Storage besides the bucket arrays (pool segments): frames and orders. */
  protected forEachExtraSegment(_visit: (frame: number, order: 0 | 9) => void): void {}
  /** Called with the resize lock held on a new table (allocate the pool); ENOSPC leaves nothing allocated. */
  protected initExtra(): void {}
  /** Frees extra storage (reset). */
  protected resetExtra(): void {}
  /** The state changed (a resize, or a reset by another instance): drop cached views of extra storage that may be stale. */
  protected shapeChanged(): void {}

  // --- anchor words --------------------------------------------------------------

  protected aload(word: number): number {
    return Atomics.load(this.anchorWords, this.anchorBase + word);
  }

  protected astore(word: number, v: number): void {
    Atomics.store(this.anchorWords, this.anchorBase + word, v);
  }

  /** Locks an anchor lock word (resize or pool lock); returns the unlocked form to pass to aunlock. */
  protected alock(word: number): number {
    return lockWord(this.region, this.anchorWords, this.anchorBase + word, this.me);
  }

  protected aunlock(word: number, before: number): void {
    unlockWord(this.anchorWords, this.anchorBase + word, before);
  }

  /** Tries once to lock an anchor lock word: the unlocked form, or -1 when held. */
  private atryLock(word: number): number {
    const w = this.aload(word);
    if (isLocked(w)) return -1;
    return Atomics.compareExchange(this.anchorWords, this.anchorBase + word, w, w | this.me) === w ? w : -1;
  }

  // --- geometry --------------------------------------------------------------------

  /**
   * The segments of an array of size class c: as many 2 MiB ones as fit,
   * then 4 KiB ones for the rest; null when the rest is not whole 4 KiB
   * frames or the segments outnumber the directory's slots.
   */
  protected geometry(c: number): Geometry | null {
    const bytes = classBuckets(c) * this.bucketWords * 4;
    const huge = Math.floor(bytes / HUGE_BYTES);
    const small = (bytes - huge * HUGE_BYTES) / PAGE_SIZE;
    return Number.isInteger(small) && huge + small <= this.dirSlots() ? { huge, small } : null;
  }

  /** Directory slots per group: layout 1 and the chained table have DIR_SLOTS; a layout-2 Rosebush table uses the pool's words too. */
  private dirSlots(): number {
    return this.v1 ? DIR_SLOTS : this.dirSlotsV2;
  }

  /** Anchor word of directory slot `slot` of `group`. */
  private dirWordOf(group: number, slot: number): number {
    return dirWord(group, slot, this.dirSlots());
  }

  /** The class a resize of class c grows to; null when no larger one fits the directory. */
  private nextClass(c: number): number | null {
    if (!this.fineGrowth || this.v1) return this.geometry(c + CLASS_STEPS) === null ? null : c + CLASS_STEPS;
    for (let n = c + 1; n <= c + 2 * CLASS_STEPS; n++) if (this.geometry(n) !== null) return n; // two doublings: past any run of unusable classes
    return null;
  }

  /** The class a resize to class c grew from (the inverse of nextClass). */
  private prevClass(c: number): number {
    if (!this.fineGrowth || this.v1) return c - CLASS_STEPS;
    for (let p = c - 1; p >= this.minClass; p--) if (this.geometry(p) !== null) return p;
    throw new MorselError('ECORRUPT', `reference-count table state names class ${c}, which no resize reaches`);
  }

  private buildArray(c: number, group: number): BucketArray {
    const g = this.geometry(c);
    if (g === null) throw new MorselError('ECORRUPT', `reference-count table state names class ${c}, which has no storage layout`);
    const frames: number[] = [];
    const segWords: Int32Array[] = [];
    const segBase: number[] = [];
    for (let s = 0; s < g.huge + g.small; s++) {
      const f = this.aload(this.dirWordOf(group, s)) >>> 0;
      frames.push(f);
      const safe = (f < this.region.frameCount ? f : 0) as Frame; // a torn read is caught by the state re-check
      segWords.push(this.region.words(safe));
      segBase.push(this.region.wordIndex(safe, 0));
    }
    const buckets = classBuckets(c);
    return { sizeClass: c, buckets, scale: buckets / 2 ** 32, huge: g.huge, hugeBytes: g.huge * HUGE_BYTES, frames, segWords, segBase };
  }

  /** Points bw/bi at bucket b's lock word: in a 2 MiB segment, or past them in a 4 KiB one. */
  protected locate(arr: BucketArray, b: number): void {
    const off = b * this.bucketWords * 4;
    if (off < arr.hugeBytes) {
      const seg = off >>> HUGE_SHIFT;
      this.bw = arr.segWords[seg];
      this.bi = arr.segBase[seg] + ((off & (HUGE_BYTES - 1)) >>> 2);
    } else {
      const rest = off - arr.hugeBytes;
      const seg = arr.huge + (rest >>> PAGE_SHIFT);
      this.bw = arr.segWords[seg];
      this.bi = arr.segBase[seg] + ((rest & (PAGE_SIZE - 1)) >>> 2);
    }
  }

  /**
   * Loads the state word and makes cur/old describe it (cur null: no
   * storage); returns it. The magic says the layout; magic 0 is an empty
   * table whatever the state word holds (a layout-1 reset left its
   * generation bits there).
   */
  protected snapshot(): number {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const s = this.aload(W_STATE);
      if (s === this.cachedState) return s;
      const magic = this.aload(W_MAGIC);
      this.v1 = magic !== 0 && this.checkMagic(magic);
      const shape = magic === 0 ? EMPTY_SHAPE : decodeState(s, this.v1);
      const { sizeClass, group, resizing } = shape;
      try {
        this.cur = sizeClass === 0 ? null : this.buildArray(sizeClass, group);
        this.old = sizeClass !== 0 && resizing ? this.buildArray(this.prevClass(sizeClass), 1 - group) : null;
      } catch (e) {
        if (this.aload(W_STATE) === s) throw e;
        continue; // a torn read of a state that changed meanwhile
      }
      this.shapeChanged();
      if (this.aload(W_STATE) === s) {
        this.cachedState = s;
        this.shape = shape;
        return s;
      }
    }
    throw new MorselError('ETIMEDOUT', 'reference-count table state kept changing');
  }

  /** EINVAL unless `magic` names this kind of table; true when it is in layout 1. */
  private checkMagic(magic: number): boolean {
    const code = KIND_CODE[this.kind];
    check(magic === MAGIC_BASE + code || magic === MAGIC_V1_BASE + code, 'EINVAL', () => `anchor frame ${this.anchor} holds a ${kindOfMagic(magic) ?? 'corrupt'} reference-count table, not a ${this.kind} one`);
    return magic === MAGIC_V1_BASE + code;
  }


  // --- write guards --------------------------------------------------------------------

  private enter(): void {
    if (!this.region.writable) this.region.denyWrite();
    Atomics.add(this.anchorWords, this.guardWord, 1);
  }

  private exit(): void {
    Atomics.sub(this.anchorWords, this.guardWord, 1);
  }

  /**
   * Waits until every guard shard has been seen at 0 once: then no writer
   * that could have read the pre-finish state is still inside an update.
   * False when a shard stayed busy for GUARD_WAIT_MS (a killed writer's
   * count, or a shard kept busy): the caller then leaks the old array.
   */
  private waitForWriters(): boolean {
    const started = performance.now();
    for (let shard = 0; shard < GUARD_SHARDS; shard++) {
      const word = this.anchorBase + GUARD_FIRST_WORD + shard * GUARD_STRIDE_WORDS;
      for (let spin = 0; Atomics.load(this.anchorWords, word) !== 0; spin++) {
        if (performance.now() - started > GUARD_WAIT_MS) return false;
        if (spin > 64) pause(0.05);
      }
    }
    return true;
  }

  // --- the interface ------------------------------------------------------------------

  get(frame: number): number {
    checkKey(frame);
    this.lookups++;
    const key = (frame + 1) | 0;
    // Fast path: a stable table whose shape this instance has cached. A
    // seqlock read: the opening reads of the state and lock words are plain
    // loads (in V8 an Atomics.load costs as much as a read-modify-write, ~5 ns
    // here; loads stay in program order on the effect chain and on x86), the
    // closing reads are atomic, so they can be neither elided nor hoisted
    // above the bucket reads they validate.
    const s = this.anchorWords[this.anchorBase + W_STATE];
    const arr = this.cur;
    if (s === this.cachedState && this.old === null && arr !== null) {
      const b = homeOf(hashFrame(frame), arr);
      this.locate(arr, b);
      const words = this.bw;
      const i = this.bi;
      const w = words[i];
      if (!isLocked(w)) {
        const c = this.find(arr, b, key);
        if (c !== RACY && Atomics.load(words, i) === w && Atomics.load(this.anchorWords, this.anchorBase + W_STATE) === s) {
          this.stateRead();
          return c === 0 ? 1 : c;
        }
      }
    }
    return this.getSlow(frame, key);
  }

  /** Instrumentation: a lookup's read of the state word (its directory is cached): one line, one dependent step. */
  private stateRead(): void {
    this.probes++;
    this.lines++;
  }

  private getSlow(frame: number, key: number): number {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const s = this.snapshot();
      this.stateRead();
      if (this.cur === null) return 1;
      const h = hashFrame(frame);
      const c = attempt < READ_ATTEMPTS ? this.readOnce(h, key) : this.readLocked(h, key);
      if (c !== RACY && this.aload(W_STATE) === s) return c === 0 ? 1 : c;
    }
    throw new MorselError('ETIMEDOUT', `lookup of frame ${frame} kept racing with writers`);
  }

  /** One lock-free read of key's count (0 absent, RACY to retry). */
  private readOnce(h: number, key: number): number {
    const arr = this.cur!;
    if (this.old !== null) {
      const ob = homeOf(h, this.old);
      this.locate(this.old, ob);
      const w = readStable(this.bw, this.bi);
      if (isLocked(w)) return RACY;
      if (!isMigrated(w)) return this.validated(this.old, ob, key, w);
      this.probes++; // the old bucket's line, read before the new array's (counted as dependent: it decides where to look)
      this.lines++;
    }
    const b = homeOf(h, arr);
    this.locate(arr, b);
    const w = readStable(this.bw, this.bi);
    if (isLocked(w)) return RACY;
    return this.validated(arr, b, key, w);
  }

  private validated(arr: BucketArray, b: number, key: number, w: number): number {
    const c = this.find(arr, b, key);
    this.locate(arr, b);
    return Atomics.load(this.bw, this.bi) === w ? c : RACY;
  }

  /** A read under the bucket lock (after lock-free reads kept racing, e.g. with a dead holder's lock). */
  private readLocked(h: number, key: number): number {
    if (this.me === 0) return this.readOnce(h, key);
    this.enter();
    try {
      const arr = this.home(h);
      const b = homeOf(h, arr);
      this.locate(arr, b);
      const before = lockWord(this.region, this.bw, this.bi, this.me);
      const c = isMigrated(before) ? RACY : this.find(arr, b, key);
      this.locate(arr, b);
      unlockWord(this.bw, this.bi, before);
      return c;
    } finally {
      this.exit();
    }
  }

  increment(frame: number): number {
    checkKey(frame);
    this.enter();
    let r: number;
    try {
      r = this.update(frame, 1);
    } finally {
      this.exit();
    }
    this.afterUpdate();
    return r;
  }

  decrement(frame: number): number {
    checkKey(frame);
    this.enter();
    let r: number;
    try {
      r = this.update(frame, -1);
    } finally {
      this.exit();
    }
    this.afterUpdate();
    return r;
  }

  incrementMany(frames: ArrayLike<number>, count: number): void {
    check(Number.isInteger(count) && count >= 0 && count <= frames.length, 'EINVAL', () => `count ${count} outside 0..${frames.length}`);
    for (let i = 0; i < count; i++) checkKey(frames[i]);
    this.batchDone = 0;
    try {
      while (this.batchDone < count) this.updateBatch(frames, count, 1, null);
    } catch (e) {
      for (let i = this.batchDone - 1; i >= 0; i--) this.decrement(frames[i]); // undo: the batch is all or nothing
      throw e;
    }
  }

  decrementMany(frames: ArrayLike<number>, count: number, onZero: (frame: number) => void): void {
    check(Number.isInteger(count) && count >= 0 && count <= frames.length, 'EINVAL', () => `count ${count} outside 0..${frames.length}`);
    for (let i = 0; i < count; i++) checkKey(frames[i]);
    this.batchDone = 0;
    while (this.batchDone < count) this.updateBatch(frames, count, -1, onZero);
  }

  /**
   * Applies `delta` to frames[batchDone..count), at most BATCH_UPDATES of
   * them under one write guard (a resize finisher waits for the guard), then
   * one resize step. batchDone always counts the frames updated, also when
   * an update throws.
   */
  private updateBatch(frames: ArrayLike<number>, count: number, delta: number, onZero: ((frame: number) => void) | null): void {
    const end = Math.min(count, this.batchDone + BATCH_UPDATES);
    const zeros: number[] = [];
    this.enter();
    try {
      for (; this.batchDone < end; this.batchDone++) if (this.update(frames[this.batchDone], delta) === 0) zeros.push(frames[this.batchDone]);
    } finally {
      this.exit();
    }
    this.afterUpdate();
    if (onZero !== null) for (const f of zeros) onZero(f);
  }

  /** The array an update of hash h works in, after migrating h's old bucket during a resize. */
  private home(h: number): BucketArray {
    if (this.old !== null) {
      this.migrateOld(homeOf(h, this.old));
      this.helpMigrate();
    }
    return this.cur!;
  }

  private update(frame: number, delta: number): number {
    const key = (frame + 1) | 0;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const s = this.snapshot();
      if (this.cur === null) {
        if (delta < 0) return 0;
        this.unguarded(() => this.initialize());
        continue;
      }
      const h = hashFrame(frame);
      const arr = this.home(h);
      const b = homeOf(h, arr);
      this.locate(arr, b);
      const before = lockWord(this.region, this.bw, this.bi, this.me);
      let r = RACY;
      try {
        if (!isMigrated(before) && this.aload(W_STATE) === s) {
          this.onLocked?.(frame);
          r = this.apply(arr, b, key, delta);
        }
      } finally {
        this.locate(arr, b);
        unlockWord(this.bw, this.bi, before);
      }
      if (r === RACY) continue; // a resize started or ended meanwhile
      if (r === FULL) {
        this.makeRoom(s);
        continue;
      }
      if (r === 2 && delta > 0) this.counted(1);
      else if (r === 1 && delta < 0) this.counted(-1);
      return r;
    }
    throw new MorselError('ETIMEDOUT', `update of frame ${frame} kept racing with resizes`);
  }

  private counted(d: number): void {
    Atomics.add(this.anchorWords, this.anchorBase + W_COUNT, d);
  }

  /**
   * After an update (outside the guard): start a resize when overloaded,
   * finish one when all is migrated. Never throws a MorselError: the update
   * has happened, and a resize step that cannot proceed now (ENOSPC, a live
   * holder's ETIMEDOUT) is retried by later updates.
   */
  private afterUpdate(): void {
    try {
      this.resizeStep();
    } catch (e) {
      if (!isMorselError(e)) throw e;
    }
  }

  private resizeStep(): void {
    const s = this.aload(W_STATE);
    if (this.cachedState !== s || this.cur === null) return;
    if (this.shape.resizing) {
      if (this.old !== null && this.aload(W_CURSOR) >= this.old.buckets) this.finishResize(s);
    } else if (this.cur !== null && this.overloaded(this.aload(W_COUNT), this.cur)) {
      this.startResize(s, false);
    }
  }

  /** An update found no room: finish a running resize, or start one (ENOSPC if the allocator cannot). */
  private makeRoom(s: number): void {
    if (this.shape.resizing) {
      for (let b = 0; b < this.old!.buckets; b++) this.migrateOld(b);
      this.unguarded(() => this.finishResize(s));
      return;
    }
    if (!this.unguarded(() => this.startResize(s, true))) throw new MorselError('ENOSPC', `no frames left to grow the ${this.kind} reference-count table`);
  }

  /**
   * Runs `fn` outside this thread's write guard: whoever holds the resize
   * lock may wait for the guards, so no writer waits for that lock inside one.
   */
  private unguarded<T>(fn: () => T): T {
    this.exit();
    try {
      return fn();
    } finally {
      this.enter();
    }
  }

  // --- resize ---------------------------------------------------------------------

  /** Migrates old bucket b (unless already done) under its lock. Inside a guard (or the finisher's resize lock). */
  private migrateOld(b: number): void {
    const old = this.old!;
    this.locate(old, b);
    if (isMigrated(Atomics.load(this.bw, this.bi))) return;
    const before = lockWord(this.region, this.bw, this.bi, this.me);
    if (isMigrated(before)) {
      this.locate(old, b);
      unlockWord(this.bw, this.bi, before);
      return;
    }
    // PARTIAL stays in the word until the bucket is marked migrated: a
    // migrator that dies or throws midway leaves it for the next one, which
    // must then find (and overwrite) the copies already made.
    Atomics.or(this.bw, this.bi, PARTIAL);
    let done = false;
    try {
      this.migrate(old, b, this.cur!, (before & PARTIAL) !== 0);
      done = true;
    } finally {
      this.locate(old, b);
      unlockWord(this.bw, this.bi, before | PARTIAL, done);
    }
    this.releaseMigrated(old, b); // once: only the migrator gets here
  }

  /**
   * Migrates the next MIGRATE_BATCH old buckets from the shared cursor. A
   * bucket that cannot be migrated now (ENOSPC, ETIMEDOUT) is left to the
   * finisher's sweep: the caller's own update does not fail for it.
   */
  private helpMigrate(): void {
    const old = this.old!;
    if (this.aload(W_CURSOR) >= old.buckets) return;
    const first = Atomics.add(this.anchorWords, this.anchorBase + W_CURSOR, MIGRATE_BATCH);
    try {
      for (let b = first; b < Math.min(old.buckets, first + MIGRATE_BATCH); b++) this.migrateOld(b);
    } catch (e) {
      if (!isMorselError(e)) throw e;
    }
  }

  /** Creates the first array (state 0 -> a table); ENOSPC when the allocator cannot. */
  private initialize(): void {
    const lock = this.alock(W_RESIZE_LOCK);
    try {
      const s = this.aload(W_STATE);
      const magic = this.aload(W_MAGIC);
      if (magic !== 0 && decodeState(s, this.checkMagic(magic)).sizeClass !== 0) return; // another thread did it
      this.v1 = false; // the new table is layout 2 (dirWordOf, geometry)
      this.allocArray(this.minClass, 0);
      try {
        this.initExtra();
      } catch (e) {
        this.freeArray(this.minClass, 0);
        throw e;
      }
      // An empty layout-2 state before the magic: whoever reads the new magic
      // then decodes no stale layout-1 word (a layout-1 reset leaves
      // generation bits in the class bits).
      const empty = nextState(s, EMPTY_SHAPE, false);
      this.astore(W_STATE, empty);
      this.astore(W_MAGIC, MAGIC_BASE + KIND_CODE[this.kind]);
      this.astore(W_STATE, nextState(empty, { sizeClass: this.minClass, group: 0, resizing: false }, false));
    } finally {
      this.aunlock(W_RESIZE_LOCK, lock);
    }
  }

  /**
   * Starts growing the current array to the next size class: allocates and zeroes the new one in
   * the free directory group, then publishes it. `wait`: wait for the resize
   * lock (else give up when it is busy). False when the allocator has no
   * room (nothing changed).
   */
  private startResize(s: number, wait: boolean): boolean {
    const lock = wait ? this.alock(W_RESIZE_LOCK) : this.atryLock(W_RESIZE_LOCK);
    if (lock === -1) return true;
    try {
      if (this.aload(W_STATE) !== s) return true; // someone else changed the shape
      this.snapshot();
      const shape = this.shape;
      const next = this.nextClass(shape.sizeClass);
      if (next === null) return false;
      const group = 1 - shape.group;
      try {
        this.allocArray(next, group);
      } catch (e) {
        if (e instanceof MorselError && e.code === 'ENOSPC') return false;
        throw e;
      }
      this.astore(W_CURSOR, 0);
      this.astore(W_STATE, nextState(s, { sizeClass: next, group, resizing: true }, this.v1));
      Atomics.add(this.anchorWords, this.anchorBase + W_RESIZES, 1);
      return true;
    } finally {
      this.aunlock(W_RESIZE_LOCK, lock);
    }
  }

  /**
   * Ends a resize whose buckets have all been handed out: sweeps for old
   * buckets left unmigrated (a migrator died), publishes the state without
   * the old array, waits for writers, frees the old array. Outside any guard.
   */
  private finishResize(s: number): void {
    const lock = this.atryLock(W_RESIZE_LOCK);
    if (lock === -1) return;
    try {
      if (this.aload(W_STATE) !== s) return;
      this.snapshot();
      const old = this.old!;
      this.enter();
      try {
        for (let b = 0; b < old.buckets; b++) this.migrateOld(b);
      } finally {
        this.exit();
      }
      const shape = this.shape;
      this.astore(W_STATE, nextState(s, { ...shape, resizing: false }, this.v1));
      if (this.waitForWriters()) this.freeArray(old.sizeClass, 1 - shape.group);
    } finally {
      this.aunlock(W_RESIZE_LOCK, lock);
    }
  }

  /** Allocates and zeroes the segments of an array of class c into directory `group`; nothing left on ENOSPC. */
  private allocArray(c: number, group: number): void {
    const { huge, small } = this.geometry(c)!;
    const got = allocZeroed(this.region, this.alloc, 9, huge);
    try {
      got.push(...allocZeroed(this.region, this.alloc, 0, small));
    } catch (e) {
      for (const f of got) this.alloc.free(f as Frame, 9);
      throw e;
    }
    for (let s = 0; s < got.length; s++) this.astore(this.dirWordOf(group, s), got[s]);
  }

  private freeArray(c: number, group: number): void {
    const { huge, small } = this.geometry(c)!;
    for (let s = 0; s < huge + small; s++) {
      this.alloc.free(this.aload(this.dirWordOf(group, s)) as Frame, s < huge ? 9 : 0);
      this.astore(this.dirWordOf(group, s), 0);
    }
  }

  // --- whole-table views ------------------------------------------------------------

  forEach(visit: (frame: number, count: number) => void): void {
    this.snapshot();
    if (this.cur === null) return;
    if (this.old !== null) this.forEachIn(this.old, (key, c) => visit(key - 1, c), true);
    this.forEachIn(this.cur!, (key, c) => visit(key - 1, c), false);
  }

  /** Every storage segment: base frame and order. */
  forEachStorageSegment(visit: (frame: number, order: 0 | 9) => void): void {
    this.snapshot();
    if (this.cur === null) return;
    for (const arr of this.old === null ? [this.cur!] : [this.cur!, this.old]) arr.frames.forEach((f, i) => visit(f, i < arr.huge ? 9 : 0));
    this.forEachExtraSegment(visit);
  }

  forEachStorageFrame(visit: (frame: number) => void): void {
    this.forEachStorageSegment((f, order) => {
      for (let i = 0; i < (order === 9 ? CHILD_FRAMES : 1); i++) visit(f + i);
    });
  }

  reset(): void {
    const s = this.snapshot();
    if (this.cur !== null) {
      const { group } = this.shape;
      if (this.old !== null) this.freeArray(this.old.sizeClass, 1 - group);
      this.freeArray(this.cur!.sizeClass, group);
      this.resetExtra();
    }
    for (const w of [W_MAGIC, W_CURSOR, W_RESIZE_LOCK, W_COUNT, W_RESIZES]) this.astore(w, 0);
    for (let shard = 0; shard < GUARD_SHARDS; shard++) this.astore(GUARD_FIRST_WORD + shard * GUARD_STRIDE_WORDS, 0);
    // a new generation (layout 2 from now on): cached views elsewhere are dropped
    this.astore(W_STATE, s === 0 ? 0 : nextState(s, EMPTY_SHAPE, false));
  }

  stats(): RefCountStats {
    const s = this.snapshot();
    const entries = this.aload(W_COUNT);
    let storageBytes = 0;
    if (this.cur !== null) this.forEachStorageSegment((_f, order) => (storageBytes += order === 9 ? HUGE_BYTES : PAGE_SIZE));
    const progress = this.old === null ? 1 : Math.min(1, this.aload(W_CURSOR) / this.old.buckets);
    return {
      entries,
      storageBytes,
      bytesPerEntry: entries === 0 ? 0 : storageBytes / entries,
      resizing: this.shape.resizing,
      probes: this.probes,
      lines: this.lines,
      lookups: this.lookups,
      loadFactor: this.cur === null ? 0 : this.load(entries, this.cur),
      resizeProgress: progress,
      resizes: this.aload(W_RESIZES),
    };
  }
}

/** `n` zeroed frames of `order`; ENOSPC frees the ones already taken. */
export function allocZeroed(region: Region, alloc: FrameAllocator, order: 0 | 9, n: number): number[] {
  const got: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const f = alloc.alloc(order);
      got.push(f);
      for (let j = 0; j < (order === 9 ? CHILD_FRAMES : 1); j++) region.zeroFrame((f + j) as Frame);
    }
  } catch (e) {
    for (const f of got) alloc.free(f as Frame, order);
    throw e;
  }
  assert(got.length === n, 'allocated every segment');
  return got;
}
