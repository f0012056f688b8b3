/**
 * Address spaces (thesis 3.3.2, 4.4): a root table (PML4, or PML5 for
 * 5-level paging) plus the intermediate tables down to where morsels are
 * mapped. Mapping writes one entry, the morsel's ID with the mapping's rights,
 * into the table of the order's level: constant time for every size.
 *
 * Ownership: the tables above a morsel belong to the space; the entry marked
 * MORSEL_TOP points into a morsel, which the space never frees. Spaces are
 * registered so their tables are accounted for; mappings do not outlive
 * the process (like Linux): each process registers its spaces in its own
 * user slot (SLOT_SPACES_ROOT), close() destroys them, and a
 * dead process's are torn down by whoever reaps its slot (user-slots.ts).
 *
 * Addresses are JS numbers (see VAddr): 4-level spaces span [0, 2^47),
 * 5-level spaces [0, 2^53) of their 2^56-byte lower half.
 */
import { MorselError, assert, check } from '../errors.js';
import { HI_HUGE, HI_MORSEL_TOP, INNER_FLAGS, isPresent, makeHi, makeLo, pfnOf } from '../paging/entry.js';
import { ENTRIES_PER_TABLE, type Walker } from '../paging/walk.js';
import { hex, type DecodedId } from '../morsel/id.js';
import type { Morsels } from '../morsel/morsels.js';
import { entrySpan, orderBytes, tableIndex, type Order } from '../morsel/order.js';
import { Registry, userSlotRoot } from '../morsel/registry.js';
import { SLOT_SPACES_ROOT } from '../physical/layout.js';
import { NO_SLOT } from '../physical/region.js';
import type { Frame } from '../units.js';
import type { Region } from '../physical/region.js';
import { crashPoint } from '../crash-point.js';
import { CTL_EPOCH } from './mmu.js';
import { QUIESCE_TIMEOUT_MS, READER_TABLE_BYTES, checkLive, insideSection, markDead, readerTable, waitQuiescent } from './quiesce.js';
import { describeRights, rightsHi, rightsLo, READ_WRITE, type Rights } from './rights.js';

export type Levels = 4 | 5;

/** Space-registry value: bit 26 of hi (a PFN-free bit) set for a 5-level space. */
export const SPACE_LEVELS5 = 1 << 26;

/** Control words shared by every thread using the space ([CTL_EPOCH] is the MMU's, see PagedSpace). */
const CTL_WORDS = 16;
/** The control SharedArrayBuffer: the words, then the reader table (quiesce.ts). */
const CONTROL_BYTES = CTL_WORDS * 4 + READER_TABLE_BYTES;

export interface SpaceShare {
  rootFrame: number;
  levels: Levels;
  control: SharedArrayBuffer;
}

export interface MapOptions {
  /** fixed, naturally aligned address; omitted = automatic placement */
  address?: number;
  rights?: Rights;
  /** the handle's generation: ESTALE if that incarnation is gone */
  generation?: number;
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
  /** Reader slots of the threads' Mmus, and whether the space is destroyed (quiesce.ts). */
  readonly readers: Int32Array;
  /** Bound on how long unmap and destroy wait for readers to leave their access sections. */
  quiesceTimeoutMs = QUIESCE_TIMEOUT_MS;
  private readonly registry: Registry;
  private readonly walker: Walker;
  /** Called once when destroy() commits (Memory uses it to forget the space). */
  onDestroy: (() => void) | null = null;

  /** `slot`: the user slot whose registry holds the space (this process's, or a dead one's being reaped). */
  private constructor(
    readonly morsels: Morsels,
    share: SpaceShare,
    slot = morsels.region.userSlot,
  ) {
    this.rootFrame = share.rootFrame as Frame;
    this.levels = share.levels;
    this.limit = share.levels === 4 ? 2 ** 47 : 2 ** 53;
    this.control = new Int32Array(share.control, 0, CTL_WORDS);
    this.readers = readerTable(share.control, CTL_WORDS * 4);
    this.walker = morsels.walker;
    this.registry = spacesRegistry(morsels, slot);
  }

  static create(morsels: Morsels, opts: { levels?: Levels } = {}): AddressSpace {
    const levels = opts.levels ?? 5;
    check(levels === 4 || levels === 5, 'EINVAL', () => `levels must be 4 or 5, got ${levels}`);
    if (!morsels.region.writable) morsels.region.denyWrite();
    check(morsels.region.userSlot !== NO_SLOT, 'EBADF', 'this memory holds no user slot (opened for inspection): it cannot create address spaces');
    const root = morsels.alloc.alloc(0);
    morsels.region.zeroFrame(root);
    const space = new AddressSpace(morsels, { rootFrame: root, levels, control: new SharedArrayBuffer(CONTROL_BYTES) });
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

  /** A space registered in user slot `slot` (a dead process's, for reapSpaces). */
  static attachInSlot(morsels: Morsels, share: SpaceShare, slot: number): AddressSpace {
    return new AddressSpace(morsels, share, slot);
  }

  /** The same space seen from another thread. */
  static attach(morsels: Morsels, share: SpaceShare): AddressSpace {
    return new AddressSpace(morsels, share);
  }

  get region(): Region {
    return this.morsels.region;
  }

  /** The MMU's fault-ahead for a bulk write: populate `pages` pages from the page of `vaddr` below `table` (Morsels.populateAhead). */
  populateAhead(table: Frame, level: number, vaddr: number, pages: number, huge: boolean): void {
    this.morsels.populateAhead(table, level, vaddr, pages, huge);
  }

  /** The morsel fault handler, for the MMU: populate below `table` (a level-`level` table of a morsel) to the page of `vaddr`; `huge`: the morsel's policy (2 MiB leaves). */
  populateFrom(table: Frame, level: number, vaddr: number, huge: boolean): Frame {
    return this.morsels.populateFrom(table, level, vaddr, huge);
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
   * The mapping is counted (Morsels.use: count, then re-check the morsel
   * word) BEFORE its entry is installed, so a destroy either sees the count
   * (EBUSY / deferred) or this map sees DYING or a new generation (ESTALE):
   * never an entry pointing to freed frames.
   */
  map(id: bigint, opts: MapOptions = {}): number {
    checkLive(this.readers, 'map');
    const { d, data } = this.morsels.use(id, opts.generation);
    try {
      return this.install(id, d, data, opts);
    } catch (e) {
      this.morsels.release(data.rootFrame);
      throw e;
    }
  }

  /** Writes the mapping's entry for a counted use. */
  private install(id: bigint, d: DecodedId, data: DecodedId, opts: MapOptions): number {
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
    // The huge policy rides on the mapping entry: the MMU's fault path reads it on the way down.
    const hi = makeHi(data.rootFrame, rightsHi(rights) | HI_MORSEL_TOP | (data.huge ? HI_HUGE : 0));
    if (address !== undefined) {
      const at = address;
      this.checkAddress(at, data.order);
      const table = this.tableFor(at, level);
      check(this.morsels.region.casEntry(table, tableIndex(at, level), 0, 0, lo, hi), 'EEXIST', () => `0x${at.toString(16)} is already mapped`);
    } else {
      address = this.place(data.order, lo, hi);
    }
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
    checkLive(this.readers, 'mappingAt');
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

  /**
   * Removes the mapping that starts at `address`, shoots down every TLB of
   * the space and returns once no thread can still access the morsel through
   * it (only then does the morsel stop counting as mapped, so destroy cannot
   * free its frames under a reader). ETIMEDOUT: see shootdown.
   */
  unmap(address: number): void {
    checkLive(this.readers, 'unmap');
    check(!insideSection(this.readers), 'EBUSY', 'unmap inside an Mmu access section of this thread: it would wait for itself');
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
        const stuck = this.shootdown();
        if (stuck >= 0) throw this.timedOut(stuck, `0x${address.toString(16)} is unmapped but its morsel stays counted as mapped`);
        const root = pfnOf(lo, hi);
        this.mappingGone(root, this.walker.trusted(root)); // a damaged entry was never a counted mapping of that frame
        return;
      }
      if (l === 1) break;
      table = this.walker.follow(table, idx, lo, hi);
    }
    throw new MorselError('ENOENT', `nothing is mapped at 0x${address.toString(16)}`);
  }

  /**
   * After a mapping's entry is gone and the TLBs are shot down (the caller waited), give back
   * the use (the last use of a PENDING morsel destroys it: no TLB may still
   * hold its frames by then).
   */
  private mappingGone(rootFrame: number, counted = true): void {
    if (counted) this.morsels.release(rootFrame);
  }

  /**
   * The TLB shootdown: bump the epoch (every Mmu flushes on its next access),
   * then wait until each thread that was inside an access section has left
   * it (quiesce.ts). Only then may frames the old entries reached be freed.
   * Returns -1, or the reader slot that did not leave within quiesceTimeoutMs.
   * # Warning: then that thread may still hold old translations, so the
   * caller must keep what they reach allocated (and say so: timedOut).
   */
  private shootdown(): number {
    Atomics.add(this.control, CTL_EPOCH, 1);
    return waitQuiescent(this.readers, this.quiesceTimeoutMs);
  }

  /** EBUSY if this thread is inside an access section of the space (waiting for readers would wait for itself). */
  checkNotInside(what: string): void {
    check(!insideSection(this.readers), 'EBUSY', () => `${what} inside an Mmu access section of this thread: it would wait for itself`);
  }

  /**
   * After a region-wide shootdown (copy-on-write): waits until every access
   * section open now has ended. ETIMEDOUT after quiesceTimeoutMs.
   */
  waitReaders(what: string): void {
    const slot = waitQuiescent(this.readers, this.quiesceTimeoutMs);
    if (slot >= 0) throw this.timedOut(slot, `${what}: writes of an open access section may reach both copies`);
  }

  private timedOut(slot: number, consequence: string): MorselError {
    return new MorselError('ETIMEDOUT', `${consequence}: reader slot ${slot} stayed inside one access for ${this.quiesceTimeoutMs} ms (a thread stuck or terminated mid-access)`);
  }

  /** All mappings, in address order. */
  mappings(): Mapping[] {
    checkLive(this.readers, 'mappings');
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
   * process never counted. Marking the space dead is the commit point: from
   * then on map, unmap and every Mmu of it fail with EBADF; the teardown
   * starts only after the shootdown has waited for readers.
   * # Warning: map/unmap on another thread racing with destroy is the
   * caller's race (they are not reader sections); accesses are safe.
   */
  destroy(counted = true): void {
    check(!insideSection(this.readers), 'EBUSY', 'destroy inside an Mmu access section of this thread: it would wait for itself');
    check(markDead(this.readers), 'EBADF', 'destroy: the address space was already destroyed');
    this.onDestroy?.();
    const stuck = this.shootdown();
    if (stuck >= 0) throw this.timedOut(stuck, 'the space is destroyed but its tables stay allocated');
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
  }
}

/** The spaces registry of user slot `slot`. */
function spacesRegistry(morsels: Morsels, slot: number): Registry {
  return new Registry(morsels.region, morsels.alloc, userSlotRoot(morsels.region, slot, SLOT_SPACES_ROOT));
}

/**
 * The spaces registered in user slot `slot`: root frame and level count, and
 * the damaged values (not their key's space root, or a root the walker
 * refuses), which are never torn down: that would clear entries of a frame
 * that is not a space table.
 */
function registeredSpaces(morsels: Morsels, slot: number): { roots: { root: number; levels: Levels }[]; damaged: [number, number, number][] } {
  const roots: { root: number; levels: Levels }[] = [];
  const damaged: [number, number, number][] = [];
  spacesRegistry(morsels, slot).forEach((key, lo, hi) => {
    if (pfnOf(lo, hi) === key && morsels.walker.trusted(key)) roots.push({ root: key, levels: hi & SPACE_LEVELS5 ? 5 : 4 });
    else damaged.push([key, lo, hi]);
  });
  return { roots, damaged };
}

/** How many spaces user slot `slot` has registered. */
export function countSpaces(morsels: Morsels, slot: number): number {
  const { roots, damaged } = registeredSpaces(morsels, slot);
  return roots.length + damaged.length;
}

/**
 * Tears down every space registered in user slot `slot`; `counted` is false
 * for a dead process's spaces, whose mappings this process never counted.
 * Returns how many it removed. Morsel frames are never touched.
 */
export function reapSpaces(morsels: Morsels, slot: number, counted: boolean): number {
  const { roots, damaged } = registeredSpaces(morsels, slot);
  for (const { root, levels } of roots) {
    AddressSpace.attachInSlot(morsels, { rootFrame: root, levels, control: new SharedArrayBuffer(CONTROL_BYTES) }, slot).destroy(counted);
  }
  // Dropped unregistered: whatever tables hung below are unreachable now, reclaimed by the next recovery or repair.
  const registry = spacesRegistry(morsels, slot);
  for (const [key, lo, hi] of damaged) registry.remove(key, lo, hi);
  return roots.length + damaged.length;
}


/** Visits the frames user slot `slot`'s spaces own: registry tables, space roots and their inner tables (not morsels). */
export function forEachSpaceFrame(morsels: Morsels, slot: number, visit: (frame: Frame) => void): void {
  const region = morsels.region;
  const tables = (table: Frame, level: number): void => {
    visit(table);
    for (let idx = 0; idx < 512 && level > 1; idx++) {
      const lo = region.loadLo(table, idx);
      if (!isPresent(lo)) continue;
      const hi = region.loadHi(table, idx);
      if ((hi & HI_MORSEL_TOP) === 0) tables(pfnOf(lo, hi) as Frame, level - 1);
    }
  };
  spacesRegistry(morsels, slot).forEach(() => {}, visit);
  for (const { root, levels } of registeredSpaces(morsels, slot).roots) tables(root as Frame, levels);
}
