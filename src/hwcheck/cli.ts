/**
 * `morsel hwcheck --region R [--levels 4|5] [--json]`: runs the QEMU check
 * (see hwcheck.ts) on an existing region, for one or both paging depths,
 * leaving the region as it was. Exit status 1 when a check fails, 2 on an
 * error (missing QEMU/nasm, unusable region), like the other commands.
 */
import { Command, Option } from 'commander';
import { MorselError, isMorselError } from '../errors.js';
import type { Levels } from '../space/address-space.js';
import { hwcheck, type HwcheckResult } from './hwcheck.js';

export function registerHwcheck(program: Command): void {
  program
    .command('hwcheck')
    .description("check the region's page tables on QEMU's x86-64 MMU (needs qemu-system-x86_64 and nasm)")
    .addOption(new Option('--region <file>', 'persistent region file').makeOptionMandatory())
    .addOption(new Option('--levels <n>', 'paging depth (default: both)').choices(['4', '5']))
    .option('--json', 'print one JSON object on stdout')
    .action((o: { region: string; levels?: string; json?: boolean }) => {
      try {
        const levels: Levels[] = o.levels ? [Number(o.levels) as Levels] : [4, 5];
        const runs = levels.map((l) => hwcheck({ levels: l, region: o.region }));
        const ok = runs.every((r) => r.ok);
        process.stdout.write((o.json ? JSON.stringify({ ok, runs }) : runs.map(describe).join('\n')) + '\n');
        if (!ok) process.exitCode = 1;
      } catch (e) {
        // The same typed-error contract as src/cli/main.ts.
        const err = isMorselError(e) ? e : new MorselError('EINVAL', e instanceof Error ? e.message : String(e));
        if (o.json) process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message } }) + '\n');
        else process.stderr.write(`morsel: ${err.message}\n`);
        process.exitCode = 2;
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
