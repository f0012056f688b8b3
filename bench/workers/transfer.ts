/**
 * Transfer worker (thesis Fig 5.6/5.7): a sender or a receiver, each with
 * its own address spaces on the shared region, connected by a MessagePort
 * (the pipe). The sender takes a free packet, copies its payload into it
 * (TypedArray.set of a prepared source, per physically contiguous run) and
 * passes a reference; the receiver maps it, touches one byte per page (through
 * the run-level translation, touchRuns), unmaps it and
 * passes the reference back for reuse. Both record a timestamp per packet.
 *
 * References per variant: a morsel ID (bigint); a shm object (its index
 * buffer, like a name to shm_open); for the Node mechanisms a copied
 * Uint8Array (structured clone), a transferred ArrayBuffer, or a fresh
 * SharedArrayBuffer. The limit variants only copy, never send: 'limit'
 * in the sender alone, 'limit-2threads' in the sender and the receiver at
 * once (each into its own half of the blocks, started by a shared barrier).
 * morsel-durable msyncs every contiguous run of the packet's frames (on a
 * file-backed region) before sending it.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import { ConventionalSpace, ShmObject, type ShmShare } from '../../src/conventional/index.js';
import { Memory } from '../../src/memory.js';
import type { RegionShare } from '../../src/physical/region.js';
import { Mmu } from '../../src/space/mmu.js';
import { READ_ONLY } from '../../src/space/rights.js';
import type { Frame } from '../../src/units.js';
import { nowNs } from '../stats.js';
import { copyInPages, touchRuns } from '../access.js';
import { Access } from '../../src/space/mmu.js';
import { assert } from '../../src/errors.js';
import { PAGE_SIZE } from '../../src/units.js';
import { Barrier, Inbox, serve } from './rpc.js';

export type TransferVariant = 'morsel' | 'morsel-huge' | 'morsel-durable' | 'conventional' | 'structured-clone' | 'transferable' | 'fresh-sab' | 'limit' | 'limit-2threads' | 'morsel-sender-only';

export interface TransferRun {
  op: 'run';
  variant: TransferVariant;
  count: number;
  packetBytes: number;
  /** sender: the circulating packets (IDs, object shares, or block lists for the limits; both sides for limit-2threads) */
  refs?: unknown[];
  /** limit-2threads: a Barrier both copying threads arrive at before the first copy */
  barrier?: SharedArrayBuffer;
}

const { share, role, port } = workerData as { share: RegionShare; role: 'sender' | 'receiver'; port: MessagePort };
const memory = Memory.attach(share);
const space = memory.createSpace({ levels: 4 });
const mmu = new Mmu(space);
const conv = ConventionalSpace.create(memory);
const cmmu = new Mmu(conv);

/** Incoming references on the port, consumed in order. */
const inbox = new Inbox(port);
const next = (): Promise<unknown> => inbox.next();

let sink = 0;
const BLOCK = 2 * 1024 * 1024;
const writeMorsel = { mmu, access: Access.Write };
const writeConv = { mmu: cmmu, access: Access.Write };
/** msync of one contiguous run of frames (a no-op on a volatile region). */
const syncRun = (first: Frame, frames: number): void => memory.region.sync(first * PAGE_SIZE, frames * PAGE_SIZE);

/** The data a sender produces: copied into every packet with TypedArray.set (the fastest bulk write into a SharedArrayBuffer). */
function makePayload(n: number): Uint8Array {
  const p = new Uint8Array(n);
  const w = new Int32Array(p.buffer);
  for (let i = 0; i < w.length; i++) w[i] = Math.imul(i, 0x9e3779b1);
  return p;
}

function touch(bytes: Uint8Array): void {
  for (let i = 0; i < bytes.length; i += 4096) sink += bytes[i];
}

/** Copies the payload into 2 MiB region blocks, one block list per packet (the copy limits): nothing mapped, nothing sent. */
function copyLimit(req: TransferRun): number[] {
  const times: number[] = [];
  const payload = makePayload(req.packetBytes);
  const lists = req.refs as number[][];
  if (req.barrier !== undefined) new Barrier(2, req.barrier).arrive();
  for (let i = 0; i < req.count; i++) {
    lists[i % lists.length].forEach((f, j) => {
      memory.region.bytesOf(f as Frame).set(payload.subarray(j * BLOCK, (j + 1) * BLOCK), memory.region.byteOffsetInWindow(f as Frame));
    });
    times.push(nowNs());
  }
  return times;
}

// --- sender ---------------------------------------------------------------------

async function send(req: TransferRun): Promise<number[]> {
  const times: number[] = [];
  const n = req.packetBytes;
  const free: unknown[] = [...(req.refs ?? [])];
  if (req.variant === 'structured-clone') free.push(...[0, 1, 2, 3, 4]);
  if (req.variant === 'transferable') for (let i = 0; i < 5; i++) free.push(new ArrayBuffer(n));
  if (req.variant === 'fresh-sab') free.push(...[0, 1, 2, 3, 4]);
  const sendsNothing = req.variant === 'morsel-sender-only';
  const circulating = sendsNothing ? 0 : free.length;
  const local = req.variant === 'structured-clone' ? new Uint8Array(n) : null;
  const payload = makePayload(n);
  for (let i = 0; i < req.count; i++) {
    const ref = sendsNothing ? req.refs![i % req.refs!.length] : free.length > 0 ? free.pop() : await next();
    switch (req.variant) {
      case 'morsel':
      case 'morsel-huge':
      case 'morsel-durable':
      case 'morsel-sender-only': {
        const a = space.map(ref as bigint);
        copyInPages(memory.region, writeMorsel, a, payload, req.variant === 'morsel-durable' ? syncRun : undefined);
        space.unmap(a);
        if (req.variant !== 'morsel-sender-only') port.postMessage(ref);
        break;
      }
      case 'conventional': {
        const obj = ShmObject.open(memory, ref as ShmShare);
        const a = conv.mmap(obj);
        copyInPages(memory.region, writeConv, a, payload);
        conv.munmap(a);
        port.postMessage(ref);
        break;
      }
      case 'structured-clone':
        local!.set(payload);
        port.postMessage({ token: ref, data: local });
        break;
      case 'transferable':
        new Uint8Array(ref as ArrayBuffer).set(payload);
        port.postMessage(ref, [ref as ArrayBuffer]);
        break;
      case 'fresh-sab': {
        const sab = new SharedArrayBuffer(n);
        new Uint8Array(sab).set(payload);
        port.postMessage({ token: ref, data: sab });
        break;
      }
      default:
        assert(false, `transfer sender: ${req.variant} is not a sending variant`);
    }
    times.push(nowNs());
  }
  // Wait for every packet to come back so the next run starts with an empty pipe.
  for (let have = free.length; have < circulating; have++) await next();
  return times;
}

// --- receiver -------------------------------------------------------------------

async function receive(req: TransferRun): Promise<number[]> {
  const times: number[] = [];
  const n = req.packetBytes;
  for (let i = 0; i < req.count; i++) {
    const ref = await next();
    switch (req.variant) {
      case 'morsel':
      case 'morsel-huge':
      case 'morsel-durable': {
        const a = space.map(ref as bigint, { rights: READ_ONLY });
        sink += touchRuns(memory.region, { mmu, access: Access.Read }, a, n);
        space.unmap(a);
        port.postMessage(ref);
        break;
      }
      case 'conventional': {
        const obj = ShmObject.open(memory, ref as ShmShare);
        const a = conv.mmap(obj, { rights: READ_ONLY });
        sink += touchRuns(memory.region, { mmu: cmmu, access: Access.Read }, a, n);
        conv.munmap(a);
        port.postMessage(ref);
        break;
      }
      case 'structured-clone':
      case 'fresh-sab': {
        const { token, data } = ref as { token: number; data: Uint8Array | SharedArrayBuffer };
        touch(data instanceof Uint8Array ? data : new Uint8Array(data));
        port.postMessage(token);
        break;
      }
      case 'transferable':
        touch(new Uint8Array(ref as ArrayBuffer));
        port.postMessage(ref, [ref as ArrayBuffer]);
        break;
      default:
        break;
    }
    times.push(nowNs());
  }
  return times;
}

serve(async (msg) => {
  if (msg.op === 'exit') {
    space.destroy();
    conv.destroy();
    memory.alloc.release();
    port.close();
    return sink;
  }
  const req = msg as unknown as TransferRun;
  if (req.variant === 'limit' || req.variant === 'limit-2threads') return copyLimit(req);
  return role === 'sender' ? send(req) : receive(req);
});
