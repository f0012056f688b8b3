/**
 * The composition root: a region, this thread's allocator, and the morsel
 * primitive over them. `Memory.open` is where lifecycle lives.
 *
 * Sharing a region file between processes (membership: src/physical/membership.ts):
 *   Memory.open(path)                       read-write user (mode 'shared', the default)
 *   Memory.open(path, { mode: 'readonly' }) PROT_READ mapping, no user slot, never
 *                                           recovers or writes (every write: EACCES);
 *                                           a file this user can only read opens so
 *   Memory.open(path, { mode: 'exclusive' }) alone for the whole session, or EBUSY
 * The first read-write user recovers a region whose last users crashed (or
 * that a dead user left dirty); later users join it as it is, reaping the
 * slots of users that died meanwhile. Each user owns one of 64 user slots:
 * its address spaces and usage counts live there, and close() (also run on
 * process exit and by `using`) destroys them. The last user to leave marks
 * the region clean.
 */
import { FrameAllocator } from './alloc/llfree.js';
import { check } from './errors.js';
import { Morsels } from './morsel/morsels.js';
import { NO_SLOT, Region, type OpenMode, type RegionShare, type WaitResult } from './physical/region.js';
import { AddressSpace, type Levels } from './space/address-space.js';
import { countSlotSpaces, emptyOwnSlot, reapDeadSlots } from './space/user-slots.js';
import { checkRootTables, formatRootTables } from './paging/walk.js';
import { collectReachable, hugeChildrenOf } from './recovery/reachable.js';
import { crashPoint } from './crash-point.js';
import { Names } from './manage/names.js';
import { Namespace } from './manage/namespace.js';
import { registerManageVisitors } from './manage/reach.js';

registerManageVisitors(); // before any scan: recovery must reach the names and reservations

export type { OpenMode, WaitResult } from './physical/region.js';

export interface OpenOptions {
  mode?: OpenMode;
  /**
   * false: an inspection or repair session: nothing is recovered, rebuilt
   * or reaped, and no user slot is claimed (what is found is what is on
   * media). Default true.
   */
  recover?: boolean;
}

export interface OpenReport {
  /** the region's last users crashed (or one died while others stayed) */
  crashed: boolean;
  /** other live processes had the region open: nothing was rebuilt */
  joined?: boolean;
  /** mapped read-only */
  readonly?: boolean;
  /** frames the allocator had marked used that nothing reaches (0 after a clean close) */
  reclaimedFrames: number;
  /** address spaces of dead users torn down (by recovery, or by reaping their slots) */
  reapedSpaces: number;
  /** dead users' slots emptied */
  reapedSlots: number;
}

/** Memories of this process still open: closed cleanly when the process exits. */
const openMemories = new Set<Memory>();
let exitHookInstalled = false;

function closeAllOnExit(): void {
  for (const memory of [...openMemories]) memory[Symbol.dispose]();
}

export class Memory {
  private readonly openMorsels: Morsels;
  private closed = false;
  /** Address spaces this thread created and has not destroyed: close() tears them down through their live objects, so their Mmus learn they are gone. */
  private readonly spaces = new Set<AddressSpace>();
  /** What opening found and did (null for a region created in this process). */
  report: OpenReport | null = null;
  /**
   * True while the region's last user crashed and recovery has not run (a
   * read-only open, or `recover: false`): close() then leaves the region
   * marked crashed, so the next open still recovers it.
   */
  recoveryPending = false;

  private namesApi: Names | null = null;

  /** Named morsels, handles, rights, reservations (src/manage/names.ts). */
  get names(): Names {
    if (this.namesApi === null) {
      this.namesApi = new Names(this.morsels, new Namespace(this.region, this.alloc));
      this.namesApi.sharing = {
        check: () => this.spaces.forEach((space) => space.checkNotInside('clone')),
        wait: () => this.spaces.forEach((space) => space.waitReaders('clone')),
      };
    }
    return this.namesApi;
  }

  /** `owner`: this Memory holds the region's membership (false in worker threads). */
  private constructor(
    readonly region: Region,
    readonly alloc: FrameAllocator,
    private readonly owner: boolean,
  ) {
    this.openMorsels = new Morsels(region, alloc);
    if (owner && region.persistent) {
      openMemories.add(this);
      if (!exitHookInstalled) process.on('exit', closeAllOnExit);
      exitHookInstalled = true;
    }
  }

  /** The morsel primitive over this memory (EBADF after close). */
  get morsels(): Morsels {
    this.checkOpen();
    return this.openMorsels;
  }

  private checkOpen(): void {
    check(!this.closed, 'EBADF', 'this memory is closed');
  }

  /** A fresh volatile region (SharedArrayBuffer): one process, user slot 0. */
  static volatile(sizeBytes: number): Memory {
    const region = Region.createVolatile(sizeBytes);
    FrameAllocator.format(region);
    const memory = new Memory(region, new FrameAllocator(region), true);
    formatRootTables(memory.openMorsels.walker);
    return memory;
  }

  /**
   * Creates and formats a persistent region file (blocks reserved: ENOSPC
   * now, never SIGBUS later). `force` overwrites an existing file unless
   * another process uses it (EBUSY).
   */
  static create(path: string, sizeBytes: number, opts: { force?: boolean } = {}): Memory {
    const region = Region.createFile(path, sizeBytes, opts);
    let memory: Memory | undefined;
    try {
      FrameAllocator.format(region);
      memory = new Memory(region, new FrameAllocator(region), true);
      formatRootTables(memory.openMorsels.walker);
      region.admit({ claim: true, markOpen: true, keepExclusive: false });
      return memory;
    } catch (e) {
      if (memory !== undefined) openMemories.delete(memory);
      region.abandon();
      throw e;
    }
  }

  /** Opens a region file (see the module comment and OpenOptions). */
  static open(path: string, opts: OpenOptions = {}): Memory {
    const { region, crashed, alone } = Region.openFile(path, { mode: opts.mode });
    let memory: Memory | undefined;
    try {
      memory = new Memory(region, new FrameAllocator(region), true);
      if (opts.recover !== false) rootsOrClose(memory, crashed); // `check` reports bad roots instead
      memory.report = memory.admit(crashed, alone, opts);
      return memory;
    } catch (e) {
      if (memory !== undefined) openMemories.delete(memory);
      region.abandon(); // as if this process had died here: nothing half-done is marked clean
      throw e;
    }
  }

  /** Opening, after the locks: recover or join, then claim a user slot. */
  private admit(crashed: boolean, alone: boolean, opts: OpenOptions): OpenReport {
    const region = this.region;
    const keepExclusive = opts.mode === 'exclusive';
    const none = { crashed, reclaimedFrames: 0, reapedSpaces: 0, reapedSlots: 0 };
    if (!region.writable) {
      this.recoveryPending = crashed;
      return { ...none, readonly: true };
    }
    if (opts.recover === false) {
      // Inspection or repair: nothing rebuilt, reaped or claimed.
      this.recoveryPending = crashed;
      region.admit({ claim: false, markOpen: false, keepExclusive });
      return none;
    }
    if (!alone) {
      // Live users: their reservations and in-flight updates are not ours to rebuild.
      const reaped = reapDeadSlots(this.morsels);
      if (reaped.slots > 0) this.names.reapPending(); // their last uses of unlinked morsels died with them
      region.admit({ claim: true, markOpen: false, keepExclusive });
      return { ...none, joined: true, reapedSpaces: reaped.spaces, reapedSlots: reaped.slots };
    }
    let report: OpenReport = none;
    if (crashed) report = this.recover();
    else FrameAllocator.rebuildCounters(region); // tree reservations are per-process
    region.admit({ claim: true, markOpen: true, keepExclusive });
    // A destroy claims in this process's usage registry: only with a slot. A
    // crash in here leaves the region marked open (crashed): recovered again.
    if (crashed) this.names.reapPending();
    return report;
  }

  /**
   * Crash recovery, only while holding the region exclusively (every
   * recorded user is dead): their slots (address spaces, usage counts) are
   * cleared, then the allocator is rebuilt from what the live structures
   * reach, which frees the slots' tables and every frame in flight.
   */
  recover(): OpenReport {
    this.checkOpen();
    check(this.region.alone && this.region.writable, 'EBUSY', 'recovery needs the region alone (other users are live, or it is open read-only)');
    // Scan before changing anything: a corrupt region (ECORRUPT) is left as
    // found, for `morsel check --repair`. Recovery never formats.
    const usedBefore = this.alloc.totalAllocatable() - this.alloc.freeFrames();
    const reach = collectReachable(this.morsels);
    const reapedSpaces = countSlotSpaces(this.morsels);
    const reapedSlots = this.region.clearAllSlots();
    crashPoint('recover:after-drop-spaces');
    // Idempotent: a crash from here on leaves the region marked open, and the next open recovers again.
    this.morsels.cow.forgetCounts(); // its storage is freed by the rebuild, its counts recomputed after it
    FrameAllocator.rebuildFrom(this.region, (f: number) => reach.used[f] === 1, hugeChildrenOf(reach.hugeLeaves));
    this.alloc.release();
    this.morsels.cow.rebuildCounts(reach.shared, reach.lazyTables);
    // Management state a crash left mid-decision: stale DYING, half-done
    // renames/rmdirs and unpublished name records, reservation counts. (The
    // PENDING morsels of interrupted creates/unlinks are reaped by admit,
    // once this process holds a user slot.)
    this.morsels.clearDying();
    this.morsels.clearUnownedWords();
    this.names.ns.collectGarbage();
    this.names.reservations.repairCounts();
    this.recoveryPending = false;
    return { crashed: true, reclaimedFrames: usedBefore - reach.frames, reapedSpaces, reapedSlots };
  }

  /** The same memory seen from a worker thread (its own allocator; the process's user slot). */
  static attach(share: RegionShare): Memory {
    const region = Region.fromShare(share);
    return new Memory(region, new FrameAllocator(region), false);
  }

  share(): RegionShare {
    this.checkOpen();
    return this.region.share();
  }

  createSpace(opts: { levels?: Levels } = {}): AddressSpace {
    const space = AddressSpace.create(this.morsels, opts);
    this.spaces.add(space);
    space.onDestroy = () => this.spaces.delete(space);
    return space;
  }

  /** Sleeps while the int32 at region byte `byteOffset` is `expected` (see Region.wait: threads and processes). */
  wait(byteOffset: number, expected: number, timeoutMs: number): WaitResult {
    return this.region.wait(byteOffset, expected, timeoutMs);
  }

  notify(byteOffset: number, count: number): number {
    return this.region.notify(byteOffset, count);
  }

  /**
   * Returns this thread's reservation; the owner also destroys this
   * process's address spaces, releases its user slot and leaves the region
   * (the last user marks it clean). Worker threads must be done first.
   */
  close(): void {
    this.checkOpen();
    for (const space of [...this.spaces]) space.destroy();
    this.closed = true;
    if (this.region.writable) this.alloc.release();
    if (!this.owner || !this.region.persistent) return;
    if (!openMemories.delete(this)) return; // closed already
    if (this.region.writable && this.region.userSlot !== NO_SLOT) {
      // Handles left open: their PENDING morsels whose last user we were go now.
      // Generations are read while our uses still pin them (see Morsels.release).
      const words: [number, number][] = [];
      this.openMorsels.usage.forEachMine((_key, _count, wordFrame) => words.push([wordFrame, this.openMorsels.generationOf(wordFrame)]));
      emptyOwnSlot(this.openMorsels);
      for (const [w, generation] of words) this.openMorsels.reapIfPending(w, generation);
      // Those destroys bracket DYING with claims in a fresh usage registry of our slot: drop it too.
      if (words.length > 0) emptyOwnSlot(this.openMorsels);
      this.alloc.release(); // frames the teardown freed into our reservation
    }
    this.region.close({ markClean: !this.recoveryPending });
  }

  /** `using` closes unless close() already ran. */
  [Symbol.dispose](): void {
    if (!this.closed) this.close();
  }

  /**
   * Leaves as a killed process would: locks dropped by "the kernel", slot and
   * spaces left for a reaper, the region not marked clean. For crash tests.
   */
  abandon(): void {
    this.closed = true;
    openMemories.delete(this);
    this.region.abandon();
  }
}

/**
 * Open-time check of the root tables (src/paging/walk.ts checkRootTables),
 * before anything is rebuilt from them. On ECORRUPT the region is closed as
 * it was found (a clean region is marked clean again, a crashed one stays
 * crashed), so a refused open leaves the file byte-for-byte unchanged.
 */
function rootsOrClose(memory: Memory, crashed: boolean): void {
  try {
    checkRootTables(memory.morsels.walker);
  } catch (e) {
    openMemories.delete(memory);
    memory.region.close({ markClean: !crashed });
    throw e;
  }
}
