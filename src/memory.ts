/**
 * The composition root: a region, this thread's allocator, and the morsel
 * primitive over them. `Memory.open` is where lifecycle lives: a region left
 * open by a crashed process is recovered (allocator rebuilt from the live
 * structures), one closed cleanly only has its per-process state reset.
 */
import { FrameAllocator } from './alloc/llfree.js';
import { Morsels } from './morsel/morsels.js';
import { Region, type RegionShare } from './physical/region.js';
import { AddressSpace, dropSpaces, reapSpaces, type Levels } from './space/address-space.js';
import { checkRootTables, formatRootTables } from './paging/walk.js';
import { collectReachable, dropSlotRoots } from './recovery/reachable.js';
import { crashPoint } from './crash-point.js';

export interface OpenReport {
  crashed: boolean;
  /** other live processes had the region open: nothing was rebuilt */
  joined?: boolean;
  /** frames the allocator had marked used that nothing reaches (0 after a clean close) */
  reclaimedFrames: number;
  reapedSpaces: number;
}

export class Memory {
  readonly morsels: Morsels;
  /** What opening found and did (null for a region created in this process). */
  report: OpenReport | null = null;

  private constructor(
    readonly region: Region,
    readonly alloc: FrameAllocator,
  ) {
    this.morsels = new Morsels(region, alloc);
  }

  /** A fresh volatile region (SharedArrayBuffer). */
  static volatile(sizeBytes: number): Memory {
    const region = Region.createVolatile(sizeBytes);
    FrameAllocator.format(region);
    const memory = new Memory(region, new FrameAllocator(region));
    formatRootTables(memory.morsels.walker);
    return memory;
  }

  /** Creates and formats a persistent region file. */
  static create(path: string, sizeBytes: number, opts: { force?: boolean } = {}): Memory {
    const region = Region.createFile(path, sizeBytes, opts);
    FrameAllocator.format(region);
    const memory = new Memory(region, new FrameAllocator(region));
    formatRootTables(memory.morsels.walker);
    return memory;
  }

  /**
   * True while the region's last user crashed and recovery has not run (only
   * after `open(path, { recover: false })`): close() then leaves the region
   * marked crashed, so the next open still recovers it.
   */
  recoveryPending = false;

  /**
   * Opens a region file, recovering it if its last user crashed.
   * `recover: false` is for inspection (`morsel check`): no counter rebuild,
   * no recovery, no reaping of spaces, so what is found is what is on media.
   */
  static open(path: string, opts: { recover?: boolean } = {}): Memory {
    const { region, crashed, joined } = Region.openFile(path);
    if (opts.recover === false || joined) {
      // Inspection, or a region live processes are using: their reservations,
      // spaces and in-flight updates are not ours to rebuild or reap.
      const memory = new Memory(region, new FrameAllocator(region));
      if (opts.recover !== false) rootsOrClose(memory, crashed); // `check` reports bad roots instead
      memory.report = { crashed, joined, reclaimedFrames: 0, reapedSpaces: 0 };
      memory.recoveryPending = crashed;
      return memory;
    }
    const memory = new Memory(region, new FrameAllocator(region));
    rootsOrClose(memory, crashed); // before anything is rebuilt from them
    FrameAllocator.rebuildCounters(region); // tree reservations are per-process
    memory.alloc.release();
    memory.report = crashed ? memory.recover() : { crashed: false, reclaimedFrames: 0, reapedSpaces: reapSpaces(memory.morsels) };
    return memory;
  }

  /**
   * Crash recovery: address spaces died with their process, so their root is
   * dropped; then the allocator is rebuilt from what the live table reaches.
   */
  recover(): OpenReport {
    // Scan before changing anything: a corrupt region (ECORRUPT) is left as
    // found, for `morsel check --repair`. Recovery never formats.
    const usedBefore = this.alloc.totalAllocatable() - this.alloc.freeFrames();
    const reach = collectReachable(this.morsels);
    const reapedSpaces = dropSpaces(this.morsels) + dropSlotRoots(this.region);
    crashPoint('recover:after-drop-spaces');
    // Idempotent: a crash from here on leaves the region marked open, and the next open recovers again.
    FrameAllocator.rebuildFrom(this.region, (f: number) => reach.used[f] === 1);
    this.alloc.release();
    this.recoveryPending = false;
    return { crashed: true, reclaimedFrames: usedBefore - reach.frames, reapedSpaces };
  }

  /** The same memory seen from a worker thread (its own allocator instance). */
  static attach(share: RegionShare): Memory {
    const region = Region.fromShare(share);
    return new Memory(region, new FrameAllocator(region));
  }

  share(): RegionShare {
    return this.region.share();
  }

  createSpace(opts: { levels?: Levels } = {}): AddressSpace {
    return AddressSpace.create(this.morsels, opts);
  }

  /** Returns this thread's reservation and, for a file, records a clean shutdown. */
  close(): void {
    this.alloc.release();
    if (!this.region.persistent) return;
    this.region.close({ markClean: !this.recoveryPending });
  }
}

/**
 * Open-time check of the root tables (src/paging/walk.ts checkRootTables).
 * On ECORRUPT the region is closed as it was found (a clean region is
 * marked clean again, a crashed one stays crashed), so a refused open
 * leaves the file byte-for-byte unchanged.
 */
function rootsOrClose(memory: Memory, crashed: boolean): void {
  try {
    checkRootTables(memory.morsels.walker);
  } catch (e) {
    memory.region.close({ markClean: !crashed });
    throw e;
  }
}
