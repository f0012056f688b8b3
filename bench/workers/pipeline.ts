/**
 * Pipeline stage worker (talk, case study 2): datasource -> checksum ->
 * sender, each its own thread with its own address spaces on the shared
 * region. Buffers travel as references (morsel ID / shm object); the sender
 * frees them and returns a credit to the datasource. Every stage sums its
 * time per component: alloc (create or free the buffer), map, faults (each
 * page translated once through the run-level translation: first-touch
 * population or PTE setup), work (fill /
 * checksum / copy out), unmap.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import { ConventionalSpace, ShmObject, type ShmShare } from '../../src/conventional/index.js';
import { Memory } from '../../src/memory.js';
import { MIN_HUGE_ORDER } from '../../src/morsel/id.js';
import type { Order } from '../../src/morsel/order.js';
import type { RegionShare } from '../../src/physical/region.js';
import { Access, Mmu } from '../../src/space/mmu.js';
import { READ_ONLY } from '../../src/space/rights.js';
import { nowNs } from '../stats.js';
import { checksumPages, copyOutPages, faultRuns, fillPages, touchRuns } from '../access.js';
import { sumInt32 } from '../../src/physical/native.js';
import { Inbox, serve } from './rpc.js';
import { type Component, type PipelineRun, type PipelineVariant, type Stage, type StageReply } from './pipeline-protocol.js';

interface Wired {
  share: RegionShare;
  stage: Stage;
  /** from the previous stage (the datasource: credits from the sender) */
  input: MessagePort;
  /** to the next stage (the sender: credits to the datasource) */
  output: MessagePort;
}

const { share, stage, input, output } = workerData as Wired;
const memory = Memory.attach(share);
const space = memory.createSpace({ levels: 4 });
const mmu = new Mmu(space);
const conv = ConventionalSpace.create(memory);
const cmmu = new Mmu(conv);
const inbox = new Inbox(input);
const socket = new Uint8Array(64 * 1024);
const region = memory.region;

const rdMorsel = { mmu, access: Access.Read };
const wrMorsel = { mmu, access: Access.Write };
const rd = { morsel: rdMorsel, 'morsel-huge': rdMorsel, conventional: { mmu: cmmu, access: Access.Read } };
const wr = { morsel: wrMorsel, 'morsel-huge': wrMorsel, conventional: { mmu: cmmu, access: Access.Write } };

/**
 * The transferable variant: what a Node user would write. The datasource
 * allocates an ArrayBuffer (the host zero-fills it lazily: pages fault on
 * first touch), each stage works on it in place and transfers it on
 * (postMessage with a transfer list: no copy); the sender drops it (freed by
 * the garbage collector, outside the measured time: a saving this variant
 * gets for free).
 */
async function runTransferable(req: PipelineRun): Promise<StageReply> {
  const c: Record<Component, number> = { alloc: 0, map: 0, faults: 0, work: 0, unmap: 0 };
  let start = 0;
  let checksum = 0;
  const n = req.bufBytes;
  for (let i = 0; i < req.count; i++) {
    let buf: ArrayBuffer;
    if (stage === 'datasource') {
      if (i > 0) await inbox.next();
    }
    let t = nowNs();
    if (i === 0) start = t;
    if (stage === 'datasource') {
      buf = new ArrayBuffer(n);
      c.alloc += nowNs() - t;
      t = nowNs();
      const bytes = new Uint8Array(buf);
      for (let off = 0; off < n; off += 4096) bytes[off] = 0;
      c.faults += nowNs() - t;
      t = nowNs();
      new Int32Array(buf).fill((((i & 0x7f) + 1) * 0x01010101) | 0);
    } else {
      buf = (await inbox.next()) as ArrayBuffer;
      t = nowNs();
      if (i === 0) start = t;
      const words = new Int32Array(buf);
      if (stage === 'checksum') checksum = (checksum + sumInt32(words)) | 0;
      else for (let off = 0; off < n; off += socket.length) socket.set(new Uint8Array(buf, off, Math.min(socket.length, n - off)));
    }
    c.work += nowNs() - t;
    if (stage === 'sender') output.postMessage(0);
    else output.postMessage(buf, [buf]);
  }
  if (stage === 'datasource' && req.count > 0) await inbox.next();
  return { components: c, start, end: nowNs(), checksum };
}

async function run(req: PipelineRun): Promise<StageReply> {
  if (req.variant === 'transferable') return runTransferable(req);
  const c: Record<Component, number> = { alloc: 0, map: 0, faults: 0, work: 0, unmap: 0 };
  let t = nowNs();
  const lap = (k: Component): void => {
    const now = nowNs();
    c[k] += now - t;
    t = now;
  };
  let start = 0;
  let checksum = 0;
  const n = req.bufBytes;
  const v = req.variant as Exclude<PipelineVariant, 'transferable'>;
  const isMorsel = v !== 'conventional';
  for (let i = 0; i < req.count; i++) {
    let ref: unknown;
    if (stage === 'datasource') {
      if (i > 0) await inbox.next(); // credit: the previous buffer has left the pipeline
    } else {
      ref = await inbox.next();
    }
    t = nowNs();
    if (i === 0) start = t;
    let obj: ShmObject | null = null;
    let id = 0n;
    if (stage === 'datasource') {
      if (isMorsel) id = v === 'morsel-huge' ? memory.morsels.create(Math.max(req.order, MIN_HUGE_ORDER) as Order, { huge: true }) : memory.morsels.create(req.order);
      else obj = ShmObject.create(memory, n / 4096);
      lap('alloc');
    } else if (isMorsel) {
      id = ref as bigint;
    } else {
      obj = ShmObject.open(memory, ref as ShmShare);
    }
    const rights = stage === 'datasource' ? undefined : READ_ONLY;
    const a = isMorsel ? space.map(id, { rights }) : conv.mmap(obj!, { rights });
    lap('map');
    // Through the run-level translation, as the work below (a hardware
    // touch loop pays TLB misses and faults, not read8's access section per page).
    if (stage === 'datasource') faultRuns(wr[v], a, n);
    else touchRuns(region, rd[v], a, n);
    lap('faults');
    if (stage === 'datasource') fillPages(region, wr[v], a, n, (i & 0x7f) + 1);
    else if (stage === 'checksum') checksum = (checksum + checksumPages(region, rd[v], a, n)) | 0;
    else copyOutPages(region, rd[v], a, n, socket);
    lap('work');
    if (isMorsel) space.unmap(a);
    else conv.munmap(a);
    lap('unmap');
    if (stage === 'sender') {
      if (isMorsel) memory.morsels.destroy(id);
      else obj!.destroy();
      lap('alloc');
      output.postMessage(0); // credit back to the datasource
    } else {
      output.postMessage(isMorsel ? id : obj!.share());
    }
  }
  if (stage === 'datasource' && req.count > 0) await inbox.next(); // the last buffer's credit
  return { components: c, start, end: nowNs(), checksum };
}

serve(async (msg) => {
  if (msg.op === 'exit') {
    space.destroy();
    conv.destroy();
    memory.alloc.release();
    input.close();
    output.close();
    return null;
  }
  return run(msg as unknown as PipelineRun);
});
