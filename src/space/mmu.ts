/**
 * A software MMU for one thread: translate through a per-thread TLB, walk the
 * x86-64 tables on a miss, fault into the morsel fault handler, and enforce
 * the most restrictive rights along the path (R/W and U/S ANDed, NX ORed).
 *
 * TLB: direct-mapped, tagged with the full virtual page number (48/57-bit
 * spaces rule out a flat array). Shootdown by epoch: every unmap bumps the
 * space's epoch; an access (or a translate) that sees a new epoch flushes
 * first. No locks, no messages.
 *
 * Reclamation (src/space/quiesce.ts): every data access is an access
 * section; the thread's reader slot is odd for its duration, and unmap waits
 * for such sections to end before the morsel's frames may be freed. Cost:
 * two atomic adds and one load per access, none per page.
 *
 * Copy-on-write (src/morsel/cow.ts): a write that meets an entry without RW
 * below a morsel's top is a COW fault, resolved by the same fault handler,
 * which copies (or reuses) the path down to the page. A copy moves the
 * region-wide shootdown epoch (superblock), which every Mmu also compares at
 * enter(): one more atomic load per access section.
 * # Warning: an access section that began before another thread's (or
 * process's) COW copy may keep reading the original page until it ends, as
 * a CPU may use a stale TLB entry until the shootdown IPI arrives.
 *
 * Reads of never-populated morsel pages return the shared zero frame
 * (ZERO_FRAME) and allocate nothing, as Linux maps its zero page; only a
 * write populates. The zero translation is never cached, so a page another
 * thread populates later is seen by the next access.
 *
 * 2 MiB leaves (PS entries of level-2 tables inside morsels): the walk stops
 * there, the data frame is the leaf's frame + the level-1 index; the walk
 * cache then holds the leaf, so the other 511 pages of it miss the TLB into
 * one compare instead of a walk. A write fault on a missing level-2 entry of
 * a morsel whose mapping entry carries HI_HUGE populates a whole leaf.
 *
 * Not modelled: accessed/dirty bits (a morsel never needs them), PCID.
 */
import { MorselError, check, isMorselError } from '../errors.js';
import { HI_HUGE, HI_MORSEL_TOP, HI_NX, P, RW, US, isPresent, pfnOf } from '../paging/entry.js';
import { tableIndex } from '../morsel/order.js';
import { HUGE_FRAMES, allocatableRange, isLeafEntry, validTableFrame } from '../paging/walk.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { ZERO_FRAME } from '../physical/layout.js';
import { WINDOW_FRAME_SHIFT as WINDOW_SHIFT } from '../physical/region.js';
import type { Region } from '../physical/region.js';
import { nativeScanRun } from '../physical/native.js';
import { READER_TABLE_BYTES, enterSection, exitSection, isLive, joinReaders, leaveReaders, readerTable, sectionDepth, type ReaderSlot } from './quiesce.js';

/**
 * What an MMU walks: x86-64 tables under a root, an epoch word for
 * shootdowns, and the fault handlers. A morsel AddressSpace resolves faults
 * inside morsels (`populateFrom`); the conventional baseline resolves
 * faults outside them, page by page, like Linux' VMA fault path
 * (`handleFault`). One walker serves both, so their access costs compare
 * fairly.
 */
export interface PagedSpace {
  readonly region: Region;
  readonly rootFrame: number;
  readonly levels: number;
  /** exclusive upper bound of valid addresses */
  readonly limit: number;
  /** shared control words; [CTL_EPOCH] moves on every unmap (the TLB shootdown) */
  readonly control: Int32Array;
  readonly epoch: number;
  /**
   * The space's shared reader table (quiesce.ts), if its unmap waits for
   * readers. Without one (the conventional baseline) each Mmu publishes into a
   * private table: the same per-access cost, no one waits on it.
   */
  readonly readers?: Int32Array;
  /**
   * The morsel fault handler: populate the path below the morsel's
   * level-`level` table `table` to the page of `vaddr`; returns the data
   * frame. (Morsels are naturally aligned, so the indices of `vaddr` below
   * the morsel's top are its offset's.) `huge`: the mapping entry carries
   * the morsel's 2 MiB-leaf policy.
   */
  populateFrom?(table: Frame, level: number, vaddr: number, huge: boolean): Frame;
  /**
   * Optional fault-ahead for a bulk write: populate `pages` pages from the
   * page of `vaddr` below the morsel's level-`level` table `table` (at most
   * to its end), every one of which the write will reach.
   */
  populateAhead?(table: Frame, level: number, vaddr: number, pages: number, huge: boolean): void;
  /** a fault outside any morsel: map the page or throw EFAULT/EACCES */
  handleFault?(vaddr: number, access: Access): void;
}

/** Index of the epoch word in a PagedSpace's `control`. */
export const CTL_EPOCH = 0;

export const Access = { Read: 0, Write: 1, Execute: 2 } as const;
export type Access = (typeof Access)[keyof typeof Access];

const TLB_BITS = 12; // 4096 entries x 4 KiB = 16 MiB reach
const TLB_SIZE = 1 << TLB_BITS;
const TLB_MASK = TLB_SIZE - 1;
const PERM_WRITE = 1;
const PERM_EXEC = 2;
const PERM_USER = 4;
/** A fault is retried at most this often (another thread may unmap between fault and walk). */
const FAULT_RETRIES = 4;
/**
 * runFromCache scans at least this many entries natively (the addon's
 * scanRun: one 64-bit acquire load per entry, ~1 ns, against ~15 ns for two
 * Atomics.load calls); fewer cost less than the native call (~50 ns).
 */
const NATIVE_SCAN_MIN_PAGES = 16;
const scanRun = nativeScanRun();

export interface MmuCounters {
  hits: number;
  misses: number;
  faults: number;
  flushes: number;
  /** reads of never-populated morsel pages answered by the zero frame */
  zeroReads: number;
  /** writes that met a write-protected (shared) entry inside a morsel */
  cowFaults: number;
}

export class Mmu {
  private readonly tlbVpn = new Float64Array(TLB_SIZE).fill(-1);
  private readonly tlbFrame = new Float64Array(TLB_SIZE);
  private readonly tlbPerm = new Uint8Array(TLB_SIZE);
  /**
   * Walk cache (like x86's paging-structure caches): the last level-1 table
   * used, keyed by vaddr / 2 MiB, with the rights accumulated above it and
   * the morsel it belongs to. Streaming over more pages than the TLB holds
   * then costs one entry load per page instead of a full walk. With wcHuge
   * it holds a 2 MiB leaf's first frame instead: no load at all.
   */
  private wcKey = -1;
  private wcTable = 0;
  private wcPerm = 0;
  private wcInMorsel = false;
  private wcHuge = false;
  /** the cached level-1 table's int32 window and the index of its word 0 (not for a leaf) */
  private wcWords: Int32Array | null = null;
  private wcBase = 0;
  /** the space epoch the TLB is valid for; NaN once closed (never equal: every use takes the slow path) */
  private epoch: number;
  /** the region's shootdown epoch the TLB is valid for (copy-on-write copies move it) */
  private shootdown: number;
  /** this thread's slot in the space's reader table (shared by the thread's Mmus of the space) */
  private readonly reader: ReaderSlot;
  private closed = false;
  /** [firstFrame, endFrame): the frames a walk may follow */
  private readonly firstFrame: number;
  private readonly endFrame: number;
  /** user-mode accesses (the default) need U/S on every level */
  readonly user: boolean;
  readonly counters: MmuCounters = { hits: 0, misses: 0, faults: 0, flushes: 0, zeroReads: 0, cowFaults: 0 };
  /** set by lookupAhead around a bulk write's lookup: pages the write reaches from that page on (0: a single access) */
  private writeAheadPages = 0;

  /** EBADF if the space is already destroyed; EBUSY if READER_SLOTS other threads use it. */
  constructor(
    readonly space: PagedSpace,
    opts: { user?: boolean } = {},
  ) {
    this.user = opts.user ?? true;
    ({ first: this.firstFrame, end: this.endFrame } = allocatableRange(space.region));
    const table = space.readers ?? readerTable(new SharedArrayBuffer(READER_TABLE_BYTES), 0);
    // Epoch before liveness: a destroy marks the space dead before it bumps
    // the epoch, so if the space is live now, the bump is still ahead of us.
    this.epoch = space.epoch;
    this.shootdown = space.region.loadShootdown();
    if (!isLive(table)) throw spaceGone();
    this.reader = joinReaders(table);
  }

  /**
   * Releases this Mmu's share of its thread's reader slot (the last Mmu of
   * the thread frees the slot). Later use is EBADF. EBUSY inside a section.
   */
  close(): void {
    check(!this.closed, 'EBADF', 'this Mmu is already closed');
    check(sectionDepth(this.reader) === 0, 'EBUSY', 'close() inside an access section (enter() without exit())');
    this.closed = true;
    this.epoch = NaN;
    leaveReaders(this.reader);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Opens an access section (nestable, per thread): until the matching
   * exit(), no frame this thread translated through the space is freed, and
   * unmap on other threads waits. Every data access below opens its own;
   * a loop of small accesses inside one held section skips their two atomic
   * adds (read8 then costs what it did before sections existed).
   * # Warning: hold one yourself around any later use of a frame from
   * translate() or a view from pageView() while other threads may unmap and
   * destroy; outside a section such a frame may be reused under you. Keep
   * sections short and never hold one across an await or a blocking wait:
   * every unmap of the space waits for them (and gives up, ETIMEDOUT, after
   * its bound).
   */
  enter(): void {
    if (this.closed) throw closedError();
    // Publish first, then read the epoch (the order quiesce.ts relies on).
    enterSection(this.reader);
    const epoch = Atomics.load(this.space.control, CTL_EPOCH);
    if (this.stale(epoch)) {
      try {
        this.catchUp(epoch);
      } catch (e) {
        this.exit();
        throw e;
      }
    }
  }

  /** Closes the innermost access section. */
  exit(): void {
    exitSection(this.reader);
  }

  /**
   * Physical frame backing `vaddr` for `access`; a write faults in missing
   * pages, a read or execute of a never-populated morsel page returns
   * ZERO_FRAME (read-only by contract). Raw: see the warning on enter().
   */
  translate(vaddr: number, access: Access): Frame {
    const epoch = Atomics.load(this.space.control, CTL_EPOCH);
    if (this.stale(epoch)) this.catchUp(epoch);
    return this.lookup(vaddr, access);
  }

  /** Drops every cached translation (EBADF when closed or the space is gone). */
  flush(): void {
    this.catchUp(Atomics.load(this.space.control, CTL_EPOCH));
  }

  /** Whether the TLB must be flushed: the space's epoch (`epoch`, just read) or the region's shootdown epoch moved. */
  private stale(epoch: number): boolean {
    return epoch !== this.epoch || this.space.region.loadShootdown() !== this.shootdown;
  }

  /** An epoch moved (or the Mmu is closed): EBADF if closed or the space was destroyed, else flush. */
  private catchUp(epoch: number): void {
    if (this.closed) throw closedError();
    // A destroy marks the space dead before bumping the epoch, so seeing the
    // new epoch and then a live space means the destroy has not started.
    if (!isLive(this.reader.table)) throw spaceGone();
    this.shootdown = this.space.region.loadShootdown(); // before the flush: a later move flushes again
    this.tlbVpn.fill(-1);
    this.wcKey = -1;
    this.epoch = epoch;
    this.counters.flushes++;
  }

  /**
   * A bulk write's fault in a morsel: populate the pages it reaches from
   * here in one batch (populateAhead), so the write does not fault page by
   * page. Best effort: without enough free frames (ENOSPC) the fault
   * populates the one page as before, and the write stops where frames run
   * out, as it would have.
   */
  private faultAhead(table: Frame, level: number, vaddr: number, huge: boolean): void {
    if (this.space.populateAhead === undefined) return;
    try {
      this.space.populateAhead(table, level, vaddr, this.writeAheadPages, huge);
    } catch (e) {
      if (!isMorselError(e, 'ENOSPC')) throw e;
    }
  }

  /**
   * lookup() for runs(): a write fault on the way may populate the `pages`
   * pages this write reaches from `vaddr` in one batch (faultAhead). The
   * hint never outlives the call, so single accesses fault page by page.
   */
  private lookupAhead(vaddr: number, access: Access, pages: number): Frame {
    if (access !== Access.Write) return this.lookup(vaddr, access);
    this.writeAheadPages = pages;
    try {
      return this.lookup(vaddr, access);
    } finally {
      this.writeAheadPages = 0;
    }
  }

  /** translate() without the epoch check: for use inside a section, which checked it. */
  private lookup(vaddr: number, access: Access): Frame {
    const vpn = Math.floor(vaddr / PAGE_SIZE);
    const slot = vpn & TLB_MASK;
    if (this.tlbVpn[slot] === vpn && allowed(this.tlbPerm[slot], access, this.user)) {
      this.counters.hits++;
      return this.tlbFrame[slot] as Frame;
    }
    this.counters.misses++;
    return this.walk(vaddr, vpn, slot, access);
  }

  private walk(vaddr: number, vpn: number, slot: number, access: Access): Frame {
    if (!(vaddr >= 0 && vaddr < this.space.limit && Number.isInteger(vaddr))) {
      throw new MorselError('EFAULT', `address ${vaddr} outside the ${this.space.levels}-level space`);
    }
    const region = this.space.region;
    const key = Math.floor(vpn / 512);
    let level: number;
    let table: number;
    let perm: number;
    /** below an entry marked MORSEL_TOP: a missing entry is the morsel fault handler's */
    let inMorsel: boolean;
    /** the morsel's 2 MiB-leaf policy (its mapping entry's HI_HUGE), for faults above level 1 */
    let huge = false;
    // A write may not start below a write-protected entry the cache skips: it must see it to copy it.
    if (key === this.wcKey && (access !== Access.Write || (this.wcPerm & PERM_WRITE) !== 0 || !this.wcInMorsel)) {
      if (this.wcHuge) return this.fillTlb(vaddr, vpn, slot, access, this.wcTable + (vpn % HUGE_FRAMES), this.wcPerm);
      level = 1;
      table = this.wcTable;
      perm = this.wcPerm;
      inMorsel = this.wcInMorsel;
    } else {
      level = this.space.levels;
      table = this.space.rootFrame;
      perm = PERM_WRITE | PERM_EXEC | PERM_USER;
      inMorsel = false;
    }
    for (let faults = 0; level >= 1; level--) {
      if (level === 1 && key !== this.wcKey) this.cacheWalk(key, table, perm, inMorsel, false);
      const idx = tableIndex(vaddr, level);
      const lo = region.loadLo(table as Frame, idx);
      if (!isPresent(lo)) {
        if (++faults > FAULT_RETRIES) throw new MorselError('EFAULT', `0x${vaddr.toString(16)} keeps disappearing (concurrent unmap?)`);
        if (!inMorsel) {
          // Outside any morsel: only a space with its own fault path (the
          // conventional baseline's VMAs) can resolve it; it throws if not.
          if (this.space.handleFault === undefined) throw new MorselError('EFAULT', `nothing mapped at 0x${vaddr.toString(16)}`);
          this.space.handleFault(vaddr, access);
          this.counters.faults++;
          if (level === 1) {
            level++; // the page table stands (it may be the walk cache's): retry its entry
          } else {
            // Retry from the root: the handler may have built tables below.
            level = this.space.levels + 1;
            table = this.space.rootFrame;
            perm = PERM_WRITE | PERM_EXEC | PERM_USER;
          }
          continue;
        }
        // Check rights before populating: a forbidden write must not allocate.
        if (!allowed(perm, access, this.user)) throw this.denied(vaddr, access);
        if (access !== Access.Write) {
          // A read of a hole: zeros, nothing allocated, nothing cached.
          this.counters.zeroReads++;
          return ZERO_FRAME as Frame;
        }
        this.counters.faults++;
        if (this.writeAheadPages > 1) this.faultAhead(table as Frame, level, vaddr, huge);
        // Populate from this table down and take the data frame it returns:
        // entries inside a morsel are permissive, so `perm` is already final.
        table = this.space.populateFrom!(table as Frame, level, vaddr, huge);
        break;
      }
      if (inMorsel && (lo & RW) === 0 && access === Access.Write) {
        // Copy-on-write: the entry may reference a shared child. The handler
        // copies (or reuses) the path from here down and returns the private page.
        if (!allowed(perm, access, this.user)) throw this.denied(vaddr, access);
        this.counters.faults++;
        this.counters.cowFaults++;
        table = this.space.populateFrom!(table as Frame, level, vaddr, huge);
        this.wcKey = -1; // the cached level-1 table may be the shared original
        break;
      }
      const hi = region.loadHi(table as Frame, idx);
      if ((lo & RW) === 0) perm &= ~PERM_WRITE;
      if ((lo & US) === 0) perm &= ~PERM_USER;
      if (hi & HI_NX) perm &= ~PERM_EXEC;
      const next = pfnOf(lo, hi);
      // Every frame a walk follows must be allocatable (src/paging/walk.ts): damaged metadata is ECORRUPT, never access to reserved frames.
      if (!validTableFrame(next, this.firstFrame, this.endFrame)) throw new MorselError('ECORRUPT', `table frame ${table} entry ${idx} references frame ${next}, outside the allocatable range`);
      if (inMorsel && isLeafEntry(level, lo)) {
        // A 2 MiB leaf: the data frame lies inside it (the whole block must be allocatable too). A
        // misaligned one (the hardware's reserved-bit fault) would reach into the next block.
        if (next % HUGE_FRAMES !== 0) throw new MorselError('ECORRUPT', `table frame ${table} entry ${idx}: 2 MiB leaf of frame ${next} is not 2 MiB-aligned`);
        if (!validTableFrame(next + HUGE_FRAMES - 1, this.firstFrame, this.endFrame)) throw new MorselError('ECORRUPT', `table frame ${table} entry ${idx}: 2 MiB leaf of frame ${next} reaches outside the allocatable range`);
        this.cacheWalk(key, next, perm, true, true);
        table = next + (vpn % HUGE_FRAMES);
        break;
      }
      table = next;
      if (hi & HI_MORSEL_TOP) {
        inMorsel = true;
        huge = (hi & HI_HUGE) !== 0;
      }
    }
    return this.fillTlb(vaddr, vpn, slot, access, table, perm);
  }

  /** Remembers the level-1 table (or, `huge`, the 2 MiB leaf) for vaddr / 2 MiB = `key` in the walk cache. */
  private cacheWalk(key: number, table: number, perm: number, inMorsel: boolean, huge: boolean): void {
    this.wcKey = key;
    this.wcTable = table;
    this.wcPerm = perm;
    this.wcInMorsel = inMorsel;
    this.wcHuge = huge;
    if (!huge) {
      this.wcWords = this.space.region.words(table as Frame);
      this.wcBase = this.space.region.wordIndex(table as Frame, 0);
    }
  }

  /** Checks the rights `perm` of a finished walk and enters its translation into TLB slot `slot`. */
  private fillTlb(vaddr: number, vpn: number, slot: number, access: Access, frame: number, perm: number): Frame {
    if (!allowed(perm, access, this.user)) throw this.denied(vaddr, access);
    this.tlbVpn[slot] = vpn;
    this.tlbFrame[slot] = frame;
    this.tlbPerm[slot] = perm;
    return frame as Frame;
  }

  private denied(vaddr: number, access: Access): MorselError {
    const what = access === Access.Write ? 'write' : access === Access.Execute ? 'execute' : 'read';
    return new MorselError('EACCES', `${what} at 0x${vaddr.toString(16)} violates the mapping's rights`);
  }

  // --- data access (each one access section) --------------------------------

  read8(vaddr: number): number {
    this.enter();
    try {
      const frame = this.lookup(vaddr, Access.Read);
      return this.space.region.bytesOf(frame)[this.space.region.byteOffsetInWindow(frame) + (vaddr & 4095)];
    } finally {
      this.exit();
    }
  }

  write8(vaddr: number, value: number): void {
    this.enter();
    try {
      const frame = this.lookup(vaddr, Access.Write);
      this.space.region.bytesOf(frame)[this.space.region.byteOffsetInWindow(frame) + (vaddr & 4095)] = value;
    } finally {
      this.exit();
    }
  }

  /** 32-bit little-endian word; `vaddr` must be 4-byte aligned (it then never crosses a page). */
  read32(vaddr: number): number {
    if (vaddr & 3) throw new MorselError('EMISALIGNED', `read32 at unaligned 0x${vaddr.toString(16)}`);
    this.enter();
    try {
      const frame = this.lookup(vaddr, Access.Read);
      const region = this.space.region;
      return Atomics.load(region.words(frame), region.wordIndex(frame, (vaddr & 4095) >>> 2));
    } finally {
      this.exit();
    }
  }

  write32(vaddr: number, value: number): void {
    if (vaddr & 3) throw new MorselError('EMISALIGNED', `write32 at unaligned 0x${vaddr.toString(16)}`);
    this.enter();
    try {
      const frame = this.lookup(vaddr, Access.Write);
      const region = this.space.region;
      Atomics.store(region.words(frame), region.wordIndex(frame, (vaddr & 4095) >>> 2), value);
    } finally {
      this.exit();
    }
  }

  /**
   * One access section over [vaddr, vaddr + length), split into runs that are
   * contiguous in physical memory: every page is translated (rights checked,
   * faults taken), but neighbours in consecutive frames of one window are
   * handled in one call. `fn(firstFrame, pageOffset, done, n)` handles one run
   * of `n` bytes. (ZERO_FRAME + 1 is reserved, so holes form one-page runs.)
   * Run-level translation: the pages after the first come from the walk
   * cache (runFromCache) where it covers them, one entry load per page
   * (none inside a 2 MiB leaf) instead of a lookup each.
   */
  runs(vaddr: number, length: number, access: Access, fn: (frame: Frame, pageOffset: number, done: number, n: number) => void): void {
    this.enter();
    try {
      let done = 0;
      while (done < length) {
        const va = vaddr + done;
        const off = va & 4095;
        const frame = this.lookupAhead(va, access, Math.ceil((off + length - done) / PAGE_SIZE));
        let n = Math.min(PAGE_SIZE - off, length - done);
        const windowEnd = Math.min(((frame >>> WINDOW_SHIFT) + 1) * 2 ** WINDOW_SHIFT, this.endFrame); // a run stays in one window, inside the region
        for (let next = frame + 1; done + n < length && next < windowEnd; ) {
          const at = va + n; // page-aligned: n ended va's (possibly partial) first page
          const left = length - done - n;
          let pages = this.runFromCache(at, access, next, Math.min(Math.ceil(left / PAGE_SIZE), windowEnd - next));
          if (pages === 0) {
            let hit: number;
            try {
              hit = this.lookupAhead(at, access, Math.ceil(left / PAGE_SIZE));
            } catch {
              break; // the run ends here and is handled; the outer lookup of this page throws for real
            }
            if (hit !== next) break;
            pages = 1;
          }
          n += Math.min(pages * PAGE_SIZE, left);
          next += pages;
        }
        fn(frame, off, done, n);
        done += n;
      }
    } finally {
      this.exit();
    }
  }

  /**
   * Run-level translation: how many consecutive pages from page-aligned
   * `vaddr` (at most `maxPages`, not past its 2 MiB) the walk cache maps to
   * frames `next`, `next + 1`, ... with `access` allowed: one entry load per
   * page from the cached level-1 table, none inside a cached 2 MiB leaf. 0
   * when the cache does not cover `vaddr`, or the first page needs the full
   * path (a missing entry, a write to a write-protected one, rights the
   * entry withholds): lookup() then takes it, faults included. Frames are
   * only compared with `next` (inside the caller's window and the region).
   */
  private runFromCache(vaddr: number, access: Access, next: number, maxPages: number): number {
    const vpn = vaddr / PAGE_SIZE;
    if (Math.floor(vpn / HUGE_FRAMES) !== this.wcKey || !allowed(this.wcPerm, access, this.user)) return 0;
    const first = vpn % HUGE_FRAMES;
    const end = Math.min(HUGE_FRAMES, first + maxPages);
    if (this.wcHuge) return this.wcTable + first === next ? end - first : 0;
    // Flags every entry must carry for this access (the rights above it are in wcPerm).
    const need = P | (access === Access.Write ? RW : 0) | (this.user ? US : 0);
    const words = this.wcWords!;
    const base = this.wcBase;
    if (scanRun !== null && end - first >= NATIVE_SCAN_MIN_PAGES) {
      const n = scanRun(words, base, first, end, need, access === Access.Execute, next);
      if (n >= 0) return n;
    }
    let idx = first;
    for (; idx < end; idx++, next++) {
      const lo = Atomics.load(words, base + 2 * idx);
      if ((lo & need) !== need) break;
      // A plain load (an Atomics.load costs ~6 ns here, half of this loop's
      // time per page): still after lo's atomic load, which orders V8's effect
      // chain and x86 keeps loads in order; an aligned Int32 read is
      // tear-free. An entry is read as two halves either way, as in walk().
      const hi = words[base + 2 * idx + 1];
      if ((access === Access.Execute && (hi & HI_NX) !== 0) || pfnOf(lo, hi) !== next) break;
    }
    return idx - first;
  }

  /** Copies `dst.length` bytes from `vaddr` into `dst` (holes read as zeros, allocating nothing). */
  read(vaddr: number, dst: Uint8Array): void {
    const region = this.space.region;
    this.runs(vaddr, dst.length, Access.Read, (frame, off, done, n) => {
      const start = region.byteOffsetInWindow(frame) + off;
      dst.set(region.bytesOf(frame).subarray(start, start + n), done);
    });
  }

  /** Copies `src` to `vaddr` (TypedArray.set: the V8 bulk-copy limit). */
  write(vaddr: number, src: Uint8Array): void {
    const region = this.space.region;
    this.runs(vaddr, src.length, Access.Write, (frame, off, done, n) => {
      region.bytesOf(frame).set(n === src.length ? src : src.subarray(done, done + n), region.byteOffsetInWindow(frame) + off);
    });
  }

  /**
   * Fills `length` bytes at `vaddr` with `value`. Whole aligned words go
   * through Int32Array.fill (~4x Uint8Array.fill on shared memory).
   */
  fill(vaddr: number, length: number, value: number): void {
    const region = this.space.region;
    const word = ((value & 0xff) * 0x01010101) | 0;
    this.runs(vaddr, length, Access.Write, (frame, off, _done, n) => {
      if ((off & 3) === 0 && (n & 3) === 0) {
        const w = region.wordIndex(frame, off >>> 2);
        region.words(frame).fill(word, w, w + (n >>> 2));
      } else {
        const base = region.byteOffsetInWindow(frame) + off;
        region.bytesOf(frame).fill(value, base, base + n);
      }
    });
  }

  /**
   * Zero-copy view of [vaddr, vaddr + bytes) over the region itself, when the
   * range is physically contiguous: consecutive frames of one region window
   * (e.g. what one batch `populate` usually gets). A Float32Array can then
   * live inside a morsel: `new Float32Array(v.buffer, v.byteOffset, n)`.
   * Every page is translated for `access` (rights checked; Access.Write
   * populates holes and copies shared pages first). EFRAGMENT when two
   * neighbouring pages are not neighbouring frames, and for a read of a
   * never-populated page (the shared zero frame must never be written).
   * # Warning: the frames are safe from reuse (and, for a write view, from a
   * concurrent clone sharing them) only while the caller holds an access
   * section: call enter() first, use the view, then exit().
   */
  view(vaddr: number, bytes: number, access: Access = Access.Read): Uint8Array {
    check(Number.isSafeInteger(bytes) && bytes > 0, 'EINVAL', () => `a view needs a positive byte count, got ${bytes}`);
    this.enter();
    try {
      const first = this.lookup(vaddr, access);
      const pages = Math.ceil(((vaddr & 4095) + bytes) / PAGE_SIZE);
      for (let i = 0; i < pages; i++) {
        const frame = i === 0 ? first : this.lookup(vaddr - (vaddr & 4095) + i * PAGE_SIZE, access);
        const contiguous = frame === first + i && frame >>> WINDOW_SHIFT === first >>> WINDOW_SHIFT && frame !== ZERO_FRAME;
        if (!contiguous) throw new MorselError('EFRAGMENT', `0x${vaddr.toString(16)} + ${bytes} bytes: page ${i} is ${frame === ZERO_FRAME ? 'not populated' : `in frame ${frame}, not ${first + i}`}; copy with read()/write() instead`);
      }
      const region = this.space.region;
      const at = region.byteOffsetInWindow(first) + (vaddr & 4095);
      return region.bytesOf(first).subarray(at, at + bytes);
    } finally {
      this.exit();
    }
  }

  /**
   * Zero-copy view of the page containing `vaddr` (for bulk processing in
   * place). Reading a never-populated page returns a fresh private zero page
   * instead (never the shared zero frame): writes to it reach nothing; ask
   * for Access.Write to populate and write in place.
   * # Warning: the view is safe from reuse only inside enter()/exit().
   */
  pageView(vaddr: number, access: Access = Access.Read): Uint8Array {
    this.enter();
    try {
      const frame = this.lookup(vaddr, access);
      return frame === ZERO_FRAME ? new Uint8Array(PAGE_SIZE) : this.space.region.frame(frame);
    } finally {
      this.exit();
    }
  }
}

function closedError(): MorselError {
  return new MorselError('EBADF', 'this Mmu is closed');
}

function spaceGone(): MorselError {
  return new MorselError('EBADF', "this Mmu's address space was destroyed");
}

function allowed(perm: number, access: Access, user: boolean): boolean {
  if (user && (perm & PERM_USER) === 0) return false;
  if (access === Access.Write) return (perm & PERM_WRITE) !== 0;
  if (access === Access.Execute) return (perm & PERM_EXEC) !== 0;
  return true;
}
