// Child process for namespace-crash.test: random namespace operations on a
// persistent region, each logged ("B i op" before, "E i code" after), until
// an armed crash point (MORSEL_CRASH_AT) or the parent's SIGKILL ends it, or
// (when maxOps > 0) after maxOps operations and a clean close. A user like
// any other: Memory.open joins live users or recovers a crashed region.
import * as fs from 'node:fs';
import { Memory } from '../../src/memory.js';
import { applyOp, randomOp } from '../namespace-model.js';

const [file, logFile, seedText, firstText, maxOpsText] = process.argv.slice(2);
const memory = Memory.open(file);
const ns = memory.names.ns;
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
memory.close();
