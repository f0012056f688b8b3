import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Memory } from '../src/memory.js';
import type { AddressSpace } from '../src/space/address-space.js';
import { decodeIdBits } from '../src/morsel/id.js';
import { MiB, type Frame } from '../src/units.js';
import { W_FAULTS, W_FILLS, W_STOP } from './workers/mmu-writer-protocol.js';

const ITERATIONS = 40;
const FILL_BYTES = 4 * MiB; // one fill = 1024 pages: a long access section
const FILL_PAGES = FILL_BYTES / 4096;
/** Free frames left besides what one fill needs: the victim must mostly take the target's frames. */
const SLACK_FRAMES = 64;
const WAIT_MAX_MS = 10_000;

/** Blocks (bounded) until `cond` holds; the writer runs on its own thread meanwhile. */
function waitFor(cond: () => boolean, what: string): void {
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const deadline = performance.now() + WAIT_MAX_MS;
  while (!cond()) {
    assert.ok(performance.now() < deadline, `timed out waiting for ${what}`);
    Atomics.wait(sleeper, 0, 0, 1);
  }
}

/** Data frames of a morsel of order >= 1. */
function dataFrames(m: Memory, id: bigint, order: number): number[] {
  const out: number[] = [];
  m.morsels.forEachFrame(decodeIdBits(id).rootFrame, order, (f, level) => {
    if (level === 0) out.push(f);
  });
  return out;
}

test('unmap waits for a writing thread: freed frames reused at once never see the old writer', async () => {
  const m = Memory.volatile(128 * MiB);
  const space = m.createSpace({ levels: 4 });
  const addr = 1 << 30; // order-2 slot
  const control = new SharedArrayBuffer(16);
  const c = new Int32Array(control);
  const writer = new Worker(new URL('./workers/mmu-writer.js', import.meta.url), {
    workerData: { region: m.share(), space: space.share(), addr, lengthBytes: FILL_BYTES, control },
  });
  const done = new Promise<{ error: string | null }>((resolve, reject) => writer.once('message', resolve).once('error', reject));
  // Ballast: hold all but one fill's worth of frames, so reallocation must reuse.
  const ballast: Frame[] = [];
  while (m.alloc.freeFrames() > FILL_PAGES + SLACK_FRAMES) ballast.push(m.alloc.alloc(0));
  let reused = 0;
  let dirtyBytes = 0;
  try {
    for (let it = 0; it < ITERATIONS; it++) {
      // Populated here, not by the writer (which then never allocates).
      const target = m.morsels.create(2);
      m.morsels.populate(target, 0, FILL_BYTES);
      assert.equal(space.map(target, { address: addr }), addr);
      // Let the writer complete a fill of this morsel, then unmap while its next one runs.
      const fills = Atomics.load(c, W_FILLS);
      waitFor(() => Atomics.load(c, W_FILLS) >= fills + 1, 'a fill of the mapped morsel');
      space.unmap(addr);
      const old = new Set(dataFrames(m, target, 2));
      m.morsels.destroy(target);
      // Take the freed frames back at once (populate zeroes each one).
      const victim = m.morsels.create(2);
      m.morsels.populate(victim, 0, FILL_BYTES);
      // Give a late writer time to strike: it must only ever fault now.
      const faults = Atomics.load(c, W_FAULTS);
      waitFor(() => Atomics.load(c, W_FAULTS) >= faults + 3, 'the writer to fault on the unmapped range');
      for (const f of dataFrames(m, victim, 2)) {
        if (old.has(f)) reused++;
        const page = m.region.frame(f as Frame);
        for (let i = 0; i < page.length; i++) if (page[i] !== 0) dirtyBytes++;
      }
      m.morsels.destroy(victim);
    }
  } finally {
    Atomics.store(c, W_STOP, 1);
  }
  const { error } = await done;
  assert.equal(error, null, 'the writer saw only EFAULT');
  assert.equal(dirtyBytes, 0, 'no byte of a reallocated frame was written by the old writer');
  assert.ok(reused >= ITERATIONS * (FILL_PAGES - SLACK_FRAMES), `the freed frames really were reused (${reused} pages)`);
  assert.ok(Atomics.load(c, W_FILLS) >= ITERATIONS, 'the writer wrote');
  space.destroy();
  for (const f of ballast) m.alloc.free(f);
});

/** Allocates frames until `frame` is among them; frees the others. False if it never came back. */
function allocExactly(m: Memory, frame: number): boolean {
  const others: Frame[] = [];
  let got = false;
  for (let n = m.alloc.freeFrames(); n > 0 && !got; n--) {
    const f = m.alloc.alloc(0);
    if (f === frame) got = true;
    else others.push(f);
  }
  for (const f of others) m.alloc.free(f);
  return got;
}

async function holder(m: Memory, space: AddressSpace, addr: number, mode: 'raw' | 'section') {
  const gate = new SharedArrayBuffer(8);
  const w = new Worker(new URL('./workers/mmu-holder.js', import.meta.url), { workerData: { region: m.share(), space: space.share(), addr, mode, gate } });
  const messages: unknown[] = [];
  let wake: () => void = () => {};
  w.on('message', (msg) => {
    messages.push(msg);
    wake();
  });
  const next = async () => {
    while (messages.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return messages.shift() as { frame?: number; wrote?: boolean };
  };
  const exited = new Promise((resolve) => w.once('exit', resolve));
  const release = () => {
    Atomics.store(new Int32Array(gate), 0, 1);
    Atomics.notify(new Int32Array(gate), 0);
  };
  return { next, release, exited };
}

test('a frame held outside an access section is not protected: a late write lands in the reallocated frame', async () => {
  const m = Memory.volatile(16 * MiB);
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(1);
  const addr = space.map(id);
  const h = await holder(m, space, addr, 'raw');
  const { frame } = await h.next();
  space.unmap(addr); // the holder is quiescent: no wait
  m.morsels.destroy(id);
  assert.ok(allocExactly(m, frame!), 'the freed frame was handed out again');
  m.region.zeroFrame(frame as Frame); // a new owner's fresh page
  h.release();
  assert.deepEqual(await h.next(), { wrote: true });
  await h.exited;
  assert.equal(m.region.frame(frame as Frame)[0], 0xee, "the documented hazard: the new owner's page was overwritten");
});

test('a frame held inside an access section: unmap waits for the holder, whose write lands before the free', async () => {
  const m = Memory.volatile(16 * MiB);
  const space = m.createSpace({ levels: 4 });
  const id = m.morsels.create(1);
  const addr = space.map(id);
  const h = await holder(m, space, addr, 'section');
  const { frame } = await h.next();
  space.unmap(addr); // returns only after the holder wrote and left its section
  assert.equal(m.region.frame(frame as Frame)[0], 0xee, 'the holder wrote while the morsel was still alive');
  m.morsels.destroy(id);
  assert.ok(allocExactly(m, frame!), 'the freed frame was handed out again');
  m.region.zeroFrame(frame as Frame);
  assert.deepEqual(await h.next(), { wrote: true });
  await h.exited;
  assert.ok(m.region.frame(frame as Frame).every((b) => b === 0), "the new owner's page stays untouched");
});
