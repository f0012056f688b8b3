/** `morsel init <file>` and `morsel stat`: create and describe a region file. */
import type { Command } from 'commander';
import type { Memory } from '../memory.js';
import { formatBytes, parseBytes, PAGE_SIZE } from '../units.js';
import { jsonOption, regionOption, run, withRegion, type Out } from './common.js';

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
    .description('frames total/free/used and the format version of a region')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((o: { region: string; json?: boolean }) =>
      run(o.json, () => withRegion(o.region, async (m) => ({ ...(await statOf(m)), recovery: m.report }), { mode: 'readonly' }), (r) => {
        const f = r.frames as Record<string, number>;
        return `format version ${r.version}\nframes total ${f.total}, allocatable ${f.allocatable}, free ${f.free}, used ${f.used}\nlive morsels ${r.morsels}`;
      }),
    );
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
