/**
 * `morsel hwcheck --region R [--levels 4|5] [--json]`: runs the QEMU check
 * (see hwcheck.ts) on an existing region, for one or both paging depths,
 * leaving the region as it was. Exit status 1 when a check fails; an error
 * (missing QEMU/nasm: ENOTSUP, unusable region) exits with its class, like
 * every command (src/cli/common.ts).
 */
import { Command, Option } from 'commander';
import { EXIT_PROBLEMS, printError, regionOption } from '../cli/common.js';
import type { Levels } from '../space/address-space.js';
import type { HwcheckResult } from './hwcheck.js';

export function registerHwcheck(program: Command): void {
  program
    .command('hwcheck')
    .description("check the region's page tables on QEMU's x86-64 MMU (needs qemu-system-x86_64 and nasm)")
    .addOption(regionOption())
    .addOption(new Option('--levels <n>', 'paging depth (default: both)').choices(['4', '5']))
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { region: string; levels?: string; json?: boolean }) => {
      try {
        const { hwcheck } = await import('./hwcheck.js'); // only this command pays for loading it
        const levels: Levels[] = o.levels ? [Number(o.levels) as Levels] : [4, 5];
        const runs = levels.map((l) => hwcheck({ levels: l, region: o.region }));
        const ok = runs.every((r) => r.ok);
        process.stdout.write((o.json ? JSON.stringify({ ok, runs }) : runs.map(describe).join('\n')) + '\n');
        if (!ok) process.exitCode = EXIT_PROBLEMS;
      } catch (e) {
        printError(!!o.json, e);
      }
    });
}

function describe(r: HwcheckResult): string {
  const passed = r.checks.filter((c) => c.ok).length;
  const lines = [`${r.levels}-level: ${r.ok ? 'PASS' : 'FAIL'} (${passed}/${r.checks.length} checks, QEMU ${r.qemuSeconds.toFixed(2)} s)`];
  for (const c of r.checks) if (!c.ok) lines.push(`  FAIL ${c.name}: ${c.detail}`);
  for (const l of r.ok ? [] : r.log) lines.push(`  ${l}`);
  return lines.join('\n');
}
