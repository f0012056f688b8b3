import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Memory } from '../src/memory.js';
import { checkRegion } from '../src/recovery/check.js';
import { CRASH_ENV, CRASH_MARK } from '../src/crash-point.js';
import { MiB } from '../src/units.js';
import { save } from '../src/serial/save.js';
import { load } from '../src/serial/load.js';
import { fileSink, fileSource } from '../src/serial/streams.js';
import { freeFrames, tempDir } from './helpers.js';

const child = new URL('./workers/serial-load-child.js', import.meta.url);
const IMAGE_BYTES = 24 * MiB;

/** Runs the loader child; SIGKILLs it `killAfterMs` after it is ready (null: let it finish or die at its armed point). */
async function runChild(region: string, op: 'load' | 'save', image: string, name: string, killAfterMs: number | null, env: Record<string, string> = {}): Promise<{ finished: boolean; crashedAt: string | null }> {
  const p = fork(child, [region, op, image, name], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: { ...process.env, ...env } });
  let stderr = '';
  p.stderr!.on('data', (d) => (stderr += String(d)));
  let finished = false;
  p.on('message', (msg) => {
    if (msg === 'done') finished = true;
    if (msg === 'ready' && killAfterMs !== null) setTimeout(() => p.kill('SIGKILL'), killAfterMs);
  });
  const [code, signal] = await new Promise<[number | null, string | null]>((res) => p.once('exit', (c, s) => res([c, s])));
  assert.ok(signal === 'SIGKILL' || code === 0, `child exited ${code}: ${stderr}`);
  const m = new RegExp(`${CRASH_MARK} ([a-z:-]+):`).exec(stderr);
  return { finished, crashedAt: m === null ? null : m[1] };
}

function bytesOf(m: Memory, name: string): Uint8Array {
  const h = m.names.open(name);
  try {
    return m.names.read(h, 0, h.sizeBytes);
  } finally {
    m.names.close(h);
  }
}

test('a load killed at any moment leaks nothing after recovery: the morsel is whole or absent, check finds 0 lost frames', { timeout: 120_000 }, async (t) => {
  const dir = tempDir('serial-crash-');
  const region = path.join(dir, 'r.region');
  const image = path.join(dir, 'src.img');
  const setup = Memory.create(region, 128 * MiB);
  const h = setup.names.create('/src', { sizeBytes: IMAGE_BYTES });
  const data = new Uint8Array(IMAGE_BYTES);
  for (let i = 0; i < data.length; i += 512) data[i] = (i >>> 9) & 255;
  setup.names.write(h, 0, data);
  setup.names.close(h);
  await save(setup, '/src', fileSink(image));
  // One complete load + unlink first: the namespace tables a name needs exist before the baseline.
  const warm = fileSource(image);
  await load(setup, warm, { name: '/dst' });
  warm.close();
  setup.names.unlink('/dst');
  setup.close();
  const baseline = (() => {
    const m = Memory.open(region, { mode: 'exclusive' });
    try {
      return freeFrames(m);
    } finally {
      m.close();
    }
  })();

  const runs: { killAfterMs: number | null; env?: Record<string, string> }[] = [
    { killAfterMs: null, env: { [CRASH_ENV]: 'populate:before-link:3' } }, // deterministic: mid-load, a table allocated and unlinked
    { killAfterMs: null, env: { [CRASH_ENV]: 'alloc:after-counter:5' } }, // deterministic: the 5th hit (after registry and usage tables, the root and the first batch) is the loader's second allocSmallBatch: a whole child's counter taken, its bits not set, a chunk in flight
    ...[0, 2, 5, 10, 20, 40, 80, 160, 400].map((ms) => ({ killAfterMs: ms + Math.floor(Math.random() * 5) })),
  ];
  let absent = 0;
  let whole = 0;
  for (const run of runs) {
    const r = await runChild(region, 'load', image, '/dst', run.killAfterMs, run.env);
    const m = Memory.open(region, { mode: 'exclusive' }); // recovers when the child was killed
    try {
      const what = `kill after ${run.killAfterMs} ms (${r.crashedAt ?? (r.finished ? 'finished' : 'killed')})`;
      const report = checkRegion(m);
      assert.ok(report.ok, `${what}: check ok`);
      assert.equal(report.lostFrames, 0, `${what}: no lost frames`);
      let exists = true;
      try {
        m.names.stat('/dst');
      } catch {
        exists = false;
      }
      if (exists) {
        whole++;
        assert.deepEqual(bytesOf(m, '/dst'), data, `${what}: a committed load is whole`);
        m.names.unlink('/dst');
      } else {
        absent++;
        assert.ok(!r.finished, `${what}: a finished load is named`);
      }
      assert.equal(freeFrames(m), baseline, `${what}: every frame of the load returned or unlinked`);
    } finally {
      m.close();
    }
  }
  assert.ok(absent >= 1, 'at least one load died before its commit (the armed crash point)');
  assert.ok(absent + whole === runs.length);
  t.diagnostic(`${absent} loads died before their commit, ${whole} were whole`);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a save killed at any moment leaves the previous image intact (or the complete new one)', { timeout: 120_000 }, async (t) => {
  const dir = tempDir('serial-save-crash-');
  const region = path.join(dir, 'r.region');
  const image = path.join(dir, 'src.img');
  const m = Memory.create(region, 128 * MiB);
  const h = m.names.create('/src', { sizeBytes: IMAGE_BYTES });
  const old = new Uint8Array(IMAGE_BYTES).fill(1);
  const fresh = new Uint8Array(IMAGE_BYTES).fill(2);
  m.names.write(h, 0, old);
  m.names.close(h);
  await save(m, '/src', fileSink(image));
  const oldImage = fs.readFileSync(image);
  const w = m.names.open('/src', { write: true });
  m.names.write(w, 0, fresh);
  m.names.close(w);
  m.close();
  let intact = 0;
  for (const ms of [0, 3, 10, 30, 60, 120]) {
    const r = await runChild(region, 'save', image, '/src', ms);
    const now = fs.readFileSync(image);
    const m2 = Memory.open(region);
    try {
      const src = fileSource(image);
      await load(m2, src, { name: '/check' });
      src.close();
      const got = bytesOf(m2, '/check');
      m2.names.unlink('/check');
      if (Buffer.compare(now, oldImage) === 0) {
        intact++;
        assert.deepEqual(got, old, `kill after ${ms} ms: the previous image, whole`);
      } else {
        assert.deepEqual(got, fresh, `kill after ${ms} ms (${r.finished ? 'finished' : 'killed'}): the complete new image`);
      }
    } finally {
      m2.close();
    }
    fs.writeFileSync(image, oldImage); // the next run starts from the previous image again
  }
  t.diagnostic(`${intact} saves died before their rename (previous image intact)`);
  assert.ok(intact >= 1, 'at least one save was killed before its rename');
  fs.rmSync(dir, { recursive: true, force: true });
});
