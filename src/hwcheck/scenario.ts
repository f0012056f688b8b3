/**
 * The hwcheck scenario: morsels built, filled and mapped through the library
 * only (Morsels + AddressSpace + the software Mmu), then a list of checks
 * stating what a real x86-64 MMU must see through the space's tables. The
 * guest (guest/hwcheck.asm) runs the list; this file never computes an
 * expected value from the tables themselves, only from what was written, so
 * a table the hardware reads differently than our software MMU shows up.
 *
 * Boot parameter block: frame 1 of the region (reserved boot scratch, see
 * physical/layout.ts). Layout in guest/hwcheck.asm's header.
 */
import { MorselError } from '../errors.js';
import type { Memory } from '../memory.js';
import { MIN_HUGE_ORDER, type MorselId } from '../morsel/id.js';
import { orderBytes, type Order } from '../morsel/order.js';
import { HI_PFN_MASK, P, PS, isHugeLeaf, isPresent, makeHi, makeLo, pfnOf } from '../paging/entry.js';
import type { AddressSpace } from '../space/address-space.js';
import { Mmu } from '../space/mmu.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { levelSpan, HUGE_LEVEL } from '../paging/walk.js';

/** Bytes of one 2 MiB leaf (an entry of a level-2 table). */
const HUGE_LEAF_BYTES = levelSpan(HUGE_LEVEL);

export const enum Kind {
  Read = 1,
  WriteRead = 2,
  Exec = 3,
  PfRead = 4,
  PfWrite = 5,
  PfExec = 6,
}

/** x86 #PF error-code bits the guest compares (SDM 4.7). */
export const PF_P = 1;
export const PF_W = 2;
export const PF_ID = 0x10;

export interface Check {
  name: string;
  kind: Kind;
  vaddr: number;
  value: bigint;
  /** expected #PF error code & 0x1F (fault kinds only) */
  err: number;
}

/** 'pfn': another frame; 'present': P cleared; 'leaf-ps': PS cleared on a 2 MiB leaf (its data read as a table). */
export type Corruption = 'pfn' | 'present' | 'leaf-ps';

/** An entry damaged on purpose, with what it held, so it can be put back. */
export interface Damage {
  table: Frame;
  index: number;
  lo: number;
  hi: number;
  /** the check that must now fail */
  check: string;
}

export interface Scenario {
  checks: Check[];
  /** the plain data morsel of each order */
  byOrder: MorselId[];
  /** the huge-policy morsel with two 2 MiB leaves */
  huge: MorselId;
}

export const PARAM_FRAME = 1 as Frame;
const PARAM_MAGIC = 'MORSHWCK';
const PARAM_VERSION = 1;
const PARAM_HEADER = 32;
const CHECK_BYTES = 32;
export const MAX_CHECKS = (PAGE_SIZE - PARAM_HEADER) / CHECK_BYTES;

/** Fixed address of the meta morsel's data (2 MiB aligned, far from automatic placement). */
const META_ADDRESS = 0x4000_0000_0000;
/** Nothing is ever mapped here (PML4 index 192). */
const UNMAPPED = 0x6000_0000_0000;

/** A recognisable 64-bit value for (morsel, offset): distinct everywhere, never zero. */
export function pattern(tag: number, offset: number): bigint {
  const x = (BigInt(tag) * 0x9e3779b97f4a7c15n) ^ (BigInt(offset) * 0xc2b2ae3d27d4eb4fn) ^ 0x4d4f5253454c5321n;
  return BigInt.asUintN(64, x) | 1n;
}

function le64(value: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, value, true);
  return b;
}

/** An offset whose table index is non-zero (and different) at every level of the morsel. */
function deepOffset(order: Order): number {
  let off = 0xab8;
  for (let level = 1; level <= order; level++) off += ((level * 73 + 5) % 512) * 2 ** (12 + 9 * (level - 1));
  return off;
}

const hex = (n: number): string => '0x' + n.toString(16);

/** Builds the scenario; every morsel created is pushed onto `morsels` at once (for cleanup). */
export function buildScenario(mem: Memory, space: AddressSpace, morsels: MorselId[]): Scenario {
  const mmu = new Mmu(space);
  const checks: Check[] = [];
  const put = (vaddr: number, value: bigint): void => mmu.write(vaddr, le64(value));
  const add = (name: string, kind: Kind, vaddr: number, value = 0n, err = 0): void => {
    checks.push({ name, kind, vaddr, value, err });
  };

  // Data morsels of every order the space can hold: first/last/deep bytes.
  const orders: Order[] = space.levels === 5 ? [0, 1, 2, 3, 4] : [0, 1, 2, 3];
  const base: number[] = [];
  const byOrder: MorselId[] = [];
  for (const order of orders) {
    const id = mem.morsels.create(order);
    morsels.push(id);
    byOrder[order] = id;
    const at = space.map(id, { rights: { write: true } });
    base[order] = at;
    const offsets = order === 0 ? [0, PAGE_SIZE - 8] : [0, orderBytes(order) - 8, deepOffset(order)];
    for (const off of offsets) {
      put(at + off, pattern(order, off));
      add(`order-${order} read +${hex(off)}`, Kind.Read, at + off, pattern(order, off));
    }
    // The guest writes next to a populated byte and reads it back.
    add(`order-${order} write+read +0x10`, Kind.WriteRead, at + 0x10, pattern(100 + order, 0x10));
  }

  // Missing entries: a missing leaf (table present) and a missing table.
  add('order-1 unpopulated page: read #PF', Kind.PfRead, base[1] + PAGE_SIZE, 0n, 0);
  add('order-2 missing table: read #PF', Kind.PfRead, base[2] + 0x2000_0000, 0n, 0);
  add('order-2 missing table: write #PF', Kind.PfWrite, base[2] + 0x2000_0000, 1n, PF_W);
  add('unmapped address: read #PF', Kind.PfRead, UNMAPPED, 0n, 0);

  // Explicit population: zeroed pages the hardware can read.
  mem.morsels.populate(byOrder[1], 0x10_0000, 2 * PAGE_SIZE);
  add('order-1 populate() page reads 0', Kind.Read, base[1] + 0x10_0000, 0n);
  add('order-1 populate() 2nd page reads 0', Kind.Read, base[1] + 0x10_1ff8, 0n);

  // A read-only alias of the order-1 morsel: reads work, writes fault with
  // P|W, and it sees what the guest wrote through the writable mapping.
  const ro = space.map(byOrder[1], { rights: { write: false } });
  add('read-only alias: read', Kind.Read, ro, pattern(1, 0));
  add('read-only alias: write #PF (P|W)', Kind.PfWrite, ro + 8, 1n, PF_P | PF_W);
  add('read-only alias sees guest write', Kind.Read, ro + 0x10, pattern(101, 0x10));

  // NX: data mappings are no-execute by default; an executable alias runs code.
  add('NX mapping: fetch #PF (P|I)', Kind.PfExec, base[0], 0n, PF_P | PF_ID);
  const code = mem.morsels.create(0);
  morsels.push(code);
  const rw = space.map(code, { rights: { write: true } });
  const ret = pattern(200, 0);
  mmu.write(rw + 0x80, new Uint8Array([0x48, 0xb8, ...le64(ret), 0xc3])); // movabs rax, ret; ret
  const rx = space.map(code, { rights: { write: false, execute: true } });
  add('executable alias: call', Kind.Exec, rx + 0x80, ret);
  add('executable alias: write #PF (P|W)', Kind.PfWrite, rx + 0x80, 1n, PF_P | PF_W);

  // A meta morsel maps its data morsel at the fixed address.
  const meta = mem.morsels.createMeta(1, { address: META_ADDRESS });
  morsels.push(meta);
  const fixed = space.map(meta, { rights: { write: true } });
  if (fixed !== META_ADDRESS) throw new MorselError('ECORRUPT', `meta morsel mapped at ${hex(fixed)}, not ${hex(META_ADDRESS)}`);
  for (const off of [0, orderBytes(1) - 8]) {
    put(fixed + off, pattern(300, off));
    add(`meta morsel at fixed address read +${hex(off)}`, Kind.Read, fixed + off, pattern(300, off));
  }

  // Copy-on-write: a clone shares the source's tables (write-protected
  // entries). The software MMU copies the clone's first page on a write;
  // the hardware must read shared and copied pages through both, and fault
  // (P|W) on a write through a write-protected entry.
  const cowSrc = mem.morsels.create(2);
  morsels.push(cowSrc);
  const src = space.map(cowSrc, { rights: { write: true } });
  const deep = deepOffset(2);
  put(src, pattern(400, 0));
  put(src + deep, pattern(400, deep));
  const cowDst = mem.morsels.clone(cowSrc);
  morsels.push(cowDst);
  const dst = space.map(cowDst, { rights: { write: true } });
  put(dst, pattern(401, 0)); // a COW fault in the software MMU: the clone's path to page 0 is private now
  add('COW clone: shared page read', Kind.Read, dst + deep, pattern(400, deep));
  add('COW source: shared page read', Kind.Read, src + deep, pattern(400, deep));
  add('COW clone: copied page read', Kind.Read, dst, pattern(401, 0));
  add('COW source: keeps its page', Kind.Read, src, pattern(400, 0));
  add('COW: write through a shared entry #PF (P|W)', Kind.PfWrite, src + deep, 1n, PF_P | PF_W);

  const huge = addHugeChecks(mem, space, morsels, put, add);

  if (checks.length > MAX_CHECKS) throw new MorselError('ERANGE', `${checks.length} checks exceed the parameter block (${MAX_CHECKS})`);
  return { checks, byOrder, huge };
}

/** Offset of the second 2 MiB leaf of the huge scenario (entry 5 of its level-2 table). */
const HUGE_LEAF_B = 5 * HUGE_LEAF_BYTES;

/**
 * 2 MiB leaves (PS entries of a level-2 table, order-9 frames): a
 * huge-policy morsel whose host writes build two leaves; the hardware must
 * read the bytes at several offsets inside each leaf, fault (P|W) on a
 * write through a read-only mapping, and after a clone read shared and
 * copied leaves through both morsels, write and read the clone's private
 * copy and fault (P|W) on a write through a shared (write-protected) leaf,
 * as the COW checks above do for 4 KiB pages. The guest runs after all of
 * this is built. It needs nothing more for them: IA-32e paging honours PS
 * in a level-2 entry (PDE) with CR4.PAE alone (SDM 4.5; CR4.PSE is ignored). ECORRUPT when the library built no
 * leaves (no order-9 frame free): the checks would prove nothing.
 */
function addHugeChecks(mem: Memory, space: AddressSpace, morsels: MorselId[], put: (vaddr: number, value: bigint) => void, add: (name: string, kind: Kind, vaddr: number, value?: bigint, err?: number) => void): MorselId {
  const src = mem.morsels.create(MIN_HUGE_ORDER, { huge: true });
  morsels.push(src);
  const at = space.map(src, { rights: { write: true } });
  const offsets = [0, 0x10, 37 * PAGE_SIZE + 0x18, HUGE_LEAF_BYTES - 8, HUGE_LEAF_B, HUGE_LEAF_B + 300 * PAGE_SIZE + 0x7f8, HUGE_LEAF_B + HUGE_LEAF_BYTES - 8];
  for (const off of offsets) put(at + off, pattern(500, off));
  const leaves = mem.morsels.stats(src).hugeLeaves;
  if (leaves !== 2) throw new MorselError('ECORRUPT', `the huge scenario built ${leaves} 2 MiB leaves, not 2 (no free order-9 frame?)`);
  for (const off of offsets) add(`2 MiB leaf: read +${hex(off)}`, Kind.Read, at + off, pattern(500, off));
  const ro = space.map(src, { rights: { write: false } });
  add('2 MiB leaf, read-only alias: read', Kind.Read, ro + HUGE_LEAF_B, pattern(500, HUGE_LEAF_B));
  add('2 MiB leaf, read-only alias: write #PF (P|W)', Kind.PfWrite, ro + HUGE_LEAF_B + 8, 1n, PF_P | PF_W);

  // Copy-on-write of leaves: the clone's write copies leaf A whole; leaf B stays shared (P|US|PS, no RW).
  const clone = mem.morsels.clone(src);
  morsels.push(clone);
  const dst = space.map(clone, { rights: { write: true } });
  put(dst + 0x10, pattern(502, 0x10)); // a COW fault in the software MMU: leaf A copied for the clone
  add('2 MiB leaf COW clone: shared leaf read', Kind.Read, dst + HUGE_LEAF_B + 300 * PAGE_SIZE + 0x7f8, pattern(500, HUGE_LEAF_B + 300 * PAGE_SIZE + 0x7f8));
  add('2 MiB leaf COW source: shared leaf read', Kind.Read, at + HUGE_LEAF_B, pattern(500, HUGE_LEAF_B));
  add('2 MiB leaf COW clone: copied leaf read', Kind.Read, dst + 0x10, pattern(502, 0x10));
  add('2 MiB leaf COW clone: copied leaf keeps the rest', Kind.Read, dst + HUGE_LEAF_BYTES - 8, pattern(500, HUGE_LEAF_BYTES - 8));
  add('2 MiB leaf COW source: keeps its leaf', Kind.Read, at + 0x10, pattern(500, 0x10));
  // The copy is private (P|RW|US|PS): the guest writes it and reads back.
  add('2 MiB leaf (private copy): write+read +0x20', Kind.WriteRead, dst + 0x20, pattern(501, 0x20));
  add('2 MiB leaf COW: write through a shared leaf #PF (P|W)', Kind.PfWrite, at + HUGE_LEAF_B + 0x40, 1n, PF_P | PF_W);
  return src;
}

/**
 * Damages the leaf entry of the order-1 morsel's first page (what
 * "order-1 read +0x0" reads): 'pfn' points it at another frame, 'present'
 * clears P; or with 'leaf-ps' the huge morsel's second 2 MiB leaf (what
 * "2 MiB leaf: read +0xa00000" reads) loses PS. For the negative test: the
 * guest must notice.
 */
export function corrupt(mem: Memory, scenario: Scenario, how: Corruption): Damage {
  const region = mem.region;
  const rootOf = (id: MorselId): Frame => pfnOf(Number(id & 0xffffffffn), Number(id >> 32n)) as Frame;
  if (how === 'leaf-ps') {
    const table = rootOf(scenario.huge); // order 2: the root is the level-2 table
    const index = HUGE_LEAF_B / HUGE_LEAF_BYTES;
    const lo = region.loadLo(table, index);
    const hi = region.loadHi(table, index);
    if (!isHugeLeaf(lo)) throw new MorselError('ECORRUPT', 'the huge morsel has no 2 MiB leaf at entry ' + index);
    region.storeEntry(table, index, lo & ~PS, hi);
    return { table, index, lo, hi, check: `2 MiB leaf: read +${hex(HUGE_LEAF_B)}` };
  }
  const table = rootOf(scenario.byOrder[1]); // order 1: the root is the page table
  const lo = region.loadLo(table, 0);
  const hi = region.loadHi(table, 0);
  if (!isPresent(lo)) throw new MorselError('ECORRUPT', 'order-1 morsel page 0 not populated');
  const other = rootOf(scenario.byOrder[0]); // the order-0 morsel's page: different bytes
  const newLo = how === 'pfn' ? makeLo(other, lo & 0xfff) : lo & ~P;
  const newHi = how === 'pfn' ? (hi & ~HI_PFN_MASK) | makeHi(other, 0) : hi;
  region.storeEntry(table, 0, newLo, newHi);
  return { table, index: 0, lo, hi, check: 'order-1 read +0x0' };
}

export function repair(mem: Memory, damage: Damage): void {
  mem.region.storeEntry(damage.table, damage.index, damage.lo, damage.hi);
}

/** Writes the boot parameter block into frame 1; returns what was there before. */
export function writeParams(mem: Memory, space: AddressSpace, checks: Check[]): Uint8Array {
  const page = mem.region.frame(PARAM_FRAME);
  const saved = page.slice();
  page.fill(0);
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  for (let i = 0; i < PARAM_MAGIC.length; i++) page[i] = PARAM_MAGIC.charCodeAt(i);
  view.setUint32(8, PARAM_VERSION, true);
  view.setUint32(12, space.levels, true);
  view.setBigUint64(16, BigInt(space.rootFrame) * BigInt(PAGE_SIZE), true);
  view.setUint32(24, checks.length, true);
  checks.forEach((c, i) => {
    const at = PARAM_HEADER + i * CHECK_BYTES;
    view.setUint32(at, c.kind, true);
    view.setBigUint64(at + 8, BigInt(c.vaddr), true);
    view.setBigUint64(at + 16, c.value, true);
    view.setBigUint64(at + 24, BigInt(c.err), true);
  });
  return saved;
}

export function restoreParams(mem: Memory, saved: Uint8Array): void {
  mem.region.frame(PARAM_FRAME).set(saved);
}
