/**
 * The names child's side of the verification, on a recovered region with no
 * other user:
 *
 *   - NamesModel: the tree below TORTURE_ROOT replayed from acknowledged name
 *     operations must equal the region's, except for the one operation a
 *     crash interrupted (its before or its after state; then the region's
 *     state is adopted). A refused operation (failure line) must have changed
 *     nothing. Stamps written through handles read back.
 *   - checkManagement: every name resolves to a live incarnation that is not
 *     PENDING (0 dangling names); no live morsel is PENDING (0 orphans: an
 *     unlinked or half-created morsel without users is gone after recovery);
 *     no morsel has a usage count (0 stuck counts: nobody uses it); the live
 *     reservations do not overlap pairwise, and each is the reservation of a
 *     named fixed-address morsel, which each has one.
 */
import { isMorselError } from '../../errors.js';
import type { Memory } from '../../memory.js';
import { decodeIdBits, hex, type MorselId } from '../../morsel/id.js';
import { orderBytes } from '../../morsel/order.js';
import { W_PENDING } from '../../morsel/words.js';
import type { LogEvent } from './log.js';
import { NameTree, readTree } from './name-tree.js';
import { STAMP_BYTES } from './names.js';
import { pattern } from './prng.js';

/** The last acknowledged stamp's seed, or UNKNOWN after an interrupted stamp write (absent: never written, reads 0). */
const UNKNOWN = -1;

export interface ManagementReport {
  violations: string[];
  /** root frames of named incarnations: not the primitive model's business */
  namedRoots: Set<number>;
  names: number;
  reservations: number;
  staleReservations: number;
}

export class NamesModel {
  private tree = new NameTree();
  private readonly stamps = new Map<string, number>();
  private inflight: LogEvent | null = null;
  /** the crash-interrupted operation of the last run, if any */
  private uncertain: LogEvent | null = null;
  acked = 0;
  readonly ackedByOp: Record<string, number> = {};
  failed = 0;
  /** dead slots the names child emptied as a survivor, and unlinked morsels it destroyed then */
  reapedSlots = 0;
  reapedMorsels = 0;

  apply(events: LogEvent[]): void {
    for (const e of events) {
      if (e.ph === 'b') {
        this.inflight = e;
        continue;
      }
      this.inflight = null;
      if (e.ph === 'f') {
        this.failed++;
        continue; // refused: changed nothing
      }
      this.acked++;
      this.ackedByOp[e.op] = (this.ackedByOp[e.op] ?? 0) + 1;
      if (e.op === 'reap') {
        this.reapedSlots += e.count!;
        this.reapedMorsels += e.len!;
      }
      this.tree.apply(e);
      if (e.op === 'nwrite') this.stamps.set(`${e.id}@${e.gen}`, e.pseed!);
    }
  }

  endRun(): void {
    const e = this.inflight;
    this.inflight = null;
    if (e === null) return;
    if (e.op === 'nwrite') this.stamps.set(`${e.id}@${e.gen}`, UNKNOWN);
    else this.uncertain = e;
  }

  /** Compares the region's tree and stamps with the model, then adopts the region's tree. */
  verify(memory: Memory): string[] {
    const out: string[] = [];
    const actual = readTree(memory.names);
    const before = this.tree.diff(actual);
    let after: string | null = 'no interrupted operation';
    if (this.uncertain !== null) {
      const t = this.tree.clone();
      t.apply(this.uncertain);
      after = t.diff(actual);
    }
    if (before !== null && after !== null) {
      const u = this.uncertain === null ? '' : ` (interrupted: ${JSON.stringify(this.uncertain)}: ${after})`;
      out.push(`names: ${before}${u}`);
    }
    this.uncertain = null;
    this.tree = actual;
    const named = new Set<string>();
    for (const [p, n] of actual.nodes) {
      if (n.kind !== 'morsel') continue;
      named.add(`${n.id}@${n.gen}`);
      const want = this.stamps.get(`${n.id}@${n.gen}`);
      if (want === UNKNOWN) continue;
      const got = readStamp(memory, BigInt(n.id), n.gen);
      const expect = want === undefined ? new Uint8Array(STAMP_BYTES) : pattern(want, STAMP_BYTES);
      if (got !== null && !got.every((b, i) => b === expect[i])) out.push(`${p}: stamp reads [${got}], expected [${expect}]${want === undefined ? ' (never written)' : ''}`);
    }
    for (const key of [...this.stamps.keys()]) if (!named.has(key)) this.stamps.delete(key); // destroyed by now (no users after recovery)
    return out;
  }
}

/** The first STAMP_BYTES of an incarnation (null if it is gone: reported as a dangling name). */
function readStamp(memory: Memory, id: bigint, generation: number): Uint8Array | null {
  const names = memory.names;
  let h;
  try {
    h = names.openRef({ id: id as MorselId, generation });
  } catch (e) {
    if (isMorselError(e, 'ESTALE') || isMorselError(e, 'EINVAL')) return null;
    throw e;
  }
  try {
    return names.read(h, 0, STAMP_BYTES);
  } finally {
    names.close(h);
  }
}

/** The invariants of the management layer on a recovered region nobody else uses. */
export function checkManagement(memory: Memory): ManagementReport {
  const morsels = memory.morsels;
  const r: ManagementReport = { violations: [], namedRoots: new Set(), names: 0, reservations: 0, staleReservations: 0 };
  const fixedNamed = new Map<string, string>();
  for (const [p, n] of readTree(memory.names, '/').nodes) {
    if (n.kind !== 'morsel') continue;
    r.names++;
    const root = decodeIdBits(BigInt(n.id)).rootFrame;
    r.namedRoots.add(root);
    try {
      morsels.decodeHandle(BigInt(n.id), n.gen);
    } catch (e) {
      r.violations.push(`dangling name ${p}: ${n.id}@${n.gen}: ${(e as Error).message}`);
      continue;
    }
    if (n.fixed !== null) fixedNamed.set(`${root}@${n.gen}`, `${p}@0x${n.fixed.toString(16)}`);
  }
  for (const id of morsels.list()) {
    const d = morsels.decode(id);
    const w = morsels.words.load(d.rootFrame);
    if (w & W_PENDING) r.violations.push(`orphan: ${hex(id)} is still PENDING after recovery${r.namedRoots.has(d.rootFrame) ? ' (and named)' : ''}`);
    const users = morsels.usage.total(morsels.dataOf(d).rootFrame);
    if (users !== 0) r.violations.push(`stuck usage count: ${hex(id)} has ${users} users after recovery`);
  }
  const live = memory.names.reservations.list().filter((res) => {
    if (res.stale) r.staleReservations++;
    return !res.stale;
  });
  r.reservations = live.length;
  for (let i = 1; i < live.length; i++) {
    const prev = live[i - 1];
    if (prev.address + orderBytes(prev.order) > live[i].address) r.violations.push(`overlapping reservations: 0x${prev.address.toString(16)} (order ${prev.order}) and 0x${live[i].address.toString(16)} (order ${live[i].order})`);
  }
  const reserved = new Set<string>();
  for (const res of live) {
    const key = `${res.metaRoot}@${res.generation}`;
    reserved.add(key);
    const named = fixedNamed.get(key);
    if (named === undefined) r.violations.push(`orphaned reservation 0x${res.address.toString(16)} of ${key}: no name holds it`);
    else if (!named.endsWith(`@0x${res.address.toString(16)}`)) r.violations.push(`reservation 0x${res.address.toString(16)} of ${key} disagrees with its name ${named}`);
  }
  for (const [key, named] of fixedNamed) if (!reserved.has(key)) r.violations.push(`fixed-address morsel ${named} (${key}) has no reservation`);
  return r;
}
