// Worker for usage.test: attaches the region and, per request, opens a name
// (keeping the handle), closes a handle it is given as plain data (a handle
// opened in another thread: its use was counted in that thread's lane), or
// opens and closes one name `rounds` times.
import { parentPort, workerData } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import type { MorselHandle } from '../../src/manage/handle.js';
import type { RegionShare } from '../../src/physical/region.js';

export type LanesRequest = { op: 'open'; path: string } | { op: 'close'; handle: MorselHandle } | { op: 'churn'; path: string; rounds: number } | { op: 'exit' };

const memory = Memory.attach((workerData as { share: RegionShare }).share);
const held: MorselHandle[] = [];

parentPort!.on('message', (req: LanesRequest) => {
  try {
    if (req.op === 'open') {
      held.push(memory.names.open(req.path));
      parentPort!.postMessage({ lane: memory.morsels.usage.lane });
    } else if (req.op === 'close') {
      memory.names.close(req.handle); // structured clone of a handle: close needs only its fields
      parentPort!.postMessage({});
    } else if (req.op === 'churn') {
      for (let i = 0; i < req.rounds; i++) memory.names.close(memory.names.open(req.path));
      parentPort!.postMessage({});
    } else {
      for (const h of held.splice(0)) memory.names.close(h);
      memory.close();
      parentPort!.postMessage({});
    }
  } catch (e) {
    parentPort!.postMessage({ code: (e as { code?: string }).code ?? String(e) });
  }
});
