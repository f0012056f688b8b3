/**
 * Bounded crash torture (the long run is `npm run torture`): child processes
 * with two worker threads each are SIGKILLed at random times and at every
 * crash point, on one persistent 32 MiB region; after each crash the region
 * must recover with every invariant intact, zero lost frames, and every
 * acknowledged operation visible. ~25 s on 2 cores.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runTorture } from '../src/recovery/torture/harness.js';
import { CRASH_POINTS } from '../src/crash-point.js';

const CRASHES = 60;
const SEED = 20240605;

test(`crash torture: ${CRASHES} crashes, every crash point, zero violations and zero lost frames`, { timeout: 170_000 }, async () => {
  const r = await runTorture({ crashes: CRASHES, seed: SEED, sizeBytes: 32 * 1024 * 1024, threads: 2 });
  const detail = JSON.stringify({ ...r, violationSamples: r.violationSamples.slice(0, 5) });
  assert.equal(r.violations, 0, detail);
  assert.equal(r.lostFrames, 0, detail);
  assert.ok(r.crashes >= 50, detail);
  for (const p of CRASH_POINTS) assert.ok(r.pointHits[p] > 0, `crash point ${p} never fired: ${detail}`);
  assert.ok(r.ackedOps > 1000, detail);
  for (const op of ['create', 'createMeta', 'destroy', 'write', 'populate', 'cofault', 'map', 'unmap', 'space']) assert.ok((r.ackedByOp[op] ?? 0) > 0, `no ${op} acknowledged: ${detail}`);
  // (A recovery child that is not killed recovers the region itself; the parent then opens it clean.)
  assert.ok(r.recoveries >= r.crashes / 2, `recoveries ${r.recoveries} for ${r.crashes} crashes`);
  assert.ok(r.cleanRuns > 0, 'the clean-close path ran too');
  assert.equal(r.tornLogLines, 0);
});
