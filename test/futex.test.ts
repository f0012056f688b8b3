// wait/notify on an int32 of a region, across worker threads and processes:
// a shared futex on the file mapping (persistent), Atomics (volatile).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Memory } from '../src/memory.js';
import { isMorselError } from '../src/errors.js';
import { futexWait } from '../src/physical/native.js';
import { MiB } from '../src/units.js';
import { tempDir } from './helpers.js';

const dir = tempDir('morsel-futex-');
let seq = 0;
const fresh = (): string => path.join(dir, `r${seq++}.region`);
const waiter = new URL('./workers/futex-waiter.js', import.meta.url);
const code = (c: string) => (e: unknown) => isMorselError(e, c as never);
/** How long the notifier keeps trying to find the waiter asleep. */
const WAKE_DEADLINE_MS = 10_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A word inside a frame this memory allocated (never metadata). */
function wordOf(m: Memory): number {
  return m.alloc.alloc(0) * 4096 + 64;
}

/**
 * Notifies until exactly one waiter was woken: notify() returns how many
 * were asleep on the word, so 1 proves the waiter really slept there and
 * this call woke it (the word never changes, so it cannot have left early).
 */
async function wakeOne(m: Memory, offset: number): Promise<void> {
  const start = Date.now();
  while (Date.now() - start < WAKE_DEADLINE_MS) {
    const woken = m.notify(offset, 1);
    assert.ok(woken <= 1);
    if (woken === 1) return;
    await sleep(2);
  }
  assert.fail('the waiter never went to sleep on the word');
}

test('wait/notify between two processes (shared futex on the file mapping)', async () => {
  const file = fresh();
  const m = Memory.create(file, 8 * MiB);
  const offset = wordOf(m);
  const child = fork(waiter, [file, String(offset)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const messages: string[] = [];
  const done = new Promise<string>((res) => child.on('message', (msg: string) => (messages.push(msg), msg !== 'waiting' && res(msg))));
  await new Promise((res) => child.once('message', res));
  await wakeOne(m, offset);
  assert.equal(await done, 'ok');
  m.close();
});

test('wait/notify between threads on a persistent and on a volatile region', async () => {
  for (const m of [Memory.create(fresh(), 8 * MiB), Memory.volatile(8 * MiB)]) {
    const offset = wordOf(m);
    const w = new Worker(waiter, { workerData: { share: m.share(), offset } });
    const results: string[] = [];
    const done = new Promise<void>((res) => w.on('message', (msg: string) => (results.push(msg), msg !== 'waiting' && res())));
    while (results.length === 0) await sleep(1);
    await wakeOne(m, offset);
    await done;
    assert.deepEqual(results, ['waiting', 'ok'], m.region.persistent ? 'persistent' : 'volatile');
    await w.terminate();
    m.close();
  }
});

test('wait returns not-equal and timed-out; bad arguments are EINVAL', () => {
  for (const m of [Memory.create(fresh(), 8 * MiB), Memory.volatile(8 * MiB)]) {
    const offset = wordOf(m);
    assert.equal(m.wait(offset, 7, 1000), 'not-equal');
    const t0 = performance.now();
    assert.equal(m.wait(offset, 0, 30), 'timed-out');
    assert.ok(performance.now() - t0 >= 25, 'slept about the timeout');
    assert.equal(m.notify(offset, 5), 0, 'nobody waiting');
    for (const bad of [-4, 2, m.region.byteLength, 1.5, NaN]) {
      assert.throws(() => m.wait(bad, 0, 1), code('EINVAL'), String(bad));
      assert.throws(() => m.notify(bad, 1), code('EINVAL'), String(bad));
    }
    assert.throws(() => m.wait(offset, 0, -1), code('EINVAL'));
    assert.throws(() => m.wait(offset, 2 ** 33, 1), code('EINVAL'));
    assert.throws(() => m.notify(offset, -1), code('EINVAL'));
    m.close();
  }
  // the addon checks its own bounds too
  assert.throws(() => futexWait(new SharedArrayBuffer(8), 8, 0, 1), code('ERANGE'));
});
