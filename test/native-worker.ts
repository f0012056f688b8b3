/**
 * Worker half of test/native.test.ts. Receives a SharedArrayBuffer by
 * postMessage, and also maps the region file itself (proving the addon loads
 * in a worker isolate), then races the main thread with Atomics.add.
 *
 * `node --test dist/test/` also picks this file up as a "test"; run outside a
 * worker it has no parent port and simply does nothing.
 */
import { parentPort } from 'node:worker_threads';
import { mapFile } from '../src/physical/native.js';

export interface WorkerRequest {
  sab: SharedArrayBuffer;
  path: string;
  byteLength: number;
  adds: number;
}

const port = parentPort;
if (port !== null) {
  port.once('message', (req: WorkerRequest) => {
    const posted = new Int32Array(req.sab);
    const own = new Int32Array(mapFile(req.path, req.byteLength));
    posted[1] = 0x600d; // via the posted SAB
    own[3] = 0x5e1f; // via the worker's own mapping of the same file
    Atomics.store(posted, 0, 1); // tell the main thread to start racing
    for (let i = 0; i < req.adds; i++) {
      Atomics.add(i % 2 === 0 ? posted : own, 2, 1);
    }
    port.postMessage('done');
  });
}
