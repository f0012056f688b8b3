/**
 * Reachability: the set of frames the live structures use. The allocator's
 * state after a crash is rebuilt from this set (thesis 2.4.5): every frame
 * reachable from the live-morsel table is allocated, every other one is free,
 * so frames in transit at the crash (allocated, not yet linked; unlinked, not
 * yet freed) come back and nothing is lost.
 */
import { MorselError } from '../errors.js';
import { firstAllocatableFrame } from '../physical/layout.js';
import { decodeIdBits } from '../morsel/id.js';
import { readMetaPage } from '../morsel/meta.js';
import type { Morsels } from '../morsel/morsels.js';
import type { Frame } from '../units.js';

export interface Reachable {
  /** one bit per frame */
  used: Uint8Array;
  morsels: number;
  frames: number;
  /** frames referenced twice (a corrupt tree); empty when healthy */
  duplicates: number[];
}

/**
 * Marks every frame of the live table and of every live morsel (and a meta
 * morsel's data morsel). Throws ECORRUPT with what and where on a reference
 * outside the allocatable range; records duplicates (which also stops cycles).
 */
export function collectReachable(morsels: Morsels): Reachable {
  const region = morsels.region;
  const first = firstAllocatableFrame(region.frameCount);
  const used = new Uint8Array(region.frameCount);
  const out: Reachable = { used, morsels: 0, frames: 0, duplicates: [] };
  const mark = (frame: number, what: string): boolean => {
    if (!(frame >= first && frame < region.frameCount)) throw new MorselError('ECORRUPT', `${what} references frame ${frame}, outside the allocatable range [${first}, ${region.frameCount})`);
    if (used[frame]) {
      out.duplicates.push(frame);
      return false;
    }
    used[frame] = 1;
    out.frames++;
    return true;
  };
  const markSubtree = (root: Frame, order: number, what: string): void => {
    if (!mark(root, what)) return;
    if (order === 0) return;
    const walk = (table: Frame, level: number): void => {
      for (let idx = 0; idx < 512; idx++) {
        const lo = region.loadLo(table, idx);
        if (!(lo & 1)) continue;
        const child = ((lo >>> 12) + (region.loadHi(table, idx) & 0xfffff) * 0x100000) as Frame;
        if (mark(child, `${what} table ${table}[${idx}]`) && level > 1) walk(child, level - 1);
      }
    };
    walk(root, order);
  };
  morsels.live.forEach(
    (key, lo, hi) => {
      const id = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
      const d = decodeIdBits(id);
      if (d.rootFrame !== key) throw new MorselError('ECORRUPT', `live table slot ${key} holds an ID for frame ${d.rootFrame}`);
      out.morsels++;
      markSubtree(d.rootFrame, d.order, `morsel ${key}`);
      if (d.meta) {
        const data = decodeIdBits(readMetaPage(region, d.rootFrame).dataId);
        markSubtree(data.rootFrame, data.order, `data morsel of meta ${key}`);
      }
    },
    (table) => mark(table, 'live table'),
  );
  return out;
}
