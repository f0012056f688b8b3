// Child process for namespace-crash.test: random namespace operations on a
// persistent region, each logged ("B i op" before, "E i code" after), until
// an armed crash point (MORSEL_CRASH_AT) or the parent's SIGKILL ends it, or
// (when maxOps > 0) after maxOps operations. Joins a region another live
// process uses without touching the allocator's shared state.
import * as fs from 'node:fs';
import { FrameAllocator } from '../../src/alloc/llfree.js';
import { Region } from '../../src/physical/region.js';
import { Namespace } from '../../src/manage/namespace.js';
import { applyOp, randomOp } from '../namespace-model.js';

const [file, logFile, seedText, firstText, maxOpsText] = process.argv.slice(2);
const { region, joined } = Region.openFile(file);
if (!joined) FrameAllocator.rebuildCounters(region);
const ns = new Namespace(region, new FrameAllocator(region));
const log = fs.openSync(logFile, 'a');
let seed = Number(seedText) >>> 0 || 1;
const rand = (n: number): number => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return Math.floor((seed / 2 ** 32) * n);
};
process.send?.('ready');
const last = Number(maxOpsText ?? 0) > 0 ? Number(firstText) + Number(maxOpsText) : Infinity;
for (let i = Number(firstText); i < last; i++) {
  const op = randomOp(rand);
  fs.writeSync(log, `B ${i} ${JSON.stringify(op)}\n`);
  const code = applyOp(ns, op, i);
  fs.writeSync(log, `E ${i} ${code}\n`);
}
region.close();
