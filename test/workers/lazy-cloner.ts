// Worker for lazy-clone.test: on one shared region, the 'writer' rewrites
// one byte in each of `pages` pages of the source (each page in its own
// level-1 table, so every first write is a fault at a lazy source's root
// entry), round after round; a 'cloner' clones the source again and again,
// reads the clone, writes its own marks into it, and checks that the clone
// kept its snapshot and that its marks stayed its own. One source write may
// land after the clone: the one in flight when the clone captured its entry
// (the writer had passed the writable root entry; writes of other threads
// are not quiesced, see Names.clone): at most one page per clone, by one
// round. Reports violations as strings.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { MiB } from '../../src/units.js';

const { region, role, src, pages, rounds, worker } = workerData as { region: never; role: 'writer' | 'cloner'; src: bigint; pages: number; rounds: number; worker: number };
const memory = Memory.attach(region);
const m = memory.morsels;
const at = (p: number): number => p * 2 * MiB; // one page per level-1 table
const byte = new Uint8Array(1);
const read = (id: bigint, p: number): number => (m.read(id, at(p), byte), byte[0]);
const problems: string[] = [];

if (role === 'writer') {
  for (let r = 1; r <= rounds; r++) for (let p = 0; p < pages; p++) m.write(src, at(p), Uint8Array.of(r));
} else {
  const mark = 200 + worker;
  for (let r = 0; r < rounds; r++) {
    const c = m.clone(src);
    const seen = Array.from({ length: pages }, (_, p) => read(c, p));
    for (let p = worker; p < pages; p += 2) m.write(c, at(p) + 1, Uint8Array.of(mark)); // a byte the writer never writes
    let inFlight = 0;
    for (let p = 0; p < pages; p++) {
      const now = read(c, p);
      if (now !== seen[p] && (now !== seen[p] + 1 || ++inFlight > 1)) problems.push(`clone round ${r} page ${p}: read ${seen[p]}, then ${now} (a later source write leaked in)`);
      if (seen[p] >= 200) problems.push(`clone round ${r} page ${p}: holds another clone's mark ${seen[p]}`);
      if (p % 2 === worker && (m.read(c, at(p) + 1, byte), byte[0]) !== mark) problems.push(`clone round ${r} page ${p}: its own mark is gone`);
    }
    m.destroy(c);
  }
}
memory.alloc.release();
parentPort!.postMessage({ problems: problems.slice(0, 5) });
