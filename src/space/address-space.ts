/**
 * Address spaces (thesis 3.3.2, 4.4): a root table (PML4, or PML5 for
 * 5-level paging) plus the intermediate tables down to where morsels are
 * mapped. Mapping writes one entry, the morsel's ID with the mapping's rights,
 * into the table of the order's level: constant time for every size.
 *
 * Ownership: the tables above a morsel belong to the space; the entry marked
 * MORSEL_TOP points into a morsel, which the space never frees. Spaces are
 * registered in root slot 1 so their tables are accounted for; mappings do
 * not outlive the process (like Linux), so opening a region tears down any
 * spaces left behind.
 *
 * Addresses are JS numbers (see VAddr): 4-level spaces span [0, 2^47),
 * 5-level spaces [0, 2^53) of their 2^56-byte lower half.
 */
import { MorselError, assert, check } from '../errors.js';
import { HI_MORSEL_TOP, INNER_FLAGS, isPresent, makeHi, makeLo, pfnOf } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, type Walker } from '../paging/walk.js';
import { hex } from '../morsel/id.js';
import type { Morsels } from '../morsel/morsels.js';
import { entrySpan, orderBytes, tableIndex, type Order } from '../morsel/order.js';
import { Registry, superblockRoot } from '../morsel/registry.js';
import type { Frame } from '../units.js';
import type { Region } from '../physical/region.js';
import { crashPoint } from '../crash-point.js';
import { CTL_EPOCH } from './mmu.js';
import { describeRights, rightsHi, rightsLo, READ_WRITE, type Rights } from './rights.js';

export { ROOT_SLOT_SPACES } from '../physical/superblock.js';
import { ROOT_SLOT_SPACES } from '../physical/superblock.js';
export type Levels = 4 | 5;

/** Space-registry value: bit 26 of hi (a PFN-free bit) set for a 5-level space. */
export const SPACE_LEVELS5 = 1 << 26;

/** Control words shared by every thread using the space ([CTL_EPOCH] is the MMU's, see PagedSpace). */
const CTL_WORDS = 16;

export interface SpaceShare {
  rootFrame: number;
  levels: Levels;
  control: SharedArrayBuffer;
}

export interface MapOptions {
  /** fixed, naturally aligned address; omitted = automatic placement */
  address?: number;
  rights?: Rights;
}

export interface Mapping {
  address: number;
  order: Order;
  rootFrame: number;
  rights: Rights;
}

/** Bounded retries when automatic placement races with another mapper. */
const PLACE_RETRIES = 64;

export class AddressSpace {
  readonly rootFrame: Frame;
  readonly levels: Levels;
  /** Exclusive upper bound of mappable addresses. */
  readonly limit: number;
  /** [CTL_EPOCH] is bumped by every unmap: TLBs flush when it moves (the shootdown). */
  readonly control: Int32Array;
  private readonly registry: Registry;
  private readonly walker: Walker;

  private constructor(
    readonly morsels: Morsels,
    share: SpaceShare,
  ) {
    this.rootFrame = share.rootFrame as Frame;
    this.levels = share.levels;
    this.limit = share.levels === 4 ? 2 ** 47 : 2 ** 53;
    this.control = new Int32Array(share.control);
    this.walker = morsels.walker;
    this.registry = new Registry(morsels.region, morsels.alloc, superblockRoot(morsels.region, ROOT_SLOT_SPACES));
  }

  static create(morsels: Morsels, opts: { levels?: Levels } = {}): AddressSpace {
    const levels = opts.levels ?? 5;
    check(levels === 4 || levels === 5, 'EINVAL', () => `levels must be 4 or 5, got ${levels}`);
    const root = morsels.alloc.alloc(0);
    morsels.region.zeroFrame(root);
    const space = new AddressSpace(morsels, { rootFrame: root, levels, control: new SharedArrayBuffer(CTL_WORDS * 4) });
    crashPoint('space:before-register');
    // Registered with its level count in the (otherwise unused) PFN-free bits of the value.
    try {
      space.registry.add(root, makeLo(root, INNER_FLAGS), makeHi(root, 0) | (levels === 5 ? SPACE_LEVELS5 : 0));
    } catch (e) {
      morsels.alloc.free(root); // ENOSPC growing the registry: do not leak the root past a clean close
      throw e;
    }
    return space;
  }

  /** The same space seen from another thread. */
  static attach(morsels: Morsels, share: SpaceShare): AddressSpace {
    return new AddressSpace(morsels, share);
  }

  get region(): Region {
    return this.morsels.region;
  }

  /** The morsel fault handler, for the MMU: populate below `table` (a level-`level` table of a morsel) to the page of `vaddr`. */
  populateFrom(table: Frame, level: number, vaddr: number): Frame {
    return this.morsels.populateFrom(table, level, vaddr);
  }

  share(): SpaceShare {
    return { rootFrame: this.rootFrame, levels: this.levels, control: this.control.buffer as SharedArrayBuffer };
  }

  get epoch(): number {
    return Atomics.load(this.control, CTL_EPOCH);
  }

  // --- map ----------------------------------------------------------------------

  /**
   * Maps a morsel (or a meta morsel's data morsel, at its fixed address) and
   * returns the address. Writes exactly one entry of the morsel: O(1) in its size.
   */
  map(id: bigint, opts: MapOptions = {}): number {
    const d = this.morsels.decode(id);
    const data = this.morsels.dataOf(d);
    let address = opts.address;
    if (d.meta) {
      const fixed = this.morsels.metaOf(d).address;
      check(address === undefined || address === fixed, 'EINVAL', () => `meta morsel ${hex(id)} maps only at its fixed address 0x${fixed.toString(16)}`);
      address = fixed;
    }
    const level = data.order + 1;
    check(level <= this.levels, 'ENOTSUP', () => `an order-${data.order} morsel needs ${level}-level paging; this space has ${this.levels}`);
    const rights = opts.rights ?? READ_WRITE;
    const lo = makeLo(data.rootFrame, rightsLo(rights));
    const hi = makeHi(data.rootFrame, rightsHi(rights) | HI_MORSEL_TOP);
    if (address !== undefined) {
      const at = address;
      this.checkAddress(at, data.order);
      const table = this.tableFor(at, level);
      check(this.morsels.region.casEntry(table, tableIndex(at, level), 0, 0, lo, hi), 'EEXIST', () => `0x${at.toString(16)} is already mapped`);
    } else {
      address = this.place(data.order, lo, hi);
    }
    Atomics.add(this.morsels.region.mapCounts, data.rootFrame, 1);
    return address;
  }

  private checkAddress(address: number, order: Order): void {
    check(Number.isSafeInteger(address) && address >= 0, 'EINVAL', () => `address ${address} is not a non-negative integer`);
    check(address + orderBytes(order) <= this.limit, 'ERANGE', () => `address 0x${address.toString(16)} + ${orderBytes(order)} is outside the ${this.levels}-level user range [0, 0x${this.limit.toString(16)})`);
    check(address % orderBytes(order) === 0, 'EMISALIGNED', () => `address 0x${address.toString(16)} is not aligned to the order-${order} size 0x${orderBytes(order).toString(16)}`);
  }

  /**
   * The space table at `level` covering `address`, creating missing tables
   * with the same lock-free check/allocate/CAS protocol as population.
   * EEXIST when a morsel is already mapped above that level.
   */
  private tableFor(address: number, level: number): Frame {
    const region = this.morsels.region;
    let table = this.rootFrame;
    for (let l = this.levels; l > level; l--) {
      const idx = tableIndex(address, l);
      if (!isPresent(region.loadLo(table, idx))) this.walker.ensureChild(table, idx, 'space:before-link-table');
      // Read the entry once more: a lost CAS may have lost to a mapping, not to a table.
      const lo = region.loadLo(table, idx);
      const hi = region.loadHi(table, idx);
      if (hi & HI_MORSEL_TOP) throw new MorselError('EEXIST', `0x${address.toString(16)} lies inside a mapped morsel`);
      table = this.walker.follow(table, idx, lo, hi);
    }
    return table;
  }

  /** Automatic placement: the lowest vacant, naturally aligned slot above address 0. */
  private place(order: Order, lo: number, hi: number): number {
    const level = order + 1;
    for (let attempt = 0; attempt < PLACE_RETRIES; attempt++) {
      const address = this.findVacant(this.rootFrame, this.levels, 0, level, orderBytes(order));
      if (address === null) throw new MorselError('ENOSPC', `no vacant order-${order} slot in this address space`);
      const table = this.tableFor(address, level);
      if (this.morsels.region.casEntry(table, tableIndex(address, level), 0, 0, lo, hi)) return address;
    }
    throw new MorselError('EBUSY', `automatic placement lost ${PLACE_RETRIES} races in a row`);
  }

  /** First vacant slot at `level` under `table` (covering [base, ...)), skipping address 0. */
  private findVacant(table: Frame, tableLevel: number, base: number, level: number, size: number): number | null {
    const region = this.morsels.region;
    const span = entrySpan(tableLevel);
    for (let idx = 0; idx < ENTRIES_PER_TABLE; idx++) {
      const start = base + idx * span;
      if (start + size > this.limit) return null;
      const lo = region.loadLo(table, idx);
      if (tableLevel === level) {
        if (!isPresent(lo) && start !== 0) return start;
        continue;
      }
      if (!isPresent(lo)) return start === 0 ? (size < span ? size : span) : start;
      const hi = region.loadHi(table, idx);
      if (hi & HI_MORSEL_TOP) continue;
      const found = this.findVacant(this.walker.follow(table, idx, lo, hi), tableLevel - 1, start, level, size);
      if (found !== null) return found;
    }
    return null;
  }

  // --- unmap --------------------------------------------------------------------

  /** The mapping starting at `address`, or null. */
  mappingAt(address: number): Mapping | null {
    const region = this.morsels.region;
    let table = this.rootFrame;
    for (let l: number = this.levels; l >= 1; l--) {
      const idx = tableIndex(address, l);
      const lo = region.loadLo(table, idx);
      if (!isPresent(lo)) return null;
      const hi = region.loadHi(table, idx);
      if (hi & HI_MORSEL_TOP) {
        const order = (l - 1) as Order;
        if (address % orderBytes(order) !== 0) return null;
        return { address, order, rootFrame: pfnOf(lo, hi), rights: describeRights(lo, hi) };
      }
      if (l === 1) return null;
      table = this.walker.follow(table, idx, lo, hi);
    }
    return null;
  }

  /** Removes the mapping that starts at `address` and shoots down every TLB of the space. */
  unmap(address: number): void {
    check(Number.isSafeInteger(address) && address >= 0 && address < this.limit, 'EINVAL', () => `address ${address} outside the space`);
    const region = this.morsels.region;
    let table = this.rootFrame;
    for (let l: number = this.levels; l >= 1; l--) {
      const idx = tableIndex(address, l);
      const lo = region.loadLo(table, idx);
      if (!isPresent(lo)) break;
      const hi = region.loadHi(table, idx);
      if (hi & HI_MORSEL_TOP) {
        check(address % orderBytes((l - 1) as Order) === 0, 'EINVAL', () => `0x${address.toString(16)} is inside a mapping, not its start`);
        check(region.casEntry(table, idx, lo, hi, 0, 0), 'ENOENT', () => `0x${address.toString(16)} was unmapped concurrently`);
        const root = pfnOf(lo, hi);
        this.mappingGone(root, this.walker.trusted(root)); // a damaged entry was never a counted mapping of that frame
        return;
      }
      if (l === 1) break;
      table = this.walker.follow(table, idx, lo, hi);
    }
    throw new MorselError('ENOENT', `nothing is mapped at 0x${address.toString(16)}`);
  }

  private mappingGone(rootFrame: number, counted = true): void {
    if (counted) {
      const left = Atomics.sub(this.morsels.region.mapCounts, rootFrame, 1) - 1;
      assert(left >= 0, 'map count never negative');
    }
    Atomics.add(this.control, CTL_EPOCH, 1);
  }

  /** All mappings, in address order. */
  mappings(): Mapping[] {
    const out: Mapping[] = [];
    const walk = (table: Frame, level: number, base: number): void => {
      const span = entrySpan(level);
      this.walker.forEachPresent(table, (idx, lo, hi) => {
        const address = base + idx * span;
        if (hi & HI_MORSEL_TOP) out.push({ address, order: (level - 1) as Order, rootFrame: pfnOf(lo, hi), rights: describeRights(lo, hi) });
        else if (level > 1) walk(this.walker.follow(table, idx, lo, hi), level - 1, address);
      });
    };
    walk(this.rootFrame, this.levels, 0);
    return out;
  }

  /**
   * Tears the space down: unmaps every morsel (never freeing its frames) and
   * frees the space's own tables post-order, unlinking each before its free.
   * `counted` is false for spaces of a previous process, whose mappings this
   * process never counted.
   */
  destroy(counted = true): void {
    const region = this.morsels.region;
    const teardown = (table: Frame, level: number): void => {
      this.walker.forEachPresent(table, (idx, lo, hi) => {
        const target = pfnOf(lo, hi);
        if (hi & HI_MORSEL_TOP || level === 1 || !this.walker.trusted(target)) {
          assert(region.casEntry(table, idx, lo, hi, 0, 0), 'space entry unchanged during teardown');
          if (hi & HI_MORSEL_TOP) this.mappingGone(target, counted && this.walker.trusted(target));
          // Damage (a level-1 entry without the top mark, a frame the walker refuses): cleared, never
          // followed; whatever it hid is unreachable and reclaimed by the next recovery or repair.
          return;
        }
        const child = target as Frame;
        teardown(child, level - 1);
        assert(region.casEntry(table, idx, lo, hi, 0, 0), 'space entry unchanged during teardown');
        crashPoint('space:teardown-after-unlink');
        this.morsels.alloc.free(child);
      });
    };
    teardown(this.rootFrame, this.levels);
    const reg = this.registry.get(this.rootFrame);
    if (reg !== null) this.registry.remove(this.rootFrame, reg[0], reg[1]);
    this.morsels.alloc.free(this.rootFrame);
    Atomics.add(this.control, CTL_EPOCH, 1);
  }
}

/**
 * Tears down spaces a previous process left registered (their mappings died
 * with it). Returns how many it removed. Morsel frames are never touched.
 */
export function reapSpaces(morsels: Morsels): number {
  const registry = new Registry(morsels.region, morsels.alloc, superblockRoot(morsels.region, ROOT_SLOT_SPACES));
  const roots: { root: number; levels: Levels }[] = [];
  const damaged: [number, number, number][] = [];
  registry.forEach((key, lo, hi) => {
    // A value that is not this key's space root, or a root the walker refuses, is never torn down (it would clear entries of a frame that is not a space table).
    if (pfnOf(lo, hi) === key && morsels.walker.trusted(key)) roots.push({ root: key, levels: hi & SPACE_LEVELS5 ? 5 : 4 });
    else damaged.push([key, lo, hi]);
  });
  for (const { root, levels } of roots) {
    AddressSpace.attach(morsels, { rootFrame: root, levels, control: new SharedArrayBuffer(CTL_WORDS * 4) }).destroy(false);
  }
  // Dropped unregistered: whatever tables hung below are unreachable now, reclaimed by the next recovery or repair.
  for (const [key, lo, hi] of damaged) registry.remove(key, lo, hi);
  return roots.length + damaged.length;
}

/**
 * Recovery (exclusive): the address spaces registered in root slot 1 died
 * with their processes; their registry is emptied without touching a
 * morsel, and the reachability rebuild reclaims their tables. Returns
 * whether there were any.
 */
export function dropSpaces(morsels: Morsels): number {
  return new Registry(morsels.region, morsels.alloc, superblockRoot(morsels.region, ROOT_SLOT_SPACES)).clearTop() > 0 ? 1 : 0;
}
