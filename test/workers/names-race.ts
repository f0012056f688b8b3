// Worker for names-api.test: a churner unlinks and re-creates /race/x and
// stamps each incarnation with its generation (+1, so 0 = not yet stamped);
// readers open it, read the stamp through their handle and count stamps of
// another incarnation (must stay 0).
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { isMorselError } from '../../src/errors.js';

const { share, role, progress } = workerData as { share: never; role: string; progress: SharedArrayBuffer };
/** [0] successful reads so far, [1] 1 once the churner is done */
const shared = new Int32Array(progress);
const MIN_READS = 300;
const MIN_CHURNS = 500;
const MAX_ITERATIONS = 200_000;
const running = (i: number): boolean =>
  i < MAX_ITERATIONS && (role === 'churner' ? i < MIN_CHURNS || Atomics.load(shared, 0) < MIN_READS : Atomics.load(shared, 1) === 0);
const memory = Memory.attach(share);
const names = memory.names;
const out = { ops: 0, foreign: 0, stale: 0 };
const expected = (e: unknown) => isMorselError(e, 'ENOENT') || isMorselError(e, 'ESTALE') || isMorselError(e, 'EEXIST');

for (let i = 0; running(i); i++) {
  try {
    if (role === 'churner') {
      try {
        names.unlink('/race/x');
      } catch (e) {
        if (!expected(e)) throw e;
      }
      const h = names.create('/race/x', { sizeBytes: 8192, mode: 0o666 });
      names.write(h, 4096, new Uint8Array(new Int32Array([h.generation + 1]).buffer));
      names.close(h);
    } else {
      const h = names.open('/race/x');
      const stamp = new Int32Array(names.read(h, 4096, 4).buffer)[0];
      if (stamp !== 0 && stamp !== h.generation + 1) out.foreign++;
      names.close(h);
      Atomics.add(shared, 0, 1);
    }
    out.ops++;
  } catch (e) {
    if (!expected(e)) throw e;
    out.stale++;
  }
}
if (role === 'churner') Atomics.store(shared, 1, 1);
memory.alloc.release();
parentPort!.postMessage(out);
