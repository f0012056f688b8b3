/**
 * PMap: a persistent hash map inside one fixed-address morsel whose links
 * are absolute virtual addresses. It is read and written through an Mmu at
 * the morsel's own address, so an image of it (save/load) is usable the
 * moment it is loaded: no deserialization, no pointer fixup, and opening
 * costs the same whatever the map holds (one header read).
 *
 * Layout at the base address B (little-endian; 64-bit values as two u32):
 *   B+0   magic "MORSPMAP"   B+8  version u32      B+12 bucket count u32 (power of 2)
 *   B+16  entry count u64    B+24 heap next u64    B+32 heap end u64
 *   B+40  buckets address u64
 *   buckets: bucket count x u64, the address of the first entry (0 = none)
 *   entry (8-aligned): next u64, hash u32, key bytes u32, value bytes u32,
 *                      pad u32, key, value
 * Inserts allocate from the heap by bump pointer (no delete; set of an
 * existing key relinks a new entry in the old one's place).
 */
import { MorselError, check } from '../errors.js';
import type { Memory } from '../memory.js';
import type { MorselHandle } from '../manage/handle.js';
import type { AddressSpace } from '../space/address-space.js';
import { Mmu } from '../space/mmu.js';
import { PAGE_SIZE } from '../units.js';

const MAGIC = 'MORSPMAP';
const VERSION = 1;
const HEADER_BYTES = PAGE_SIZE;
const ENTRY_HEADER_BYTES = 24;
const ALIGN = 8;
const U32 = 2 ** 32;
/** Header field offsets. */
const F_VERSION = 8;
const F_BUCKETS = 12;
const F_COUNT = 16;
const F_NEXT = 24;
const F_END = 32;
const F_BUCKETS_AT = 40;

export interface PMapCreateOptions {
  /** fixed base address (aligned to the morsel's order size) */
  address: number;
  sizeBytes: number;
  /** power of two; default 65536 */
  buckets?: number;
  mode?: number;
}

const encoder = new TextEncoder();
const asBytes = (k: Uint8Array | string): Uint8Array => (typeof k === 'string' ? encoder.encode(k) : k);

/** FNV-1a, 32 bits. */
function hash32(key: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i], 0x01000193);
  return h >>> 0;
}

export class PMap {
  private constructor(
    private readonly memory: Memory,
    private readonly handle: MorselHandle,
    private readonly space: AddressSpace,
    private readonly mmu: Mmu,
    readonly base: number,
  ) {}

  /** Creates the named fixed-address morsel `path` and formats an empty map in it. */
  static create(memory: Memory, path: string, opts: PMapCreateOptions): PMap {
    const buckets = opts.buckets ?? 65536;
    check(Number.isInteger(buckets) && buckets > 0 && (buckets & (buckets - 1)) === 0 && buckets <= 2 ** 26, 'EINVAL', () => `buckets must be a power of two up to 2^26, got ${buckets}`);
    const heapStart = opts.address + HEADER_BYTES + buckets * 8;
    check(heapStart + ENTRY_HEADER_BYTES < opts.address + opts.sizeBytes, 'ERANGE', () => `${opts.sizeBytes} bytes cannot hold ${buckets} buckets`);
    const h = memory.names.create(path, { sizeBytes: opts.sizeBytes, fixedAddress: opts.address, mode: opts.mode });
    memory.names.close(h);
    const map = PMap.attach(memory, path, true);
    map.within(() => {
      const mmu = map.mmu;
      for (let i = 0; i < MAGIC.length; i++) mmu.write8(opts.address + i, MAGIC.charCodeAt(i));
      mmu.write32(opts.address + F_VERSION, VERSION);
      mmu.write32(opts.address + F_BUCKETS, buckets);
      map.put64(opts.address + F_COUNT, 0);
      map.put64(opts.address + F_NEXT, heapStart);
      map.put64(opts.address + F_END, opts.address + opts.sizeBytes);
      map.put64(opts.address + F_BUCKETS_AT, opts.address + HEADER_BYTES);
    });
    return map;
  }

  /**
   * Opens the map in the named morsel `path` and maps it at its address:
   * constant work (the header is checked, nothing else is read).
   */
  static open(memory: Memory, path: string, opts: { write?: boolean } = {}): PMap {
    const map = PMap.attach(memory, path, opts.write ?? true);
    try {
      map.within(() => map.checkHeader(path));
    } catch (e) {
      map.close();
      throw e;
    }
    return map;
  }

  /** Opens and maps the fixed-address morsel `path` (its contents unchecked). */
  private static attach(memory: Memory, path: string, write: boolean): PMap {
    const h = memory.names.open(path, { write });
    let space: AddressSpace | null = null;
    try {
      // The record, not stat(): stat walks the whole morsel to count its frames, and opening must not depend on the size.
      const rec = memory.names.ns.lookup(path);
      check(rec.fixedAddress !== null, 'EINVAL', () => `${path} has no fixed address: not a pmap`);
      space = memory.createSpace();
      const base = memory.names.map(h, space, { write });
      return new PMap(memory, h, space, new Mmu(space), base);
    } catch (e) {
      space?.destroy();
      memory.names.close(h);
      throw e;
    }
  }

  private checkHeader(path: string): void {
    for (let i = 0; i < MAGIC.length; i++) {
      if (this.mmu.read8(this.base + i) !== MAGIC.charCodeAt(i)) throw new MorselError('ECORRUPT', `${path} holds no pmap (bad magic)`);
    }
    check(this.mmu.read32(this.base + F_VERSION) === VERSION, 'EVERSION', () => `${path}: pmap version ${this.mmu.read32(this.base + F_VERSION)}`);
  }

  /** Runs `fn` inside one access section of the Mmu. */
  private within<T>(fn: () => T): T {
    this.mmu.enter();
    try {
      return fn();
    } finally {
      this.mmu.exit();
    }
  }

  private get64(addr: number): number {
    return this.u32(addr) + this.u32(addr + 4) * U32;
  }

  /** read32 gives an int32: the unsigned value. */
  private u32(addr: number): number {
    return this.mmu.read32(addr) >>> 0;
  }

  private put64(addr: number, value: number): void {
    this.mmu.write32(addr, value % U32);
    this.mmu.write32(addr + 4, Math.floor(value / U32));
  }

  get size(): number {
    return this.within(() => this.get64(this.base + F_COUNT));
  }

  private bucketAddr(hash: number): number {
    const buckets = this.u32(this.base + F_BUCKETS);
    return this.get64(this.base + F_BUCKETS_AT) + (hash & (buckets - 1)) * 8;
  }

  /**
   * The address of the link (a bucket or an entry's next field) pointing
   * at the entry for `key`, or of the bucket when absent. Bounded by the
   * entry count (a cycle is ECORRUPT).
   */
  private find(key: Uint8Array, hash: number): { link: number; entry: number } {
    const limit = this.get64(this.base + F_COUNT);
    let link = this.bucketAddr(hash);
    for (let steps = 0; steps <= limit; steps++) {
      const entry = this.get64(link);
      if (entry === 0 || this.matches(entry, key, hash)) return { link, entry };
      link = entry; // next is the entry's first field
    }
    throw new MorselError('ECORRUPT', 'pmap chain longer than the entry count');
  }

  private matches(entry: number, key: Uint8Array, hash: number): boolean {
    if (this.u32(entry + 8) !== hash || this.u32(entry + 12) !== key.length) return false;
    const stored = new Uint8Array(key.length);
    this.mmu.read(entry + ENTRY_HEADER_BYTES, stored);
    for (let i = 0; i < key.length; i++) if (stored[i] !== key[i]) return false;
    return true;
  }

  /** The value stored under `key`, or undefined. */
  get(key: Uint8Array | string): Uint8Array | undefined {
    const k = asBytes(key);
    return this.within(() => {
      const { entry } = this.find(k, hash32(k));
      if (entry === 0) return undefined;
      const out = new Uint8Array(this.u32(entry + 16));
      this.mmu.read(entry + ENTRY_HEADER_BYTES + k.length, out);
      return out;
    });
  }

  /** Stores `value` under `key` (ENOSPC when the morsel's heap is full). */
  set(key: Uint8Array | string, value: Uint8Array): void {
    const k = asBytes(key);
    const hash = hash32(k);
    this.within(() => {
      const bytes = Math.ceil((ENTRY_HEADER_BYTES + k.length + value.length) / ALIGN) * ALIGN;
      const at = this.get64(this.base + F_NEXT);
      check(at + bytes <= this.get64(this.base + F_END), 'ENOSPC', () => `pmap at 0x${this.base.toString(16)} is full`);
      const { link, entry } = this.find(k, hash);
      // The new entry is complete before one link store publishes it.
      this.put64(at, entry === 0 ? 0 : this.get64(entry));
      this.mmu.write32(at + 8, hash | 0);
      this.mmu.write32(at + 12, k.length);
      this.mmu.write32(at + 16, value.length);
      this.mmu.write(at + ENTRY_HEADER_BYTES, k);
      this.mmu.write(at + ENTRY_HEADER_BYTES + k.length, value);
      this.put64(this.base + F_NEXT, at + bytes);
      this.put64(link, at);
      if (entry === 0) this.put64(this.base + F_COUNT, this.get64(this.base + F_COUNT) + 1);
    });
  }

  /** Unmaps and closes the handle (the morsel stays, named). */
  close(): void {
    this.mmu.close();
    this.space.unmap(this.base);
    this.space.destroy();
    this.memory.names.close(this.handle);
  }
}
