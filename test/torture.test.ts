/**
 * Bounded crash torture (the long run is `npm run torture`): two processes
 * share one persistent 32 MiB region each run: a primitive child (two worker
 * threads: morsels, data, spaces) and a names child (names, directories,
 * renames, chmod, fixed-address reservations, handles, maps). They are
 * SIGKILLed at random times and at every crash point; after each run the
 * region must recover with every invariant intact: zero lost frames, zero
 * dangling names, orphans, overlapping reservations or stuck usage counts,
 * and every acknowledged operation visible. ~30-45 s on 2 loaded cores.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runTorture } from '../src/recovery/torture/harness.js';
import { NamesModel, checkManagement } from '../src/recovery/torture/names-model.js';
import { CRASH_POINTS } from '../src/crash-point.js';
import { Memory } from '../src/memory.js';
import { decodeIdBits } from '../src/morsel/id.js';

const CRASHES = 70;
const SEED = 20240605;

test(`crash torture: ${CRASHES} crashes of two processes, every crash point, zero violations and zero lost frames`, { timeout: 170_000 }, async () => {
  const r = await runTorture({ crashes: CRASHES, seed: SEED, sizeBytes: 32 * 1024 * 1024, threads: 2 });
  const detail = JSON.stringify({ ...r, violationSamples: r.violationSamples.slice(0, 5) });
  assert.equal(r.violations, 0, detail);
  assert.equal(r.lostFrames, 0, detail);
  assert.ok(r.crashes >= 60, detail);
  for (const p of CRASH_POINTS) assert.ok(r.pointHits[p] > 0, `crash point ${p} never fired: ${detail}`);
  assert.ok(r.ackedOps > 1000, detail);
  const ops = ['create', 'createMeta', 'destroy', 'write', 'populate', 'cofault', 'map', 'unmap', 'space', 'hold', 'drop'];
  const nameOps = ['mkdir', 'rmdir', 'ncreate', 'nfixed', 'unlink', 'rename', 'chmod', 'open', 'close', 'nmap', 'nunmap', 'nwrite', 'reap'];
  for (const op of [...ops, ...nameOps]) assert.ok((r.ackedByOp[op] ?? 0) > 0, `no ${op} acknowledged: ${detail}`);
  // (A recovery child that is not killed recovers the region itself; the parent then opens it clean.)
  assert.ok(r.recoveries >= r.iterations / 2, `recoveries ${r.recoveries} for ${r.iterations} runs`);
  assert.ok(r.cleanRuns > 0, 'the clean-close path ran too');
  assert.ok(r.survivorRuns > 0 && r.survivorReaps.slots > 0, `a survivor reaped a killed peer's slot: ${detail}`);
  assert.ok(r.finalNames > 0, detail);
  assert.equal(r.tornLogLines, 0);
});

test('the management verifier sees dangling names, orphans, stuck counts, orphaned reservations and lost names', () => {
  const m = Memory.volatile(8 * 1024 * 1024);
  try {
    assert.deepEqual(checkManagement(m).violations, []);
    const names = m.names;
    names.mkdir('/t');
    const h = names.create('/t/a', { sizeBytes: 100 });
    names.close(h);
    m.morsels.destroy(h.id); // under its name: dangling
    const open = names.create('/t/b', { sizeBytes: 100 }); // left open: a stuck count for a verifier with no users
    m.morsels.create(0, { pending: true }); // an unnamed PENDING morsel nobody uses: an orphan
    const metaRoot = decodeIdBits(m.morsels.createMeta(0, { address: 2 ** 40 })).rootFrame; // reserved, never named
    names.reservations.reserve({ address: 2 ** 40, order: 0, metaRoot, generation: m.morsels.generationOf(metaRoot) });
    const v = checkManagement(m).violations.join('\n');
    assert.match(v, /dangling name \/t\/a/);
    assert.match(v, /stuck usage count/);
    assert.match(v, /orphan: .* PENDING/);
    assert.match(v, /orphaned reservation 0x10000000000/);
    names.close(open);

    const model = new NamesModel();
    model.apply([{ ph: 'a', r: 0, t: 100, s: 0, op: 'mkdir', path: '/t/gone', mode: 0o755 }]);
    assert.match(model.verify(m).join('\n'), /\/t\/gone is missing/);
  } finally {
    m.close();
  }
});
