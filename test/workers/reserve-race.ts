// Worker for reservations.test: reserves random ranges (orders 0..2 in one
// GiB window, so they overlap often) and releases some of its own.
import { workerData, parentPort } from 'node:worker_threads';
import { Memory } from '../../src/memory.js';
import { Reservations, type Reservation } from '../../src/manage/reservations.js';
import { orderBytes, type Order } from '../../src/morsel/order.js';
import { isMorselError } from '../../src/errors.js';

const { share, owners, seed, ops } = workerData as { share: never; owners: { metaRoot: number; generation: number }[]; seed: number; ops: number };
const memory = Memory.attach(share);
const res = new Reservations(memory.region, memory.alloc);
let x = seed * 2654435761 || 1;
const rand = (n: number): number => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) % n;
};
const mine: Reservation[] = [];
const out = { reserved: 0, refused: 0 };
for (let i = 0; i < ops; i++) {
  if (mine.length > 0 && rand(3) === 0) {
    res.release(mine.splice(rand(mine.length), 1)[0]);
    continue;
  }
  const order = rand(3) as Order;
  const address = rand(2 ** 30 / orderBytes(order)) * orderBytes(order);
  const o = owners[rand(owners.length)];
  const r = { address, order, metaRoot: o.metaRoot, generation: o.generation };
  try {
    res.reserve(r);
    mine.push(r);
    out.reserved++;
  } catch (e) {
    if (!isMorselError(e, 'EEXIST')) throw e;
    out.refused++;
  }
}
memory.alloc.release();
parentPort!.postMessage(out);
