/**
 * Morsel's page tables on a real x86-64 MMU (QEMU TCG). These tests need
 * qemu-system-x86_64 and nasm (`npm test` installs them through
 * scripts/install-system-deps.sh when it runs as root with apt). Where they
 * are missing and cannot be installed the tests are skipped with the reason
 * and the install command; MORSEL_REQUIRE_HWCHECK=1 (set by .ci/run) makes
 * them run and fail instead, so CI never passes without the hardware check.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMorselError } from '../src/errors.js';
import { Memory } from '../src/memory.js';
import { hwcheck, type HwcheckResult } from '../src/hwcheck/hwcheck.js';
import { EXIT_FAIL, EXIT_PASS, checkGuestRam } from '../src/hwcheck/qemu.js';
import { MiB } from '../src/units.js';
import { freeFrames, tempDir } from './helpers.js';

const failed = (r: HwcheckResult): string =>
  JSON.stringify({ failed: r.checks.filter((c) => !c.ok), log: r.log, exitStatus: r.exitStatus }, null, 1);

const INSTALL = 'run scripts/install-system-deps.sh as root, or apt-get install qemu-system-x86 nasm';

/** Which of the tools is missing here ('' when both run). */
function missingTools(): string {
  const missing = [['qemu-system-x86_64', '--version'], ['nasm', '-v']].filter(([tool, flag]) => spawnSync(tool, [flag]).error !== undefined);
  return missing.map(([tool]) => tool).join(', ');
}
const missing = missingTools();
const required = process.env.MORSEL_REQUIRE_HWCHECK === '1';
/** Options of every test that boots QEMU: skipped with the reason, unless CI requires them. */
const needsQemu = { skip: missing !== '' && !required ? `${missing} not installed: ${INSTALL}` : false };

test('qemu-system-x86_64 and nasm are installed', needsQemu, () => {
  assert.equal(missing, '', `${missing} not installed (MORSEL_REQUIRE_HWCHECK=1): ${INSTALL}`);
});

for (const levels of [4, 5] as const) {
  test(`${levels}-level space: every check passes on the hardware MMU`, needsQemu, () => {
    const r = hwcheck({ levels });
    assert.ok(r.ok, failed(r));
    assert.equal(r.exitStatus, EXIT_PASS);
    assert.equal(r.levels, levels);
    const names = r.checks.map((c) => c.name);
    for (const order of levels === 5 ? [0, 1, 2, 3, 4] : [0, 1, 2, 3]) assert.ok(names.includes(`order-${order} read +0x0`), `order ${order} covered`);
    for (const kind of ['read-only alias: write #PF (P|W)', 'NX mapping: fetch #PF (P|I)', 'executable alias: call', 'order-1 unpopulated page: read #PF']) {
      assert.ok(names.includes(kind), kind);
    }
    assert.ok(names.some((n) => n.startsWith('meta morsel at fixed address')));
    // 2 MiB leaves: reads at several offsets inside two leaves, #PF on a read-only mapping and on a shared leaf.
    assert.ok(names.filter((n) => /^2 MiB leaf: read \+0x/.test(n)).length >= 6, 'reads inside both leaves');
    for (const kind of ['2 MiB leaf, read-only alias: write #PF (P|W)', '2 MiB leaf COW: write through a shared leaf #PF (P|W)', '2 MiB leaf COW clone: copied leaf read', '2 MiB leaf (private copy): write+read +0x20']) {
      assert.ok(names.includes(kind), kind);
    }
  });
}

for (const how of ['pfn', 'present'] as const) {
  test(`a damaged entry (${how}) is caught by the hardware`, needsQemu, () => {
    const r = hwcheck({ levels: 4, corrupt: how });
    assert.equal(r.ok, false);
    assert.equal(r.exitStatus, EXIT_FAIL, 'guest reports a failed check, not a crash');
    const hit = r.checks.find((c) => c.name === r.corrupted);
    assert.ok(hit && !hit.ok, `${r.corrupted} must fail`);
    assert.match(hit.detail, how === 'pfn' ? /got=0x[0-9a-f]+ want=/ : /#PF cr2=0x0*200000 err=0x0+\b/);
    // The damage is local: the other morsels still read right.
    assert.ok(r.checks.find((c) => c.name === 'order-0 read +0x0')!.ok);
    assert.ok(r.checks.find((c) => c.name === 'order-2 read +0x0')!.ok);
  });
}

test('a 2 MiB leaf that lost PS is caught by the hardware (its data read as a page table)', needsQemu, () => {
  const r = hwcheck({ levels: 4, corrupt: 'leaf-ps' });
  assert.equal(r.ok, false);
  assert.equal(r.exitStatus, EXIT_FAIL, 'guest reports a failed check, not a crash');
  const hit = r.checks.find((c) => c.name === r.corrupted);
  assert.ok(hit && !hit.ok, `${r.corrupted} must fail`);
  assert.ok(r.checks.find((c) => c.name === '2 MiB leaf: read +0x0')!.ok, 'the other leaf still reads right');
});

test('morsel hwcheck --region leaves an existing region as it was', needsQemu, () => {
  const dir = tempDir('morsel-hwcheck-test-');
  try {
    const file = path.join(dir, 'r.region');
    const m = Memory.create(file, 32 * MiB);
    const id = m.morsels.create(2);
    m.morsels.populate(id, 0, 3 * 4096);
    // No space: a process's spaces and their registry go with its close().
    const free = freeFrames(m);
    const param = m.region.frame(1 as never).slice();
    m.close();

    const cli = fileURLToPath(new URL('../src/hwcheck/cli.js', import.meta.url));
    const commander = fileURLToPath(import.meta.resolve('commander'));
    const script = `import { Command } from ${JSON.stringify(commander)}; import { registerHwcheck } from ${JSON.stringify(cli)};
      const p = new Command('morsel'); registerHwcheck(p); await p.parseAsync(process.argv);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, 'morsel', 'hwcheck', '--region', file, '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const out = JSON.parse(r.stdout) as { ok: boolean; runs: HwcheckResult[] };
    assert.equal(out.ok, true);
    assert.deepEqual(out.runs.map((x) => x.levels), [4, 5]);

    const again = Memory.open(file);
    try {
      assert.deepEqual(again.morsels.list(), [id]);
      // The scenario leaves registry tables behind (the reference-count table's storage for its clones, live-table
      // tables for roots in new key ranges: a registry never shrinks), which freeFrames counts as free: nothing else.
      assert.equal(freeFrames(again), free);
      assert.equal(again.morsels.cow.refs.stats().entries, 0, 'no count left behind');
      assert.deepEqual(again.region.frame(1 as never), param, 'boot parameter block restored');
      assert.equal(again.report?.crashed, false);
    } finally {
      again.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('regions QEMU cannot show 1:1 are refused with ENOTSUP', () => {
  assert.throws(() => checkGuestRam(0xe000_0000), (e) => isMorselError(e, 'ENOTSUP'));
  assert.throws(() => checkGuestRam(64 * MiB + 4096), (e) => isMorselError(e, 'ENOTSUP'));
  checkGuestRam(64 * MiB);
});
