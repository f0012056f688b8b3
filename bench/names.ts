/**
 * Experiment — the management layer's name operations against the file
 * system (issue 9):
 *  - open + close of a name with its rights check (path walk, mode check,
 *    usage count up and down) against fs.openSync + closeSync of a file, in
 *    /dev/shm (tmpfs) and in the region file's directory, at 10^3 and 10^5
 *    names (10^6 with --full: the quick profile stops at 10^5), names spread
 *    over NAME_DIRS directories, random order;
 *  - the same in 1 and 2 worker threads (throughput; scaling: the median of
 *    short interleaved pairs, beside an ALU-only probe of the machine's two CPUs);
 *  - create + unlink of a named morsel against file create + unlink on tmpfs.
 * `names` is the API as every user gets it, with the per-process lookup
 * cache (src/manage/lookup-cache.ts, the counterpart of the kernel's dcache
 * that serves the file baselines); `names-uncached` walks the namespace on
 * every open (the cache turned off), in the same run.
 * The names point at a pool of POOL morsels (many names per morsel, like hard
 * links: N distinct morsels would cost N frames; the lookup does not care).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { dirname, join } from 'node:path';
import { Memory } from '../src/memory.js';
import { MiB } from '../src/units.js';
import { Names, type NameRecord } from '../src/manage/names.js';
import { collectGarbage } from './env.js';
import { REPS, claim, medianOf, perOp, repeatPhases, ticker, variant, type RunOptions } from './measure.js';
import type { ExperimentResult, VariantResult } from './stats.js';
import { Barrier, WorkerClient } from './workers/rpc.js';
import type { NamesRequest, NamesReply } from './workers/names.js';

const POOL = 256;
const NAME_DIRS = 1000;
const WORKER = new URL('./workers/names.js', import.meta.url);
/** Discarded create+unlink passes per side before the timed ones. */
const CREATE_WARMUP = 3;
/**
 * Timed pairs (one worker, then two) per scaling figure. Each phase is one
 * pass over the path list (20,000 opens: 4-10 ms of one thread): this
 * machine's CPU speed drifts by up to 2x over tens of milliseconds, so
 * many short interleaved pairs, each giving a ratio, and their median, see
 * one machine per pair; a few long phases did not (an ALU-only probe
 * "scaled" 0.55-2.8x in 100 ms phases, 1.9-2.0x as the median of 8 ms pairs).
 */
const SCALING_PAIRS = 41;
/** Untimed passes of each worker alone first, so both run compiled code (the second one only works in 2-worker phases). */
const WARMUP_PASSES = 8;
/**
 * The machine probes run by the same threads before each phase: ALU work
 * (units of about 1.6 us; 8 ms a phase), how much of two CPUs the machine
 * gives; and lookups in a plain Map of the same paths (passes over the list),
 * how two memory-bound threads with nothing shared scale on it.
 */
const PROBES = { alu: 5000, map: 1 } as const;
/**
 * A pair counts as "the machine gave two CPUs" when its ALU probe scaled at
 * least this much (the goal is stated for that case: here the host at times
 * runs both vCPUs on one core, and then the probe, the file system and we all
 * scale ~1.0); and the claim needs at least MIN_GIVEN_PAIRS such pairs.
 */
const TWO_CPUS = 1.8;
const MIN_GIVEN_PAIRS = 8;
type ProbeKind = keyof typeof PROBES;

export interface NamesParams {
  counts: number[];
  /** timed open+close (or create+unlink) operations per repetition */
  ops: number;
  reps: number;
  /** timed one-worker/two-worker pairs of the throughput measurement */
  pairs: number;
}

export function namesParams(quick: boolean): NamesParams {
  return { counts: quick ? [1e3, 1e5] : [1e3, 1e5, 1e6], ops: 20_000, reps: REPS, pairs: SCALING_PAIRS };
}

/** Region size for `count` names: the namespace's table capacity follows the region's frames (4 per slot). */
const regionBytesFor = (count: number): number => Math.max(256 * MiB, Math.ceil((count * 2048) / (4 * MiB)) * 4 * MiB);

const nameOf = (i: number): string => `/d${i % NAME_DIRS}/n${i}`;

/** A fixed pseudo-random sequence of indices below `n` (xorshift). */
function randomIndices(count: number, n: number, seed: number): Uint32Array {
  const out = new Uint32Array(count);
  let x = seed | 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) % n;
  }
  return out;
}

export async function runNames(opts: RunOptions & { params?: NamesParams }): Promise<ExperimentResult> {
  const p = opts.params ?? namesParams(opts.quick);
  const max = p.counts[p.counts.length - 1];
  const regionDir = fs.mkdtempSync(join(os.tmpdir(), 'morsel-names-'));
  const shmDir = fs.mkdtempSync('/dev/shm/morsel-names-');
  const memory = Memory.create(join(regionDir, 'names.region'), regionBytesFor(max));
  const tick = ticker(p.counts.length + 1, opts.progress);
  const results: VariantResult[] = [];
  try {
    const names = memory.names;
    const template = fillPool(memory);
    for (const dir of [shmDir, regionDir]) for (let d = 0; d < NAME_DIRS; d++) fs.mkdirSync(join(dir, `d${d}`));
    for (let d = 0; d < NAME_DIRS; d++) names.mkdir(`/d${d}`);
    let have = 0;
    for (const count of p.counts) {
      for (; have < count; have++) {
        names.ns.create(nameOf(have), { ...template(have), ctimeMs: Date.now(), mtimeMs: Date.now() });
        for (const dir of [shmDir, regionDir]) fs.closeSync(fs.openSync(dir + nameOf(have), 'w', 0o644));
      }
      results.push(...(await measureOpenClose(memory, count, p, { shm: shmDir, region: regionDir })));
      tick();
      collectGarbage();
    }
    results.push(...(await measureCreateUnlink(memory, shmDir, p)));
    tick();
  } finally {
    memory.close();
    fs.rmSync(regionDir, { recursive: true, force: true });
    fs.rmSync(shmDir, { recursive: true, force: true });
    collectGarbage();
  }
  const at = (v: string, m: string, x?: number) => medianOf(results, v, m, x);
  const openRatio = at('fs-shm', 'open_close_ns', max) / at('names', 'open_close_ns', max);
  const openRatioRegionDir = at('fs-region-dir', 'open_close_ns', max) / at('names', 'open_close_ns', max);
  const createRatio = at('fs-shm', 'create_unlink_ns') / at('names', 'create_unlink_ns');
  const scalingAll = at('names-scaling', 'pair_ratio', max);
  const given = results.find((r) => r.variant === 'names-scaling (2 CPUs given)' && r.x === max)?.summary.n ?? 0;
  const enough = given >= MIN_GIVEN_PAIRS;
  const scaling = enough ? at('names-scaling (2 CPUs given)', 'pair_ratio', max) : scalingAll;
  const probe = at('cpu-probe-scaling', 'pair_ratio', max);
  const mapProbe = at('map-probe-scaling', 'pair_ratio', max);
  const goalSize = max >= 1e6 ? 'measured at the goal\'s size (10^6 names)' : `issue 9 states this goal at 10^6 names; this profile stops at ${max} (run --full to measure it)`;
  return {
    id: 'names',
    title: 'Names: open+close with rights check and create+unlink vs the file system',
    anchor: 'issue 9 (management layer): no paper figure',
    params: { ...p, pool: POOL, dirs: NAME_DIRS, cpus: os.availableParallelism() },
    results,
    claims: [
      claim(`names vs /dev/shm files, open+close at ${max} names`, openRatio, { goal: 10, note: goalSize }),
      claim(`names vs files in the region's directory, open+close at ${max} names`, openRatioRegionDir, { goal: 10, note: goalSize }),
      claim('names vs /dev/shm files, create+unlink', createRatio, { goal: 2 }),
      claim(`names open+close throughput, 2 workers / 1 worker at ${max} names, when the machine gives 2 CPUs`, scaling, {
        goal: 1.6,
        met: enough && scaling >= 1.6,
        note:
          (enough
            ? `median of the ${given} of ${p.pairs} interleaved pairs whose ALU probe, run by the same two threads just before, scaled >= ${TWO_CPUS} (the machine gave two CPUs)`
            : `the machine gave two CPUs (ALU probe >= ${TWO_CPUS}) in only ${given} of ${p.pairs} pairs, fewer than ${MIN_GIVEN_PAIRS}: shown is the median of all pairs, not judged (met: no)`) +
          `. All pairs: ours ${scalingAll.toFixed(2)}x, the ALU probe ${probe.toFixed(2)}x, lookups of the same paths in a plain Map (nothing shared) ${mapProbe.toFixed(2)}x`,
      }),
      claim(`names open+close throughput, 2 workers / 1 worker at ${max} names, all pairs`, scalingAll, { note: `whatever the machine gave: the ALU probe scaled ${probe.toFixed(2)}x in the same pairs` }),
    ],
    notes: [
      `names point at a pool of ${POOL} order-0 morsels; ${NAME_DIRS} directories; random lookup order`,
      'names: with the per-process lookup cache (as every user gets it; the file baselines have the dcache); names-uncached: a namespace walk per open',
      opts.quick ? 'quick profile: up to 10^5 names (--full adds 10^6)' : 'full profile: up to 10^6 names',
      `region file and its directory: ${dirname(memory.region.path ?? '')} (${os.tmpdir()})`,
    ],
  };
}

/** Creates the pool of morsels and returns the record of name i (mode 0644, owned by the caller). */
function fillPool(memory: Memory): (i: number) => NameRecord {
  const names = memory.names;
  names.mkdir('/pool');
  const recs: NameRecord[] = [];
  for (let i = 0; i < POOL; i++) {
    names.close(names.create(`/pool/p${i}`, { sizeBytes: 4096, mode: 0o644 }));
    recs.push(names.ns.lookup(`/pool/p${i}`));
  }
  return (i) => recs[i % POOL];
}

async function measureOpenClose(memory: Memory, count: number, p: NamesParams, dirs: { shm: string; region: string }): Promise<VariantResult[]> {
  const names = memory.names;
  const idx = randomIndices(p.ops, count, count);
  const paths = Array.from(idx, (i) => nameOf(i));
  const out: VariantResult[] = [];
  out.push(variant('names', 'open_close_ns', await perOp(p.reps, p.ops, (i) => names.close(names.open(paths[i]))), count));
  const uncached = new Names(memory.morsels, memory.names.ns, { lookupCacheEntries: 0 });
  out.push(variant('names-uncached', 'open_close_ns', await perOp(p.reps, p.ops, (i) => uncached.close(uncached.open(paths[i]))), count));
  for (const [v, dir] of [['fs-shm', dirs.shm], ['fs-region-dir', dirs.region]] as const) {
    const files = paths.map((q) => dir + q);
    out.push(variant(v, 'open_close_ns', await perOp(p.reps, p.ops, (i) => fs.closeSync(fs.openSync(files[i], 'r'))), count));
  }
  for (const kind of ['names', 'fs-shm'] as const) {
    const t = await throughput(memory, kind, kind === 'names' ? paths : paths.map((q) => dirs.shm + q), p.pairs);
    for (const workers of [1, 2] as const) out.push(variant(`${kind}-${workers}-worker${workers > 1 ? 's' : ''}`, 'open_close_per_s', t.perS[workers], count));
    out.push(variant(`${kind}-scaling`, 'pair_ratio', t.ratios, count));
    const given = t.ratios.filter((_, i) => t.probeRatios.alu[i] >= TWO_CPUS);
    if (kind === 'names' && given.length > 0) out.push(variant('names-scaling (2 CPUs given)', 'pair_ratio', given, count));
    if (kind === 'names') {
      out.push(variant('cpu-probe-scaling', 'pair_ratio', t.probeRatios.alu, count));
      out.push(variant('map-probe-scaling', 'pair_ratio', t.probeRatios.map, count));
    }
  }
  return out;
}

interface Throughput {
  /** open+close per second of one worker and of two, per pair */
  perS: Record<1 | 2, number[]>;
  /** two workers' rate / one worker's, per pair */
  ratios: number[];
  /** the same for the probes, run just before each phase */
  probeRatios: Record<ProbeKind, number[]>;
}

/**
 * Open+close per second of one thread and of two threads (each doing all of
 * `paths` once per phase), in `pairs` pairs after a warm-up; before
 * each phase, the same threads run the ALU probe, so every pair also says
 * how much of two CPUs the machine gave just then.
 */
async function throughput(memory: Memory, kind: 'names' | 'fs-shm', paths: string[], pairs: number): Promise<Throughput> {
  const clients = [0, 1].map(() => WorkerClient.start(WORKER, { share: memory.share() }));
  try {
    // Independent clients: each worker walks the list from its own starting point (in lockstep on one
    // list both would open the same name at the same moment, on either side: a contention test).
    const from = (i: number): string[] => [...paths.slice((i * paths.length) >> 1), ...paths.slice(0, (i * paths.length) >> 1)];
    await Promise.all(clients.map((c, i) => c.call<void>({ op: 'load', paths: from(i) } satisfies NamesRequest)));
    collectGarbage(); // now, not as concurrent marking of this thread's heap on the CPUs the pairs need
    const phase = async (workers: 1 | 2, req: (barrier: Barrier) => NamesRequest): Promise<number> => {
      const barrier = new Barrier(workers);
      const replies = await Promise.all(clients.slice(0, workers).map((c) => c.call<NamesReply>(req(barrier))));
      return Math.max(...replies.map((r) => r.t1)) - Math.min(...replies.map((r) => r.t0));
    };
    const openClose = (workers: 1 | 2) => phase(workers, (b) => ({ op: 'open-close', kind, barrier: b.sab, parties: workers, rounds: 1 }));
    const probe = (workers: 1 | 2, which: ProbeKind) => phase(workers, (b) => ({ op: 'probe', probe: which, barrier: b.sab, parties: workers, units: PROBES[which] }));
    for (let pass = 0; pass < WARMUP_PASSES; pass++) {
      for (const c of clients) {
        await c.call<NamesReply>({ op: 'open-close', kind, barrier: new Barrier(1).sab, parties: 1, rounds: 1 } satisfies NamesRequest);
        for (const which of ['alu', 'map'] as const) await c.call<NamesReply>({ op: 'probe', probe: which, barrier: new Barrier(1).sab, parties: 1, units: PROBES[which] } satisfies NamesRequest);
      }
    }
    const out: Throughput = { perS: { 1: [], 2: [] }, ratios: [], probeRatios: { alu: [], map: [] } };
    for (let pair = 0; pair < pairs; pair++) {
      const ns = { 1: 0, 2: 0 };
      const probeNs = { alu: { 1: 0, 2: 0 }, map: { 1: 0, 2: 0 } };
      for (const workers of [1, 2] as const) {
        for (const which of ['alu', 'map'] as const) probeNs[which][workers] = await probe(workers, which);
        ns[workers] = await openClose(workers);
        out.perS[workers].push((workers * paths.length) / (ns[workers] / 1e9));
      }
      out.ratios.push((2 * ns[1]) / ns[2]);
      for (const which of ['alu', 'map'] as const) out.probeRatios[which].push((2 * probeNs[which][1]) / probeNs[which][2]);
    }
    return out;
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

async function measureCreateUnlink(memory: Memory, shmDir: string, p: NamesParams): Promise<VariantResult[]> {
  const names = memory.names;
  const ops = Math.min(p.ops, 5000);
  names.mkdir('/cu');
  fs.mkdirSync(join(shmDir, 'cu'));
  const paths = Array.from({ length: ops }, (_, i) => `/cu/x${i}`);
  const files = paths.map((q) => shmDir + q);
  // Interleaved per repetition. The first passes touch new frames and record
  // pages (host first-touch faults) and warm the JIT: CREATE_WARMUP passes
  // per side are discarded.
  const ns = await repeatPhases(
    p.reps,
    (lap) => {
      for (let i = 0; i < ops; i++) {
        names.close(names.create(paths[i], { sizeBytes: 4096 }));
        names.unlink(paths[i]);
      }
      lap('names');
      for (let i = 0; i < ops; i++) {
        fs.closeSync(fs.openSync(files[i], 'wx', 0o600));
        fs.unlinkSync(files[i]);
      }
      lap('fs-shm');
    },
    CREATE_WARMUP,
  );
  const ours = ns.names.map((t) => t / ops);
  const theirs = ns['fs-shm'].map((t) => t / ops);
  return [variant('names', 'create_unlink_ns', ours), variant('fs-shm', 'create_unlink_ns', theirs)];
}
