/**
 * A software MMU for one thread: translate through a per-thread TLB, walk the
 * x86-64 tables on a miss, fault into the morsel fault handler, and enforce
 * the most restrictive rights along the path (R/W and U/S ANDed, NX ORed).
 *
 * TLB: direct-mapped, tagged with the full virtual page number (48/57-bit
 * spaces rule out a flat array). Shootdown by epoch: every unmap bumps the
 * space's epoch; a translate that sees a new epoch flushes first. One atomic
 * load per translate, no locks, no messages.
 *
 * Not modelled: accessed/dirty bits (a morsel never needs them), PS huge
 * leaves (not created yet), PCID.
 */
import { MorselError } from '../errors.js';
import { HI_MORSEL_TOP, HI_NX, RW, US, isPresent, pfnOf } from '../paging/entry.js';
import { tableIndex } from '../morsel/order.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { WINDOW_FRAME_SHIFT as WINDOW_SHIFT } from '../physical/region.js';
import type { Region } from '../physical/region.js';

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
/** A fault is retried at most this often (another thread may unmap between fault and walk). */
const FAULT_RETRIES = 4;

export interface MmuCounters {
  hits: number;
  misses: number;
  faults: number;
  flushes: number;
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
  private epoch: number;
  /** user-mode accesses (the default) need U/S on every level */
  readonly user: boolean;
  readonly counters: MmuCounters = { hits: 0, misses: 0, faults: 0, flushes: 0 };

  constructor(
    readonly space: PagedSpace,
    opts: { user?: boolean } = {},
  ) {
    this.user = opts.user ?? true;
    this.epoch = space.epoch;
  }

  /** Physical frame backing `vaddr` for `access`; faults in missing pages. */
  translate(vaddr: number, access: Access): Frame {
    const epoch = Atomics.load(this.space.control, CTL_EPOCH);
    if (epoch !== this.epoch) this.flush(epoch);
    const vpn = Math.floor(vaddr / PAGE_SIZE);
    const slot = vpn & TLB_MASK;
    if (this.tlbVpn[slot] === vpn && allowed(this.tlbPerm[slot], access, this.user)) {
      this.counters.hits++;
      return this.tlbFrame[slot] as Frame;
    }
    this.counters.misses++;
    return this.walk(vaddr, vpn, slot, access);
  }

  /** Drops every cached translation. */
  flush(epoch = Atomics.load(this.space.control, CTL_EPOCH)): void {
    this.tlbVpn.fill(-1);
    this.wcKey = -1;
    this.epoch = epoch;
    this.counters.flushes++;
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
      table = pfnOf(lo, hi);
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

  // --- data access --------------------------------------------------------------

  read8(vaddr: number): number {
    const frame = this.translate(vaddr, Access.Read);
    return this.space.region.bytesOf(frame)[this.space.region.byteOffsetInWindow(frame) + (vaddr & 4095)];
  }

  write8(vaddr: number, value: number): void {
    const frame = this.translate(vaddr, Access.Write);
    this.space.region.bytesOf(frame)[this.space.region.byteOffsetInWindow(frame) + (vaddr & 4095)] = value;
  }

  /** 32-bit little-endian word; `vaddr` must be 4-byte aligned (it then never crosses a page). */
  read32(vaddr: number): number {
    if (vaddr & 3) throw new MorselError('EMISALIGNED', `read32 at unaligned 0x${vaddr.toString(16)}`);
    const frame = this.translate(vaddr, Access.Read);
    const region = this.space.region;
    return Atomics.load(region.words(frame), region.wordIndex(frame, (vaddr & 4095) >>> 2));
  }

  write32(vaddr: number, value: number): void {
    if (vaddr & 3) throw new MorselError('EMISALIGNED', `write32 at unaligned 0x${vaddr.toString(16)}`);
    const frame = this.translate(vaddr, Access.Write);
    const region = this.space.region;
    Atomics.store(region.words(frame), region.wordIndex(frame, (vaddr & 4095) >>> 2), value);
  }

  /**
   * Splits [vaddr, vaddr + length) into runs that are contiguous in physical
   * memory: every page is translated (rights checked, faults taken), but
   * neighbours in consecutive frames of one window are copied in one call.
   * `fn(firstFrame, pageOffset, done, n)` handles one run of `n` bytes.
   */
  private forEachRun(vaddr: number, length: number, access: Access, fn: (frame: Frame, pageOffset: number, done: number, n: number) => void): void {
    let done = 0;
    while (done < length) {
      const va = vaddr + done;
      const off = va & 4095;
      const frame = this.translate(va, access);
      let n = Math.min(PAGE_SIZE - off, length - done);
      for (let next = frame + 1; done + n < length && next >>> WINDOW_SHIFT === frame >>> WINDOW_SHIFT; next++) {
        if (this.translate(va + n, access) !== next) break;
        n += Math.min(PAGE_SIZE, length - done - n);
      }
      fn(frame, off, done, n);
      done += n;
    }
  }

  /** Copies `dst.length` bytes from `vaddr` into `dst`. */
  read(vaddr: number, dst: Uint8Array): void {
    const region = this.space.region;
    this.forEachRun(vaddr, dst.length, Access.Read, (frame, off, done, n) => {
      const start = region.byteOffsetInWindow(frame) + off;
      dst.set(region.bytesOf(frame).subarray(start, start + n), done);
    });
  }

  /** Copies `src` to `vaddr` (TypedArray.set: the V8 bulk-copy limit). */
  write(vaddr: number, src: Uint8Array): void {
    const region = this.space.region;
    this.forEachRun(vaddr, src.length, Access.Write, (frame, off, done, n) => {
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
    this.forEachRun(vaddr, length, Access.Write, (frame, off, _done, n) => {
      if ((off & 3) === 0 && (n & 3) === 0) {
        const w = region.wordIndex(frame, off >>> 2);
        region.words(frame).fill(word, w, w + (n >>> 2));
      } else {
        const base = region.byteOffsetInWindow(frame) + off;
        region.bytesOf(frame).fill(value, base, base + n);
      }
    });
  }

  /** Zero-copy view of the page containing `vaddr` (for bulk processing in place). */
  pageView(vaddr: number, access: Access = Access.Read): Uint8Array {
    return this.space.region.frame(this.translate(vaddr, access));
  }
}

function allowed(perm: number, access: Access, user: boolean): boolean {
  if (user && (perm & PERM_USER) === 0) return false;
  if (access === Access.Write) return (perm & PERM_WRITE) !== 0;
  if (access === Access.Execute) return (perm & PERM_EXEC) !== 0;
  return true;
}
