/**
 * The kv item store: every byte of the cache (header, hash index, slab
 * pages, items) lives in ONE data morsel mapped at the fixed address
 * KV_BASE, and every link between items is that item's virtual address
 * (a u32: the morsel spans [2^30, 2^31)). A restart maps the same morsel
 * at the same address and the structures are valid as they are: no fixup
 * pass, no rebuild, start-up time independent of the item count.
 *
 * Layout (offsets from KV_BASE):
 *   page 0    header words (HDR_*) and the slab-class table (CLASS_*)
 *   page 1    page-owner table: one byte per slab page (class + 1, 0 = free)
 *   page 2    lock words: the allocator lock, then LOCK_STRIPES bucket locks
 *   page 3..  hash index: `buckets` u32 heads (0 = empty chain)
 *   arenaOff  slab pages of SLAB_PAGE_BYTES, each cut into one class's chunks
 * Item (chunk) layout: ITEM_* words, then the key, then the value.
 *
 * Commit points (a SIGKILL between any two stores leaves no torn or
 * dangling item visible; only items reachable from a bucket are visible):
 * - store: the new item is written completely (header, key, value, LINKED
 *   bit) into a chunk no chain reaches, then ONE Atomics.store links it
 *   into its chain, in the old item's place when the key existed (the same
 *   store unlinks the old one). Only then is the reply sent.
 * - delete/evict/expire: ONE Atomics.store of the predecessor's link
 *   unlinks the item; its LINKED bit is cleared afterwards.
 * - touch (and mg/ma T, mg N): one store of the expiry word. flush_all:
 *   one store of the flush CAS or flush time in the header.
 * - mg's reader state: the win token (W/Z) is one atomic OR of the meta
 *   word; the fetched bit (h) and the access time (l) are hints like REF
 *   (a crash may lose the one read in flight). A stale mark (ms I, md I)
 *   is written into the new item before its link, like its value.
 * - allocation never needs a commit: a chunk is in use iff it is LINKED and
 *   reachable. A crash after taking a chunk leaves it unlinked; a crash
 *   after an unlink leaves it LINKED but unreachable: the CLOCK sweep
 *   reclaims both (it unlinks what it finds still chained, else reuses).
 *   The carve pointer is advanced BEFORE its chunk is used, and zeroed
 *   while it moves to a new page, so it never hands out a chunk twice.
 * - free lists (chunks of deleted/replaced items, reused before anything
 *   is evicted) are per open: each open drops them and bumps the epoch; a
 *   chunk tagged FREE with an older epoch is on no list, and the clock
 *   takes it. So a list cut by a crash is never followed, and no chunk is
 *   both on a list and taken by the clock.
 * Counters in the header (items, evictions) are statistics: a crash may
 * leave them off by the one operation in flight.
 *
 * Eviction is CLOCK per slab class (an LRU approximation: a read sets the
 * item's REF bit, the hand clears it and evicts the first unreferenced
 * item); expired and flushed items are reclaimed first when the hand meets them.
 *
 * Several processes (`--workers N`) share one store through lock words in
 * the region: a stripe lock per group of buckets (held while a key's chain
 * or its item is read or changed) and one allocator lock (free lists, carve
 * pointers, clock hands, page owners, the CAS counter). Order: a stripe,
 * then the allocator; the clock only TRIES the stripe of a victim (and
 * skips it when busy), so no cycle can form. A lock word holds its
 * holder's owner tag (user slot + pid bits); a waiter that finds the
 * holder's slot dead (region.slotAlive) breaks the lock.
 * # Warning: a broken lock's holder died anywhere in its critical section.
 * That is safe because every update has ONE commit store and the states
 * between stores are the states a SIGKILL-restart already handles: a chunk
 * taken but not linked carries BUSY + the taker's tag in ITEM_NEXT (the clock reclaims
 * it once that owner is dead), a half-pushed free chunk is not on the list
 * (the head store is the push), a carve pointer moves before its chunk is
 * used, and counters may be off by the one operation in flight.
 */
import { MorselError, assert, check } from '../../errors.js';
import { Access, type Mmu } from '../../space/mmu.js';
import type { Region } from '../../physical/region.js';
import { MiB, PAGE_SIZE, type Frame } from '../../units.js';

/** The fixed virtual address of the cache morsel (order 2: 1 GiB, so every address fits a positive int32). */
export const KV_BASE = 2 ** 30;
export const KV_ORDER = 2;
/** memcached's item size limit (-I 1m) and slab page size. */
export const SLAB_PAGE_BYTES = 1 * MiB;
export const KEY_MAX_BYTES = 250;
/** The largest -m the 1 GiB morsel holds with its header and hash index. */
export const MEM_LIMIT_MAX_MIB = 920;

const MAGIC = 0x6b766d31; // "kvm1"
/** 3: items carry a last-access word and the fetched/win/stale bits (meta mg h l N R, ms I). */
const FORMAT_VERSION = 3;
const SMALLEST_CHUNK_BYTES = 96;
const GROWTH_FACTOR = 1.25;
const CHUNK_ALIGN_BYTES = 8;
/** Hash buckets per MiB of -m (memcached starts at 2^16 and grows; ours is fixed at creation). */
const BUCKETS_PER_MIB = 8192;
/** Longest hash chain walked before the index is declared corrupt. */
const CHAIN_MAX_STEPS = 1 << 20;

// Header words (page 0).
const HDR_MAGIC = 0;
const HDR_VERSION = 1;
const HDR_MEM_MIB = 2;
const HDR_BUCKETS = 3;
const HDR_ARENA_OFF = 4;
const HDR_PAGES = 5;
const HDR_CLASSES = 6;
const HDR_CAS_LO = 7;
const HDR_CAS_HI = 8;
const HDR_FLUSH_CAS_LO = 9;
const HDR_FLUSH_CAS_HI = 10;
const HDR_FLUSH_AT_SEC = 11;
const HDR_TOTAL_ITEMS = 12;
const HDR_EVICTIONS = 13;
const HDR_RECLAIMED = 14;
const HDR_CURR_ITEMS = 15;
const HDR_CREATED_SEC = 16;
const HDR_BYTES = 17;
/** Bumped by every open: a chunk marked FREE in an older epoch is on no list (lists are dropped at open). */
const HDR_EPOCH = 18;
/** Slab pages owned by some class (a statistic the allocator keeps under its lock; recounted at open). */
const HDR_PAGES_USED = 19;
/** Class table: CLASS_WORDS words per class from this word. */
const HDR_CLASS_TABLE = 64;
const CLASS_WORDS = 6;
const CLASS_CHUNK = 0;
const CLASS_CARVE_NEXT = 1;
const CLASS_CARVE_END = 2;
const CLASS_HAND = 3;
const CLASS_FREE_HEAD = 4;
/** Pages the class owns (under the allocator lock; recounted at open). */
const CLASS_PAGES = 5;
const MAX_CLASSES = (PAGE_SIZE / 4 - HDR_CLASS_TABLE) / CLASS_WORDS;

const OWNER_OFF = PAGE_SIZE;
const LOCK_OFF = 2 * PAGE_SIZE;
const HASH_OFF = 3 * PAGE_SIZE;
/** Bucket locks: bucket b is guarded by stripe b % LOCK_STRIPES (word 1 + stripe of the lock page; word 0 is the allocator's). */
const LOCK_STRIPES = 1023;
const ALLOC_LOCK_VA = KV_BASE + LOCK_OFF;
/** Lock word: HELD | owner tag << 1 | WAITERS (someone sleeps on the futex: notify at unlock). */
const LOCK_HELD = 1;
const LOCK_WAITERS = 1 << 30;
/** Owner tag: user slot (6 bits) | pid << 6 (22 bits: Linux's largest pid_max is 2^22), so a re-used slot never passes for its dead owner. */
const TAG_SLOT_BITS = 6;
const TAG_PID_BITS = 22;
const TAG_MASK = (1 << (TAG_SLOT_BITS + TAG_PID_BITS)) - 1;
/** CAS attempts before a waiter starts checking the holder and sleeping. */
const LOCK_TIGHT_SPINS = 64;
/** One futex sleep (woken early by the unlock's notify); the bound on sleeps makes a stuck lock EBUSY after ~30 s. */
const LOCK_SLEEP_MS = 2;
const LOCK_SLEEPS_MAX = 15_000;

// Item header, byte offsets.
const ITEM_NEXT = 0;
const ITEM_HASH = 4;
const ITEM_EXP = 8;
const ITEM_TIME = 12;
const ITEM_FLAGS = 16;
const ITEM_NBYTES = 20;
const ITEM_CAS_LO = 24;
const ITEM_CAS_HI = 28;
/** key length (bits 0-7), slab class (8-13), BUSY, FETCHED, LINKED, REF, FREE, then WON, STALE (linked items) or the epoch (19-31, FREE chunks) */
const ITEM_META = 32;
/** Last access (unix seconds; memcached's it->time): mg l, me la. */
const ITEM_ATIME = 36;
export const ITEM_HDR_BYTES = 40;
const META_KEY_CLASS = 0x3fff;
/** Taken by the allocator and being filled by the owner whose tag is in ITEM_NEXT (not on a list, not linked yet). */
const META_BUSY = 1 << 14;
/** Read at least once since stored (memcached's ITEM_FETCHED: mg h). Unlike REF, the clock never clears it. */
const META_FETCHED = 1 << 15;
const META_LINKED = 1 << 16;
const META_REF = 1 << 17;
/** On its class's free list, if tagged with the current epoch (bits EPOCH_SHIFT..31). */
const META_FREE = 1 << 18;
const EPOCH_SHIFT = 19;
const EPOCH_MASK = (1 << (32 - EPOCH_SHIFT)) - 1;
/** A recache/vivify win token (mg W) was sent for this item: later readers get Z (memcached's ITEM_TOKEN_SENT). Only without META_FREE (FREE chunks hold the epoch here). */
const META_WON = 1 << 19;
/** Marked stale by `ms I` with an older CAS: mg answers X (and W to the first reader). Only without META_FREE. */
const META_STALE = 1 << 20;
/** The bits an item keeps through link(). */
const META_KEPT = META_KEY_CLASS | META_FETCHED | META_WON | META_STALE;
/** A read refreshes an item's access time only when it is older than this (memcached's ITEM_UPDATE_INTERVAL). */
const ATIME_UPDATE_SEC = 60;
const CLASS_MASK = 0x3f;

const TWO_32 = 2 ** 32;

/**
 * Sizes of a cache of `memMiB` MiB: bytes of the morsel, buckets, slab
 * pages. As in memcached, a class's FIRST page may exceed the limit (so no
 * item size is unstorable in a small cache): the arena has one spare page
 * per class, and only a class without pages may take a page beyond memMiB.
 */
export function kvGeometry(memMiB: number): { sizeBytes: number; buckets: number; pages: number; arenaOff: number } {
  check(Number.isInteger(memMiB) && memMiB >= 1 && memMiB <= MEM_LIMIT_MAX_MIB, 'ERANGE', () => `-m must be 1..${MEM_LIMIT_MAX_MIB} MiB, got ${memMiB}`);
  const buckets = memMiB * BUCKETS_PER_MIB;
  const arenaOff = Math.ceil((HASH_OFF + buckets * 4) / SLAB_PAGE_BYTES) * SLAB_PAGE_BYTES;
  const pages = memMiB + chunkSizes().length;
  return { sizeBytes: arenaOff + pages * SLAB_PAGE_BYTES, buckets, pages, arenaOff };
}

/** memcached's slab classes: 96 bytes growing by 1.25 (8-aligned) to half a page, then one whole-page class. */
export function chunkSizes(): number[] {
  const sizes: number[] = [];
  for (let s = SMALLEST_CHUNK_BYTES; s < SLAB_PAGE_BYTES / 2; s = Math.ceil((s * GROWTH_FACTOR) / CHUNK_ALIGN_BYTES) * CHUNK_ALIGN_BYTES) sizes.push(s);
  sizes.push(SLAB_PAGE_BYTES);
  assert(sizes.length <= MAX_CLASSES, 'slab classes fit the header');
  return sizes;
}

/** Outcome of a lookup that may also delete or replace: set by find(). */
export interface ItemView {
  flags: number;
  nbytes: number;
  cas: number;
}

export type StoreMode = 'set' | 'add' | 'replace' | 'append' | 'prepend' | 'cas';
export type StoreResult = 'STORED' | 'NOT_STORED' | 'EXISTS' | 'NOT_FOUND' | 'TOO_LARGE' | 'NO_MEMORY';

export interface StoreStats {
  currItems: number;
  totalItems: number;
  evictions: number;
  reclaimed: number;
  limitMaxBytes: number;
  bytes: number;
  pagesUsed: number;
  pages: number;
  buckets: number;
}

/** Unix time in whole seconds (memcached's clock resolution). */
export function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

export class KvStore {
  private readonly region: Region;
  private readonly buckets: number;
  private readonly arenaBase: number;
  private readonly pages: number;
  private readonly chunk: number[];
  /** Current page under the cursor (set by at()); bytes via bytesOf/byteOffsetInWindow. */
  private curBytes!: Uint8Array;
  private curOff = 0;
  /** Set by find(): the item's predecessor link address (a bucket or an item's ITEM_NEXT). */
  private foundLink = 0;
  /** Pages the -m limit allows (a class's first page may go beyond: see kvGeometry). */
  private readonly limitPages: number;
  /** This process's owner tag (lock words, BUSY chunks). */
  private readonly tag: number;
  private readonly lockWord: number;
  /** The stripe whose lock this process holds (-1: none); find() takes it, unlockAll() gives it back. */
  private heldStripe = -1;
  private allocHeld = false;
  /** Set by wordAt(): the words and index of a translated word, and its byte offset in the region (futex). */
  private curWords!: Int32Array;
  private curIdx = 0;
  private curRegionOff = 0;
  /** Locks this process broke because their holder was dead. */
  brokenLocks = 0;
  now = nowSec();

  /**
   * Opens the store mapped at KV_BASE through `mmu` (the caller holds an
   * access section around every call), formatting it if the morsel is new
   * (all zeros). ECORRUPT/EVERSION for a morsel that holds something else.
   */
  constructor(
    private readonly mmu: Mmu,
    memMiB: number,
  ) {
    this.region = mmu.space.region;
    check(this.region.userSlot >= 0, 'EACCES', 'the kv store needs a writable region (a user slot)');
    check(process.pid < 2 ** TAG_PID_BITS, 'ERANGE', () => `pid ${process.pid} does not fit the kv lock tag (${TAG_PID_BITS} bits)`);
    this.tag = (process.pid << TAG_SLOT_BITS) | this.region.userSlot;
    this.lockWord = LOCK_HELD | (this.tag << 1);
    const geo = kvGeometry(memMiB);
    const sizes = chunkSizes();
    this.chunk = sizes;
    this.limitPages = memMiB;
    this.buckets = geo.buckets;
    this.arenaBase = KV_BASE + geo.arenaOff;
    this.pages = geo.pages;
    // Checked before taking a lock: another format's page 2 is not a lock page.
    if (this.hdr(HDR_MAGIC) !== 0) this.checkFormat(memMiB, sizes);
    this.lockAlloc();
    try {
      if (this.hdr(HDR_MAGIC) === 0) this.format(memMiB, geo.buckets, geo.arenaOff, geo.pages, sizes);
      this.checkFormat(memMiB, sizes);
      this.startEpoch();
    } finally {
      this.unlockAlloc();
    }
  }

  private checkFormat(memMiB: number, sizes: number[]): void {
    check(this.hdr(HDR_MAGIC) === MAGIC, 'ECORRUPT', 'the kv morsel does not hold a kv store');
    check(this.hdr(HDR_VERSION) === FORMAT_VERSION, 'EVERSION', () => `kv store format ${this.hdr(HDR_VERSION)}, this server reads ${FORMAT_VERSION}`);
    check(this.hdr(HDR_MEM_MIB) === memMiB, 'EINVAL', () => `the cache was created with -m ${this.hdr(HDR_MEM_MIB)}, not -m ${memMiB}`);
    check(this.hdr(HDR_CLASSES) === sizes.length, 'ECORRUPT', 'slab class count differs');
    check(this.hdr(HDR_BUCKETS) === this.buckets && this.hdr(HDR_PAGES) === this.pages && KV_BASE + this.hdr(HDR_ARENA_OFF) === this.arenaBase, 'ECORRUPT', 'kv store geometry differs from its -m');
  }

  /**
   * Under the allocator lock, at every open: drops the free lists (a crash
   * may have cut one; their chunks, tagged with an old epoch, go to the
   * clock), bumps the epoch, and recounts the page statistics.
   */
  private startEpoch(): void {
    for (let c = 0; c < this.chunk.length; c++) this.setCls(c, CLASS_FREE_HEAD, 0);
    this.setHdr(HDR_EPOCH, (this.hdr(HDR_EPOCH) + 1) & EPOCH_MASK);
    const owned = new Int32Array(this.chunk.length);
    let used = 0;
    for (let p = 0; p < this.pages; p++) {
      const owner = this.ownerOf(p);
      if (owner === 0) continue;
      check(owner <= this.chunk.length, 'ECORRUPT', () => `slab page ${p} names class ${owner - 1}`);
      used++;
      owned[owner - 1]++;
    }
    for (let c = 0; c < this.chunk.length; c++) this.setCls(c, CLASS_PAGES, owned[c]);
    this.setHdr(HDR_PAGES_USED, used);
  }

  // --- locks (lock words in the region, shared by every worker process) ------------

  /** Points curWords/curIdx/curRegionOff at the word at `va`. */
  private wordAt(va: number, access: Access): void {
    const f = this.mmu.translate(va, access) as Frame;
    const w = (va & (PAGE_SIZE - 1)) >>> 2;
    this.curWords = this.region.words(f);
    this.curIdx = this.region.wordIndex(f, w);
    this.curRegionOff = f * PAGE_SIZE + w * 4;
  }

  /** Whether the process tagged `tag` is gone (its slot is dead, or now belongs to another pid). */
  private tagDead(tag: number): boolean {
    if (tag === this.tag) return false;
    const slot = tag & ((1 << TAG_SLOT_BITS) - 1);
    return !this.region.slotAlive(slot) || this.region.slotPid(slot) !== tag >>> TAG_SLOT_BITS;
  }

  /**
   * Takes the lock word at `va`: CAS 0 -> our word; after LOCK_TIGHT_SPINS
   * tries, breaks the lock of a dead holder, else sleeps on the futex
   * (bounded). EBUSY after LOCK_SLEEPS_MAX sleeps (a live holder stuck).
   */
  private lock(va: number): void {
    this.wordAt(va, Access.Write);
    const words = this.curWords;
    const idx = this.curIdx;
    const off = this.curRegionOff;
    for (let tries = 0; tries < LOCK_TIGHT_SPINS + LOCK_SLEEPS_MAX; tries++) {
      const cur = Atomics.compareExchange(words, idx, 0, this.lockWord);
      if (cur === 0) return;
      if (tries < LOCK_TIGHT_SPINS) continue;
      if (this.tagDead((cur >>> 1) & TAG_MASK)) {
        if (Atomics.compareExchange(words, idx, cur, this.lockWord) === cur) {
          this.brokenLocks++;
          return;
        }
        continue;
      }
      const sleeping = cur | LOCK_WAITERS;
      if (cur === sleeping || Atomics.compareExchange(words, idx, cur, sleeping) === cur) this.region.wait(off, sleeping, LOCK_SLEEP_MS);
    }
    throw new MorselError('EBUSY', `kv lock at 0x${va.toString(16)} held too long by a live process`);
  }

  /** One try at the lock word at `va` (or breaking a dead holder's); true if taken. */
  private tryLock(va: number): boolean {
    this.wordAt(va, Access.Write);
    const cur = Atomics.compareExchange(this.curWords, this.curIdx, 0, this.lockWord);
    if (cur === 0) return true;
    if (!this.tagDead((cur >>> 1) & TAG_MASK)) return false;
    const taken = Atomics.compareExchange(this.curWords, this.curIdx, cur, this.lockWord) === cur;
    if (taken) this.brokenLocks++;
    return taken;
  }

  private unlock(va: number): void {
    this.wordAt(va, Access.Write);
    const old = Atomics.exchange(this.curWords, this.curIdx, 0);
    assert((old & ~LOCK_WAITERS) === this.lockWord, 'kv: unlocking a lock this process does not hold');
    if (old & LOCK_WAITERS) this.region.notify(this.curRegionOff, Number.MAX_SAFE_INTEGER);
  }

  private stripeVa(stripe: number): number {
    return ALLOC_LOCK_VA + 4 + stripe * 4;
  }

  private stripeOf(hash: number): number {
    return ((hash >>> 0) % this.buckets) % LOCK_STRIPES;
  }

  /** Holds the stripe lock of `hash`'s bucket (giving back another one first: one stripe at a time, so no cycle). */
  private lockStripeOf(hash: number): void {
    const s = this.stripeOf(hash);
    if (s === this.heldStripe) return;
    this.unlockAll();
    this.lock(this.stripeVa(s));
    this.heldStripe = s;
  }

  /** Gives back the stripe lock find() took. The server calls it at the end of every access section. */
  unlockAll(): void {
    assert(!this.allocHeld, 'kv: allocator lock held across a section');
    if (this.heldStripe < 0) return;
    const s = this.heldStripe;
    this.heldStripe = -1;
    this.unlock(this.stripeVa(s));
  }

  private lockAlloc(): void {
    assert(!this.allocHeld, 'kv: allocator lock is not reentrant');
    this.lock(ALLOC_LOCK_VA);
    this.allocHeld = true;
  }

  private unlockAlloc(): void {
    this.allocHeld = false;
    this.unlock(ALLOC_LOCK_VA);
  }

  /** Writes the header of a fresh (zeroed) morsel; the magic word last is its commit point. */
  private format(memMiB: number, buckets: number, arenaOff: number, pages: number, sizes: number[]): void {
    this.setHdr(HDR_VERSION, FORMAT_VERSION);
    this.setHdr(HDR_MEM_MIB, memMiB);
    this.setHdr(HDR_BUCKETS, buckets);
    this.setHdr(HDR_ARENA_OFF, arenaOff);
    this.setHdr(HDR_PAGES, pages);
    this.setHdr(HDR_CLASSES, sizes.length);
    this.setHdr(HDR_CREATED_SEC, this.now);
    for (let c = 0; c < sizes.length; c++) this.setHdr(HDR_CLASS_TABLE + c * CLASS_WORDS + CLASS_CHUNK, sizes[c]);
    this.setHdr(HDR_MAGIC, MAGIC);
  }

  // --- raw access (inside the caller's access section) ----------------------------

  /** Points curBytes/curOff at `va` (its page, translated for `access`); returns the bytes left in that page. */
  private at(va: number, access: Access): number {
    const f = this.mmu.translate(va, access) as Frame;
    this.curBytes = this.region.bytesOf(f);
    const inPage = va & (PAGE_SIZE - 1);
    this.curOff = this.region.byteOffsetInWindow(f) + inPage;
    return PAGE_SIZE - inPage;
  }

  private ld(va: number): number {
    const f = this.mmu.translate(va, Access.Read) as Frame;
    return Atomics.load(this.region.words(f), this.region.wordIndex(f, (va & (PAGE_SIZE - 1)) >>> 2)) >>> 0;
  }

  /** A store that is also a commit point: Atomics (sequentially consistent, never reordered before the writes it publishes). */
  private st(va: number, v: number): void {
    const f = this.mmu.translate(va, Access.Write) as Frame;
    Atomics.store(this.region.words(f), this.region.wordIndex(f, (va & (PAGE_SIZE - 1)) >>> 2), v | 0);
  }

  private hdr(word: number): number {
    return this.ld(KV_BASE + word * 4);
  }

  private setHdr(word: number, v: number): void {
    this.st(KV_BASE + word * 4, v);
  }

  private cls(c: number, field: number): number {
    return this.hdr(HDR_CLASS_TABLE + c * CLASS_WORDS + field);
  }

  private setCls(c: number, field: number, v: number): void {
    this.setHdr(HDR_CLASS_TABLE + c * CLASS_WORDS + field, v);
  }

  private ownerOf(page: number): number {
    this.at(KV_BASE + OWNER_OFF + page, Access.Read);
    return this.curBytes[this.curOff];
  }

  private setOwner(page: number, v: number): void {
    this.at(KV_BASE + OWNER_OFF + page, Access.Write);
    this.curBytes[this.curOff] = v;
  }

  /** Copies `n` bytes at `va` into dst[off..]. */
  copyOut(va: number, dst: Uint8Array, off: number, n: number): void {
    for (let done = 0; done < n; ) {
      const k = Math.min(this.at(va + done, Access.Read), n - done);
      dst.set(this.curBytes.subarray(this.curOff, this.curOff + k), off + done);
      done += k;
    }
  }

  /** Copies src[off, off + n) to `va`. */
  private copyIn(va: number, src: Uint8Array, off: number, n: number): void {
    for (let done = 0; done < n; ) {
      const k = Math.min(this.at(va + done, Access.Write), n - done);
      this.curBytes.set(src.subarray(off + done, off + done + k), this.curOff);
      done += k;
    }
  }

  /** Copies `n` bytes inside the morsel (append/prepend), page piece by page piece. */
  private copyWithin(dstVa: number, srcVa: number, n: number, scratch: Uint8Array): void {
    for (let done = 0; done < n; ) {
      const k = Math.min(scratch.length, n - done);
      this.copyOut(srcVa + done, scratch, 0, k);
      this.copyIn(dstVa + done, scratch, 0, k);
      done += k;
    }
  }

  /** Does the key stored at `va` equal key[off, off + len)? */
  private keyEquals(va: number, key: Uint8Array, off: number, len: number): boolean {
    for (let done = 0; done < len; ) {
      const k = Math.min(this.at(va + done, Access.Read), len - done);
      const b = this.curBytes;
      const o = this.curOff;
      for (let i = 0; i < k; i++) if (b[o + i] !== key[off + done + i]) return false;
      done += k;
    }
    return true;
  }

  // --- index ------------------------------------------------------------------------

  private bucketVa(hash: number): number {
    return KV_BASE + HASH_OFF + ((hash >>> 0) % this.buckets) * 4;
  }

  /**
   * The visible item for key[off, off+len) with hash `hash`, or 0; sets
   * foundLink to the link that points at it. An expired or flushed item is
   * unlinked on the way (as memcached does lazily) and reported as absent.
   */
  find(key: Uint8Array, off: number, len: number, hash: number): number {
    this.lockStripeOf(hash); // held until another key's find or unlockAll(): the caller reads the item under it
    let link = this.bucketVa(hash);
    for (let steps = 0; steps < CHAIN_MAX_STEPS; steps++) {
      const it = this.ld(link);
      if (it === 0) return 0;
      if (this.ld(it + ITEM_HASH) === hash >>> 0 && (this.ld(it + ITEM_META) & 0xff) === len && this.keyEquals(it + ITEM_HDR_BYTES, key, off, len)) {
        if (!this.alive(it)) {
          this.unlinkAt(link, it);
          this.release(it);
          return 0;
        }
        this.foundLink = link;
        return it;
      }
      link = it + ITEM_NEXT;
    }
    throw new MorselError('ECORRUPT', 'kv hash chain does not end');
  }

  /** Not expired and not flushed. */
  private alive(it: number): boolean {
    const exp = this.ld(it + ITEM_EXP);
    if (exp !== 0 && exp <= this.now) return false;
    if (this.casOf(it) < this.casWord(HDR_FLUSH_CAS_LO)) return false;
    const flushAt = this.hdr(HDR_FLUSH_AT_SEC);
    return !(flushAt !== 0 && flushAt <= this.now && this.ld(it + ITEM_TIME) < flushAt);
  }

  /** Commit point of a removal: one store of the predecessor link; then LINKED is cleared. */
  private unlinkAt(link: number, it: number): void {
    this.st(link, this.ld(it + ITEM_NEXT));
    this.metaAnd(it, ~META_LINKED);
    this.count(HDR_CURR_ITEMS, -1);
    this.count(HDR_BYTES, -this.ld(it + ITEM_NBYTES));
  }

  /**
   * Puts an unlinked chunk on its class's free list: link and FREE tag
   * first, then ONE store of the head (a crash before it leaves a chunk the
   * clock reclaims after the next open). The caller holds the item's
   * stripe (so the clock cannot take the unlinked chunk meanwhile).
   */
  private release(it: number): void {
    const c = (this.ld(it + ITEM_META) >>> 8) & CLASS_MASK;
    this.lockAlloc();
    try {
      this.st(it + ITEM_NEXT, this.cls(c, CLASS_FREE_HEAD));
      this.st(it + ITEM_META, (c << 8) | META_FREE | (this.hdr(HDR_EPOCH) << EPOCH_SHIFT));
      this.setCls(c, CLASS_FREE_HEAD, it);
    } finally {
      this.unlockAlloc();
    }
  }

  /** Pops a chunk of class c off its free list (one store of the head), or 0. Under the allocator lock. */
  private popFree(c: number): number {
    const it = this.cls(c, CLASS_FREE_HEAD);
    if (it === 0) return 0;
    if (!this.onFreeList(this.ld(it + ITEM_META))) throw new MorselError('ECORRUPT', `kv free list of class ${c} holds a chunk not marked free`);
    this.setCls(c, CLASS_FREE_HEAD, this.ld(it + ITEM_NEXT));
    return it;
  }

  private onFreeList(meta: number): boolean {
    return (meta & META_FREE) !== 0 && meta >>> EPOCH_SHIFT === this.hdr(HDR_EPOCH);
  }

  /** Atomic AND / OR on an item's meta word (bits change under different locks: REF by readers, LINKED by the stripe). */
  private metaAnd(it: number, mask: number): void {
    this.wordAt(it + ITEM_META, Access.Write);
    Atomics.and(this.curWords, this.curIdx, mask);
  }

  private metaOr(it: number, bits: number): void {
    this.wordAt(it + ITEM_META, Access.Write);
    Atomics.or(this.curWords, this.curIdx, bits);
  }

  /** Unlinks `it` if some chain still reaches it (an interrupted unlink may have left it LINKED but unreachable). The caller holds its stripe. */
  private unlinkIfChained(it: number): boolean {
    let link = this.bucketVa(this.ld(it + ITEM_HASH));
    for (let steps = 0; steps < CHAIN_MAX_STEPS; steps++) {
      const cur = this.ld(link);
      if (cur === 0) {
        this.metaAnd(it, ~META_LINKED);
        return false;
      }
      if (cur === it) {
        this.unlinkAt(link, it);
        return true;
      }
      link = cur + ITEM_NEXT;
    }
    throw new MorselError('ECORRUPT', 'kv hash chain does not end');
  }

  // --- items --------------------------------------------------------------------------

  view(it: number, out: ItemView): void {
    out.flags = this.ld(it + ITEM_FLAGS);
    out.nbytes = this.ld(it + ITEM_NBYTES);
    out.cas = this.casOf(it);
  }

  /** The expiry (unix seconds, 0 = never). */
  expiryOf(it: number): number {
    return this.ld(it + ITEM_EXP);
  }

  /** When the item was last accessed (unix seconds; see fetch()). */
  lastAccess(it: number): number {
    return this.ld(it + ITEM_ATIME);
  }

  /** Whether the item was read since it was stored (memcached's fetched bit: mg h, me fetch). */
  fetchedBefore(it: number): boolean {
    return (this.ld(it + ITEM_META) & META_FETCHED) !== 0;
  }

  /** A win token was sent for the item (mg Z). */
  wonBefore(it: number): boolean {
    return (this.ld(it + ITEM_META) & META_WON) !== 0;
  }

  /** The item was marked stale by `ms I` (mg X). */
  stale(it: number): boolean {
    return (this.ld(it + ITEM_META) & META_STALE) !== 0;
  }

  /** Records that a win token (mg W) went out for the item. The caller holds its stripe (find). */
  markWon(it: number): void {
    this.metaOr(it, META_WON);
  }

  /** Virtual address of the value bytes. */
  valueVa(it: number): number {
    return it + ITEM_HDR_BYTES + (this.ld(it + ITEM_META) & 0xff);
  }

  /** Marks a use that is not a read (add on an existing key): CLOCK's reference bit, writing only when it changes. */
  touchRef(it: number): void {
    if ((this.ld(it + ITEM_META) & META_REF) === 0) this.metaOr(it, META_REF);
  }

  /**
   * Marks a read: the reference and fetched bits, and the access time when
   * it is over ATIME_UPDATE_SEC old (memcached's do_item_update; memcached
   * also refreshes it on the second read of an item still in its HOT or
   * WARM LRU, which a CLOCK has not). Writes only what changes.
   */
  fetch(it: number): void {
    const m = this.ld(it + ITEM_META);
    if ((m & (META_REF | META_FETCHED)) !== (META_REF | META_FETCHED)) this.metaOr(it, META_REF | META_FETCHED);
    if (this.ld(it + ITEM_ATIME) < this.now - ATIME_UPDATE_SEC) this.st(it + ITEM_ATIME, this.now);
  }

  /** Sets a visible item's expiry (one store: touch's commit point). */
  setExpiry(it: number, exp: number): void {
    this.st(it + ITEM_EXP, exp);
  }

  private casOf(it: number): number {
    return this.ld(it + ITEM_CAS_HI) * TWO_32 + this.ld(it + ITEM_CAS_LO);
  }

  private casWord(loWord: number): number {
    return this.hdr(loWord + 1) * TWO_32 + this.hdr(loWord);
  }

  private setCasWord(loWord: number, v: number): void {
    this.setHdr(loWord, v % TWO_32);
    this.setHdr(loWord + 1, Math.floor(v / TWO_32));
  }

  /** The next CAS unique (stored before any item carries it, so none repeats after a crash). Under the allocator lock. */
  private nextCas(): number {
    const c = this.casWord(HDR_CAS_LO) + 1;
    this.setCasWord(HDR_CAS_LO, c);
    return c;
  }

  /** The slab class for an item of `total` bytes (the classes are memcached's), or -1 if larger than the largest chunk. */
  classFor(total: number): number {
    for (let c = 0; c < this.chunk.length; c++) if (this.chunk[c] >= total) return c;
    return -1;
  }

  /** Largest value that fits with a key of `keyLen` bytes. */
  maxValueBytes(keyLen: number): number {
    return SLAB_PAGE_BYTES - ITEM_HDR_BYTES - keyLen;
  }

  /**
   * Writes a complete item (not yet reachable) and returns its address, or
   * 0 when no memory can be found. The value is NOT written: the caller
   * fills valueVa() (copyValueIn / copyWithin) before link().
   */
  private allocItem(key: Uint8Array, keyOff: number, keyLen: number, hash: number, flags: number, exp: number, nbytes: number): number {
    const c = this.classFor(ITEM_HDR_BYTES + keyLen + nbytes);
    if (c < 0) return 0;
    let it: number;
    let cas: number;
    this.lockAlloc();
    try {
      it = this.allocChunk(c);
      if (it === 0) return 0;
      // BUSY with our tag (in ITEM_NEXT, unused until link) before the allocator lock goes: no list, no carve and no clock hands it out again while we fill it.
      this.st(it + ITEM_NEXT, this.tag);
      this.st(it + ITEM_META, (c << 8) | META_BUSY);
      cas = this.nextCas();
    } finally {
      this.unlockAlloc();
    }
    this.st(it + ITEM_HASH, hash);
    this.st(it + ITEM_EXP, exp);
    this.st(it + ITEM_TIME, this.now);
    this.st(it + ITEM_ATIME, this.now);
    this.st(it + ITEM_FLAGS, flags);
    this.st(it + ITEM_NBYTES, nbytes);
    this.st(it + ITEM_CAS_LO, cas % TWO_32);
    this.st(it + ITEM_CAS_HI, Math.floor(cas / TWO_32));
    this.st(it + ITEM_META, keyLen | (c << 8) | META_BUSY);
    this.copyIn(it + ITEM_HDR_BYTES, key, keyOff, keyLen);
    return it;
  }

  /**
   * The commit point of every store: `it` (complete) takes `old`'s place in
   * its chain, or goes to the head of its bucket when old is 0, by ONE
   * Atomics.store of the link that pointed at old (found by find()).
   */
  private link(it: number, old: number): void {
    this.st(it + ITEM_META, (this.ld(it + ITEM_META) & META_KEPT) | META_LINKED);
    if (old !== 0) {
      this.st(it + ITEM_NEXT, this.ld(old + ITEM_NEXT));
      this.st(this.foundLink, it); // commit: it visible, old unreachable
      this.count(HDR_BYTES, -this.ld(old + ITEM_NBYTES));
      this.release(old);
    } else {
      const bucket = this.bucketVa(this.ld(it + ITEM_HASH));
      this.st(it + ITEM_NEXT, this.ld(bucket));
      this.st(bucket, it); // commit
      this.count(HDR_CURR_ITEMS, 1);
    }
    this.count(HDR_BYTES, this.ld(it + ITEM_NBYTES));
    this.count(HDR_TOTAL_ITEMS, 1);
  }

  /** Adds `delta` to a statistics word atomically (workers count concurrently; read through stat()). */
  private count(word: number, delta: number): void {
    this.wordAt(KV_BASE + word * 4, Access.Write);
    Atomics.add(this.curWords, this.curIdx, delta);
  }

  /** A statistics word (never below 0: a crash may have lost one update of the one operation in flight). */
  private stat(word: number): number {
    return Math.max(0, this.hdr(word) | 0);
  }

  // --- allocation ---------------------------------------------------------------------

  /** A chunk of class `c` no chain reaches: from the free list, carved, from a fresh page, or by the CLOCK hand; 0 if none. Under the allocator lock. */
  private allocChunk(c: number): number {
    const free = this.popFree(c);
    if (free !== 0) return free;
    const size = this.chunk[c];
    const next = this.cls(c, CLASS_CARVE_NEXT);
    if (next !== 0 && next + size <= this.cls(c, CLASS_CARVE_END)) {
      this.setCls(c, CLASS_CARVE_NEXT, next + size); // advance first: a crash leaks nothing the clock cannot find
      return next;
    }
    const page = this.hdr(HDR_PAGES_USED) < this.limitPages || this.cls(c, CLASS_PAGES) === 0 ? this.freePage() : -1;
    if (page >= 0) {
      const start = this.arenaBase + page * SLAB_PAGE_BYTES;
      this.setOwner(page, c + 1); // commit of the page's assignment
      this.setHdr(HDR_PAGES_USED, this.hdr(HDR_PAGES_USED) + 1);
      this.setCls(c, CLASS_PAGES, this.cls(c, CLASS_PAGES) + 1);
      this.setCls(c, CLASS_CARVE_NEXT, 0); // no carving while the bounds move
      this.setCls(c, CLASS_CARVE_END, start + SLAB_PAGE_BYTES);
      this.setCls(c, CLASS_CARVE_NEXT, start + size);
      return start;
    }
    return this.clock(c);
  }

  private freePage(): number {
    if (this.hdr(HDR_PAGES_USED) >= this.pages) return -1;
    for (let p = 0; p < this.pages; p++) if (this.ownerOf(p) === 0) return p;
    return -1;
  }

  /**
   * CLOCK over class `c`'s chunks: returns the first chunk that is free
   * (unlinked), expired or flushed, or unreferenced (evicted); referenced
   * ones lose their bit. Two turns of the hand at most. Runs only when the
   * class's carve page is used up, so it never meets an uncarved chunk
   * that carving could hand out again. Under the allocator lock; a chunk
   * is judged and taken under its stripe's lock, which is only TRIED (a
   * busy stripe is skipped: its holder may be unlinking that very chunk).
   */
  private clock(c: number): number {
    const size = this.chunk[c];
    const perPage = Math.floor(SLAB_PAGE_BYTES / size);
    const owned = this.cls(c, CLASS_PAGES);
    if (owned === 0) return 0;
    let hand = this.cls(c, CLASS_HAND);
    for (let steps = 0; steps <= 2 * owned * perPage; steps++) {
      hand = this.advance(c, hand, size, perPage);
      const it = hand;
      const m = this.ld(it + ITEM_META);
      if (this.onFreeList(m)) continue; // the list owns it (the list is empty here: popFree ran first)
      if (m & META_BUSY) {
        if (this.tagDead(this.ld(it + ITEM_NEXT) & TAG_MASK)) return this.takeAt(c, it); // its filler died before linking it
        continue;
      }
      if (m & META_LINKED && m & META_REF && this.alive(it)) {
        this.metaAnd(it, ~META_REF);
        continue;
      }
      const stripe = this.stripeOf(this.ld(it + ITEM_HASH));
      const ours = stripe === this.heldStripe;
      if (!ours && !this.tryLock(this.stripeVa(stripe))) continue;
      try {
        const r = this.judge(it);
        if (r) return this.takeAt(c, it);
      } finally {
        if (!ours) this.unlock(this.stripeVa(stripe));
      }
    }
    return 0;
  }

  /** Under the chunk's stripe lock: whether the clock may take it, unlinking it when it is a victim. */
  private judge(it: number): boolean {
    const m = this.ld(it + ITEM_META);
    if (m & META_BUSY || this.onFreeList(m)) return false; // changed before we got the stripe
    if ((m & META_LINKED) === 0) return true;
    if (!this.alive(it)) {
      this.unlinkIfChained(it);
      this.count(HDR_RECLAIMED, 1);
      return true;
    }
    if (m & META_REF) {
      this.metaAnd(it, ~META_REF);
      return false;
    }
    if (this.unlinkIfChained(it)) this.count(HDR_EVICTIONS, 1);
    return true;
  }

  private takeAt(c: number, it: number): number {
    this.setCls(c, CLASS_HAND, it);
    this.st(it + ITEM_META, 0);
    return it;
  }

  /** The chunk after `hand` in class c's pages (the first chunk of its first page when hand is 0). */
  private advance(c: number, hand: number, size: number, perPage: number): number {
    if (hand !== 0) {
      const page = Math.floor((hand - this.arenaBase) / SLAB_PAGE_BYTES);
      const idx = (hand - this.arenaBase - page * SLAB_PAGE_BYTES) / size;
      if (idx + 1 < perPage) return hand + size;
      for (let p = page + 1; p < this.pages; p++) if (this.ownerOf(p) === c + 1) return this.arenaBase + p * SLAB_PAGE_BYTES;
    }
    for (let p = 0; p < this.pages; p++) if (this.ownerOf(p) === c + 1) return this.arenaBase + p * SLAB_PAGE_BYTES;
    throw new MorselError('ECORRUPT', `slab class ${c} owns no page`);
  }

  // --- commands --------------------------------------------------------------------

  /**
   * The storage commands (set/add/replace/append/prepend/cas). The value is
   * value[vOff, vOff + vLen). On STORED the item is linked (durable in the
   * region) before this returns. `invalidate` (ms I): a cas older than the
   * item's stores anyway, marked stale, keeping the old expiry and win bit.
   */
  store(mode: StoreMode, key: Uint8Array, kOff: number, kLen: number, hash: number, flags: number, exp: number, value: Uint8Array, vOff: number, vLen: number, casIn: number, scratch: Uint8Array, invalidate = false): StoreResult {
    const old = this.find(key, kOff, kLen, hash);
    if (mode === 'add' && old !== 0) {
      this.touchRef(old);
      return 'NOT_STORED';
    }
    if ((mode === 'replace' || mode === 'append' || mode === 'prepend') && old === 0) return 'NOT_STORED';
    let staleBits = 0;
    if (mode === 'cas') {
      if (old === 0) return 'NOT_FOUND';
      const cur = this.casOf(old);
      if (cur !== casIn && !(invalidate && casIn < cur)) return 'EXISTS';
      if (cur !== casIn) {
        staleBits = META_STALE | (this.ld(old + ITEM_META) & META_WON);
        exp = this.ld(old + ITEM_EXP);
      }
    }
    const concat = mode === 'append' || mode === 'prepend';
    const oldBytes = concat ? this.ld(old + ITEM_NBYTES) : 0;
    const total = oldBytes + vLen;
    if (total > this.maxValueBytes(kLen)) return 'TOO_LARGE';
    const it = this.allocItem(key, kOff, kLen, hash, concat ? this.ld(old + ITEM_FLAGS) : flags, concat ? this.ld(old + ITEM_EXP) : exp, total);
    if (it === 0) return 'NO_MEMORY';
    const dst = it + ITEM_HDR_BYTES + kLen;
    // Allocation may have evicted old or its chain neighbours: look it up again before linking.
    const again = this.find(key, kOff, kLen, hash);
    if (concat && again !== old) {
      this.release(it); // the old item was evicted to make room: give the fresh chunk back
      return 'NOT_STORED';
    }
    if (mode === 'prepend') {
      this.copyIn(dst, value, vOff, vLen);
      this.copyWithin(dst + vLen, this.valueVa(old), oldBytes, scratch);
    } else {
      if (concat) this.copyWithin(dst, this.valueVa(old), oldBytes, scratch);
      this.copyIn(dst + oldBytes, value, vOff, vLen);
    }
    if (staleBits !== 0) this.metaOr(it, staleBits); // still BUSY: link() keeps these bits
    this.link(it, again);
    return 'STORED';
  }

  /** delete: true if a visible item was removed. */
  remove(key: Uint8Array, kOff: number, kLen: number, hash: number): boolean {
    const it = this.find(key, kOff, kLen, hash);
    if (it === 0) return false;
    this.unlinkAt(this.foundLink, it);
    this.release(it);
    return true;
  }

  /**
   * Replaces a visible item's value with `digits` (incr/decr), keeping
   * flags and expiry, padded with spaces to the old length when shorter (as
   * memcached's in-place update leaves it). Returns false on no memory.
   */
  replaceValue(it: number, key: Uint8Array, kOff: number, kLen: number, hash: number, digits: Uint8Array, n: number): boolean {
    const oldBytes = this.ld(it + ITEM_NBYTES);
    const nbytes = n < oldBytes ? oldBytes : n;
    const fresh = this.allocItem(key, kOff, kLen, hash, this.ld(it + ITEM_FLAGS), this.ld(it + ITEM_EXP), nbytes);
    if (fresh === 0) return false;
    const dst = fresh + ITEM_HDR_BYTES + kLen;
    this.copyIn(dst, digits, 0, n);
    for (let i = n; i < nbytes; i++) {
      this.at(dst + i, Access.Write);
      this.curBytes[this.curOff] = 0x20;
    }
    this.link(fresh, this.find(key, kOff, kLen, hash)); // allocation may have evicted it: look it up again
    return true;
  }

  /**
   * md I: replaces visible item `it` by a copy marked stale, with a fresh
   * CAS, expiry `exp`, no win token (the next reader wins), and the old
   * fetched bit and times (memcached changes the item in place; a copy
   * keeps the one-store commit). False on no memory.
   */
  invalidate(it: number, key: Uint8Array, kOff: number, kLen: number, hash: number, exp: number, scratch: Uint8Array): boolean {
    const nbytes = this.ld(it + ITEM_NBYTES);
    const fresh = this.allocItem(key, kOff, kLen, hash, this.ld(it + ITEM_FLAGS), exp, nbytes);
    if (fresh === 0) return false;
    const old = this.find(key, kOff, kLen, hash); // allocation may have evicted it
    if (old === 0) {
      this.release(fresh); // BUSY with our live tag: the clock would not take it back
      return false;
    }
    this.copyWithin(fresh + ITEM_HDR_BYTES + kLen, this.valueVa(old), nbytes, scratch);
    this.st(fresh + ITEM_TIME, this.ld(old + ITEM_TIME));
    this.st(fresh + ITEM_ATIME, this.ld(old + ITEM_ATIME));
    this.metaOr(fresh, META_STALE | (this.ld(old + ITEM_META) & META_FETCHED));
    this.link(fresh, old);
    return true;
  }

  /** flush_all: everything stored before now (delay 0) or before now + delay becomes invisible. */
  flushAll(delaySec: number): void {
    this.lockAlloc(); // the CAS counter's lock
    try {
      if (delaySec <= 0) {
        this.setCasWord(HDR_FLUSH_CAS_LO, this.casWord(HDR_CAS_LO) + 1);
        this.setHdr(HDR_FLUSH_AT_SEC, 0);
      } else {
        this.setHdr(HDR_FLUSH_AT_SEC, this.now + delaySec);
      }
    } finally {
      this.unlockAlloc();
    }
  }

  stats(): StoreStats {
    return {
      currItems: this.stat(HDR_CURR_ITEMS),
      totalItems: this.stat(HDR_TOTAL_ITEMS),
      evictions: this.stat(HDR_EVICTIONS),
      reclaimed: this.stat(HDR_RECLAIMED),
      limitMaxBytes: this.limitPages * SLAB_PAGE_BYTES,
      bytes: this.stat(HDR_BYTES),
      pagesUsed: this.stat(HDR_PAGES_USED),
      pages: this.pages,
      buckets: this.buckets,
    };
  }
}

/** FNV-1a over key[off, off + len) (32 bits). */
export function hashKey(key: Uint8Array, off: number, len: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < len; i++) h = Math.imul(h ^ key[off + i], 0x01000193);
  return h >>> 0;
}
