/**
 * Experiment 6 — scaling and overhead.
 *  - How each cost grows with size: a size sweep of population (morsel lazy,
 *    morsel batch, conventional lazy) and teardown, fitted per repetition
 *    (least-squares slope in ns per page).
 *  - Page-table memory of a fully populated morsel per order (thesis Table
 *    3.1, ~0.2%): measured for orders 0..2 by populating, analytic for 3..4;
 *    next to it the tables a conventional mapping of the same object costs
 *    in every address space that maps it.
 *  - Root size per order (thesis Table 4.1: the kernel prototype's
 *    workaround pre-allocates tables for orders 3 and 4): frames one
 *    create() takes.
 */
import { ConventionalSpace, ShmObject } from '../src/conventional/index.js';
import type { Memory } from '../src/memory.js';
import { orderBytes, type Order } from '../src/morsel/order.js';
import { Mmu } from '../src/space/mmu.js';
import { GiB, MiB, formatBytes } from '../src/units.js';
import { balance, checkNoLeak, freeFramesNow, volatileMemory } from './env.js';
import { fitLinear, sweepSlopes } from './fit.js';
import { REPS, claim, medianOf, perOp, repeatPhases, ticker, variant, type RunOptions } from './measure.js';
import type { ExperimentResult, VariantResult } from './stats.js';

const ORDERS: Order[] = [0, 1, 2, 3, 4];
/** Thesis Table 3.1 (max. page-table overhead of a fully populated morsel) and Table 4.1 (root size). */
const THESIS_TABLE_BYTES = [0, 4096, 2 * MiB, GiB, 513 * GiB];
const THESIS_ROOT_BYTES = [4096, 4096, 4096, 2 * MiB, GiB];

export interface OverheadParams {
  /** sweep sizes in pages */
  pages: number[];
  /** highest order populated for real (higher ones are computed) */
  populateUpTo: Order;
  reps: number;
}

export function overheadParams(quick: boolean): OverheadParams {
  const pages: number[] = [];
  for (let e = 4; e <= (quick ? 14 : 18); e += 2) pages.push(2 ** e);
  return { pages, populateUpTo: 2, reps: REPS };
}

/** Page-table frames of a fully populated order-k morsel: 1 + 512 + ... + 512^(k-1). */
export function fullTableFrames(order: Order): number {
  let n = 0;
  for (let i = 0; i < order; i++) n += 512 ** i;
  return n;
}

/** Volatile region the suite needs (a fully populated morsel of the highest measured order). */
export function overheadRegionBytes(p: OverheadParams): number {
  return Math.max(orderBytes(p.populateUpTo), p.pages[p.pages.length - 1] * 4096) * 1.01 + 64 * MiB;
}

export async function runOverhead(opts: RunOptions & { params?: OverheadParams }): Promise<ExperimentResult> {
  const p = opts.params ?? overheadParams(opts.quick);
  const memory = volatileMemory(overheadRegionBytes(p));
  const before = balance(memory);
  const tick = ticker(p.pages.length + 2 * ORDERS.length, opts.progress);
  const results: VariantResult[] = [];
  const fits: string[] = [];

  const sweep: Record<string, number[][]> = {};
  await measurePopulation(memory, 1024, 2); // JIT warm-up, discarded
  for (const pages of p.pages) {
    for (const [name, samples] of Object.entries(await measurePopulation(memory, pages, p.reps))) {
      results.push(variant(name.split(':')[0], `${name.split(':')[1]}_ns`, samples, pages));
      (sweep[name] ??= []).push(samples);
    }
    tick();
  }
  for (const [name, perSize] of Object.entries(sweep)) {
    const [v, what] = name.split(':');
    results.push(variant(v, `${what}_slope_ns_per_page`, sweepSlopes(p.pages, perSize)));
    const f = fitLinear(p.pages, perSize.map((s) => medianOf([variant(v, 'x', s)], v, 'x')));
    fits.push(`${v} ${what}: ${f.slope.toFixed(1)} ns/page + ${(f.intercept / 1e3).toFixed(1)} us (r² ${f.r2.toFixed(3)})`);
  }

  for (const order of ORDERS) {
    results.push(...tableOverhead(memory, order, p.populateUpTo));
    tick();
  }
  for (const order of ORDERS) {
    results.push(...(await rootSize(memory, order, p.reps)));
    tick();
  }
  checkNoLeak(memory, before, 'overhead');

  const m = (v: string, metric: string, x?: number): number => medianOf(results, v, metric, x);
  const percents = [1, 2].map((o) => m('morsel', 'table_overhead_percent', orderBytes(o as Order)));
  const roots = ORDERS.map((o) => m('morsel', 'root_bytes', orderBytes(o)));
  return {
    id: 'overhead',
    title: 'Scaling and overhead',
    anchor: 'thesis Table 3.1: ~0.2% page-table overhead for every order; Table 4.1: roots of 4 KiB (orders 0-2), ~2 MiB and ~1 GiB (orders 3-4, kernel workaround)',
    params: { ...p, thesisTableBytes: THESIS_TABLE_BYTES, thesisRootBytes: THESIS_ROOT_BYTES },
    results,
    claims: [
      claim('page-table overhead of a full order-1/2 morsel ≈ 0.2% (max deviation from 0.1953%, fraction)', 1 - Math.max(...percents.map((x) => Math.abs(x - 100 / 512) / (100 / 512))), {
        goal: 0.98,
        note: `measured ${percents.map((x) => x.toFixed(4) + '%').join(', ')}`,
      }),
      claim('root size: 4 KiB / largest root over orders 0..4 (1 = every root is one 4 KiB table)', 4096 / Math.max(...roots), {
        goal: 1,
        note: `roots ${roots.map((r) => formatBytes(r)).join(', ')}; the thesis prototype needs ~2 MiB (order 3) and ~1 GiB (order 4)`,
      }),
      claim('population slope: conventional lazy / morsel lazy (ns per page)', m('conventional', 'lazy_populate_slope_ns_per_page') / m('morsel', 'lazy_populate_slope_ns_per_page'), { goal: 1.3 }),
      claim('teardown slope: conventional (munmap + truncate) / morsel destroy (ns per page)', m('conventional', 'teardown_slope_ns_per_page') / m('morsel', 'teardown_slope_ns_per_page')),
    ],
    notes: [
      `Least-squares fits over ${p.pages.map((n) => formatBytes(n * 4096)).join(', ')} (medians): ${fits.join('; ')}.`,
      'lazy_populate = map a fresh object and write one byte per page (faults); batch_populate = Morsels.populate; teardown = morsel unmap + destroy vs conventional munmap + object destroy (free every page).',
      `Table overhead: orders 0..${p.populateUpTo} measured by populating every page and counting table frames (Morsels.stats); higher orders computed (1 + 512 + ... tables); conventional = tables one MAP_POPULATE mapping of the same object adds to one address space (paid again in every space that maps it; morsel tables exist once).`,
      'root_bytes = frames one create() takes (allocator free count before/after); create_destroy_ns = one create + destroy pair.',
    ],
  };
}

async function measurePopulation(memory: Memory, pages: number, reps: number): Promise<Record<string, number[]>> {
  const bytes = pages * 4096;
  const order: Order = bytes <= 2 * MiB ? 1 : 2;
  const space = memory.createSpace({ levels: 4 });
  const mmu = new Mmu(space);
  const conv = ConventionalSpace.create(memory);
  const cmmu = new Mmu(conv);
  const out: Record<string, number[]> = {};
  const add = (ph: Record<string, number[]>, v: string): void => {
    for (const [k, s] of Object.entries(ph)) out[`${v}:${k}`] = s;
  };
  add(
    await repeatPhases(reps, (lap) => {
      const id = memory.morsels.create(order);
      const a = space.map(id);
      lap('setup');
      for (let va = a; va < a + bytes; va += 4096) mmu.write8(va, 1);
      lap('lazy_populate');
      space.unmap(a);
      memory.morsels.destroy(id);
      lap('teardown');
      const id2 = memory.morsels.create(order);
      lap('setup');
      memory.morsels.populate(id2, 0, bytes);
      lap('batch_populate');
      memory.morsels.destroy(id2);
      lap('setup');
    }),
    'morsel',
  );
  add(
    await repeatPhases(reps, (lap) => {
      const obj = ShmObject.create(memory, pages);
      const a = conv.mmap(obj);
      lap('setup');
      for (let va = a; va < a + bytes; va += 4096) cmmu.write8(va, 1);
      lap('lazy_populate');
      conv.munmap(a);
      obj.destroy();
      lap('teardown');
    }),
    'conventional',
  );
  delete out['morsel:setup'];
  delete out['conventional:setup'];
  space.destroy();
  conv.destroy();
  return out;
}

function tableOverhead(memory: Memory, order: Order, populateUpTo: Order): VariantResult[] {
  const size = orderBytes(order);
  const out: VariantResult[] = [];
  let tables: number;
  if (order <= populateUpTo) {
    const id = memory.morsels.create(order);
    memory.morsels.populate(id, 0, size);
    const st = memory.morsels.stats(id);
    tables = order === 0 ? 0 : st.tableFrames;
    if (order >= 1) {
      // A conventional MAP_POPULATE mapping of the same pages in a fresh space.
      const d = memory.morsels.decode(id);
      const frames = new Uint32Array(size / 4096);
      for (let i = 0; i < frames.length; i++) frames[i] = memory.morsels.lookupPage(d.rootFrame, order, i * 4096);
      const obj = ShmObject.fromFrames(memory, frames);
      const conv = ConventionalSpace.create(memory);
      const free0 = freeFramesNow(memory);
      const a = conv.mmap(obj, { populate: true });
      const convTables = free0 - freeFramesNow(memory);
      out.push(variant('conventional', 'table_bytes', [convTables * 4096], size));
      out.push(variant('conventional', 'table_overhead_percent', [(convTables * 4096 * 100) / size], size));
      conv.munmap(a);
      conv.destroy();
      obj.destroy();
    }
    memory.morsels.destroy(id);
  } else {
    tables = fullTableFrames(order);
  }
  out.push(variant('morsel', 'table_bytes', [tables * 4096], size));
  out.push(variant('morsel', 'table_overhead_percent', [(tables * 4096 * 100) / size], size));
  out.push(variant('thesis', 'table_bytes', [THESIS_TABLE_BYTES[order]], size));
  return out;
}

async function rootSize(memory: Memory, order: Order, reps: number): Promise<VariantResult[]> {
  // balance() counts registry tables as free: the delta is the morsel's own frames.
  const free0 = balance(memory);
  const id = memory.morsels.create(order);
  const frames = free0 - balance(memory);
  memory.morsels.destroy(id);
  const size = orderBytes(order);
  return [
    variant('morsel', 'root_bytes', [frames * 4096], size),
    variant('thesis', 'root_bytes', [THESIS_ROOT_BYTES[order]], size),
    variant('morsel', 'create_destroy_ns', await perOp(reps, 200, () => memory.morsels.destroy(memory.morsels.create(order))), size),
  ];
}
