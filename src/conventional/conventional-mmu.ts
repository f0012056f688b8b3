/**
 * The software MMU for a conventional space: the same TLB (direct-mapped,
 * 1024 entries, epoch shootdown), the same walk cache (last page table) and
 * the same 4-level walk with rights folding as src/space/mmu.ts, so access
 * costs compare fairly. The only
 * difference is what a fault does: a not-present entry anywhere on the path
 * (or a write to a PTE without RW) enters ConventionalSpace.handleFault and
 * the whole walk restarts, as an x86 core re-executes the faulting instruction.
 */
import { MorselError } from '../errors.js';
import { HI_NX, RW, US, isPresent, pfnOf } from '../paging/entry.js';
import { tableIndex } from '../morsel/order.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { C_EPOCH, ConvAccess, type ConventionalSpace } from './conventional-space.js';

const TLB_BITS = 10;
const TLB_SIZE = 1 << TLB_BITS;
const TLB_MASK = TLB_SIZE - 1;
const PERM_WRITE = 1;
const PERM_EXEC = 2;
const PERM_USER = 4;
const FAULT_RETRIES = 4;
/** Frames per 1 GiB region window (a run never crosses one). */
const WINDOW_SHIFT = 18;

export class ConventionalMmu {
  private readonly tlbVpn = new Float64Array(TLB_SIZE).fill(-1);
  private readonly tlbFrame = new Float64Array(TLB_SIZE);
  private readonly tlbPerm = new Uint8Array(TLB_SIZE);
  /** Walk cache (paging-structure cache), as in Mmu: the last PT, keyed by vaddr / 2 MiB, with the rights above it. */
  private wcKey = -1;
  private wcTable = 0;
  private wcPerm = 0;
  private epoch: number;
  readonly user: boolean;
  readonly counters = { hits: 0, misses: 0, faults: 0, flushes: 0 };

  constructor(
    readonly space: ConventionalSpace,
    opts: { user?: boolean } = {},
  ) {
    this.user = opts.user ?? true;
    this.epoch = space.epoch;
  }

  translate(vaddr: number, access: ConvAccess): Frame {
    const epoch = Atomics.load(this.space.control, C_EPOCH);
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

  flush(epoch = Atomics.load(this.space.control, C_EPOCH)): void {
    this.tlbVpn.fill(-1);
    this.wcKey = -1;
    this.epoch = epoch;
    this.counters.flushes++;
  }

  private walk(vaddr: number, vpn: number, slot: number, access: ConvAccess): Frame {
    if (!(vaddr >= 0 && vaddr < this.space.limit && Number.isInteger(vaddr))) {
      throw new MorselError('EFAULT', `address ${vaddr} outside the 4-level space`);
    }
    const region = this.space.mem.region;
    const key = Math.floor(vpn / 512);
    let level: number;
    let table: number;
    let perm: number;
    if (key === this.wcKey) {
      level = 1;
      table = this.wcTable;
      perm = this.wcPerm;
    } else {
      level = this.space.levels;
      table = this.space.rootFrame;
      perm = PERM_WRITE | PERM_EXEC | PERM_USER;
    }
    for (let faults = 0; level >= 1; level--) {
      if (level === 1 && key !== this.wcKey) {
        this.wcKey = key;
        this.wcTable = table;
        this.wcPerm = perm;
      }
      const idx = tableIndex(vaddr, level);
      const lo = region.loadLo(table as Frame, idx);
      if (!isPresent(lo)) {
        if (++faults > FAULT_RETRIES) throw new MorselError('EFAULT', `0x${vaddr.toString(16)} keeps disappearing (concurrent unmap?)`);
        this.counters.faults++;
        // Throws EFAULT / EACCES when no VMA allows the access. Then the
        // access is retried: from the cached PT if it was reached, else from the root.
        this.space.handleFault(vaddr, access);
        if (level === 1) {
          level = 2;
        } else {
          table = this.space.rootFrame;
          perm = PERM_WRITE | PERM_EXEC | PERM_USER;
          level = this.space.levels + 1;
        }
        continue;
      }
      const hi = region.loadHi(table as Frame, idx);
      if ((lo & RW) === 0) perm &= ~PERM_WRITE;
      if ((lo & US) === 0) perm &= ~PERM_USER;
      if (hi & HI_NX) perm &= ~PERM_EXEC;
      table = pfnOf(lo, hi);
    }
    // PTEs carry the VMA's rights (shared mappings: no COW, no dirty tracking),
    // so a complete walk that forbids the access is a real violation.
    if (!allowed(perm, access, this.user)) throw this.denied(vaddr, access);
    this.tlbVpn[slot] = vpn;
    this.tlbFrame[slot] = table;
    this.tlbPerm[slot] = perm;
    return table as Frame;
  }

  private denied(vaddr: number, access: ConvAccess): MorselError {
    const what = access === ConvAccess.Write ? 'write' : access === ConvAccess.Execute ? 'execute' : 'read';
    return new MorselError('EACCES', `${what} at 0x${vaddr.toString(16)} violates the mapping's rights`);
  }

  // --- data access (same shapes as Mmu) -----------------------------------------

  read8(vaddr: number): number {
    const frame = this.translate(vaddr, ConvAccess.Read);
    const region = this.space.mem.region;
    return region.bytesOf(frame)[region.byteOffsetInWindow(frame) + (vaddr & 4095)];
  }

  write8(vaddr: number, value: number): void {
    const frame = this.translate(vaddr, ConvAccess.Write);
    const region = this.space.mem.region;
    region.bytesOf(frame)[region.byteOffsetInWindow(frame) + (vaddr & 4095)] = value;
  }

  /**
   * Splits [vaddr, vaddr + length) into physically contiguous runs, as
   * Mmu.forEachRun does: every page is translated (rights, faults), runs of
   * consecutive frames in one window are handled by one call.
   */
  private forEachRun(vaddr: number, length: number, access: ConvAccess, fn: (frame: Frame, pageOffset: number, done: number, n: number) => void): void {
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

  read(vaddr: number, dst: Uint8Array): void {
    const region = this.space.mem.region;
    this.forEachRun(vaddr, dst.length, ConvAccess.Read, (frame, off, done, n) => {
      const start = region.byteOffsetInWindow(frame) + off;
      dst.set(region.bytesOf(frame).subarray(start, start + n), done);
    });
  }

  write(vaddr: number, src: Uint8Array): void {
    const region = this.space.mem.region;
    this.forEachRun(vaddr, src.length, ConvAccess.Write, (frame, off, done, n) => {
      region.bytesOf(frame).set(n === src.length ? src : src.subarray(done, done + n), region.byteOffsetInWindow(frame) + off);
    });
  }

  fill(vaddr: number, length: number, value: number): void {
    const region = this.space.mem.region;
    const word = ((value & 0xff) * 0x01010101) | 0;
    this.forEachRun(vaddr, length, ConvAccess.Write, (frame, off, _done, n) => {
      if ((off & 3) === 0 && (n & 3) === 0) {
        const w = region.wordIndex(frame, off >>> 2);
        region.words(frame).fill(word, w, w + (n >>> 2));
      } else {
        const base = region.byteOffsetInWindow(frame) + off;
        region.bytesOf(frame).fill(value, base, base + n);
      }
    });
  }

  pageView(vaddr: number, access: ConvAccess = ConvAccess.Read): Uint8Array {
    return this.space.mem.region.frame(this.translate(vaddr, access));
  }
}

function allowed(perm: number, access: ConvAccess, user: boolean): boolean {
  if (user && (perm & PERM_USER) === 0) return false;
  if (access === ConvAccess.Write) return (perm & PERM_WRITE) !== 0;
  if (access === ConvAccess.Execute) return (perm & PERM_EXEC) !== 0;
  return true;
}
