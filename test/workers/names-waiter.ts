// Worker for names-api.test: waits on the int32 at byte 16 of a morsel until notified.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';

const { share, id, generation } = workerData as { share: never; id: string; generation: number };
const memory = Memory.attach(share);
const h = memory.names.openRef({ id: BigInt(id) as never, generation });
const result = memory.names.wait(h, 16, 0, 10_000);
memory.names.close(h);
memory.alloc.release();
parentPort!.postMessage({ result });
