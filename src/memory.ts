/**
 * The composition root: a region, this thread's allocator, and the morsel
 * primitive over them. `Memory.open` is where lifecycle lives: a region left
 * open by a crashed process is recovered (allocator rebuilt from the live
 * structures), one closed cleanly only has its per-process state reset.
 */
import { FrameAllocator } from './alloc/llfree.js';
import { Morsels } from './morsel/morsels.js';
import { Region, type RegionShare } from './physical/region.js';
import { AddressSpace, ROOT_SLOT_SPACES, reapSpaces, type Levels } from './space/address-space.js';
import { collectReachable } from './recovery/reachable.js';
import { crashPoint } from './crash-point.js';
import { dropUsage, forgetAllUsage } from './morsel/usage.js';
import { Names } from './manage/names.js';
import { Namespace } from './manage/namespace.js';

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
  private namesApi: Names | null = null;

  private constructor(
    readonly region: Region,
    readonly alloc: FrameAllocator,
    /** false in a worker thread (attach): the process's handles and counts are not this instance's to drop */
    private readonly ownsProcess = true,
  ) {
    this.morsels = new Morsels(region, alloc);
  }

  /** Named morsels, handles, rights, reservations (src/manage/names.ts). */
  get names(): Names {
    this.namesApi ??= new Names(this.morsels, new Namespace(this.region, this.alloc));
    return this.namesApi;
  }

  /** A fresh volatile region (SharedArrayBuffer). */
  static volatile(sizeBytes: number): Memory {
    const region = Region.createVolatile(sizeBytes);
    FrameAllocator.format(region);
    return new Memory(region, new FrameAllocator(region));
  }

  /** Creates and formats a persistent region file. */
  static create(path: string, sizeBytes: number, opts: { force?: boolean } = {}): Memory {
    const region = Region.createFile(path, sizeBytes, opts);
    FrameAllocator.format(region);
    return new Memory(region, new FrameAllocator(region));
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
      memory.report = { crashed, joined, reclaimedFrames: 0, reapedSpaces: 0 };
      memory.recoveryPending = crashed;
      return memory;
    }
    FrameAllocator.rebuildCounters(region); // tree reservations are per-process
    const memory = new Memory(region, new FrameAllocator(region));
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
    let reapedSpaces = 0;
    forgetAllUsage(this.region); // counts died with their processes: before the scan, so it reclaims their tables
    const spaces = this.region.loadRoot(ROOT_SLOT_SPACES);
    if (spaces !== 0n) {
      this.region.casRoot(ROOT_SLOT_SPACES, spaces, 0n);
      reapedSpaces = 1;
    }
    crashPoint('recover:after-drop-spaces');
    // Idempotent: a crash from here on leaves the region marked open, and the next open recovers again.
    FrameAllocator.rebuildFrom(this.region, (f: number) => reach.used[f] === 1);
    this.alloc.release();
    // Management state a crash left mid-decision: stale DYING, PENDING
    // morsels of interrupted creates/unlinks, reservation counts.
    this.morsels.clearDying();
    this.names.reapPending();
    this.names.reservations.repairCounts();
    this.recoveryPending = false;
    return { crashed: true, reclaimedFrames: usedBefore - reach.frames, reapedSpaces };
  }

  /** The same memory seen from a worker thread (its own allocator instance). */
  static attach(share: RegionShare): Memory {
    const region = Region.fromShare(share);
    return new Memory(region, new FrameAllocator(region), false);
  }

  share(): RegionShare {
    return this.region.share();
  }

  createSpace(opts: { levels?: Levels } = {}): AddressSpace {
    return AddressSpace.create(this.morsels, opts);
  }

  /**
   * Forgets this process's uses (handles not closed); a PENDING morsel whose
   * last user was this process is destroyed. (Mappings live in spaces, which
   * the caller destroys first; see the address-space registry.)
   */
  private dropUses(): void {
    const words: number[] = [];
    this.morsels.usage.forEachMine((_key, _count, wordFrame) => words.push(wordFrame));
    dropUsage(this.region, this.alloc, this.region.userSlot);
    for (const w of words) this.morsels.reapIfPending(w);
  }

  /** Returns this thread's reservation and, for a file, records a clean shutdown. */
  close(): void {
    if (this.ownsProcess) this.dropUses();
    this.alloc.release();
    if (!this.region.persistent) return;
    this.region.close({ markClean: !this.recoveryPending });
  }
}
