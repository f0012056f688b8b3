import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { buildBase, containedWrite, fuzz, memoryOf } from '../src/recovery/fuzz/fuzz.js';
import { PAGE_SIZE } from '../src/units.js';
import { tempDir } from './helpers.js';

const dir = tempDir('morsel-fuzz-test-');
const bin = fileURLToPath(new URL('../../bin/morsel.js', import.meta.url));

test('metadata fuzzer: 240 library cases and 30 CLI cases on damaged regions, every outcome typed, writes contained', () => {
  const report = fuzz({ seed: 20261201, cases: 270, cliEvery: 9, mmu: false, dir, bin });
  assert.equal(report.cases, 270);
  assert.equal(report.cli, 30);
  const shown = report.failures.slice(0, 3).map((f) => `${f.steps.join('\n  ')}\n  => ${f.failure}`);
  assert.equal(report.failures.length, 0, shown.join('\n\n'));
});

test('metadata fuzzer through the MMU: reads and writes of mapped morsels in damaged regions', () => {
  const report = fuzz({ seed: 7, cases: 200, from: 1000, cliEvery: 0, mmu: true, dir, bin });
  assert.equal(report.failures.length, 0, report.failures.slice(0, 2).map((f) => `${f.steps.join('\n  ')}\n  => ${f.failure}`).join('\n\n'));
});

test('property: whatever the metadata frames hold, a morsel write never changes a byte outside that morsel', () => {
  const base = buildBase(dir);
  const frameCount = base.bytes.byteLength / PAGE_SIZE;
  // A mutation: any 32-bit value, or a present inner entry naming any frame of the region (a cross-link).
  const value = fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.nat(frameCount - 1).map((f) => (f * PAGE_SIZE + 7) | 0));
  const mutation = fc.record({ frame: fc.constantFrom(...base.metaFrames), word: fc.nat(PAGE_SIZE / 4 - 1), value });
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.nat(base.ids.length - 1), fc.nat(40 * PAGE_SIZE), fc.integer({ min: 1, max: 3 * PAGE_SIZE }), (muts, idIndex, offset, length) => {
      const bytes = new Uint8Array(base.bytes);
      const words = new Int32Array(bytes.buffer);
      for (const mu of muts) words[mu.frame * (PAGE_SIZE / 4) + mu.word] = mu.value;
      const m = memoryOf(bytes);
      const failure = containedWrite(m, base.ids[idIndex], offset, new Uint8Array(length).fill(0xee));
      assert.equal(failure, null);
    }),
    { numRuns: 300 },
  );
});
