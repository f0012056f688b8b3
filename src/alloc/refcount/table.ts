/**
 * Reference counts keyed by frame number, in the shared region: the common
 * machinery of both tables (chained.ts, rosebush.ts). Absent means count 1;
 * only counts >= 2 are stored, so an unshared frame costs nothing.
 *
 * Storage: bucket arrays of 2^k buckets, split into segments of order-0
 * frames while an array is under 2 MiB and of order-9 frames (2 MiB) from
 * then on; the chained table adds an entry pool (pool.ts). Order 9 for big
 * arrays keeps the whole directory inside the anchor frame (256 segments of
 * 2 MiB per array) so a lookup needs one directory step and one bucket
 * step; order 0 for small arrays keeps a small table small (4 KiB to start).
 *
 * Concurrency: a per-bucket lock word (lock.ts) serializes updates of a
 * bucket; lookups take no lock (the lock word's version validates them).
 * Resize is incremental: the state word (anchor.ts) publishes a new array of
 * twice the buckets next to the old one; every update first migrates its
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
  W_STATE,
  dirWord,
  nextState,
  stateGroup,
  stateLog2,
  stateResizing,
} from './anchor.js';
import { holderBits, isLocked, isMigrated, lockWord, pause, readStable, unlockWord } from './lock.js';

export type RefTableKind = 'chained' | 'rosebush';

export interface RefCountStats {
  entries: number;
  storageBytes: number;
  bytesPerEntry: number;
  resizing: boolean;
  /** cache-line-distinct reads on this instance's lookup path (directory, buckets, chain steps) */
  probes: number;
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
export const kindOfMagic = (magic: number): RefTableKind | null => (magic === MAGIC_BASE + 1 ? 'chained' : magic === MAGIC_BASE + 2 ? 'rosebush' : null);

/** One bucket array: where bucket b's words are. */
export interface BucketArray {
  log2: number;
  buckets: number;
  order: 0 | 9;
  frames: number[];
  /** per segment: the region window and the index of the segment's word 0 in it */
  segWords: Int32Array[];
  segBase: number[];
  segShift: number;
  segMask: number;
}

/** An update found no room (rosebush window full): make room and retry. */
export const FULL = -1;
/** A lock-free read saw a half-made structure: retry. */
export const RACY = -2;

const HUGE_BYTES = 2 * MiB;
/** Old buckets an update migrates besides its own. */
const MIGRATE_BATCH = 4;
/** Bound on the retries of one operation (each retry follows a state transition or a racing writer). */
const MAX_ATTEMPTS = 10_000;
/** Updates of one batch (incrementMany/decrementMany) under one write guard: bounds how long a resize finisher waits. */
const BATCH_UPDATES = 64;
/** Lock-free read attempts before a lookup takes the bucket lock. */
const READ_ATTEMPTS = 8;
/** How long a finishing resizer waits for writers still inside the old array before leaking it. */
const GUARD_WAIT_MS = 500;
const GOLDEN = 0x9e3779b1 | 0;

/** Hash of a frame: Fibonacci hashing; bucket = top log2 bits, so bucket b splits into 2b and 2b+1. */
export const hashFrame = (frame: number): number => Math.imul(frame ^ (frame >>> 16), GOLDEN);
export const homeOf = (h: number, log2: number): number => h >>> (32 - log2);

/**
 * The shared machinery: state, directory, guards, resize. A subclass lays
 * out buckets: `bucketWords` int32 words each, word 0 the lock word.
 */
export abstract class TableBase implements RefCountTable {
  abstract readonly kind: RefTableKind;
  protected abstract readonly bucketWords: number;
  /** log2 of the first array's bucket count (one 4 KiB frame). */
  protected abstract readonly minLog2: number;

  protected readonly anchorWords: Int32Array;
  protected readonly anchorBase: number;
  protected readonly me: number;
  private readonly guardWord: number;
  /** progress of the running incrementMany/decrementMany (updateBatch) */
  private batchDone = 0;
  /** the state the cached arrays were built for (0: none) */
  private cachedState = 0;
  protected cur: BucketArray | null = null;
  protected old: BucketArray | null = null;
  /** instrumentation: cache-line-distinct reads on the lookup path */
  protected probes = 0;
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
  /** Under old bucket b's lock: copies its entries into `neu` (overwriting copies a dead migrator left). */
  protected abstract migrate(old: BucketArray, b: number, neu: BucketArray): void;
  /** After old bucket b is marked migrated: releases what it held outside the array (pool entries). */
  protected releaseMigrated(_old: BucketArray, _b: number): void {}
  /** Every entry of `arr` (keys homed in migrated buckets skipped when `skipMigrated`). */
  protected abstract forEachIn(arr: BucketArray, visit: (key: number, count: number) => void, skipMigrated: boolean): void;
  /** Whether `entries` warrant doubling `arr`. */
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

  /** Segment order and count of an array of 2^log2 buckets. */
  protected geometry(log2: number): { order: 0 | 9; segments: number; bytes: number } {
    const bytes = Math.max(PAGE_SIZE, (2 ** log2) * this.bucketWords * 4);
    const order = bytes >= HUGE_BYTES ? 9 : 0;
    return { order, segments: bytes / (order === 9 ? HUGE_BYTES : PAGE_SIZE), bytes };
  }

  private buildArray(log2: number, group: number): BucketArray {
    const { order, segments } = this.geometry(log2);
    const frames: number[] = [];
    const segWords: Int32Array[] = [];
    const segBase: number[] = [];
    for (let s = 0; s < segments; s++) {
      const f = this.aload(dirWord(group, s)) >>> 0;
      frames.push(f);
      const safe = (f < this.region.frameCount ? f : 0) as Frame; // a torn read is caught by the state re-check
      segWords.push(this.region.words(safe));
      segBase.push(this.region.wordIndex(safe, 0));
    }
    const segShift = order === 9 ? 21 : 12;
    return { log2, buckets: 2 ** log2, order, frames, segWords, segBase, segShift, segMask: (1 << segShift) - 1 };
  }

  /** Points bw/bi at bucket b's lock word. */
  protected locate(arr: BucketArray, b: number): void {
    const off = b * this.bucketWords * 4;
    const seg = off >>> arr.segShift;
    this.bw = arr.segWords[seg];
    this.bi = arr.segBase[seg] + ((off & arr.segMask) >>> 2);
  }

  /** Loads the state word and makes cur/old describe it; returns it (log2 0: empty). */
  protected snapshot(): number {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const s = this.aload(W_STATE);
      if (s === this.cachedState) return s;
      const log2 = stateLog2(s);
      const group = stateGroup(s);
      this.cur = log2 === 0 ? null : this.buildArray(log2, group);
      this.old = log2 !== 0 && stateResizing(s) ? this.buildArray(log2 - 1, 1 - group) : null;
      this.shapeChanged();
      if (log2 !== 0) this.checkMagic();
      if (this.aload(W_STATE) === s) {
        this.cachedState = s;
        return s;
      }
    }
    throw new MorselError('ETIMEDOUT', 'reference-count table state kept changing');
  }

  private checkMagic(): void {
    const magic = this.aload(W_MAGIC);
    check(magic === MAGIC_BASE + KIND_CODE[this.kind], 'EINVAL', () => `anchor frame ${this.anchor} holds a ${kindOfMagic(magic) ?? 'corrupt'} reference-count table, not a ${this.kind} one`);
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
    const h = hashFrame(frame);
    // Fast path: a stable table whose shape this instance has cached. A
    // seqlock read: the opening reads of the state and lock words are plain
    // loads (in V8 an Atomics.load costs as much as a read-modify-write, ~5 ns
    // here; loads stay in program order on the effect chain and on x86), the
    // closing reads are atomic, so they can be neither elided nor hoisted
    // above the bucket reads they validate.
    const s = this.anchorWords[this.anchorBase + W_STATE];
    const arr = this.cur;
    if (s === this.cachedState && this.old === null && arr !== null) {
      const b = homeOf(h, arr.log2);
      this.locate(arr, b);
      const words = this.bw;
      const i = this.bi;
      const w = words[i];
      if (!isLocked(w)) {
        const c = this.find(arr, b, key);
        if (c !== RACY && Atomics.load(words, i) === w && Atomics.load(this.anchorWords, this.anchorBase + W_STATE) === s) {
          this.probes++; // the state word and directory
          return c === 0 ? 1 : c;
        }
      }
    }
    return this.getSlow(frame, h, key);
  }

  private getSlow(frame: number, h: number, key: number): number {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const s = this.snapshot();
      this.probes++; // the state word and directory
      if (stateLog2(s) === 0) return 1;
      const c = attempt < READ_ATTEMPTS ? this.readOnce(h, key) : this.readLocked(h, key);
      if (c !== RACY && this.aload(W_STATE) === s) return c === 0 ? 1 : c;
    }
    throw new MorselError('ETIMEDOUT', `lookup of frame ${frame} kept racing with writers`);
  }

  /** One lock-free read of key's count (0 absent, RACY to retry). */
  private readOnce(h: number, key: number): number {
    const arr = this.cur!;
    if (this.old !== null) {
      const ob = homeOf(h, this.old.log2);
      this.locate(this.old, ob);
      const w = readStable(this.bw, this.bi);
      if (isLocked(w)) return RACY;
      if (!isMigrated(w)) return this.validated(this.old, ob, key, w);
      this.probes++;
    }
    const b = homeOf(h, arr.log2);
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
      const b = homeOf(h, arr.log2);
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
      this.migrateOld(homeOf(h, this.old.log2));
      this.helpMigrate();
    }
    return this.cur!;
  }

  private update(frame: number, delta: number): number {
    const key = (frame + 1) | 0;
    const h = hashFrame(frame);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const s = this.snapshot();
      if (stateLog2(s) === 0) {
        if (delta < 0) return 0;
        this.unguarded(() => this.initialize());
        continue;
      }
      const arr = this.home(h);
      const b = homeOf(h, arr.log2);
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
    if (stateLog2(s) === 0) return;
    if (stateResizing(s)) {
      if (this.old !== null && this.cachedState === s && this.aload(W_CURSOR) >= this.old.buckets) this.finishResize(s);
    } else if (this.cur !== null && this.cachedState === s && this.overloaded(this.aload(W_COUNT), this.cur)) {
      this.startResize(s, false);
    }
  }

  /** An update found no room: finish a running resize, or start one (ENOSPC if the allocator cannot). */
  private makeRoom(s: number): void {
    if (stateResizing(s)) {
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
    let done = false;
    try {
      this.migrate(old, b, this.cur!);
      done = true;
    } finally {
      this.locate(old, b);
      unlockWord(this.bw, this.bi, before, done);
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
      if (stateLog2(s) !== 0) return; // another thread did it
      const magic = this.aload(W_MAGIC);
      check(magic === 0 || magic === MAGIC_BASE + KIND_CODE[this.kind], 'EINVAL', () => `anchor frame ${this.anchor} holds a ${kindOfMagic(magic) ?? 'corrupt'} reference-count table, not a ${this.kind} one`);
      this.allocArray(this.minLog2, 0);
      try {
        this.initExtra();
      } catch (e) {
        this.freeArray(this.minLog2, 0);
        throw e;
      }
      this.astore(W_MAGIC, MAGIC_BASE + KIND_CODE[this.kind]);
      this.astore(W_STATE, nextState(s, this.minLog2, 0, false));
    } finally {
      this.aunlock(W_RESIZE_LOCK, lock);
    }
  }

  /**
   * Starts doubling the current array: allocates and zeroes the new one in
   * the free directory group, then publishes it. `wait`: wait for the resize
   * lock (else give up when it is busy). False when the allocator has no
   * room (nothing changed).
   */
  private startResize(s: number, wait: boolean): boolean {
    const lock = wait ? this.alock(W_RESIZE_LOCK) : this.atryLock(W_RESIZE_LOCK);
    if (lock === -1) return true;
    try {
      if (this.aload(W_STATE) !== s) return true; // someone else changed the shape
      const log2 = stateLog2(s) + 1;
      const group = 1 - stateGroup(s);
      if (this.geometry(log2).segments > DIR_SLOTS) return false;
      try {
        this.allocArray(log2, group);
      } catch (e) {
        if (e instanceof MorselError && e.code === 'ENOSPC') return false;
        throw e;
      }
      this.astore(W_CURSOR, 0);
      this.astore(W_STATE, nextState(s, log2, group, true));
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
      this.astore(W_STATE, nextState(s, stateLog2(s), stateGroup(s), false));
      if (this.waitForWriters()) this.freeArray(old.log2, 1 - stateGroup(s));
    } finally {
      this.aunlock(W_RESIZE_LOCK, lock);
    }
  }

  /** Allocates and zeroes the segments of an array of 2^log2 buckets into directory `group`; nothing left on ENOSPC. */
  private allocArray(log2: number, group: number): void {
    const { order, segments } = this.geometry(log2);
    const got = allocZeroed(this.region, this.alloc, order, segments);
    for (let s = 0; s < segments; s++) this.astore(dirWord(group, s), got[s]);
  }

  private freeArray(log2: number, group: number): void {
    const { order, segments } = this.geometry(log2);
    for (let s = 0; s < segments; s++) {
      this.alloc.free(this.aload(dirWord(group, s)) as Frame, order);
      this.astore(dirWord(group, s), 0);
    }
  }

  // --- whole-table views ------------------------------------------------------------

  forEach(visit: (frame: number, count: number) => void): void {
    const s = this.snapshot();
    if (stateLog2(s) === 0) return;
    if (this.old !== null) this.forEachIn(this.old, (key, c) => visit(key - 1, c), true);
    this.forEachIn(this.cur!, (key, c) => visit(key - 1, c), false);
  }

  /** Every storage segment: base frame and order. */
  forEachStorageSegment(visit: (frame: number, order: 0 | 9) => void): void {
    const s = this.snapshot();
    if (stateLog2(s) === 0) return;
    for (const arr of this.old === null ? [this.cur!] : [this.cur!, this.old]) for (const f of arr.frames) visit(f, arr.order);
    this.forEachExtraSegment(visit);
  }

  forEachStorageFrame(visit: (frame: number) => void): void {
    this.forEachStorageSegment((f, order) => {
      for (let i = 0; i < (order === 9 ? CHILD_FRAMES : 1); i++) visit(f + i);
    });
  }

  reset(): void {
    const s = this.snapshot();
    if (stateLog2(s) !== 0) {
      if (this.old !== null) this.freeArray(this.old.log2, 1 - stateGroup(s));
      this.freeArray(this.cur!.log2, stateGroup(s));
      this.resetExtra();
    }
    for (const w of [W_MAGIC, W_CURSOR, W_RESIZE_LOCK, W_COUNT, W_RESIZES]) this.astore(w, 0);
    for (let shard = 0; shard < GUARD_SHARDS; shard++) this.astore(GUARD_FIRST_WORD + shard * GUARD_STRIDE_WORDS, 0);
    this.astore(W_STATE, s === 0 ? 0 : nextState(s, 0, 0, false)); // a new generation: cached views elsewhere are dropped
  }

  stats(): RefCountStats {
    const s = this.snapshot();
    const entries = this.aload(W_COUNT);
    let storageBytes = 0;
    if (stateLog2(s) !== 0) this.forEachStorageSegment((_f, order) => (storageBytes += order === 9 ? HUGE_BYTES : PAGE_SIZE));
    const progress = this.old === null ? 1 : Math.min(1, this.aload(W_CURSOR) / this.old.buckets);
    return {
      entries,
      storageBytes,
      bytesPerEntry: entries === 0 ? 0 : storageBytes / entries,
      resizing: stateResizing(s),
      probes: this.probes,
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
