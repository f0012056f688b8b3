/**
 * `morsel check` (fsck): verifies every on-media invariant of a quiescent
 * region and, with `repair`, fixes what can be fixed without guessing.
 *
 * Invariants checked:
 *   structure   every registry, morsel and space tree is well formed for its
 *               order: inner entries exactly P|RW|US plus a PFN (no PS bit,
 *               no stray bits), non-present entries all zero, PFNs inside
 *               the allocatable range, no cycles, no frame referenced twice;
 *               live-table values are valid IDs under their own root frame;
 *               meta pages are valid and name a data morsel
 *   allocation  every referenced frame is allocated, every allocated frame
 *               is referenced (else it is lost), reserved frames are
 *               allocated; child counters == free bits, tree counters ==
 *               sum of their children, huge flags consistent, no tree left
 *               reserved
 *
 * Repair never formats and never frees a frame anything might reference:
 * it clears only entries that cannot be right (outside the region, back
 * edges of a cycle, garbage in non-present entries, a meta morsel whose
 * destroy was interrupted, space mappings of dead morsels), drops a crashed
 * process's address spaces (as recovery does), then rebuilds the allocator
 * from reachability. If anything could not be followed (a bad root or ID),
 * the rebuild keeps every allocated frame allocated and lost frames stay
 * reported instead of being reclaimed.
 */
import { FrameAllocator, CHILD_FREE_MASK, CHILD_HUGE, childFree, childIsHuge, treeFree, treeIsReserved } from '../alloc/llfree.js';
import { countSet, testBit } from '../alloc/bitfield.js';
import { BITFIELD_WORDS, CHILD_FRAMES, CHILD_SHIFT, TREE_CHILDREN, firstAllocatableFrame, metaLayout } from '../physical/layout.js';
import type { Region } from '../physical/region.js';
import type { Frame } from '../units.js';
import type { Memory } from '../memory.js';
import { scanRegion, type Finding, type Problem, type Scan } from './reachable.js';

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
  frames: { total: number; allocatable: number; allocated: number; referenced: number; free: number };
  morsels: number;
  spaces: number;
  /** with repair: what was changed, and what was found before */
  repaired?: Problem[];
  before?: CheckSummary;
}

/** More problems of one code than this are summarized in one line. */
const PER_CODE_LIMIT = 16;

/** Checks `memory` (opened with `{ recover: false }` to see a crashed region as it is) and optionally repairs it. */
export function checkRegion(memory: Memory, opts: { repair?: boolean } = {}): CheckReport {
  const before = inspect(memory);
  if (!opts.repair) return before;
  const repaired = repair(memory);
  const after = inspect(memory);
  return { ...after, repaired, before: { ok: before.ok, lostFrames: before.lostFrames, problems: before.problems } };
}

// --- inspection -----------------------------------------------------------------------

function inspect(memory: Memory): CheckReport {
  const region = memory.region;
  memory.alloc.release(); // this thread's reservation would read as a stale one
  const scan = scanRegion(region, { spaces: true });
  const sink = new ProblemSink();
  const trusted = scan.findings.every((f) => f.reachTrusted);
  if (memory.recoveryPending) sink.add({ code: 'CRASHED', what: 'the last user crashed; recovery has not run (opening the region runs it)', where: 'superblock state', repairable: true });
  for (const f of scan.findings) sink.add(f.problem);
  const alloc = checkAllocator(region, scan, sink, trusted);
  const problems = sink.list();
  const allocatable = region.frameCount - firstAllocatableFrame(region.frameCount);
  return {
    ok: problems.length === 0,
    lostFrames: alloc.lost,
    problems,
    crashed: memory.recoveryPending,
    frames: { total: region.frameCount, allocatable, allocated: alloc.allocated, referenced: scan.frames, free: allocatable - alloc.allocated },
    morsels: scan.morsels,
    spaces: scan.spaces,
  };
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

/** Typed views of the allocator's metadata, read directly: the allocator's own methods assert on corrupt words. */
interface AllocView {
  first: number;
  frameCount: number;
  children: number;
  trees: number;
  bits: Int32Array;
  child: Int32Array;
  tree: Int32Array;
}

function allocView(region: Region): AllocView {
  const l = metaLayout(region.frameCount);
  return {
    first: firstAllocatableFrame(region.frameCount),
    frameCount: region.frameCount,
    children: l.children,
    trees: l.trees,
    bits: new Int32Array(region.sab, l.bitfieldsByte, l.children * BITFIELD_WORDS),
    child: new Int32Array(region.sab, l.childCountersByte, l.children),
    tree: new Int32Array(region.sab, l.treeCountersByte, l.trees),
  };
}

function isAllocated(v: AllocView, frame: number): boolean {
  const c = frame >>> CHILD_SHIFT;
  return childIsHuge(Atomics.load(v.child, c)) || testBit(v.bits, c * BITFIELD_WORDS, frame & (CHILD_FRAMES - 1));
}

/** Counters against bitfields, bitfields against reachability. Returns allocated and lost frame counts. */
function checkAllocator(region: Region, scan: Scan, sink: ProblemSink, trusted: boolean): { allocated: number; lost: number } {
  const v = allocView(region);
  checkCounters(v, sink);
  let allocated = 0;
  const lost: number[] = [];
  for (let f = 0; f < v.children * CHILD_FRAMES; f++) {
    const a = isAllocated(v, f);
    if (f < v.first || f >= v.frameCount) {
      if (!a) sink.add({ code: 'FIXED_FREE', what: `${f < v.first ? 'reserved' : 'nonexistent tail'} frame ${f} is marked free`, where: `allocator child ${f >>> CHILD_SHIFT}`, repairable: true });
      continue;
    }
    if (a) allocated++;
    if (scan.used[f] && !a) sink.add({ code: 'FREE_REFERENCED', what: `frame ${f} is referenced but marked free (it could be handed out twice)`, where: `allocator child ${f >>> CHILD_SHIFT}`, repairable: true });
    if (!scan.used[f] && a) lost.push(f);
  }
  if (lost.length > 0) {
    const shown = lost.slice(0, 12).join(', ') + (lost.length > 12 ? ', ...' : '');
    sink.add({ code: 'LOST', what: `${lost.length} frame(s) allocated but unreachable (lost)`, where: `frames ${shown}`, repairable: trusted });
  }
  return { allocated, lost: lost.length };
}

function checkCounters(v: AllocView, sink: ProblemSink): void {
  for (let t = 0; t < v.trees; t++) {
    let sum = 0;
    for (let c = t * TREE_CHILDREN; c < Math.min((t + 1) * TREE_CHILDREN, v.children); c++) {
      const word = Atomics.load(v.child, c);
      const set = countSet(v.bits, c * BITFIELD_WORDS);
      const where = `allocator child ${c}`;
      if ((word & ~(CHILD_FREE_MASK | CHILD_HUGE)) !== 0) sink.add({ code: 'CHILD_COUNTER', what: `counter 0x${(word >>> 0).toString(16)} has stray bits`, where, repairable: true });
      if (childIsHuge(word)) {
        if (childFree(word) !== 0 || set !== 0) sink.add({ code: 'HUGE', what: `huge child with free count ${childFree(word)} and ${set} bit(s) set`, where, repairable: true });
        continue;
      }
      if (childFree(word) !== CHILD_FRAMES - set) sink.add({ code: 'CHILD_COUNTER', what: `counter says ${childFree(word)} free, bitfield says ${CHILD_FRAMES - set}`, where, repairable: true });
      sum += CHILD_FRAMES - set;
    }
    const word = Atomics.load(v.tree, t);
    const where = `allocator tree ${t}`;
    if (treeIsReserved(word)) sink.add({ code: 'TREE_RESERVED', what: 'tree still reserved by a thread that no longer exists', where, repairable: true });
    else if (treeFree(word) !== sum) sink.add({ code: 'TREE_COUNTER', what: `counter says ${treeFree(word)} free, children say ${sum}`, where, repairable: true });
  }
}

// --- repair ---------------------------------------------------------------------------------

/** Bound on fix passes: a fix only removes references, so the second pass normally finds nothing. */
const FIX_PASSES = 4;

function repair(memory: Memory): Problem[] {
  const region = memory.region;
  const done: Problem[] = [];
  if (memory.recoveryPending) {
    // Exactly what recovery does: the crashed users' slots (spaces, counts) died with them.
    const slots = region.clearAllSlots();
    if (slots > 0) done.push({ code: 'CRASHED', what: `cleared ${slots} dead user slot(s) (their address spaces and usage counts)`, where: 'user-slot table', repairable: true });
  }
  let scan = scanRegion(region, { spaces: true });
  for (let pass = 0; pass < FIX_PASSES && scan.findings.some((f) => f.fix !== null); pass++) {
    for (const f of scan.findings) applyFix(region, f, done);
    scan = scanRegion(region, { spaces: true });
  }
  done.push(rebuildAllocator(region, scan));
  if (scan.findings.every((f) => f.reachTrusted)) memory.recoveryPending = false;
  return done;
}

function applyFix(region: Region, f: Finding, done: Problem[]): void {
  const x = f.fix;
  if (x === null) return;
  // CAS from the value the scan saw: if anything changed since, leave it alone.
  if (region.casEntry(x.table as Frame, x.index, x.lo, x.hi, 0, 0)) {
    done.push({ code: f.problem.code, what: `cleared the entry: ${f.problem.what}`, where: f.problem.where, repairable: true });
  }
}

/**
 * Rebuilds bitfields and counters: from reachability when it can be trusted
 * (lost frames come back), else from reachability plus everything allocated
 * now (referenced frames get allocated, nothing is freed).
 */
function rebuildAllocator(region: Region, scan: Scan): Problem {
  const trusted = scan.findings.every((f) => f.reachTrusted);
  if (trusted) {
    FrameAllocator.rebuildFrom(region, (f) => scan.used[f] === 1);
    return { code: 'ALLOCATOR', what: 'rebuilt the allocator from reachability (lost frames reclaimed)', where: 'allocator', repairable: true };
  }
  const v = allocView(region);
  const keep = new Uint8Array(region.frameCount);
  const huge: number[] = [];
  for (let c = 0; c < v.children; c++) if (childIsHuge(Atomics.load(v.child, c))) huge.push(c);
  for (let f = 0; f < region.frameCount; f++) keep[f] = scan.used[f] || isAllocated(v, f) ? 1 : 0;
  FrameAllocator.rebuildFrom(region, (f) => keep[f] === 1, huge);
  return { code: 'ALLOCATOR', what: 'rebuilt the allocator counters and allocated every referenced frame; lost frames kept (some references could not be followed)', where: 'allocator', repairable: true };
}
