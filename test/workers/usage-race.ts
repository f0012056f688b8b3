// Worker for usage.test: a mapper maps/unmaps each morsel until it is
// destroyed, checking while mapped that the incarnation is still live; the
// destroyer destroys each morsel, retrying on EBUSY.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { decodeIdBits } from '../../src/morsel/id.js';
import { wordGeneration, wordLive } from '../../src/morsel/words.js';
import { isMorselError } from '../../src/errors.js';

const { share, ids, gens, role, progress } = workerData as { share: never; ids: string[]; gens: number[]; role: string; progress: SharedArrayBuffer };
/** maps done per morsel: the destroyer starts on morsel i only once it is being mapped */
const mapsDone = new Int32Array(progress);
const MAPS_BEFORE_DESTROY = 20;
const memory = Memory.attach(share);
const morsels = memory.morsels;
const out = { maps: 0, violations: 0, destroyed: 0, busy: 0 };
const ATTEMPTS = 1_000_000;

if (role === 'mapper') {
  const space = memory.createSpace({ levels: 4 });
  for (let i = 0; i < ids.length; i++) {
    const id = BigInt(ids[i]);
    const root = decodeIdBits(id).rootFrame;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      let at: number;
      try {
        at = space.map(id, { generation: gens[i] });
      } catch (e) {
        if (isMorselError(e, 'ESTALE')) break;
        if (isMorselError(e, 'EBUSY')) continue;
        throw e;
      }
      out.maps++;
      Atomics.add(mapsDone, i, 1);
      const live = (): boolean => {
        const w = morsels.words.load(root);
        return wordLive(w) && wordGeneration(w) === gens[i];
      };
      if (!live()) out.violations++;
      if (morsels.lookupPage(root, 1, 2 * 4096) < 0) out.violations++; // its pages are still linked
      if (!live()) out.violations++;
      space.unmap(at);
    }
  }
  space.destroy();
} else {
  for (let i = 0; i < ids.length; i++) {
    for (let spin = 0; spin < ATTEMPTS && Atomics.load(mapsDone, i) < MAPS_BEFORE_DESTROY; spin++) Atomics.wait(mapsDone, ids.length, 0, 0.01);
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      try {
        morsels.destroy(BigInt(ids[i]), { generation: gens[i] });
        out.destroyed++;
        break;
      } catch (e) {
        if (!isMorselError(e, 'EBUSY')) throw e;
        out.busy++;
      }
    }
  }
}
memory.alloc.release();
parentPort!.postMessage(out);
