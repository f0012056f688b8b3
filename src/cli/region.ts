/**
 * `morsel init <file>`, `morsel stat [path]` and `morsel check`: create,
 * describe (or describe one name in) and verify a region file.
 */
import type { Command } from 'commander';
import type { Memory } from '../memory.js';
import { formatBytes, parseBytes, PAGE_SIZE } from '../units.js';
import { MorselError } from '../errors.js';
import { EXIT_OK, EXIT_PROBLEMS, jsonOption, keyValueText, printError, regionOption, run, withRegion, type Out } from './common.js';

export function registerRegion(program: Command): void {
  program
    .command('init <file>')
    .description('create and format a persistent region file')
    .requiredOption('--size <bytes>', 'region size, e.g. 256MiB, 8GiB')
    .option('--force', 'overwrite an existing file')
    .addOption(jsonOption())
    .action((file: string, o: { size: string; force?: boolean; json?: boolean }) =>
      run(o.json, async () => {
        const sizeBytes = parseBytes(o.size, '--size');
        const { Memory } = await import('../memory.js');
        const m = Memory.create(file, sizeBytes, { force: !!o.force });
        try {
          return { file, ...(await statOf(m)) };
        } finally {
          m.close();
        }
      }, (r) => `created ${file}: ${formatBytes(((r.frames as Out).total as number) * PAGE_SIZE)}`),
    );

  program
    .command('stat')
    .argument('[path]', 'a name in the region (omit for the region itself)')
    .description('a name: kind, size, mode, owner, handle, users; without one: frames and format of the region (read-only open)')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((path: string | undefined, o: { region: string; json?: boolean }) =>
      run(o.json, async () => {
        if (path === undefined) return withRegion(o.region, async (m) => ({ ...(await statOf(m)), recovery: m.report }), { mode: 'readonly' });
        const { describeStat } = await import('./targets.js');
        return withRegion(o.region, (m) => describeStat(m.names.stat(path)), { mode: 'readonly' });
      }, (r) => {
        if (path !== undefined) return keyValueText(r);
        const f = r.frames as Record<string, number>;
        return `format version ${r.version}\nframes total ${f.total}, allocatable ${f.allocatable}, free ${f.free}, used ${f.used}\nlive morsels ${r.morsels}`;
      }),
    );

  registerCheck(program);
}

/** `morsel check [--repair [--yes]]`: see check.ts. Exit 0 ok, 1 problems, else the error's status. */
export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('verify every invariant of a region (trees, references, allocator); --repair fixes what is safe to fix')
    .addOption(regionOption())
    .option('--repair', 'show what a repair would change and reclaim (dry run); with --yes, apply it')
    .option('--yes', 'with --repair: apply the repair')
    .addOption(jsonOption())
    .action(async (o: { region: string; repair?: boolean; yes?: boolean; json?: boolean }) => {
      try {
        if (o.yes && !o.repair) throw new MorselError('EINVAL', '--yes only confirms --repair');
        const { runCheck, describe } = await import('./check.js');
        const report = runCheck(o.region, { repair: !!o.repair, apply: !!o.yes });
        process.stdout.write((o.json ? JSON.stringify(report) : describe(report)) + '\n');
        process.exitCode = report.ok ? EXIT_OK : EXIT_PROBLEMS;
      } catch (e) {
        printError(!!o.json, e);
      }
    });
}

async function statOf(m: Memory): Promise<Out> {
  const { FORMAT_VERSION } = await import('../physical/superblock.js');
  const total = m.region.frameCount;
  const allocatable = m.alloc.totalAllocatable();
  const free = m.alloc.freeFrames();
  return {
    version: FORMAT_VERSION,
    persistent: m.region.persistent,
    frames: { total, allocatable, free, used: allocatable - free, reserved: total - allocatable },
    morsels: m.morsels.list().length,
  };
}
