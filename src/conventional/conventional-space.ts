/**
 * A conventional address space in the same region and the same x86-64 table
 * format as morsel spaces (4-level: PML4 -> PDPT -> PD -> PT), but managed
 * the way Linux manages a MAP_SHARED mapping of a shmem object: page by page.
 *
 *  - mmap inserts a VMA (start, end, object, page offset, rights) into a
 *    small shared VMA table and, with `populate` (MAP_POPULATE), faults in
 *    every page at map time; otherwise page tables are filled lazily.
 *  - a fault finds the VMA (lock-free seqlock read, like per-VMA locking),
 *    checks rights, finds or allocates the page in the object's index (its
 *    lock), allocates missing tables (CAS), and installs the PTE under the
 *    page table's lock (split ptlock, striped here), counting the mapping in
 *    the frame's mapcount (struct page _mapcount: region.mapCounts).
 *    Read faults map up to 16 neighbouring pages already in the object
 *    (fault-around, filemap_map_pages); write faults map one page
 *    (do_shared_fault). MAP_POPULATE issues read faults like
 *    __get_user_pages does for a shared mapping.
 *  - munmap removes the VMA, clears every PTE under its table lock and drops
 *    each frame's mapcount (zap_pte_range), frees the page tables the range
 *    owned (free_pgtables), and shoots down the TLBs (epoch bump).
 *
 * VMAs are 2 MiB aligned and never share a page table, so munmap frees a
 * VMA's PTs by range; PD and PDPT tables are freed when they become empty.
 * Addresses come from a bump pointer (no reuse; 2^47 bytes is plenty here).
 *
 * Not modelled (each would only add cost to this side): memcg charging, LRU
 * insertion, rmap trees, mmap_lock, per-page refcounts besides the mapcount.
 */
import { MorselError, assert, check } from '../errors.js';
import { HI_NX, P, RW, US, isPresent, makeHi, makeLo, pfnOf } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, Walker, indexAt as tableIndex, levelSpan } from '../paging/walk.js';
import type { Rights } from '../space/rights.js';
import { Access, CTL_EPOCH, type PagedSpace } from '../space/mmu.js';
import type { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import { Mutex, spinLock, spinUnlock } from '../sync/mutex.js';
import { ShmObject, type PhysMem } from './shm-object.js';

export const CONV_LEVELS = 4;
export const CONV_LIMIT = 2 ** 47;
/** Pages a read fault maps around the faulting one (fault_around_bytes = 64 KiB). */
export const FAULT_AROUND_PAGES = 16;


/** Int32 control words. */
const C_SEQ = 1;
const C_MMAP_LOCK = 2;
const C_VMA_COUNT = 3;
const C_NEXT_UNIT = 4;
const C_HEADER = 16;
const PTL_STRIPES = 1024;
const MAX_VMAS = 256;
const VMA_F64_BYTE = (C_HEADER + PTL_STRIPES) * 4;
const VMA_I32_WORD = VMA_F64_BYTE / 4 + 2 * MAX_VMAS * 2;
const CTL_BYTES = (VMA_I32_WORD + 3 * MAX_VMAS) * 4;

const UNIT = 2 * 1024 * 1024; // VMA alignment: one page table
const FIRST_UNIT = 512; // first mapping at 1 GiB

const R_WRITE = 1;
const R_EXEC = 2;
const R_USER = 4;

export interface ConvSpaceShare {
  rootFrame: number;
  ctl: SharedArrayBuffer;
}

export interface ConvMapOptions {
  rights?: Rights;
  /** MAP_POPULATE: fault in every page now */
  populate?: boolean;
}

export interface ConvCounters {
  faults: number;
  /** PTEs written by faults and population */
  ptes: number;
}

const encodeRights = (r: Rights): number => (r.write ? R_WRITE : 0) | (r.execute ? R_EXEC : 0) | (r.user === false ? 0 : R_USER);

export class ConventionalSpace implements PagedSpace {
  readonly rootFrame: Frame;
  readonly levels = CONV_LEVELS;
  readonly limit = CONV_LIMIT;
  /** [CTL_EPOCH] moves on every unmap: TLBs flush when they see it change. */
  readonly control: Int32Array;
  readonly counters: ConvCounters = { faults: 0, ptes: 0 };
  private readonly vStart: Float64Array;
  private readonly vEnd: Float64Array;
  private readonly vObj: Int32Array;
  private readonly vRights: Int32Array;
  private readonly vPgoff: Int32Array;
  private readonly mmapLock: Mutex;
  /** objects this thread has opened, by id (the VMA table holds ids) */
  private readonly objects = new Map<number, ShmObject>();
  // The VMA found by the last findVma (thread-local scratch, no allocation per fault).
  private fStart = 0;
  private fEnd = 0;
  private fObj = 0;
  private fRights = 0;
  private fPgoff = 0;
  private readonly walker: Walker;

  private constructor(
    readonly mem: PhysMem,
    share: ConvSpaceShare,
  ) {
    this.rootFrame = share.rootFrame as Frame;
    this.control = new Int32Array(share.ctl);
    this.vStart = new Float64Array(share.ctl, VMA_F64_BYTE, MAX_VMAS);
    this.vEnd = new Float64Array(share.ctl, VMA_F64_BYTE + MAX_VMAS * 8, MAX_VMAS);
    this.vObj = new Int32Array(share.ctl, VMA_I32_WORD * 4, MAX_VMAS);
    this.vRights = new Int32Array(share.ctl, (VMA_I32_WORD + MAX_VMAS) * 4, MAX_VMAS);
    this.vPgoff = new Int32Array(share.ctl, (VMA_I32_WORD + 2 * MAX_VMAS) * 4, MAX_VMAS);
    this.mmapLock = new Mutex(this.control, C_MMAP_LOCK);
    this.walker = new Walker(mem.region, mem.alloc);
  }

  static create(mem: PhysMem): ConventionalSpace {
    const root = new Walker(mem.region, mem.alloc).zeroedFrame();
    const ctl = new SharedArrayBuffer(CTL_BYTES);
    new Int32Array(ctl)[C_NEXT_UNIT] = FIRST_UNIT;
    return new ConventionalSpace(mem, { rootFrame: root, ctl });
  }

  /** The same space seen from another thread (which must `adopt` the objects it will touch). */
  static attach(mem: PhysMem, share: ConvSpaceShare): ConventionalSpace {
    return new ConventionalSpace(mem, share);
  }

  share(): ConvSpaceShare {
    return { rootFrame: this.rootFrame, ctl: this.control.buffer as SharedArrayBuffer };
  }

  get region(): Region {
    return this.mem.region;
  }

  get epoch(): number {
    return Atomics.load(this.control, CTL_EPOCH);
  }

  /** Makes an object opened in this thread resolvable by faults in this thread. */
  adopt(obj: ShmObject): void {
    this.objects.set(obj.id, obj);
  }

  // --- VMA table (seqlock) ------------------------------------------------------

  private writeBegin(): void {
    Atomics.add(this.control, C_SEQ, 1);
  }

  private writeEnd(): void {
    Atomics.add(this.control, C_SEQ, 1);
  }

  /** Finds the VMA containing `vaddr` into the f* scratch fields; false if none. */
  private findVma(vaddr: number): boolean {
    const c = this.control;
    for (;;) {
      const seq = Atomics.load(c, C_SEQ);
      if (seq & 1) continue;
      const n = Atomics.load(c, C_VMA_COUNT);
      let found = false;
      for (let i = 0; i < n; i++) {
        const s = this.vStart[i];
        if (vaddr >= s && vaddr < this.vEnd[i]) {
          this.fStart = s;
          this.fEnd = this.vEnd[i];
          this.fObj = this.vObj[i];
          this.fRights = this.vRights[i];
          this.fPgoff = this.vPgoff[i];
          found = true;
          break;
        }
      }
      if (Atomics.load(c, C_SEQ) === seq) return found;
    }
  }

  // --- mmap / munmap ----------------------------------------------------------------

  /** Maps all of `obj` and returns the start address. */
  mmap(obj: ShmObject, opts: ConvMapOptions = {}): number {
    const rights = encodeRights(opts.rights ?? { write: true });
    this.adopt(obj);
    const bytes = obj.byteLength;
    const units = Math.ceil(bytes / UNIT);
    this.mmapLock.lock();
    let start: number;
    try {
      const n = this.control[C_VMA_COUNT];
      check(n < MAX_VMAS, 'ENOSPC', `more than ${MAX_VMAS} mappings`);
      const unit = this.control[C_NEXT_UNIT];
      start = unit * UNIT;
      check(start + units * UNIT <= this.limit, 'ENOSPC', 'conventional address space exhausted');
      this.control[C_NEXT_UNIT] = unit + units;
      this.writeBegin();
      this.vStart[n] = start;
      this.vEnd[n] = start + bytes;
      this.vObj[n] = obj.id;
      this.vRights[n] = rights;
      this.vPgoff[n] = 0;
      Atomics.store(this.control, C_VMA_COUNT, n + 1);
      this.writeEnd();
    } finally {
      this.mmapLock.unlock();
    }
    if (opts.populate) this.populate(start, bytes);
    return start;
  }

  /** MAP_POPULATE / MADV_POPULATE_READ: a read fault for every page not yet mapped. */
  populate(start: number, bytes: number): void {
    for (let va = start; va < start + bytes; va += 4096) {
      if (this.pteFrame(va) < 0) this.handleFault(va, Access.Read);
    }
  }

  /** Removes the mapping starting at `start`: every PTE, then the tables it owned, then the TLBs. */
  munmap(start: number): void {
    this.mmapLock.lock();
    let end: number;
    try {
      const n = this.control[C_VMA_COUNT];
      let slot = -1;
      for (let i = 0; i < n; i++) if (this.vStart[i] === start) slot = i;
      if (slot < 0) throw new MorselError('ENOENT', `no mapping starts at 0x${start.toString(16)}`);
      end = this.vEnd[slot];
      this.writeBegin();
      const last = n - 1;
      this.vStart[slot] = this.vStart[last];
      this.vEnd[slot] = this.vEnd[last];
      this.vObj[slot] = this.vObj[last];
      this.vRights[slot] = this.vRights[last];
      this.vPgoff[slot] = this.vPgoff[last];
      Atomics.store(this.control, C_VMA_COUNT, last);
      this.writeEnd();
      this.zapRange(start, end);
    } finally {
      this.mmapLock.unlock();
    }
    Atomics.add(this.control, CTL_EPOCH, 1);
  }

  /** Clears the PTEs of [start, end) one by one and frees the page tables of the range. */
  private zapRange(start: number, end: number): void {
    const region = this.mem.region;
    const mapCounts = region.mapCounts;
    for (let base = start; base < end; base += UNIT) {
      const pd = this.tableAt(base, 2);
      if (pd < 0) continue;
      const pdi = tableIndex(base, 2);
      const lo = region.loadLo(pd as Frame, pdi);
      if (!isPresent(lo)) continue;
      const hi = region.loadHi(pd as Frame, pdi);
      const pt = this.walker.follow(pd as Frame, pdi, lo, hi);
      const first = tableIndex(base, 1);
      const stop = Math.min(ENTRIES_PER_TABLE, first + Math.ceil((end - base) / 4096));
      const words = region.words(pt);
      const w0 = region.wordIndex(pt, 0);
      this.ptlLock(pt);
      for (let i = first; i < stop; i++) {
        const plo = Atomics.load(words, w0 + 2 * i);
        if (!isPresent(plo)) continue;
        const frame = pfnOf(plo, Atomics.load(words, w0 + 2 * i + 1));
        Atomics.store(words, w0 + 2 * i, 0); // present bit first, then the rest
        Atomics.store(words, w0 + 2 * i + 1, 0);
        Atomics.sub(mapCounts, frame, 1);
      }
      this.ptlUnlock(pt);
      // The PT belongs to this VMA alone (2 MiB alignment): unlink, then free.
      assert(region.casEntry(pd as Frame, pdi, lo, hi, 0, 0), 'PD entry unchanged during munmap');
      this.mem.alloc.free(pt);
    }
    this.freeEmptyUpper(start, end);
  }

  /** Frees PD and PDPT tables over [start, end) that have become empty. */
  private freeEmptyUpper(start: number, end: number): void {
    const region = this.mem.region;
    for (let level = 2; level <= 3; level++) {
      const span = levelSpan(level + 1); // bytes covered by one table of `level`
      for (let base = Math.floor(start / span) * span; base < end; base += span) {
        const parentLevel = level + 1;
        const parent = this.tableAt(base, parentLevel);
        if (parent < 0) continue;
        const idx = tableIndex(base, parentLevel);
        const lo = region.loadLo(parent as Frame, idx);
        if (!isPresent(lo)) continue;
        const hi = region.loadHi(parent as Frame, idx);
        const table = this.walker.follow(parent as Frame, idx, lo, hi);
        if (!tableEmpty(this.mem, table)) continue;
        if (region.casEntry(parent as Frame, idx, lo, hi, 0, 0)) this.mem.alloc.free(table);
      }
    }
  }

  /** Unmaps everything and frees the root. */
  destroy(): void {
    for (;;) {
      const n = Atomics.load(this.control, C_VMA_COUNT);
      if (n === 0) break;
      this.munmap(this.vStart[n - 1]);
    }
    this.mem.alloc.free(this.rootFrame);
    Atomics.add(this.control, CTL_EPOCH, 1);
  }

  // --- page tables --------------------------------------------------------------------

  /** The split page-table lock of `pt` (striped over PTL_STRIPES words): a spinlock, as in Linux. */
  private ptlLock(pt: number): void {
    spinLock(this.control, C_HEADER + (pt % PTL_STRIPES));
  }

  private ptlUnlock(pt: number): void {
    spinUnlock(this.control, C_HEADER + (pt % PTL_STRIPES));
  }

  /** The table of `level` covering `vaddr` (level 4 = root), or -1 if a table on the way is missing. */
  private tableAt(vaddr: number, level: number): number {
    return this.walker.descend(this.rootFrame, CONV_LEVELS, vaddr, level);
  }

  /** The PT covering `vaddr`, allocating missing tables (pte_alloc: allocate, then install if still empty). */
  private ptFor(vaddr: number): Frame {
    let table = this.rootFrame;
    // Volatile model (no crash points): a crash loses the whole space anyway.
    for (let l = CONV_LEVELS; l > 1; l--) table = this.walker.ensureChild(table, tableIndex(vaddr, l), null);
    return table;
  }

  /** The frame mapped at `vaddr`, or -1 (follow_page). */
  pteFrame(vaddr: number): number {
    const pt = this.tableAt(vaddr, 1);
    if (pt < 0) return -1;
    const lo = this.mem.region.loadLo(pt as Frame, tableIndex(vaddr, 1));
    return isPresent(lo) ? pfnOf(lo, this.mem.region.loadHi(pt as Frame, tableIndex(vaddr, 1))) : -1;
  }

  // --- faults ---------------------------------------------------------------------------

  /**
   * The page-fault handler for a not-present (or not-yet-writable) page:
   * EFAULT outside every VMA, EACCES against the VMA's rights.
   */
  handleFault(vaddr: number, access: Access): void {
    if (!this.findVma(vaddr)) throw new MorselError('EFAULT', `nothing mapped at 0x${vaddr.toString(16)}`);
    const r = this.fRights;
    if ((access === Access.Write && !(r & R_WRITE)) || (access === Access.Execute && !(r & R_EXEC))) {
      const what = access === Access.Write ? 'write' : 'execute';
      throw new MorselError('EACCES', `${what} at 0x${vaddr.toString(16)} violates the mapping's rights`);
    }
    const obj = this.objects.get(this.fObj);
    if (obj === undefined) throw new MorselError('EFAULT', `object ${this.fObj} of the mapping at 0x${vaddr.toString(16)} is not open in this thread`);
    this.counters.faults++;
    const page = Math.floor(vaddr / 4096);
    const vmaFirst = this.fStart / 4096;
    const frame = obj.getPage(this.fPgoff + page - vmaFirst);
    const pt = this.ptFor(vaddr);
    this.ptlLock(pt);
    this.installPte(pt, page % 512, frame, r);
    if (access === Access.Read) this.faultAround(obj, pt, page, r);
    this.ptlUnlock(pt);
  }

  /** filemap_map_pages: maps the pages of the aligned 16-page window already in the object. */
  private faultAround(obj: ShmObject, pt: Frame, page: number, r: number): void {
    const vmaFirst = this.fStart / 4096;
    const vmaEnd = Math.ceil(this.fEnd / 4096);
    const winStart = Math.max(page - (page % FAULT_AROUND_PAGES), vmaFirst);
    const winEnd = Math.min(page - (page % FAULT_AROUND_PAGES) + FAULT_AROUND_PAGES, vmaEnd);
    for (let p = winStart; p < winEnd; p++) {
      if (p === page) continue;
      const frame = obj.lookup(this.fPgoff + p - vmaFirst);
      if (frame === 0) continue;
      this.installPte(pt, p % 512, frame, r);
    }
  }

  /**
   * Sets an empty PTE for `frame` with the VMA's rights `r` (caller holds the
   * PT lock) and counts the mapping. Rights live in every PTE here: that is
   * the page-granular design morsels replace with one top entry.
   */
  private installPte(pt: Frame, idx: number, frame: number, r: number): void {
    const lo = makeLo(frame, P | (r & R_USER ? US : 0) | (r & R_WRITE ? RW : 0));
    const hi = makeHi(frame, r & R_EXEC ? 0 : HI_NX);
    const region = this.mem.region;
    const words = region.words(pt);
    const w = region.wordIndex(pt, 2 * idx);
    if (isPresent(Atomics.load(words, w))) return;
    // Two 32-bit stores, high half first: a walker that sees P also sees the PFN.
    Atomics.store(words, w + 1, hi);
    Atomics.store(words, w, lo);
    Atomics.add(region.mapCounts, frame, 1);
    this.counters.ptes++;
  }
}

function tableEmpty(mem: PhysMem, table: Frame): boolean {
  for (let i = 0; i < ENTRIES_PER_TABLE; i++) if (isPresent(mem.region.loadLo(table, i))) return false;
  return true;
}
