/** `morsel create | inspect <id> | destroy <id> | ls`: morsels of a region by ID. */
import type { Command } from 'commander';
import { MorselError } from '../errors.js';
import { parseBytes } from '../units.js';
import { jsonOption, regionOption, run, withRegion } from './common.js';

export function registerMorsels(program: Command): void {
  program
    .command('create')
    .description('create a morsel (prints its ID)')
    .addOption(regionOption())
    .requiredOption('--order <n>', 'order 0..4 (4 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB)')
    .option('--meta', 'create a meta morsel with a fixed mapping address')
    .option('--address <addr>', 'fixed mapping address for --meta (e.g. 0x40000000, 1GiB)')
    .option('--size <bytes>', 'byte size recorded in the meta morsel (e.g. 1MiB)')
    .addOption(jsonOption())
    .action((o: { region: string; order: string; meta?: boolean; address?: string; size?: string; json?: boolean }) =>
      run(o.json, async () => {
        if (o.address !== undefined && !o.meta) throw new MorselError('EINVAL', '--address needs --meta');
        if (o.meta && o.address === undefined) throw new MorselError('EINVAL', '--meta needs --address');
        const address = o.address === undefined ? undefined : parseBytes(o.address, '--address');
        const sizeBytes = o.size === undefined ? undefined : parseBytes(o.size, '--size');
        const [{ toOrder }, { hex }] = await Promise.all([import('../morsel/order.js'), import('../morsel/id.js')]);
        const order = toOrder(o.order);
        return withRegion(o.region, (m) => {
          const id = address !== undefined ? m.morsels.createMeta(order, { address, sizeBytes }) : m.morsels.create(order);
          return { id: hex(id) };
        });
      }, (r) => String(r.id)),
    );

  program
    .command('inspect <id>')
    .description('order, root frame and frames in a morsel subtree')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((idText: string, o: { region: string; json?: boolean }) =>
      run(o.json, async () => {
        const [{ hex, parseId }, { describeMeta }] = await Promise.all([import('../morsel/id.js'), import('../morsel/meta.js')]);
        const id = parseId(idText);
        return withRegion(o.region, (m) => {
          const s = m.morsels.stats(id);
          return {
            id: hex(s.id),
            order: s.order,
            meta: s.meta,
            rootFrame: s.rootFrame,
            tableFrames: s.tableFrames,
            dataPages: s.dataPages,
            virtualBytes: s.virtualBytes,
            ...(s.metaInfo ? { metadata: describeMeta(s.metaInfo), dataRootFrame: s.data!.rootFrame } : {}),
          };
        });
      }, (r) => Object.entries(r).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('\n')),
    );

  program
    .command('destroy <id>')
    .description('destroy a morsel and free its frames (post-order)')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((idText: string, o: { region: string; json?: boolean }) =>
      run(o.json, async () => {
        const { hex, parseId } = await import('../morsel/id.js');
        const id = parseId(idText);
        return withRegion(o.region, (m) => {
          const freeBefore = m.alloc.freeFrames();
          m.morsels.destroy(id);
          return { id: hex(id), freedFrames: m.alloc.freeFrames() - freeBefore };
        });
      }, (r) => `destroyed ${r.id} (${r.freedFrames} frames freed)`),
    );

  program
    .command('ls')
    .description('list the live morsels of a region')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((o: { region: string; json?: boolean }) =>
      run(o.json, async () => {
        const { hex } = await import('../morsel/id.js');
        return withRegion(o.region, (m) => ({ morsels: m.morsels.list().map((id) => hex(id)) }), { mode: 'readonly' });
      }, (r) => (r.morsels as string[]).join('\n')),
    );
}
