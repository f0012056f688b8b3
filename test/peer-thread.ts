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
  let exitCode: number | null = null;
  // Registered now: on a worker's exit Node drains its last messages and emits
  // 'exit' in one turn, so a listener added after awaiting the last reply can miss it.
  const exited = new Promise<void>((resolve) => worker.once('exit', (code) => ((exitCode = code), resolve())));
  const next = () =>
    new Promise<PeerReply>((resolve, reject) => {
      if (exitCode !== null) return reject(new Error(`peer exited (${exitCode})`));
      worker.once('message', resolve).once('error', reject);
      void exited.then(() => reject(new Error(`peer exited (${exitCode}) before replying`)));
    });
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
      await exited;
    },
  };
}
