/**
 * What the region must contain, replayed from the acknowledgement log, and
 * the check of a recovered region against it.
 *
 * Per morsel ID the model keeps, for every page ever written, each byte's
 * state: NEVER written (must read 0: a fresh page is zeroed, so anything
 * else is stale data or a cross-linked frame), KNOWN (the last acknowledged
 * write's byte) or UNKNOWN (an interrupted or failed write covered it; either
 * value is fine until the next acknowledged write).
 *
 * Outcomes an interrupted operation may have: an interrupted create may have
 * registered its morsel (an "orphan" the log never named; allowed once per
 * interrupted create and then adopted, all zero); an interrupted destroy may
 * be complete (ID gone) or not started (morsel intact: destroy commits at
 * its unregister); an interrupted write leaves its bytes UNKNOWN. A clone
 * starts as a copy of its source's model; an interrupted clone may leave an
 * orphan whose bytes are its source's (allowed once, like a create's).
 */
import { isMorselError } from '../../errors.js';
import { decodeIdBits, hex } from '../../morsel/id.js';
import type { Order } from '../../morsel/order.js';
import { isPresent, pfnOf } from '../../paging/entry.js';
import { HUGE_FRAMES, isLeafEntry } from '../../paging/walk.js';
import type { Memory } from '../../memory.js';
import type { Frame } from '../../units.js';
import type { LogEvent } from './log.js';
import { pattern } from './prng.js';
import { PAGE } from './shape.js';

const NEVER = 0;
const KNOWN = 1;
const UNKNOWN = 2;

interface Page {
  state: Uint8Array;
  data: Uint8Array;
}

interface ModelMorsel {
  /** the incarnation acknowledged (null: adopted or logged without one) */
  gen: number | null;
  meta: boolean;
  /** the meta morsel's fixed address */
  address: number | null;
  pages: Map<number, Page>;
}

export interface VerifyResult {
  violations: string[];
  /** morsels checked, orphans adopted, interrupted destroys that completed */
  morsels: number;
  adopted: number;
  destroyedByCrash: number;
}

export class Model {
  private readonly live = new Map<string, ModelMorsel>();
  /** acknowledged destroys (until the ID is created again) */
  private readonly destroyed = new Set<string>();
  /** state of the run being replayed */
  private pending = new Map<string, LogEvent>();
  private orphanAllowance = 0;
  /** sources of interrupted clones: an orphan may be a copy of one of them */
  private orphanSources: ModelMorsel[] = [];
  private readonly maybeDestroyed = new Set<string>();
  /** destroys acknowledged since the last verify: each must decode to EINVAL */
  private readonly recentlyDestroyed = new Set<string>();
  acked = 0;
  readonly ackedByOp: Record<string, number> = {};
  failed = 0;

  /** Applies one run's events in log order. */
  apply(events: LogEvent[]): void {
    for (const e of events) {
      const key = `${e.r}/${e.t}`;
      if (e.ph === 'b') {
        this.pending.set(key, e);
        continue;
      }
      this.pending.delete(key);
      if (e.ph === 'a') {
        this.acked++;
        this.ackedByOp[e.op] = (this.ackedByOp[e.op] ?? 0) + 1;
        this.ack(e);
      } else {
        this.failed++;
        this.interrupted(e);
      }
    }
  }

  /** After the run's child died: what its unfinished operations may have done. */
  endRun(): void {
    for (const e of this.pending.values()) this.interrupted(e);
    this.pending = new Map();
  }

  private ack(e: LogEvent): void {
    switch (e.op) {
      case 'create':
      case 'createMeta':
        this.live.set(e.id!, { gen: e.gen ?? null, meta: e.op === 'createMeta', address: e.address ?? null, pages: new Map() });
        this.destroyed.delete(e.id!);
        break;
      case 'clone': {
        const src = this.live.get(e.id!);
        if (src !== undefined) this.live.set(e.clone!, { gen: e.gen ?? null, meta: false, address: null, pages: copyPages(src.pages) });
        this.destroyed.delete(e.clone!);
        break;
      }
      case 'destroy':
        this.live.delete(e.id!);
        this.destroyed.add(e.id!);
        this.recentlyDestroyed.add(e.id!);
        break;
      case 'write':
        this.writeBytes(e, KNOWN);
        break;
      default: // populate, cofault, map, unmap, space, hold, drop: no persistent content to remember
    }
  }

  private interrupted(e: LogEvent): void {
    if (e.op === 'create' || e.op === 'createMeta') this.orphanAllowance++;
    else if (e.op === 'clone') {
      const src = this.live.get(e.id!);
      if (src !== undefined) this.orphanSources.push({ gen: null, meta: false, address: null, pages: copyPages(src.pages) });
    }
    else if (e.op === 'destroy') this.maybeDestroyed.add(e.id!);
    else if (e.op === 'write') this.writeBytes(e, UNKNOWN);
  }

  private writeBytes(e: LogEvent, state: number): void {
    const m = this.live.get(e.id!);
    if (m === undefined) return; // checked when the morsel is verified as missing
    const bytes = pattern(e.pseed!, e.len!);
    for (let i = 0; i < e.len!; ) {
      const at = e.off! + i;
      const p = Math.floor(at / PAGE);
      let page = m.pages.get(p);
      if (page === undefined) m.pages.set(p, (page = { state: new Uint8Array(PAGE), data: new Uint8Array(PAGE) }));
      const n = Math.min(PAGE - (at % PAGE), e.len! - i);
      page.state.fill(state, at % PAGE, (at % PAGE) + n);
      if (state === KNOWN) page.data.set(bytes.subarray(i, i + n), at % PAGE);
      i += n;
    }
  }

  /**
   * Checks a recovered region against the model, then settles the
   * interrupted outcomes. Morsels rooted in `named` belong to the names
   * child (names-model.ts checks them).
   */
  verify(memory: Memory, named: ReadonlySet<number>): VerifyResult {
    const r: VerifyResult = { violations: [], morsels: 0, adopted: 0, destroyedByCrash: 0 };
    const morsels = memory.morsels;
    for (const [id, m] of [...this.live]) {
      let alive = true;
      try {
        // By incarnation: once destroyed, the raw ID may name another process's new morsel.
        if (m.gen === null) morsels.decode(BigInt(id));
        else morsels.decodeHandle(BigInt(id), m.gen);
      } catch {
        alive = false;
      }
      if (!alive) {
        if (this.maybeDestroyed.has(id)) r.destroyedByCrash++;
        else r.violations.push(`acknowledged morsel ${id} is gone`);
        this.live.delete(id);
        continue;
      }
      r.morsels++;
      this.verifyMorsel(memory, id, m, r.violations);
    }
    for (const id of this.recentlyDestroyed) {
      if (this.live.has(id)) continue;
      try {
        morsels.decode(BigInt(id));
      } catch (e) {
        if (!isMorselError(e, 'EINVAL')) r.violations.push(`destroyed morsel ${id}: decode fails with ${(e as Error).message}, not EINVAL`);
      }
      // If it decodes, it is live: the loop below counts it against the orphans.
    }
    this.recentlyDestroyed.clear();
    for (const id of morsels.list().map((x) => hex(x))) {
      if (this.live.has(id) || named.has(decodeIdBits(BigInt(id)).rootFrame)) continue;
      const m = this.adoptOrphan(memory, id, r.violations);
      if (m === null) {
        r.violations.push(`live morsel ${id} was never acknowledged${this.destroyed.has(id) ? ' (its destroy was)' : ''}`);
        continue;
      }
      this.live.set(id, m);
      this.destroyed.delete(id);
      r.adopted++;
    }
    this.orphanAllowance = 0;
    this.orphanSources = [];
    this.maybeDestroyed.clear();
    return r;
  }

  /**
   * An unacknowledged live morsel an interrupted operation may have left:
   * the copy of an interrupted clone's source (the first that matches), or
   * a fresh all-zero create. Null when no interrupted operation explains it.
   */
  private adoptOrphan(memory: Memory, id: string, out: string[]): ModelMorsel | null {
    const d = memory.morsels.decode(BigInt(id));
    for (let i = 0; i < this.orphanSources.length && !d.meta; i++) {
      const probe: string[] = [];
      this.verifyMorsel(memory, id, this.orphanSources[i], probe);
      if (probe.length === 0) return { ...this.orphanSources.splice(i, 1)[0], gen: memory.morsels.generationOf(d.rootFrame) };
    }
    if (this.orphanAllowance === 0) return null;
    this.orphanAllowance--;
    const m: ModelMorsel = { gen: memory.morsels.generationOf(d.rootFrame), meta: d.meta, address: d.meta ? memory.morsels.metaOf(d).address : null, pages: new Map() };
    this.verifyMorsel(memory, id, m, out); // a fresh morsel is all zero
    return m;
  }

  private verifyMorsel(memory: Memory, id: string, m: ModelMorsel, out: string[]): void {
    const morsels = memory.morsels;
    const d = morsels.decode(BigInt(id));
    if (d.meta !== m.meta) out.push(`${id}: meta flag changed`);
    if (d.meta && morsels.metaOf(d).address !== m.address) out.push(`${id}: fixed address changed`);
    const data = morsels.dataOf(d);
    const seen = new Set<number>();
    forEachDataPage(memory, data.rootFrame, data.order, (pageNo, frame) => {
      seen.add(pageNo);
      comparePage(memory.region.frame(frame as Frame), m.pages.get(pageNo), `${id} page ${pageNo} (frame ${frame})`, out);
    });
    for (const [pageNo, page] of m.pages) {
      // Not populated: reads as zero, so every KNOWN byte must be zero.
      if (!seen.has(pageNo)) comparePage(null, page, `${id} page ${pageNo} (unpopulated)`, out);
    }
  }
}

/** A deep copy of a morsel's page models (a clone starts with its source's bytes). */
function copyPages(pages: Map<number, Page>): Map<number, Page> {
  const out = new Map<number, Page>();
  for (const [n, p] of pages) out.set(n, { state: p.state.slice(), data: p.data.slice() });
  return out;
}

/** First mismatch of a page (null = unpopulated, reads zero) against its model. */
function comparePage(actual: Uint8Array | null, page: Page | undefined, where: string, out: string[]): void {
  for (let i = 0; i < PAGE; i++) {
    const state = page === undefined ? NEVER : page.state[i];
    if (state === UNKNOWN) continue;
    const want = state === KNOWN ? page!.data[i] : 0;
    const got = actual === null ? 0 : actual[i];
    if (got !== want) {
      out.push(`${where} byte ${i}: read ${got}, expected ${want} (${state === KNOWN ? 'last acknowledged write' : 'never written'})`);
      return;
    }
  }
}

/** Every populated data page of a data morsel, with its page number inside the morsel (a 2 MiB leaf: its HUGE_FRAMES pages). */
function forEachDataPage(memory: Memory, root: number, order: Order, visit: (pageNo: number, frame: number) => void): void {
  const region = memory.region;
  const walk = (table: number, level: number, firstPage: number): void => {
    const span = 512 ** (level - 1);
    for (let idx = 0; idx < 512; idx++) {
      const lo = region.loadLo(table as Frame, idx);
      if (!isPresent(lo)) continue;
      const child = pfnOf(lo, region.loadHi(table as Frame, idx));
      if (level === 1) visit(firstPage + idx, child);
      else if (isLeafEntry(level, lo)) for (let p = 0; p < HUGE_FRAMES; p++) visit(firstPage + idx * span + p, child + p);
      else walk(child, level - 1, firstPage + idx * span);
    }
  };
  if (order === 0) visit(0, root);
  else walk(root, order, 0);
}
