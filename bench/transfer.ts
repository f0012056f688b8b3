/**
 * Experiment 3 — transfer between address spaces (thesis Fig 5.7): a sender
 * worker fills 32 MiB packets (5 circulating) and passes references to a
 * receiver worker with its own address space on the same region, which maps
 * each packet, touches one byte per page, unmaps it and passes it back.
 * Throughput in GiB/s from the receiver's completion timestamps.
 *
 * Morsel packets are order-2 morsels (1 GiB virtual) with only the first
 * 32 MiB populated, as in the thesis: one ID and one map entry per packet
 * (16 order-1 morsels would need 16 IDs and 16 entries); morsel-huge packets
 * are the same with 2 MiB leaves (16 per packet). Conventional
 * packets are shm objects of 8192 pages, mapped lazily by both sides.
 */
import { ShmObject } from '../src/conventional/index.js';
import { assert } from '../src/errors.js';
import { MiB } from '../src/units.js';
import { balance, checkNoLeak, persistentMemory, volatileMemory } from './env.js';
import type { Memory } from '../src/memory.js';
import { REPS, claim, gibPerS, medianOf, ticker, variant, type RunOptions } from './measure.js';
import type { ExperimentResult, VariantResult } from './stats.js';
import { Barrier, WorkerClient } from './workers/rpc.js';
import type { TransferRun, TransferVariant } from './workers/transfer.js';
import { MessageChannel } from 'node:worker_threads';
import { tmpdir } from 'node:os';
import type { Frame } from '../src/units.js';

export const TRANSFER_VARIANTS: TransferVariant[] = ['limit', 'limit-2threads', 'morsel-sender-only', 'morsel', 'morsel-huge', 'conventional', 'structured-clone', 'transferable', 'fresh-sab'];
const PACKETS = 5;
/** Run again on a file-backed region (cost of persistence, durability). */
const FILE_VARIANTS: TransferVariant[] = ['morsel', 'morsel-durable'];

export interface TransferParams {
  packetBytes: number;
  /** packets per repetition */
  count: number;
  /** packets per repetition for fresh-sab (each one is a host allocation + first touch) */
  freshCount: number;
  /** packets per repetition for morsel-durable (each msync writes a whole packet to the disk) */
  durableCount: number;
  reps: number;
}

export function transferParams(quick: boolean): TransferParams {
  return quick ? { packetBytes: 32 * MiB, count: 48, freshCount: 8, durableCount: 8, reps: REPS } : { packetBytes: 32 * MiB, count: 200, freshCount: 24, durableCount: 24, reps: REPS };
}

export function transferRegionBytes(p: TransferParams): number {
  return 4 * PACKETS * p.packetBytes + 64 * MiB;
}

/** Runs `variants` between a sender and a receiver worker on `memory`; variant names get `suffix`. */
async function measureOn(memory: Memory, p: TransferParams, variants: TransferVariant[], suffix: string, tick: () => void): Promise<VariantResult[]> {
  const before = balance(memory);
  const pages = p.packetBytes / 4096;
  const needs = (v: TransferVariant) => variants.includes(v);
  // The circulating packets, prepared (populated) once.
  const packets = (huge: boolean): bigint[] =>
    Array.from({ length: PACKETS }, () => {
      const id = memory.morsels.create(2, { huge });
      memory.morsels.populate(id, 0, p.packetBytes);
      return id;
    });
  const ids = packets(false);
  const hugeIds = needs('morsel-huge') ? packets(true) : [];
  const objects = needs('conventional')
    ? Array.from({ length: PACKETS }, () => {
        const obj = ShmObject.create(memory, pages);
        for (let i = 0; i < pages; i++) obj.getPage(i);
        return obj;
      })
    : [];
  const blocks = needs('limit') || needs('limit-2threads') ? Array.from({ length: PACKETS }, () => Array.from({ length: p.packetBytes / (2 * MiB) }, () => memory.alloc.alloc(9) as number)) : [];
  const refs: Record<TransferVariant, unknown[] | undefined> = {
    morsel: ids,
    'morsel-huge': hugeIds,
    conventional: objects.map((o) => o.share()),
    limit: blocks,
    'morsel-durable': ids,
    'limit-2threads': undefined,
    'morsel-sender-only': ids,
    'structured-clone': undefined,
    transferable: undefined,
    'fresh-sab': undefined,
  };

  const { port1, port2 } = new MessageChannel();
  const url = new URL('./workers/transfer.js', import.meta.url);
  const sender = WorkerClient.start(url, { share: memory.share(), role: 'sender', port: port1 }, [port1]);
  const receiver = WorkerClient.start(url, { share: memory.share(), role: 'receiver', port: port2 }, [port2]);
  const results: VariantResult[] = [];
  const countOf = (v: TransferVariant): number => (v === 'fresh-sab' ? p.freshCount : v === 'morsel-durable' ? p.durableCount : p.count);
  try {
    /** limit-2threads: both workers copy at once from a barrier, the sender into the first half of every packet's blocks, the receiver into the second. */
    const twoThreads = async (): Promise<number> => {
      const half = p.packetBytes / (4 * MiB);
      assert(Number.isInteger(half) && half >= 1, 'limit-2threads splits each packet into two halves of whole 2 MiB blocks');
      const req = { op: 'run', variant: 'limit-2threads', count: p.count, packetBytes: p.packetBytes, barrier: new Barrier(2).sab } as const;
      const all = await Promise.all([
        sender.call<number[]>({ ...req, refs: blocks.map((b) => b.slice(0, half)) }),
        receiver.call<number[]>({ ...req, refs: blocks.map((b) => b.slice(half)) }),
      ]);
      return Math.max(...all.map((t) => t[t.length - 1])) - Math.min(...all.map((t) => t[0]));
    };
    /** One run of `v`: the time from the first to the last packet, as the receiver (or the sender alone) saw it. */
    const once = async (v: TransferVariant): Promise<number> => {
      if (v === 'limit-2threads') return twoThreads();
      const req: TransferRun = { op: 'run', variant: v, count: countOf(v), packetBytes: p.packetBytes, refs: refs[v] };
      const [recv, sent] = await Promise.all([
        v === 'limit' || v === 'morsel-sender-only' ? Promise.resolve(null) : receiver.call<number[]>({ ...req, refs: undefined }),
        sender.call<number[]>(req),
      ]);
      const times = recv ?? sent;
      return times[times.length - 1] - times[0];
    };
    // Variants interleaved within every repetition (these VMs drift); the first round warms up.
    const durations = new Map<TransferVariant, number[]>(variants.map((v) => [v, []]));
    for (let rep = -1; rep < p.reps; rep++) {
      for (const v of variants) {
        const ns = await once(v);
        if (rep >= 0) durations.get(v)!.push(ns);
      }
    }
    for (const v of variants) {
      results.push(variant(v + suffix, 'GiB_per_s', durations.get(v)!.map((ns) => gibPerS((countOf(v) - 1) * p.packetBytes, ns))));
      tick();
    }
  } finally {
    await Promise.all([sender.close(), receiver.close()]);
    [...ids, ...hugeIds].forEach((id) => memory.morsels.destroy(id));
    objects.forEach((o) => o.destroy());
    blocks.flat().forEach((b) => memory.alloc.free(b as Frame, 9));
  }
  checkNoLeak(memory, before, 'transfer');
  return results;
}

export async function runTransfer(opts: RunOptions & { params?: TransferParams }): Promise<ExperimentResult> {
  const p = opts.params ?? transferParams(opts.quick);
  const tick = ticker(TRANSFER_VARIANTS.length + FILE_VARIANTS.length, opts.progress);
  const results = await measureOn(volatileMemory(transferRegionBytes(p)), p, TRANSFER_VARIANTS, '', tick);
  // Cost of persistence (issue 5): the morsel path again, on a file-backed region, without and with an msync per packet.
  const file = persistentMemory(transferRegionBytes(p));
  try {
    results.push(...(await measureOn(file.memory, p, FILE_VARIANTS, ' (file-backed)', tick)));
  } finally {
    file.dispose();
  }
  const m = (v: string): number => medianOf(results, v, 'GiB_per_s');
  return {
    id: 'transfer',
    title: 'Transfer between address spaces (thesis Fig 5.7)',
    anchor: 'morsel 10.5 GiB/s = 94% of memset (11.2 GiB/s); SHM 5.5 GiB/s',
    params: { ...p, circulating: PACKETS, morselOrder: 2, touch: 'one byte per page, through the run-level translation' },
    results,
    claims: [
      claim('transfer: morsel throughput / fill limit', m('morsel') / m('limit'), { anchor: 0.94 }),
      claim('transfer: morsel with 2 MiB leaves throughput / fill limit', m('morsel-huge') / m('limit'), { anchor: 0.94, goal: 0.9, note: 'issue 12: packets of 2 MiB leaves; every page is still translated, but inside a leaf a TLB miss costs one compare (the walk cache holds the leaf)' }),
      claim('transfer: morsel throughput / two-thread copy limit', m('morsel') / m('limit-2threads'), {
        note: 'informational: limit-2threads = sender and receiver copying at once, each into its own half of the blocks (the two-core copy bandwidth); the morsel transfer also runs two threads, but only the sender copies',
      }),
      claim('machine scaling: two-thread / one-thread copy limit', m('limit-2threads') / m('limit'), {
        note: 'informational: near 1 means one core already saturates memory bandwidth (or the second core is busy)',
      }),
      claim('transfer: morsel sender alone (map + copy + unmap, nothing sent) / fill limit', m('morsel-sender-only') / m('limit'), {
        note: 'the sender-side cost of mapping and translating every page, without the receiver thread competing for the 2 cores',
      }),
      claim('transfer: morsel / conventional throughput', m('morsel') / m('conventional'), { anchor: 10.5 / 5.5, goal: 2 }),
      claim('transfer: morsel / structured-clone throughput', m('morsel') / m('structured-clone'), { goal: 3 }),
      claim('cost of persistence: transfer throughput, volatile / file-backed region, morsel (>1 = file slower)', m('morsel') / m('morsel (file-backed)'), {
        note: 'the same morsel transfer on a region file mapped MAP_SHARED (page cache) instead of a SharedArrayBuffer',
      }),
      claim('durability: transfer throughput, morsel-durable / morsel, file-backed region (<1 = msync slower)', m('morsel-durable (file-backed)') / m('morsel (file-backed)'), {
        note: `informational: the durable sender msyncs every contiguous run of the packet's frames (the whole 32 MiB payload it just wrote) before sending the packet; the region file is in ${tmpdir()}`,
      }),
      claim('transfer: morsel / transferable ArrayBuffer throughput', m('morsel') / m('transferable')),
      claim('transfer: morsel / fresh SharedArrayBuffer per packet throughput', m('morsel') / m('fresh-sab')),
    ],
    notes: [
      'Throughput = (packets - 1) x 32 MiB / time between the first and the last packet the receiver finished (the sender for the limit and morsel-sender-only).',
      'Every sender copies the same prepared 32 MiB payload into the packet with TypedArray.set (faster than Int32Array.fill on a SharedArrayBuffer here). limit = that copy into the same amount of region memory in 2 MiB contiguous blocks, without mapping or sending: the single-core write bandwidth.',
      'limit-2threads = the same copy done by both workers at once from a shared barrier, each into its own half of every packet\'s blocks: the two-core copy bandwidth; time from the first half-packet either finished to the last one.',
      'morsel-durable (file-backed only) = the morsel transfer whose sender msyncs (Region.sync) every contiguous run of frames it wrote before sending the packet: the written payload reaches the disk at each packet boundary.',
      'morsel / conventional senders translate every page through their MMU (TLB, walk, faults), then copy per physically contiguous run (bench/access.ts); every packet is mapped and unmapped on both sides, so each copy starts with an empty TLB.',
      'morsel-sender-only = the morsel sender without a receiver: separates per-page translation cost from the cost of running two threads on two (shared) cores.',
      'transferable and structured-clone write private (non-shared) memory, which V8 writes faster than a SharedArrayBuffer; transferable can therefore beat the SAB limit, but it moves ownership: the sender loses the buffer and nothing is shared.',
      'conventional = shm objects mapped lazily on both sides: write faults in the sender, read faults with 16-page fault-around in the receiver, page-by-page munmap.',
      'structured-clone posts a Uint8Array copy; transferable moves 5 ArrayBuffers back and forth; fresh-sab allocates a new SharedArrayBuffer per packet (host allocation and first touch included).',
      `${p.count} packets per repetition (${p.freshCount} for fresh-sab, ${p.durableCount} for morsel-durable).`,
    ],
  };
}
