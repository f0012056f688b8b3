// A second thread with its own Mmu on a shared space (test/workers/mmu-peer.ts),
// driven one request at a time.
import { Worker } from 'node:worker_threads';
import type { Memory } from '../src/memory.js';
import type { AddressSpace, SpaceShare } from '../src/space/address-space.js';

export interface PeerReply {
  value?: number;
  code?: string;
  entered?: boolean;
  left?: boolean;
  closed?: boolean;
}

export interface Peer {
  /** Sends one request and resolves with the next reply. */
  call(req: { op: string; addr?: number; value?: number; gate?: SharedArrayBuffer; space?: SpaceShare }): Promise<PeerReply>;
  /** The next reply without sending anything (a held section's `left`). */
  next(): Promise<PeerReply>;
  close(): Promise<void>;
}

export function startPeer(m: Memory, space: AddressSpace): Peer {
  const worker = new Worker(new URL('./workers/mmu-peer.js', import.meta.url), { workerData: { region: m.share(), space: space.share() } });
  const next = () => new Promise<PeerReply>((resolve, reject) => worker.once('message', resolve).once('error', reject));
  return {
    next,
    call: (req) => {
      const reply = next();
      worker.postMessage(req);
      return reply;
    },
    close: async () => {
      const reply = next();
      worker.postMessage({ op: 'close' });
      await reply;
      await new Promise((resolve) => worker.once('exit', resolve));
    },
  };
}
