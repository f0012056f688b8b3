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
 * Reads of never-populated morsel pages return the shared zero frame
 * (ZERO_FRAME) and allocate nothing, as Linux maps its zero page; only a
 * write populates. The zero translation is never cached, so a page another
 * thread populates later is seen by the next access.
 *
 * Bulk access (read, write, fill, view) translates per table run, not per
 * page: one walk (or walk-cache hit) and one rights check per level-1
 * table, then that table's entries in one loop; frames consecutive in one
 * 1 GiB window are copied by one TypedArray call. view() hands out such a
 * run itself (zero-copy; EFRAGMENT when the range is not one run), valid
 * inside an access section only, like pageView.
 *
 * Not modelled: accessed/dirty bits (a morsel never needs them), PS huge
 * leaves (not created yet), PCID.
 */
import { MorselError, assert, check } from '../errors.js';
import { HI_MORSEL_TOP, HI_NX, RW, US, isPresent, pfnOf } from '../paging/entry.js';
import { tableIndex } from '../morsel/order.js';
import { ENTRIES_PER_TABLE, allocatableRange, validTableFrame } from '../paging/walk.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { ZERO_FRAME } from '../physical/layout.js';
import { WINDOW_FRAME_SHIFT as WINDOW_SHIFT } from '../physical/region.js';
import type { Region } from '../physical/region.js';
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
   * the morsel's top are its offset's.)
   */
  populateFrom?(table: Frame, level: number, vaddr: number): Frame;
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
/** Bytes one level-1 table maps (2 MiB). */
const TABLE_SPAN = ENTRIES_PER_TABLE * PAGE_SIZE;
/** What a bulk access does with each run (no closure per call). */
const BulkOp = { Read: 0, Write: 1, Fill: 2, View: 3 } as const;
type BulkOp = (typeof BulkOp)[keyof typeof BulkOp];
/** A fault is retried at most this often (another thread may unmap between fault and walk). */
const FAULT_RETRIES = 4;

export interface MmuCounters {
  hits: number;
  misses: number;
  faults: number;
  flushes: number;
  /** reads of never-populated morsel pages answered by the zero frame */
  zeroReads: number;
}

export class Mmu {
  private readonly tlbVpn = new Float64Array(TLB_SIZE).fill(-1);
  private readonly tlbFrame = new Float64Array(TLB_SIZE);
  private readonly tlbPerm = new Uint8Array(TLB_SIZE);
  /**
   * Walk cache (like x86's paging-structure caches): the last level-1 table
   * used, keyed by vaddr / 2 MiB, with the rights accumulated above it and
   * the morsel it belongs to. Streaming over more pages than the TLB holds
   * then costs one entry load per page instead of a full walk.
   */
  private wcKey = -1;
  private wcTable = 0;
  private wcPerm = 0;
  private wcInMorsel = false;
  /** Where the last view() starts: its frame and byte offset in that frame's window. */
  private viewFrame = 0;
  private viewStart = 0;
  /** the space epoch the TLB is valid for; NaN once closed (never equal: every use takes the slow path) */
  private epoch: number;
  /** this thread's slot in the space's reader table (shared by the thread's Mmus of the space) */
  private readonly reader: ReaderSlot;
  private closed = false;
  /** [firstFrame, endFrame): the frames a walk may follow */
  private readonly firstFrame: number;
  private readonly endFrame: number;
  /** user-mode accesses (the default) need U/S on every level */
  readonly user: boolean;
  readonly counters: MmuCounters = { hits: 0, misses: 0, faults: 0, flushes: 0, zeroReads: 0 };

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
    if (epoch !== this.epoch) {
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
    if (epoch !== this.epoch) this.catchUp(epoch);
    return this.lookup(vaddr, access);
  }

  /** Drops every cached translation (EBADF when closed or the space is gone). */
  flush(): void {
    this.catchUp(Atomics.load(this.space.control, CTL_EPOCH));
  }

  /** The epoch moved (or the Mmu is closed): EBADF if closed or the space was destroyed, else flush. */
  private catchUp(epoch: number): void {
    if (this.closed) throw closedError();
    // A destroy marks the space dead before bumping the epoch, so seeing the
    // new epoch and then a live space means the destroy has not started.
    if (!isLive(this.reader.table)) throw spaceGone();
    this.tlbVpn.fill(-1);
    this.wcKey = -1;
    this.epoch = epoch;
    this.counters.flushes++;
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
    if (key === this.wcKey) {
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
      if (level === 1 && key !== this.wcKey) {
        this.wcKey = key;
        this.wcTable = table;
        this.wcPerm = perm;
        this.wcInMorsel = inMorsel;
      }
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
        // Populate from this table down and take the data frame it returns:
        // entries inside a morsel are permissive, so `perm` is already final.
        table = this.space.populateFrom!(table as Frame, level, vaddr);
        break;
      }
      const hi = region.loadHi(table as Frame, idx);
      if ((lo & RW) === 0) perm &= ~PERM_WRITE;
      if ((lo & US) === 0) perm &= ~PERM_USER;
      if (hi & HI_NX) perm &= ~PERM_EXEC;
      const next = pfnOf(lo, hi);
      // Every frame a walk follows must be allocatable (src/paging/walk.ts): damaged metadata is ECORRUPT, never access to reserved frames.
      if (!validTableFrame(next, this.firstFrame, this.endFrame)) throw new MorselError('ECORRUPT', `table frame ${table} entry ${idx} references frame ${next}, outside the allocatable range`);
      table = next;
      if (hi & HI_MORSEL_TOP) inMorsel = true;
    }
    if (!allowed(perm, access, this.user)) throw this.denied(vaddr, access);
    this.tlbVpn[slot] = vpn;
    this.tlbFrame[slot] = table;
    this.tlbPerm[slot] = perm;
    return table as Frame;
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

  /** Copies `dst.length` bytes from `vaddr` into `dst` (holes read as zeros, allocating nothing). */
  read(vaddr: number, dst: Uint8Array): void {
    this.bulk(vaddr, dst.length, Access.Read, BulkOp.Read, dst, 0);
  }

  /** Copies `src` to `vaddr` (TypedArray.set per physically contiguous run: the V8 bulk-copy limit). */
  write(vaddr: number, src: Uint8Array): void {
    this.bulk(vaddr, src.length, Access.Write, BulkOp.Write, src, 0);
  }

  /** Fills `length` bytes at `vaddr` with `value` (populating missing pages). */
  fill(vaddr: number, length: number, value: number): void {
    this.bulk(vaddr, length, Access.Write, BulkOp.Fill, null, value);
  }

  /**
   * Zero-copy view of [vaddr, vaddr + bytes) when its pages lie in
   * consecutive frames of one 1 GiB window (typed arrays over it work:
   * `new Float32Array(v.buffer, v.byteOffset, bytes / 4)`). EFRAGMENT when
   * they do not, or (for Access.Read) when a page was never populated: a
   * view needs frames. Access.Write populates missing pages as a write
   * would; they stay populated if the range then proves fragmented.
   * # Warning: like pageView, the view is safe from reuse only inside
   * enter()/exit(), and a view asked for Access.Read must not be written.
   */
  view(vaddr: number, bytes: number, access: Access = Access.Read): Uint8Array {
    check(Number.isSafeInteger(bytes) && bytes > 0, 'EINVAL', () => `view of ${bytes} bytes (a positive integer)`);
    this.bulk(vaddr, bytes, access, BulkOp.View, null, 0);
    return this.space.region.bytesOf(this.viewFrame as Frame).subarray(this.viewStart, this.viewStart + bytes);
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

  // --- bulk access: run-level translation -------------------------------------

  /**
   * One access section over [vaddr, vaddr + length): translates one level-1
   * table at a time instead of one walk per page. The first page of a table
   * walks (or hits the walk cache), which checks the rights of the path once
   * and takes faults as translate() does; the table's other entries are then
   * read in one loop (present: the leaf's own R/W and U/S bits and the frame
   * range; missing inside a morsel: zeros for a read, populateFrom for a
   * write; missing outside: the space's fault path through walk()).
   * Neighbours in consecutive frames of one window form one run, handed to
   * emit() once; never-populated pages form zero runs (nothing allocated).
   * The epoch is re-checked at every table: a shootdown between two tables
   * flushes and re-walks (inside the section, frames read before it stay
   * allocated, quiesce.ts). Returns the number of runs emitted.
   */
  private bulk(vaddr: number, length: number, access: Access, op: BulkOp, buf: Uint8Array | null, value: number): number {
    if (!(Number.isSafeInteger(vaddr) && Number.isSafeInteger(length) && vaddr >= 0 && length >= 0 && vaddr + length <= this.space.limit)) {
      throw new MorselError('EFAULT', `range [${vaddr}, ${vaddr + length}) outside the ${this.space.levels}-level space`);
    }
    if (length === 0) return 0;
    // A leaf must carry these bits itself (inner morsel entries are permissive).
    const leafNeed = (access === Access.Write ? RW : 0) | (this.user ? US : 0);
    const maxSteps = Math.ceil(length / PAGE_SIZE) + 1;
    let runs = 0;
    let runFrame = -1; // ZERO_FRAME: a zero run
    let runOff = 0;
    let runAt = 0;
    let runBytes = 0;
    let tableKey = -1; // vaddr / 2 MiB of the table being scanned, -1 before a walk
    let table = 0;
    let inMorsel = false;
    this.enter();
    try {
      let done = 0;
      for (let step = 0; done < length; step++) {
        assert(step <= maxSteps, 'bulk access advances every step');
        const va = vaddr + done;
        const off = va & 4095;
        let n = Math.min(PAGE_SIZE - off, length - done);
        const vpn = Math.floor(va / PAGE_SIZE);
        const key = Math.floor(vpn / ENTRIES_PER_TABLE);
        let frame: number;
        if (key !== tableKey) {
          const epoch = Atomics.load(this.space.control, CTL_EPOCH);
          if (epoch !== this.epoch) this.catchUp(epoch);
          tableKey = -1;
          if (key === this.wcKey) {
            if (!allowed(this.wcPerm, access, this.user)) throw this.denied(va, access);
            tableKey = key;
            table = this.wcTable;
            inMorsel = this.wcInMorsel;
            frame = this.entryFrame(table, va, vpn, access, leafNeed, inMorsel);
          } else {
            frame = this.walk(va, vpn, vpn & TLB_MASK, access);
            if (key === this.wcKey) {
              tableKey = key;
              table = this.wcTable;
              inMorsel = this.wcInMorsel;
            } else if (frame === ZERO_FRAME) {
              // A hole above level 1 inside a morsel: the rest of this 2 MiB is zeros.
              n = Math.min(TABLE_SPAN - (va % TABLE_SPAN), length - done);
            }
          }
        } else {
          frame = this.entryFrame(table, va, vpn, access, leafNeed, inMorsel);
        }
        const extends_ =
          runBytes > 0 &&
          (frame === ZERO_FRAME ? runFrame === ZERO_FRAME : runFrame !== ZERO_FRAME && frame === runFrame + ((runOff + runBytes) >>> 12) && frame >>> WINDOW_SHIFT === runFrame >>> WINDOW_SHIFT);
        if (extends_) {
          runBytes += n;
        } else {
          if (runBytes > 0) {
            if (op === BulkOp.View) throw fragmented(vaddr, length, va);
            this.emit(op, buf, value, runFrame, runOff, runAt, runBytes);
            runs++;
          }
          runFrame = frame;
          runOff = off;
          runAt = done;
          runBytes = n;
        }
        done += n;
      }
      this.emit(op, buf, value, runFrame, runOff, runAt, runBytes);
      return runs + 1;
    } finally {
      this.exit();
    }
  }

  /**
   * The frame of `va`'s entry in the level-1 `table` whose path rights the
   * caller checked: the leaf's own bits, the frame range, and a hole resolved
   * as walk() resolves it (zeros, populate, or the space's fault path).
   */
  private entryFrame(table: number, va: number, vpn: number, access: Access, leafNeed: number, inMorsel: boolean): number {
    const region = this.space.region;
    const idx = vpn & (ENTRIES_PER_TABLE - 1);
    const lo = region.loadLo(table as Frame, idx);
    if (isPresent(lo)) {
      if ((lo & leafNeed) !== leafNeed) throw this.denied(va, access);
      const frame = pfnOf(lo, region.loadHi(table as Frame, idx));
      if (!validTableFrame(frame, this.firstFrame, this.endFrame)) throw new MorselError('ECORRUPT', `table frame ${table} entry ${idx} references frame ${frame}, outside the allocatable range`);
      return frame;
    }
    if (!inMorsel) return this.walk(va, vpn, vpn & TLB_MASK, access); // the space's own fault path (or EFAULT)
    if (access !== Access.Write) {
      this.counters.zeroReads++;
      return ZERO_FRAME;
    }
    this.counters.faults++;
    return this.space.populateFrom!(table as Frame, 1, va);
  }

  /** Applies `op` to one run: `n` bytes from byte `off` of `frame` (a window-contiguous run), at byte `at` of the operation. */
  private emit(op: BulkOp, buf: Uint8Array | null, value: number, frame: number, off: number, at: number, n: number): void {
    const region = this.space.region;
    if (op === BulkOp.View) {
      if (frame === ZERO_FRAME) throw new MorselError('EFRAGMENT', `byte ${at} of the range lies in a never-populated page: a view needs frames (ask for Access.Write, or populate first)`);
      this.viewFrame = frame;
      this.viewStart = region.byteOffsetInWindow(frame as Frame) + off;
      return;
    }
    if (frame === ZERO_FRAME) {
      assert(op === BulkOp.Read, 'only reads see zero runs');
      buf!.fill(0, at, at + n);
      return;
    }
    const bytes = region.bytesOf(frame as Frame);
    const start = region.byteOffsetInWindow(frame as Frame) + off;
    if (op === BulkOp.Read) {
      buf!.set(bytes.subarray(start, start + n), at);
    } else if (op === BulkOp.Write) {
      bytes.set(n === buf!.length ? buf! : buf!.subarray(at, at + n), start);
    } else if ((off & 3) === 0 && (n & 3) === 0) {
      // Whole aligned words: Int32Array.fill is ~4x Uint8Array.fill on shared memory.
      const w = region.wordIndex(frame as Frame, off >>> 2);
      region.words(frame as Frame).fill(((value & 0xff) * 0x01010101) | 0, w, w + (n >>> 2));
    } else {
      bytes.fill(value, start, start + n);
    }
  }
}

function fragmented(vaddr: number, bytes: number, at: number): MorselError {
  return new MorselError('EFRAGMENT', `[0x${vaddr.toString(16)}, 0x${(vaddr + bytes).toString(16)}) is not physically contiguous (break at 0x${at.toString(16)})`);
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
