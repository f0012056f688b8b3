/**
 * `morsel check` (fsck): verifies every on-media invariant of a region and,
 * with `repair`, plans (dry run) or applies (`apply`) the repairs that lose
 * nothing.
 *
 * Invariants checked:
 *   structure   every registry, morsel and space tree is well formed for its
 *               order: inner entries exactly P|RW|US plus a PFN (no PS bit,
 *               no stray bits), non-present entries all zero, PFNs inside
 *               the allocatable range, no cycles, no frame referenced twice;
 *               live-table values are valid IDs under their own root frame;
 *               meta pages are valid and name a data morsel; root slots and
 *               user-slot registry roots are allocatable frames
 *   allocation  every referenced frame is allocated, every allocated frame
 *               is referenced (else it is lost), reserved frames are
 *               allocated; child counters == free bits, tree counters ==
 *               sum of their children, huge flags consistent, no tree left
 *               reserved (src/alloc AllocatorView)
 *
 * Live regions (`live`: other processes use it): the answer is read-only and
 * only what is stable is reported. The region is scanned LIVE_SCANS times, a
 * short pause apart; a problem (or a lost frame) is reported only if every
 * scan sees it. Lost frames are never reported then (a process paused in
 * the middle of an operation holds in-flight frames for as long as it is
 * paused): frames unreachable in every scan and never seen free while
 * watched for LIVE_WATCH_MS are counted as `suspectFrames` instead, so in-flight frames (allocated, not yet linked) and entries
 * changing under the scan are not reported. Tree reservations belong to the
 * live users: never TREE_RESERVED then. Repair refuses (EBUSY).
 *
 * Repair never silently destroys data:
 *   - dry run by default: the repair runs on a private copy of the region
 *     and the report lists every change it would make and every frame it
 *     would reclaim (`plan`); the region is not touched. `apply` (CLI
 *     `--repair --yes`) runs it on the region.
 *   - it clears only entries whose content is not data: garbage in
 *     non-present entries, the data ID of an interrupted meta destroy, and
 *     anything in address spaces and per-process registries (volatile
 *     state of dead processes); it drops a crashed process's spaces (as
 *     recovery does) and rebuilds the allocator counters.
 *   - a morsel with any other problem in its subtree is quarantined: kept
 *     as it is, listed in `quarantined`, readable wherever the walker can
 *     follow it (the damaged entries give ECORRUPT), never cleared.
 *   - lost frames are reclaimed only when reachability is fully trusted and
 *     nothing is quarantined (an orphan may be a damaged morsel's real
 *     child); otherwise every allocated frame stays allocated.
 */
import { AllocatorView, FrameAllocator } from '../alloc/llfree.js';
import { MorselError } from '../errors.js';
import { CHILD_SHIFT, firstAllocatableFrame } from '../physical/layout.js';
import { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import { Memory } from '../memory.js';
import { dropSlotRoots, hugeChildrenOf, scanRegion, type Finding, type Problem, type Scan } from './reachable.js';
import { ROOT_SLOT_REFCOUNTS } from '../physical/superblock.js';
import { forEachStoredCount } from '../alloc/refcount/index.js';

/** Reference-count mismatches listed one by one at most (a lost table would list every shared frame). */
const MAX_COUNT_PROBLEMS = 100;

export type { Problem } from './reachable.js';

export interface CheckSummary {
  ok: boolean;
  /** allocated frames nothing references */
  lostFrames: number;
  problems: Problem[];
}

export interface CheckReport extends CheckSummary {
  /** the last user crashed and recovery has not run yet */
  crashed: boolean;
  /** other processes use the region: only problems stable across LIVE_SCANS scans are reported */
  live: boolean;
  /**
   * live only: frames allocated and unreachable throughout the check. Not
   * reported as lost: a process paused mid-operation holds exactly such
   * frames; check again when the region is idle to confirm a leak.
   */
  suspectFrames?: number;
  frames: { total: number; allocatable: number; allocated: number; referenced: number; free: number };
  morsels: number;
  spaces: number;
  /** morsels (IDs, hex) with damage in their subtree: kept as they are, never cleared or reclaimed */
  quarantined: string[];
  /** with repair: what it changes (applied) or would change (dry run), including frames reclaimed */
  plan?: Problem[];
  /** with repair: whether the plan was applied */
  applied?: boolean;
  /** with an applied repair: the same list as `plan` (kept for callers of the old field) */
  repaired?: Problem[];
  before?: CheckSummary;
}

export interface CheckOptions {
  /** plan the repair (dry run) */
  repair?: boolean;
  /** with repair: apply it to the region */
  apply?: boolean;
  /** other processes use the region (the caller knows: membership) */
  live?: boolean;
}

/** More problems of one code than this are summarized in one line. */
const PER_CODE_LIMIT = 16;
/** Scans of a live region, and the pause between two: in-flight operations take microseconds, a leak lasts. */
const LIVE_SCANS = 4;
const LIVE_RESCAN_MS = 25;
/** How long a live check watches frames that look lost: one seen free meanwhile was in flight, not lost. */
const LIVE_WATCH_MS = 100;
/** Bound on fix passes: a fix only removes references, so the second pass normally finds nothing. */
const FIX_PASSES = 4;

/** Checks `memory` (opened with `{ recover: false }` to see a crashed region as it is) and optionally repairs it. */
export function checkRegion(memory: Memory, opts: CheckOptions = {}): CheckReport {
  const live = opts.live === true;
  if (opts.repair && live) throw new MorselError('EBUSY', 'the region is in use by other processes; repair needs it alone');
  const before = inspect(memory, live);
  if (!opts.repair) return before;
  if (!opts.apply) return { ...before, plan: dryRun(memory), applied: false };
  const done = repair(memory);
  const after = inspect(memory, false);
  return { ...after, plan: done, applied: true, repaired: done, before: { ok: before.ok, lostFrames: before.lostFrames, problems: before.problems } };
}

// --- inspection -----------------------------------------------------------------------

/** One scan's view: findings and allocator problems, keyed for comparison across scans. */
interface Pass {
  scan: Scan;
  problems: Problem[];
  lost: number[];
  allocated: number;
}

function inspect(memory: Memory, live: boolean): CheckReport {
  const region = memory.region;
  if (!live) memory.alloc.release(); // this thread's reservation would read as a stale one
  let pass = inspectOnce(region, live);
  for (let n = 1; live && n < LIVE_SCANS; n++) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LIVE_RESCAN_MS);
    pass = stable(pass, inspectOnce(region, live));
  }
  // Live: frames that stayed unreachable may still be in flight in a process the scheduler paused; only an idle region proves a leak.
  const suspect = live ? neverFreed(new AllocatorView(region), pass.lost, LIVE_WATCH_MS) : [];
  if (live) pass.lost = [];
  const sink = new ProblemSink();
  if (memory.recoveryPending) sink.add({ code: 'CRASHED', what: 'the last user crashed; recovery has not run (opening the region runs it)', where: 'superblock state', repairable: true });
  for (const p of pass.problems) sink.add(p);
  const trusted = pass.scan.findings.every((f) => f.reachTrusted);
  const quarantined = quarantine(pass.scan.findings);
  if (pass.lost.length > 0) {
    const shown = pass.lost.slice(0, 12).join(', ') + (pass.lost.length > 12 ? ', ...' : '');
    sink.add({ code: 'LOST', what: `${pass.lost.length} frame(s) allocated but unreachable (lost)`, where: `frames ${shown}`, repairable: trusted && quarantined.length === 0 });
  }
  const problems = sink.list();
  const allocatable = region.frameCount - firstAllocatableFrame(region.frameCount);
  return {
    ok: problems.length === 0,
    lostFrames: pass.lost.length,
    ...(live ? { suspectFrames: suspect.length } : {}),
    problems,
    crashed: memory.recoveryPending,
    live,
    frames: { total: region.frameCount, allocatable, allocated: pass.allocated, referenced: pass.scan.frames, free: allocatable - pass.allocated },
    morsels: pass.scan.morsels,
    spaces: pass.scan.spaces,
    quarantined,
  };
}

function inspectOnce(region: Region, live: boolean): Pass {
  const view = new AllocatorView(region);
  // Live: a frame counts as lost only if it was allocated before and after the scan that did not reach it.
  const allocatedBefore = new Uint8Array(region.frameCount);
  if (live) for (let f = view.first; f < view.frameCount; f++) allocatedBefore[f] = view.isAllocated(f) ? 1 : 0;
  const scan = scanRegion(region, { spaces: true });
  // Repairable means: what repair will do. Damage inside a morsel is quarantined, not cleared.
  const problems: Problem[] = scan.findings.map((f) => ({ ...f.problem, repairable: losesNothing(f) }));
  for (const p of view.problems()) {
    if (live && p.code === 'TREE_RESERVED') continue; // live users' reservations
    problems.push({ ...p, repairable: true });
  }
  let allocated = 0;
  const lost: number[] = [];
  for (let f = view.first; f < view.frameCount; f++) {
    const a = view.isAllocated(f);
    if (a) allocated++;
    if (scan.used[f] && !a) problems.push({ code: 'FREE_REFERENCED', what: `frame ${f} is referenced but marked free (it could be handed out twice)`, where: `allocator child ${f >>> CHILD_SHIFT}`, repairable: true });
    if (!scan.used[f] && a && (!live || allocatedBefore[f])) lost.push(f);
  }
  problems.push(...refCountProblems(region, scan));
  return { scan, problems, lost, allocated };
}

/**
 * Every stored reference count must equal the references the scan found
 * (absent = 1): a count too low would free a frame still referenced, one
 * too high leaks it. Repair recomputes the table from the scan.
 */
function refCountProblems(region: Region, scan: Scan): Problem[] {
  const problems: Problem[] = [];
  const stored = new Map<number, number>();
  forEachStoredCount(region, region.loadRootFrame(ROOT_SLOT_REFCOUNTS) as Frame, (frame, count) => stored.set(frame, count));
  const mismatch = (frame: number, count: number, refs: number): void => {
    if (problems.length < MAX_COUNT_PROBLEMS) problems.push({ code: 'REFCOUNT', what: `frame ${frame} has reference count ${count} but ${refs} reference(s)`, where: `reference counts (frame ${frame})`, repairable: true });
  };
  // A LAZY_REF reference (src/morsel/lazy.ts) is not counted yet: the count covers the others.
  for (const [frame, refs] of scan.shared) {
    const counted = refs - (scan.lazyRefs.get(frame) ?? 0);
    if ((stored.get(frame) ?? 1) !== counted) mismatch(frame, stored.get(frame) ?? 1, counted);
  }
  for (const [frame, count] of stored) if (!scan.shared.has(frame)) mismatch(frame, count, scan.used[frame] ? 1 : 0);
  return problems;
}

/**
 * The frames of `candidates` that stay allocated for `watchMs` (polled in a
 * tight loop). A frame a live process keeps recycling (allocate, link,
 * unlink, free: microseconds) shows free at some poll; a leaked one never does.
 */
function neverFreed(view: AllocatorView, candidates: number[], watchMs: number): number[] {
  const alive = new Set(candidates);
  const until = Date.now() + watchMs;
  while (alive.size > 0 && Date.now() < until) {
    for (let i = 0; i < 1000; i++) for (const f of alive) if (!view.isAllocated(f)) alive.delete(f);
  }
  return candidates.filter((f) => alive.has(f));
}

const problemKey = (p: Problem): string => `${p.code}\u0000${p.where}\u0000${p.what}`;

/** What two scans of a live region agree on: the second scan's numbers, the problems and lost frames both saw. */
function stable(a: Pass, b: Pass): Pass {
  const seen = new Set(a.problems.map(problemKey));
  const lostBefore = new Set(a.lost);
  const findings = b.scan.findings.filter((f) => seen.has(problemKey(f.problem)));
  return {
    scan: { ...b.scan, findings },
    problems: b.problems.filter((p) => seen.has(problemKey(p))),
    lost: b.lost.filter((f) => lostBefore.has(f)),
    allocated: b.allocated,
  };
}

/** Morsels with damage in their subtree that repair must not touch (everything but garbage in non-present entries and interrupted destroys). */
function quarantine(findings: Finding[]): string[] {
  const out = new Set<string>();
  for (const f of findings) if (f.morsel !== null && !losesNothing(f)) out.add(f.morsel);
  return [...out].sort();
}

/** Whether clearing this finding's entry loses no data (see the file comment). */
function losesNothing(f: Finding): boolean {
  if (f.fix === null) return false;
  return f.problem.code === 'ENTRY_NOT_ZERO' || f.problem.code === 'META_NO_DATA' || f.area === 'space';
}

/** Collects problems, keeping at most PER_CODE_LIMIT of each code plus a count of the rest. */
class ProblemSink {
  private readonly out: Problem[] = [];
  private readonly perCode = new Map<string, { n: number; sample: Problem }>();

  add(p: Problem): void {
    const seen = this.perCode.get(p.code) ?? { n: 0, sample: p };
    seen.n++;
    this.perCode.set(p.code, seen);
    if (seen.n <= PER_CODE_LIMIT) this.out.push(p);
  }

  list(): Problem[] {
    const more: Problem[] = [];
    for (const [code, { n, sample }] of this.perCode) {
      if (n > PER_CODE_LIMIT) more.push({ code, what: `${n - PER_CODE_LIMIT} more ${code} problem(s) not listed`, where: 'region', repairable: sample.repairable });
    }
    return [...this.out, ...more];
  }
}

// --- repair ---------------------------------------------------------------------------------

/**
 * The dry run: the same repair on a private copy of the region (a volatile
 * region over a copied buffer: no file, no users), so the plan is exactly
 * what `apply` would do. Costs one copy of the region in memory.
 */
function dryRun(memory: Memory): Problem[] {
  const share = memory.region.share();
  const copy = new SharedArrayBuffer(share.sab.byteLength);
  new Uint8Array(copy).set(new Uint8Array(share.sab));
  const shadow = Memory.attach({ ...share, sab: copy, mapCounts: new SharedArrayBuffer(share.mapCounts.byteLength), path: null });
  shadow.recoveryPending = memory.recoveryPending;
  return repair(shadow);
}

/** Applies every repair that loses nothing, then rebuilds the allocator. Returns what it did. */
function repair(memory: Memory): Problem[] {
  const region = memory.region;
  const done: Problem[] = [];
  if (memory.recoveryPending) {
    // Exactly what recovery does: the crashed process's spaces and per-process registries died with it.
    const dropped = dropSlotRoots(region);
    if (dropped > 0) done.push({ code: 'CRASHED', what: "dropped the crashed process's address spaces and per-process registries", where: 'user slots', repairable: true });
    if (region.alone) region.clearAllSlots(); // the dead users' records too (a dry run's private copy has no membership)
  }
  let scan = scanRegion(region, { spaces: true });
  for (let pass = 0; pass < FIX_PASSES && scan.findings.some((f) => losesNothing(f)); pass++) {
    for (const f of scan.findings) if (losesNothing(f)) applyFix(region, f, done);
    scan = scanRegion(region, { spaces: true });
  }
  // The allocator rebuild frees the reference-count table's storage (or, keeping what is allocated, turns its 2 MiB segments into 4 KiB frames): the table is recomputed from the live trees.
  const countsWrong = refCountProblems(region, scan).length > 0;
  memory.morsels.cow.forgetCounts();
  done.push(rebuildAllocator(region, scan));
  memory.morsels.cow.rebuildCounts(scan.shared, scan.lazyTables);
  if (countsWrong) done.push({ code: 'REFCOUNT', what: `recomputed the reference counts from the live trees (${scan.shared.size} shared frame(s))`, where: 'reference counts', repairable: true });
  memory.recoveryPending = false; // the allocator is consistent: nothing referenced is free
  return done;
}


function applyFix(region: Region, f: Finding, done: Problem[]): void {
  const x = f.fix!;
  // CAS from the value the scan saw: if anything changed since, leave it alone.
  if (region.casEntry(x.table as Frame, x.index, x.lo, x.hi, 0, 0)) {
    done.push({ code: f.problem.code, what: `cleared the entry: ${f.problem.what}`, where: f.problem.where, repairable: true });
  }
}

/**
 * Rebuilds bitfields and counters: from reachability when it can be trusted
 * and nothing is quarantined (lost frames come back, their contents
 * discarded), else from reachability plus everything allocated now
 * (referenced frames get allocated, nothing is freed).
 */
function rebuildAllocator(region: Region, scan: Scan): Problem {
  const view = new AllocatorView(region);
  let lost = 0;
  for (let f = view.first; f < view.frameCount; f++) if (!scan.used[f] && view.isAllocated(f)) lost++;
  const reclaim = scan.findings.every((f) => f.reachTrusted) && quarantine(scan.findings).length === 0;
  if (reclaim) {
    FrameAllocator.rebuildFrom(region, (f) => scan.used[f] === 1, hugeChildrenOf(scan.hugeLeaves));
    return { code: 'ALLOCATOR', what: `rebuilt the allocator from reachability; reclaimed ${lost} lost frame(s) (their contents are discarded)`, where: 'allocator', repairable: true };
  }
  const keep = new Uint8Array(region.frameCount);
  for (let f = 0; f < region.frameCount; f++) keep[f] = scan.used[f] || view.isAllocated(f) ? 1 : 0;
  FrameAllocator.rebuildFrom(region, (f) => keep[f] === 1, new Set([...view.hugeChildren(), ...hugeChildrenOf(scan.hugeLeaves)]));
  return { code: 'ALLOCATOR', what: `rebuilt the allocator counters and allocated every referenced frame; ${lost} lost frame(s) kept (some references could not be followed or a morsel is quarantined)`, where: 'allocator', repairable: true };
}
