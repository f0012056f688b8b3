/**
 * The conventional shared-memory object (shmem / memfd): a size and a
 * page-cache-like index from page offset to frame, kept page by page, with
 * one lock per object guarding insertions (the kernel's i_pages xa_lock).
 *
 * Modelled on Linux' shmem_get_folio path: the lookup is lock-free (RCU
 * filemap_get_entry), a missing page is allocated and zeroed outside the
 * lock, then inserted under the lock after a re-check (the loser of a race
 * frees its page, as shmem_add_to_page_cache does on -EEXIST). The lock also
 * covers the per-object page count (shmem_recalc_inode).
 *
 * The index is a flat array of u32 frame numbers in its own
 * SharedArrayBuffer (0 = absent: frame 0 is the superblock, never handed
 * out). A flat array is one load per lookup, cheaper than the kernel's
 * xarray walk, so the model errs in the conventional side's favour.
 *
 * Frames come from the same allocator as morsels. An object built with
 * `fromFrames` borrows frames owned by something else (a morsel, in the
 * benchmarks, so both sides read the same physical pages) and never frees them.
 */
import { threadId } from 'node:worker_threads';
import { check } from '../errors.js';
import type { FrameAllocator } from '../alloc/llfree.js';
import type { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import { spinLock, spinUnlock } from '../sync/mutex.js';

/** What an object needs from the memory system: the region and this thread's allocator. */
export interface PhysMem {
  region: Region;
  alloc: FrameAllocator;
}

/** A reference to an object another thread can open (a name / file descriptor). */
export interface ShmShare {
  sab: SharedArrayBuffer;
}

const H_LOCK = 0;
const H_PAGES = 1;
const H_FLAGS = 2;
const H_ID = 3;
const H_POPULATED = 4;
const HEADER_WORDS = 16;
const F_BORROWED = 1;
const F_DESTROYED = 2;

let nextLocal = 1;

export class ShmObject {
  readonly pages: number;
  readonly id: number;
  private readonly header: Int32Array;
  /** page offset -> frame (0 = not present) */
  private readonly index: Uint32Array;

  private constructor(
    readonly mem: PhysMem,
    readonly sab: SharedArrayBuffer,
  ) {
    this.header = new Int32Array(sab, 0, HEADER_WORDS);
    this.pages = this.header[H_PAGES];
    this.id = this.header[H_ID];
    this.index = new Uint32Array(sab, HEADER_WORDS * 4, this.pages);
  }

  /** memfd_create + ftruncate: an empty object of `pages` pages. */
  static create(mem: PhysMem, pages: number, flags = 0): ShmObject {
    check(Number.isSafeInteger(pages) && pages > 0 && pages < 2 ** 31, 'EINVAL', `object size must be 1..2^31-1 pages, got ${pages}`);
    const sab = new SharedArrayBuffer((HEADER_WORDS + pages) * 4);
    const h = new Int32Array(sab, 0, HEADER_WORDS);
    h[H_PAGES] = pages;
    h[H_FLAGS] = flags;
    h[H_ID] = ((threadId & 0x7ff) << 20) | (nextLocal++ & 0xfffff);
    return new ShmObject(mem, sab);
  }

  /** An object whose pages are `frames` (owned elsewhere, never freed by this object). */
  static fromFrames(mem: PhysMem, frames: ArrayLike<number>): ShmObject {
    const obj = ShmObject.create(mem, frames.length, F_BORROWED);
    for (let i = 0; i < frames.length; i++) obj.index[i] = frames[i];
    obj.header[H_POPULATED] = frames.length;
    return obj;
  }

  /** shm_open: the same object seen from another thread (`mem` = that thread's allocator). */
  static open(mem: PhysMem, share: ShmShare): ShmObject {
    return new ShmObject(mem, share.sab);
  }

  share(): ShmShare {
    return { sab: this.sab };
  }

  get byteLength(): number {
    return this.pages * 4096;
  }

  get borrowed(): boolean {
    return (this.header[H_FLAGS] & F_BORROWED) !== 0;
  }

  /** Pages present in the index. */
  populated(): number {
    return Atomics.load(this.header, H_POPULATED);
  }

  /** The frame at page `pgoff`, or 0 when absent. Lock-free (the RCU lookup). */
  lookup(pgoff: number): number {
    return Atomics.load(this.index, pgoff);
  }

  /**
   * Find-or-allocate (shmem_get_folio with SGP_CACHE): lock-free lookup,
   * then allocate + zero outside the lock and insert under it.
   */
  getPage(pgoff: number): Frame {
    const found = Atomics.load(this.index, pgoff);
    if (found !== 0) return found as Frame;
    const fresh = this.mem.alloc.alloc(0);
    this.mem.region.zeroFrame(fresh);
    spinLock(this.header, H_LOCK); // the i_pages lock: a spinlock, as in Linux
    const cur = this.index[pgoff];
    if (cur === 0) {
      Atomics.store(this.index, pgoff, fresh);
      this.header[H_POPULATED]++;
    }
    spinUnlock(this.header, H_LOCK);
    if (cur === 0) return fresh;
    this.mem.alloc.free(fresh); // lost the race (-EEXIST): use the winner's page
    return cur as Frame;
  }

  /**
   * Truncate to zero and free the object: every page is removed from the
   * index under the lock and freed (unless borrowed). Callers unmap first.
   */
  destroy(): void {
    const borrowed = this.borrowed;
    spinLock(this.header, H_LOCK);
    for (let i = 0; i < this.pages; i++) {
      const f = this.index[i];
      if (f === 0) continue;
      this.index[i] = 0;
      if (!borrowed) this.mem.alloc.free(f as Frame);
    }
    this.header[H_POPULATED] = 0;
    this.header[H_FLAGS] |= F_DESTROYED;
    spinUnlock(this.header, H_LOCK);
  }
}
