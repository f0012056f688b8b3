/**
 * The morsel primitive (thesis ch. 3): create, lazy lock-free population,
 * explicit batch population, inspection and crash-consistent destroy, plus
 * meta morsels. Every live morsel is registered in the live table (root slot
 * 0, keyed by root frame), so it is reachable after a restart.
 *
 * Crash windows, all closed by recovery rebuilding the allocator from what is
 * reachable (see src/recovery): a frame allocated but not yet linked by its
 * CAS; a root created but not yet registered (create rolls back); a destroy
 * after unregistering (it rolls forward: the whole subtree is unreachable).
 * Each window is marked with a crashPoint() for the torture harness.
 */
import { MorselError, assert, check } from '../errors.js';
import { FrameAllocator } from '../alloc/llfree.js';
import { firstAllocatableFrame } from '../physical/layout.js';
import { ROOT_SLOT_LIVE_TABLE } from '../physical/superblock.js';
import type { Region } from '../physical/region.js';
import { pfnOf } from '../paging/entry.js';
import { Walker } from '../paging/walk.js';
import { PAGE_SIZE, type Frame } from '../units.js';
import { decodeIdBits, encodeId, hex, type DecodedId, type MorselId } from './id.js';
import { entrySpan, orderBytes, tableIndex, type Order } from './order.js';
import { Registry, superblockRoot } from './registry.js';
import { META_DATA_ID_ENTRY, readMetaPage, writeMetaPage, type MetaInfo } from './meta.js';
import { crashPoint } from '../crash-point.js';

export interface MorselStats {
  id: MorselId;
  order: Order;
  meta: boolean;
  rootFrame: number;
  /** page-table frames in the subtree, including the root table */
  tableFrames: number;
  /** data pages in the subtree (order 0: the root itself) */
  dataPages: number;
  virtualBytes: number;
  /** for a meta morsel: its metadata and the data morsel's stats */
  metaInfo?: MetaInfo;
  data?: MorselStats;
}

export class Morsels {
  readonly live: Registry;
  /** Every table access of this instance goes through it (src/paging/walk.ts). */
  readonly walker: Walker;
  private readonly firstFrame: number;

  constructor(
    readonly region: Region,
    readonly alloc: FrameAllocator,
  ) {
    this.walker = new Walker(region, alloc);
    this.live = new Registry(region, alloc, superblockRoot(region, ROOT_SLOT_LIVE_TABLE));
    this.firstFrame = firstAllocatableFrame(region.frameCount);
  }

  // --- create -----------------------------------------------------------------

  /** Creates a morsel of `order`: one 4 KiB root, whatever the order (thesis Fig 3.2). */
  create(order: Order): MorselId {
    const root = this.zeroedFrame();
    const id = encodeId(root, order, false);
    crashPoint('create:before-register');
    this.registerOrFree(id, root);
    return id;
  }

  /**
   * Creates a meta morsel (an order-0 page of metadata) for a fresh data
   * morsel of `order` that always maps at `address`.
   */
  createMeta(order: Order, opts: { address: number; sizeBytes?: number }): MorselId {
    const size = opts.sizeBytes ?? orderBytes(order);
    check(Number.isSafeInteger(opts.address) && opts.address >= 0, 'EINVAL', () => `meta address must be a non-negative integer, got ${opts.address}`);
    check(opts.address % orderBytes(order) === 0, 'EMISALIGNED', () => `address 0x${opts.address.toString(16)} is not aligned to the order-${order} size`);
    check(Number.isSafeInteger(size) && size > 0 && size <= orderBytes(order), 'ERANGE', () => `size ${size} does not fit an order-${order} morsel`);
    // The data morsel is not registered: it is reachable through its meta morsel.
    const dataRoot = this.zeroedFrame();
    crashPoint('createMeta:before-meta-page');
    let metaPage: Frame;
    try {
      metaPage = this.zeroedFrame();
    } catch (e) {
      this.alloc.free(dataRoot); // ENOSPC: an error path must not leak the data root
      throw e;
    }
    const dataId = encodeId(dataRoot, order, false);
    writeMetaPage(this.region, metaPage, { address: opts.address, sizeBytes: size, createdMs: Date.now(), dataId });
    const id = encodeId(metaPage, 0, true);
    crashPoint('createMeta:before-register');
    this.registerOrFree(id, dataRoot, metaPage);
    return id;
  }

  /**
   * Registers `id`, the commit point of a create. Growing the live table can
   * fail (ENOSPC); then the unregistered frames are freed here: a crash
   * would let recovery reclaim them, but a clean close would keep them
   * allocated and unreachable forever.
   */
  private registerOrFree(id: MorselId, ...frames: Frame[]): void {
    const d = decodeIdBits(id);
    try {
      this.live.add(d.rootFrame, d.lo, d.hi);
    } catch (e) {
      for (const f of frames) this.alloc.free(f);
      throw e;
    }
  }

  private zeroedFrame(): Frame {
    return this.walker.zeroedFrame();
  }

  // --- decode -------------------------------------------------------------------

  /**
   * Validates an ID against this region: structure, PFN inside the
   * allocatable range, root frame allocated, and registered as live (which
   * also rejects an ID whose order or flags were altered).
   */
  decode(id: bigint): DecodedId {
    const d = decodeIdBits(id);
    check(d.rootFrame >= this.firstFrame && d.rootFrame < this.region.frameCount, 'EINVAL', () => `morsel ID ${hex(id)}: root frame ${d.rootFrame} outside the allocatable range`);
    check(this.alloc.isAllocated(d.rootFrame), 'EINVAL', () => `morsel ID ${hex(id)}: root frame ${d.rootFrame} is free`);
    const reg = this.live.get(d.rootFrame);
    check(reg !== null && reg[0] === d.lo && reg[1] === d.hi, 'EINVAL', () => `morsel ID ${hex(id)} is not a live morsel`);
    return d;
  }

  /** The data morsel an ID stands for: itself, or a meta morsel's data morsel. */
  dataOf(d: DecodedId): DecodedId {
    if (!d.meta) return d;
    const info = this.metaOf(d);
    let data: DecodedId;
    try {
      data = decodeIdBits(info.dataId);
    } catch (e) {
      throw new MorselError('ECORRUPT', `meta page in frame ${d.rootFrame}: its data ID is invalid (${(e as Error).message})`);
    }
    // The data ID is metadata like any entry: its root is followed only if the walker would follow it.
    this.walker.root(data.rootFrame, () => `meta page in frame ${d.rootFrame} (data ID)`);
    check(!data.meta && info.sizeBytes <= orderBytes(data.order), 'ECORRUPT', () => `meta page in frame ${d.rootFrame}: data ID ${hex(info.dataId)} does not fit its size ${info.sizeBytes}`);
    return data;
  }

  metaOf(d: DecodedId): MetaInfo {
    assert(d.meta, 'metaOf on a meta morsel');
    return readMetaPage(this.region, d.rootFrame);
  }

  // --- population -----------------------------------------------------------------

  /**
   * The fault handler (thesis 3.4): walks from `table` (a level-`level`
   * table of the morsel; its root, or where the MMU's walk found the missing
   * entry, so a fault never walks the levels above again) to the data page
   * for byte `offset`, creating each missing table or page with the
   * lock-free protocol: check, allocate, prepare, CAS; a lost CAS frees the
   * frame and continues with the winner's. Returns the data frame. `offset`
   * may also be the faulting virtual address: morsels are naturally aligned,
   * so the table indices below the morsel's top are the same.
   */
  populateFrom(table: Frame, level: number, offset: number): Frame {
    for (let l = level; l >= 1; l--) table = this.ensureChild(table, tableIndex(offset, l));
    return table;
  }

  /** Child of `table` at `idx`, created if missing (validated by the walker). */
  private ensureChild(table: Frame, idx: number): Frame {
    return this.walker.ensureChild(table, idx, 'populate:before-link', 'populate:lost-race');
  }

  /** The data frame for `offset` if populated, else -1. Never allocates. */
  lookupPage(root: Frame, order: Order, offset: number): number {
    return this.walker.descend(root, order, offset, 0);
  }

  /**
   * Explicit batch population of [offset, offset + length) (thesis future
   * work, exmap-style): one descent per table instead of one walk per page.
   * Returns the number of frames it created.
   */
  populate(id: bigint, offset: number, length: number): number {
    const d = this.dataOf(this.decode(id));
    const size = orderBytes(d.order);
    check(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= size, 'ERANGE', () => `range [${offset}, ${offset + length}) outside the ${size}-byte morsel`);
    if (d.order === 0 || length === 0) return 0;
    const first = Math.floor(offset / PAGE_SIZE);
    const last = Math.floor((offset + length - 1) / PAGE_SIZE);
    const before = this.walker.linkedFrames;
    this.populateRange(d.rootFrame, d.order, first, last);
    return this.walker.linkedFrames - before;
  }

  /** Populates pages [first, last] (page numbers inside the table at `level`). */
  private populateRange(table: Frame, level: number, first: number, last: number): void {
    const span = entrySpan(level) / PAGE_SIZE; // pages per entry of this table
    for (let idx = Math.floor(first / span); idx <= Math.floor(last / span); idx++) {
      const child = this.ensureChild(table, idx);
      if (level > 1) {
        const lo = Math.max(first, idx * span) - idx * span;
        const hi = Math.min(last, idx * span + span - 1) - idx * span;
        this.populateRange(child, level - 1, lo, hi);
      }
    }
  }


  // --- access without a mapping ------------------------------------------------------

  /**
   * pread: copies bytes [offset, offset + out.length) of the morsel `id`
   * stands for (a meta morsel: its data morsel) into `out`. Pages never
   * populated read as zeros and stay unpopulated. Every table is followed
   * through the walker, so damaged metadata gives ECORRUPT, never a read of
   * a frame outside the morsel's subtree range.
   */
  read(id: bigint, offset: number, out: Uint8Array): void {
    const d = this.accessRange(id, offset, out.length);
    this.eachPage(d, offset, out.length, false, (frame, inPage, at, n) => {
      if (frame < 0) out.fill(0, at, at + n);
      else out.set(this.region.bytesOf(frame as Frame).subarray(this.region.byteOffsetInWindow(frame as Frame) + inPage, this.region.byteOffsetInWindow(frame as Frame) + inPage + n), at);
    });
  }

  /** pwrite: copies `bytes` into the morsel at `offset`, populating pages as needed (ERANGE past its size, before anything changes). */
  write(id: bigint, offset: number, bytes: Uint8Array): void {
    const d = this.accessRange(id, offset, bytes.length);
    this.eachPage(d, offset, bytes.length, true, (frame, inPage, at, n) => {
      this.region.bytesOf(frame as Frame).set(bytes.subarray(at, at + n), this.region.byteOffsetInWindow(frame as Frame) + inPage);
    });
  }

  /** The data morsel of `id` after checking that [offset, offset + length) lies inside its byte size. */
  private accessRange(id: bigint, offset: number, length: number): DecodedId {
    const d = this.decode(id);
    const data = this.dataOf(d);
    const size = d.meta ? this.metaOf(d).sizeBytes : orderBytes(data.order);
    check(Number.isSafeInteger(offset) && offset >= 0 && offset + length <= size, 'ERANGE', () => `[${offset}, ${offset + length}) is outside the ${size}-byte morsel`);
    return data;
  }

  /** Calls `visit(frame, offsetInPage, offsetInBuffer, bytes)` per page of the range; frame -1 = unpopulated (only when !populate). Bounded by the range's page count. */
  private eachPage(d: DecodedId, offset: number, length: number, populate: boolean, visit: (frame: number, inPage: number, at: number, n: number) => void): void {
    for (let at = 0; at < length; ) {
      const pos = offset + at;
      const inPage = pos % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, length - at);
      const frame = d.order === 0 ? d.rootFrame : populate ? this.populateFrom(d.rootFrame, d.order, pos) : this.lookupPage(d.rootFrame, d.order, pos);
      visit(frame, inPage, at, n);
      at += n;
    }
  }

  // --- inspect --------------------------------------------------------------------

  stats(id: bigint): MorselStats {
    const d = this.decode(id);
    if (d.meta) {
      const metaInfo = this.metaOf(d);
      const data = this.subtreeStats(this.dataOf(d));
      return { id: d.id, order: d.order, meta: true, rootFrame: d.rootFrame, tableFrames: data.tableFrames, dataPages: data.dataPages + 1, virtualBytes: data.virtualBytes, metaInfo, data };
    }
    return this.subtreeStats(d);
  }

  private subtreeStats(d: DecodedId): MorselStats {
    const counts = { tables: 0, pages: 0 };
    if (d.order === 0) counts.pages = 1;
    else this.forEachFrame(d.rootFrame, d.order, (_f, level) => (level === 0 ? counts.pages++ : counts.tables++));
    return { id: d.id, order: d.order, meta: false, rootFrame: d.rootFrame, tableFrames: counts.tables, dataPages: counts.pages, virtualBytes: orderBytes(d.order) };
  }

  /** Visits every frame of a subtree (tables with their level, pages with level 0), pre-order. Depth bounded by `level`. */
  forEachFrame(table: Frame, level: number, visit: (frame: Frame, level: number) => void): void {
    visit(table, level);
    if (level === 0) return;
    this.walker.forEachPresent(table, (idx, lo, hi) => this.forEachFrame(this.walker.follow(table, idx, lo, hi), level - 1, visit));
  }

  // --- destroy --------------------------------------------------------------------

  /**
   * Destroys a morsel (thesis 3.3.3): post-order, every element unlinked from
   * its parent before its frame is freed. For a meta morsel (thesis 3.5): the
   * data morsel except its root, then the root unlinked from the meta page and
   * freed, then the meta morsel. EBUSY while mapped in a space of this process.
   *
   * The morsel leaves the live table first: that CAS is the destroy's commit
   * point. A crash before it leaves the morsel intact, a crash after it
   * leaves a subtree nothing reaches, which recovery reclaims whole. (The
   * thesis has no live table and unregisters nothing; unregistering last, an
   * interrupted destroy left a live morsel with some pages already gone:
   * neither rolled back nor completed.) It also makes a concurrent second
   * destroy of the same ID fail cleanly with EINVAL.
   */
  destroy(id: bigint): void {
    const d = this.decode(id);
    const data = this.dataOf(d);
    if (Atomics.load(this.region.mapCounts, data.rootFrame) !== 0) {
      throw new MorselError('EBUSY', `morsel ${hex(id)} is mapped (${Atomics.load(this.region.mapCounts, data.rootFrame)} mapping(s))`);
    }
    if (!this.live.remove(d.rootFrame, d.lo, d.hi)) throw new MorselError('EINVAL', `morsel ${hex(d.id)} was destroyed concurrently`);
    crashPoint('destroy:after-unregister');
    if (d.meta) {
      this.destroyChildren(data.rootFrame, data.order);
      const lo = this.region.loadLo(d.rootFrame, META_DATA_ID_ENTRY);
      const hi = this.region.loadHi(d.rootFrame, META_DATA_ID_ENTRY);
      assert(this.region.casEntry(d.rootFrame, META_DATA_ID_ENTRY, lo, hi, 0, 0), 'meta page data ID unchanged during destroy');
      crashPoint('destroy:meta-after-clear-id');
      this.alloc.free(data.rootFrame);
    } else {
      this.destroyChildren(d.rootFrame, d.order);
    }
    crashPoint('destroy:before-free-root');
    this.alloc.free(d.rootFrame);
  }

  /** Frees everything below `table` (a level-`level` table), leaving the table itself. Depth bounded by `level`. */
  private destroyChildren(table: Frame, level: number): void {
    if (level === 0) return;
    this.walker.forEachPresent(table, (idx, lo, hi) => {
      if (!this.walker.trusted(pfnOf(lo, hi))) {
        // Damage (the walker refuses the frame): cleared, never followed or freed. Whatever the
        // entry once named stays allocated and unreachable: `morsel check --repair` reclaims it.
        assert(this.region.casEntry(table, idx, lo, hi, 0, 0), 'subtree entry unchanged during destroy');
        return;
      }
      const child = pfnOf(lo, hi) as Frame;
      this.destroyChildren(child, level - 1);
      // Unlink before free: a crash in between loses at most this one frame
      // to the allocator, and recovery finds it unreachable and reclaims it.
      assert(this.region.casEntry(table, idx, lo, hi, 0, 0), 'subtree entry unchanged during destroy');
      crashPoint('destroy:after-unlink');
      this.alloc.free(child);
    });
  }

  /** All live morsel IDs (walks the live table). */
  list(): MorselId[] {
    const out: MorselId[] = [];
    this.live.forEach((_k, lo, hi) => out.push(((BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)) as MorselId));
    return out;
  }
}
