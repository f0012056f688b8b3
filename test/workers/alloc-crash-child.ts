// Child process for llfree-crash.test: allocates frames (orders 0 and 9, with
// some frees) on a persistent region and logs each completed allocation
// before the next starts, until the parent kills it with SIGKILL.
import * as fs from 'node:fs';
import { FrameAllocator } from '../../src/alloc/llfree.js';
import { Region } from '../../src/physical/region.js';

const [file, logFile, seedText] = process.argv.slice(2);
const { region } = Region.openFile(file);
FrameAllocator.rebuildCounters(region);
const alloc = new FrameAllocator(region);
const log = fs.openSync(logFile, 'a');
let seed = Number(seedText) >>> 0;
const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const held: [number, 0 | 9][] = [];
process.send?.('ready');
for (;;) {
  if (held.length > 0 && rand() < 0.3) {
    const [frame, order] = held.splice(Math.floor(rand() * held.length), 1)[0];
    // Log the free first: after a crash the parent must not expect it allocated.
    fs.writeSync(log, `F ${frame} ${order}\n`);
    alloc.free(frame as never, order);
    continue;
  }
  const order = rand() < 0.05 ? 9 : 0;
  let frame: number;
  try {
    frame = alloc.alloc(order);
  } catch {
    continue; // ENOSPC for order 9 is fine: keep going
  }
  held.push([frame, order]);
  fs.writeSync(log, `A ${frame} ${order}\n`);
}
