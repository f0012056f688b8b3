/**
 * Issue 3's micro-benchmarks of the primitive itself, each against its limit
 * in the same run: map+unmap per order (constant?), population per page (fault
 * path vs batch populate), translate with a warm TLB, and bulk read/write/fill
 * through the MMU vs the raw TypedArray.set/fill on the same region.
 */
import { Memory } from '../src/memory.js';
import { ORDERS, orderBytes } from '../src/morsel/order.js';
import { Access, Mmu } from '../src/space/mmu.js';
import { MiB } from '../src/units.js';
import { nowNs, repeat, summarize, type Claim, type ExperimentResult, type VariantResult } from './stats.js';

export interface PrimitiveOptions {
  quick: boolean;
  progress?: (done: number, total: number) => void;
}

/** Issue 12's goals for MMU bulk read/write/fill as a fraction of raw typed-array operations. */
const BULK_GOAL_4K = 0.85;
const BULK_GOAL_HUGE = 0.95;

export async function runPrimitive(opts: PrimitiveOptions): Promise<ExperimentResult> {
  const reps = opts.quick ? 7 : 15;
  const bulkBytes = (opts.quick ? 64 : 256) * MiB;
  const m = Memory.volatile(bulkBytes * 2 + 64 * MiB);
  m.region.prefault();
  const results: VariantResult[] = [];
  const notes: string[] = [];
  const steps = 4;
  let step = 0;
  const tick = () => opts.progress?.(++step, steps);

  // 1. map + unmap per order: one entry written, one cleared, whatever the size.
  // Orders are interleaved within each repetition so JIT warm-up and machine
  // noise fall on all of them alike.
  const space = m.createSpace({ levels: 5 });
  const ids = ORDERS.map((order) => m.morsels.create(order));
  const addresses = ids.map((id) => space.map(id));
  addresses.forEach((a) => space.unmap(a)); // the tables on each path now exist: steady state
  const mapSamples: number[][] = ORDERS.map(() => []);
  for (let r = -2; r < reps; r++) {
    ORDERS.forEach((order, i) => {
      const t0 = nowNs();
      for (let k = 0; k < 1000; k++) space.unmap(space.map(ids[i], { address: addresses[i] }));
      if (r >= 0) mapSamples[i].push((nowNs() - t0) / 1000);
    });
  }
  ORDERS.forEach((order, i) => {
    results.push({ variant: `order ${order}`, metric: 'map_unmap_ns', x: orderBytes(order), summary: summarize(mapSamples[i]) });
    m.morsels.destroy(ids[i]);
  });
  tick();

  // 2. population per page: the fault path (one walk per page) vs batch populate.
  const popBytes = 32 * MiB;
  const mmu = new Mmu(space);
  const fault: number[] = [];
  const batch: number[] = [];
  for (let r = 0; r < reps; r++) {
    const a = m.morsels.create(2);
    const base = space.map(a);
    let t0 = nowNs();
    for (let off = 0; off < popBytes; off += 4096) mmu.translate(base + off, Access.Write);
    fault.push((nowNs() - t0) / (popBytes / 4096));
    space.unmap(base);
    m.morsels.destroy(a);
    const b = m.morsels.create(2);
    t0 = nowNs();
    m.morsels.populate(b, 0, popBytes);
    batch.push((nowNs() - t0) / (popBytes / 4096));
    m.morsels.destroy(b);
  }
  results.push({ variant: 'fault path', metric: 'populate_ns_per_page', summary: summarize(fault) });
  results.push({ variant: 'batch populate', metric: 'populate_ns_per_page', summary: summarize(batch) });
  tick();

  // 3. translate with a warm TLB (the hit path), 4096 pages = the TLB reach.
  const id = m.morsels.create(2);
  const base = space.map(id);
  m.morsels.populate(id, 0, bulkBytes);
  for (let p = 0; p < 4096; p++) mmu.translate(base + p * 4096, Access.Read);
  const lookups = 1 << 20;
  const tr = await repeat(reps, () => {
    let sink = 0;
    for (let i = 0; i < lookups; i++) sink += mmu.translate(base + ((i & 4095) << 12), Access.Read);
    return sink;
  });
  results.push({ variant: 'translate (TLB hit)', metric: 'ns_per_translate', summary: summarize(tr.map((t) => t / lookups)) });
  tick();

  // 4. bulk bandwidth through the MMU (a 4 KiB-page morsel, and a morsel of
  // 2 MiB leaves) vs raw typed-array ops on memory backed the same way.
  const hugeId = m.morsels.create(2, { huge: true });
  const hugeBase = space.map(hugeId);
  m.morsels.populate(hugeId, 0, bulkBytes);
  const hugeLeaves = m.morsels.stats(hugeId).hugeLeaves;
  const src = new Uint8Array(bulkBytes).fill(7);
  const dst = new Uint8Array(bulkBytes);
  // Raw: the same operations on memory backed like the region's (a second volatile region, host huge pages, prefaulted), no morsel involved.
  const rawMemory = Memory.volatile(bulkBytes + 16 * MiB);
  rawMemory.region.prefault();
  const raw = new Uint8Array(rawMemory.region.sab, 16 * MiB, bulkBytes);
  const rawWords = new Int32Array(rawMemory.region.sab, 16 * MiB, bulkBytes / 4);
  const gbps = (ns: number[]) => ns.map((t) => bulkBytes / t); // bytes/ns = GB/s
  const bulk: [string, () => void][] = [
    ['MMU write (set per page)', () => mmu.write(base, src)],
    ['MMU write, 2 MiB leaves', () => mmu.write(hugeBase, src)],
    ['raw set', () => raw.set(src)],
    ['MMU read (set per page)', () => mmu.read(base, dst)],
    ['MMU read, 2 MiB leaves', () => mmu.read(hugeBase, dst)],
    ['raw read (set)', () => dst.set(raw)],
    ['MMU fill (Int32 fill per page)', () => mmu.fill(base, bulkBytes, 1)],
    ['MMU fill, 2 MiB leaves', () => mmu.fill(hugeBase, bulkBytes, 1)],
    ['raw fill (Int32Array.fill)', () => rawWords.fill(0x01010101)],
  ];
  // Interleaved like the map figures: each repetition runs every variant once,
  // so drifting machine noise hits the MMU and the raw side alike.
  const samples = bulk.map(() => [] as number[]);
  for (let r = -1; r < reps; r++) {
    bulk.forEach(([, fn], i) => {
      const t0 = nowNs();
      fn();
      if (r >= 0) samples[i].push(nowNs() - t0);
    });
  }
  const bw = new Map<string, number>();
  bulk.forEach(([name], i) => {
    const s = summarize(gbps(samples[i]));
    bw.set(name, s.median);
    results.push({ variant: name, metric: 'GB_per_s', summary: s });
  });
  tick();
  space.unmap(base);
  m.morsels.destroy(id);
  space.unmap(hugeBase);
  m.morsels.destroy(hugeId);
  space.destroy();

  const mapNs = results.filter((r) => r.metric === 'map_unmap_ns').map((r) => r.summary.median);
  const ratio = (a: string, b: string) => bw.get(a)! / bw.get(b)!;
  const claims: Claim[] = [
    { name: 'map+unmap time, order 4 (256 TiB) / order 0 (4 KiB): constant means ~1', measured: mapNs[4] / mapNs[0], goal: 1.5, met: mapNs[4] / mapNs[0] < 1.5, note: 'lower is better; goal: within 1.5x' },
    { name: 'batch populate speedup over the fault path (per page)', measured: summarize(fault).median / summarize(batch).median, met: summarize(fault).median > summarize(batch).median },
    ...bulkClaims('4 KiB pages', ['MMU write (set per page)', 'MMU read (set per page)', 'MMU fill (Int32 fill per page)'], BULK_GOAL_4K),
    ...bulkClaims('2 MiB leaves', ['MMU write, 2 MiB leaves', 'MMU read, 2 MiB leaves', 'MMU fill, 2 MiB leaves'], BULK_GOAL_HUGE),
  ];
  function bulkClaims(kind: string, [write, read, fill]: string[], goal: number): Claim[] {
    return [
      [`MMU write bandwidth / raw set, ${kind}`, ratio(write, 'raw set')],
      [`MMU read bandwidth / raw set, ${kind}`, ratio(read, 'raw read (set)')],
      [`MMU fill bandwidth / raw Int32Array.fill, ${kind}`, ratio(fill, 'raw fill (Int32Array.fill)')],
    ].map(([name, measured]) => ({ name: name as string, measured: measured as number, goal, met: (measured as number) >= goal }));
  }
  notes.push(`Bulk access: ${bulkBytes / MiB} MiB through the MMU in one call; the 2 MiB-leaf morsel holds ${hugeLeaves} leaves (issue 12 goals: >= ${BULK_GOAL_4K} of raw on 4 KiB pages, >= ${BULK_GOAL_HUGE} on 2 MiB leaves). Runs of contiguous frames are translated through the walk cache (one entry load per page; none inside a leaf).`);
  notes.push('Population figures include zeroing each fresh frame (Int32Array.fill), as a kernel would.');
  return {
    id: 'primitive',
    title: 'The primitive: map/unmap per order, population, translation, bulk access',
    anchor: 'issue 3 benchmark (thesis Tables 3.1/4.1 for sizes)',
    params: { reps, bulkBytes, popBytes, tlbEntries: 4096 },
    results,
    claims,
    notes,
  };
}
