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
import { orderBytes, tableIndex, type Order } from '../morsel/order.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { CTL_EPOCH, type AddressSpace } from './address-space.js';

export const enum Access {
  Read = 0,
  Write = 1,
  Execute = 2,
}

const TLB_BITS = 10; // 1024 entries x 4 KiB = 4 MiB reach
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
  private epoch: number;
  /** user-mode accesses (the default) need U/S on every level */
  readonly user: boolean;
  readonly counters: MmuCounters = { hits: 0, misses: 0, faults: 0, flushes: 0 };

  constructor(
    readonly space: AddressSpace,
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
    this.epoch = epoch;
    this.counters.flushes++;
  }

  private walk(vaddr: number, vpn: number, slot: number, access: Access): Frame {
    if (!(vaddr >= 0 && vaddr < this.space.limit && Number.isInteger(vaddr))) {
      throw new MorselError('EFAULT', `address ${vaddr} outside the ${this.space.levels}-level space`);
    }
    const region = this.space.morsels.region;
    let table = this.space.rootFrame as number;
    let perm = PERM_WRITE | PERM_EXEC | PERM_USER;
    let morselRoot = -1;
    let morselOrder: Order = 0;
    for (let level = this.space.levels, faults = 0; level >= 1; level--) {
      const idx = tableIndex(vaddr, level);
      const lo = region.loadLo(table as Frame, idx);
      if (!isPresent(lo)) {
        if (morselRoot < 0) throw new MorselError('EFAULT', `nothing mapped at 0x${vaddr.toString(16)}`);
        // Check rights before populating: a forbidden write must not allocate.
        if (!allowed(perm, access, this.user)) throw this.denied(vaddr, access);
        if (++faults > FAULT_RETRIES) throw new MorselError('EFAULT', `0x${vaddr.toString(16)} keeps disappearing (concurrent unmap?)`);
        this.counters.faults++;
        const offset = vaddr % orderBytes(morselOrder);
        this.space.morsels.populatePage(morselRoot as Frame, morselOrder, offset);
        level++; // retry this level: the entry is present now
        continue;
      }
      const hi = region.loadHi(table as Frame, idx);
      if ((lo & RW) === 0) perm &= ~PERM_WRITE;
      if ((lo & US) === 0) perm &= ~PERM_USER;
      if (hi & HI_NX) perm &= ~PERM_EXEC;
      table = pfnOf(lo, hi);
      if (hi & HI_MORSEL_TOP) {
        morselRoot = table;
        morselOrder = (level - 1) as Order;
      }
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
    return this.space.morsels.region.bytesOf(frame)[this.space.morsels.region.byteOffsetInWindow(frame) + (vaddr & 4095)];
  }

  write8(vaddr: number, value: number): void {
    const frame = this.translate(vaddr, Access.Write);
    this.space.morsels.region.bytesOf(frame)[this.space.morsels.region.byteOffsetInWindow(frame) + (vaddr & 4095)] = value;
  }

  /** 32-bit little-endian word; `vaddr` must be 4-byte aligned (it then never crosses a page). */
  read32(vaddr: number): number {
    if (vaddr & 3) throw new MorselError('EMISALIGNED', `read32 at unaligned 0x${vaddr.toString(16)}`);
    const frame = this.translate(vaddr, Access.Read);
    const region = this.space.morsels.region;
    return Atomics.load(region.words(frame), region.wordIndex(frame, (vaddr & 4095) >>> 2));
  }

  write32(vaddr: number, value: number): void {
    if (vaddr & 3) throw new MorselError('EMISALIGNED', `write32 at unaligned 0x${vaddr.toString(16)}`);
    const frame = this.translate(vaddr, Access.Write);
    const region = this.space.morsels.region;
    Atomics.store(region.words(frame), region.wordIndex(frame, (vaddr & 4095) >>> 2), value);
  }

  /** Copies `dst.length` bytes from `vaddr` into `dst`, page by page. */
  read(vaddr: number, dst: Uint8Array): void {
    const region = this.space.morsels.region;
    for (let done = 0; done < dst.length; ) {
      const va = vaddr + done;
      const off = va & 4095;
      const n = Math.min(PAGE_SIZE - off, dst.length - done);
      const frame = this.translate(va, Access.Read);
      const start = region.byteOffsetInWindow(frame) + off;
      dst.set(region.bytesOf(frame).subarray(start, start + n), done);
      done += n;
    }
  }

  /** Copies `src` to `vaddr`, page by page (TypedArray.set: the V8 bulk-copy limit). */
  write(vaddr: number, src: Uint8Array): void {
    const region = this.space.morsels.region;
    for (let done = 0; done < src.length; ) {
      const va = vaddr + done;
      const off = va & 4095;
      const n = Math.min(PAGE_SIZE - off, src.length - done);
      const frame = this.translate(va, Access.Write);
      region.bytesOf(frame).set(n === src.length ? src : src.subarray(done, done + n), region.byteOffsetInWindow(frame) + off);
      done += n;
    }
  }

  /**
   * Fills `length` bytes at `vaddr` with `value`. Whole aligned words go
   * through Int32Array.fill (~4x Uint8Array.fill on shared memory).
   */
  fill(vaddr: number, length: number, value: number): void {
    const region = this.space.morsels.region;
    const word = (value & 0xff) * 0x01010101;
    for (let done = 0; done < length; ) {
      const va = vaddr + done;
      const off = va & 4095;
      const n = Math.min(PAGE_SIZE - off, length - done);
      const frame = this.translate(va, Access.Write);
      const base = region.byteOffsetInWindow(frame) + off;
      if ((off & 3) === 0 && (n & 3) === 0) {
        const w = region.wordIndex(frame, off >>> 2);
        region.words(frame).fill(word | 0, w, w + (n >>> 2));
      } else {
        region.bytesOf(frame).fill(value, base, base + n);
      }
      done += n;
    }
  }

  /** Zero-copy view of the page containing `vaddr` (for bulk processing in place). */
  pageView(vaddr: number, access: Access = Access.Read): Uint8Array {
    return this.space.morsels.region.frame(this.translate(vaddr, access));
  }
}

function allowed(perm: number, access: Access, user: boolean): boolean {
  if (user && (perm & PERM_USER) === 0) return false;
  if (access === Access.Write) return (perm & PERM_WRITE) !== 0;
  if (access === Access.Execute) return (perm & PERM_EXEC) !== 0;
  return true;
}
