/**
 * `morsel create | inspect | destroy | ls`: morsels by name, handle or raw ID.
 *
 *   create <path> --size S [--order N] [--mode 0600] [--fixed ADDR [--levels 4|5]] [--huge]
 *                                  a named morsel (prints its handle 0x…@generation)
 *   create --order N [--meta --address A [--size S]] [--huge]
 *                                  a raw, unnamed morsel: the primitive (prints its ID 0x…)
 *   inspect <target>               order, frames, generation, users
 *   destroy <target>               now; EBUSY while open or mapped anywhere
 *   ls [-l] [dir]                  names in a directory; --json also lists the live raw IDs
 *
 * <target>: see targets.ts (/path, 0x…@generation, or a raw 0x… ID).
 */
import type { Command } from 'commander';
import type { Memory } from '../memory.js';
import { check } from '../errors.js';
import { parseBytes } from '../units.js';
import { TARGET_HELP, jsonOption, keyValueText, regionOption, run, withRegion, type Out } from './common.js';


interface CreateFlags {
  region: string;
  size?: string;
  order?: string;
  mode?: string;
  fixed?: string;
  levels?: string;
  meta?: boolean;
  address?: string;
  huge?: boolean;
  json?: boolean;
}

export function registerMorsels(program: Command): void {
  program
    .command('create')
    .argument('[path]', 'name of the new morsel (omit for a raw morsel: then --order is required)')
    .description('create a named morsel (--size; prints its handle) or a raw one (--order; prints its ID)')
    .addOption(regionOption())
    .option('--size <bytes>', 'named: logical size (e.g. 50MiB); raw --meta: the size recorded in it')
    .option('--order <n>', 'order 0..4 (4 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB); named: default the smallest that holds --size')
    .option('--mode <octal>', 'named: permission bits (default 0600)')
    .option('--fixed <addr>', 'named: fixed mapping address, reserved region-wide (e.g. 0x40000000, 1GiB)')
    .option('--levels <n>', 'named --fixed: paging levels the address must be mappable with, 4 or 5 (default 5)')
    .option('--meta', 'raw: a meta morsel with a fixed mapping address (--address)')
    .option('--address <addr>', 'raw --meta: its fixed mapping address')
    .option('--huge', 'populate 2 MiB leaves (huge pages) instead of 4 KiB pages where order-9 frames are free; order >= 2 (1 GiB)')
    .addOption(jsonOption())
    .action((path: string | undefined, o: CreateFlags) =>
      run(o.json, async () => {
        const create = path === undefined ? await rawCreate(o) : await namedCreate(path, o);
        return withRegion(o.region, create);
      }, (r) => String(path === undefined ? r.id : r.handle)),
    );

  program
    .command('inspect')
    .argument('<target>', TARGET_HELP)
    .description('order, root frame, frames (shared by copy-on-write or private, tables per level), generation and users of a morsel')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((text: string, o: { region: string; json?: boolean }) =>
      run(o.json, async () => {
        const [{ resolveTarget, withTarget }, { describeMeta }, { formatHandle }, { hex }] = await Promise.all([
          import('./targets.js'), import('../morsel/meta.js'), import('../manage/handle.js'), import('../morsel/id.js'),
        ]);
        return withRegion(o.region, (m) =>
          withTarget(m, resolveTarget(m, text), false, (h) => {
            const s = m.morsels.stats(h.id);
            return {
              id: hex(s.id),
              generation: h.generation,
              handle: formatHandle(h),
              order: s.order,
              meta: s.meta,
              rootFrame: s.rootFrame,
              tableFrames: s.tableFrames,
              dataPages: s.dataPages,
              huge: s.huge,
              hugeLeaves: s.hugeLeaves,
              tablesByLevel: s.tablesByLevel.slice(1).join('/') || '-',
              sharedFrames: s.sharedFrames,
              privateFrames: s.tableFrames + s.dataPages - s.sharedFrames,
              virtualBytes: s.virtualBytes,
              users: m.morsels.usage.total(h.dataRoot) - 1, // without this command's own handle
              ...(s.metaInfo ? { metadata: describeMeta(s.metaInfo), dataRootFrame: s.data!.rootFrame } : {}),
            };
          }),
        );
      }, keyValueText),
    );

  program
    .command('destroy')
    .argument('<target>', TARGET_HELP)
    .description('destroy a morsel now and free its frames (EBUSY while open or mapped anywhere); a path loses its name too')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((text: string, o: { region: string; json?: boolean }) =>
      run(o.json, async () => {
        const [{ resolveTarget, freeFramesAfterClose }, { hex }] = await Promise.all([import('./targets.js'), import('../morsel/id.js')]);
        return withRegion(o.region, (m) => {
          const t = resolveTarget(m, text);
          const freeBefore = freeFramesAfterClose(m);
          if (t.form === 'path') m.names.destroy(text);
          else m.morsels.destroy(t.ref.id, { generation: t.form === 'handle' ? t.ref.generation : undefined });
          return { target: text, id: hex(t.ref.id), freedFrames: freeFramesAfterClose(m) - freeBefore };
        });
      }, (r) => `destroyed ${r.id} (${r.freedFrames} frames freed)`),
    );

  program
    .command('ls')
    .argument('[dir]', 'directory to list', '/')
    .description('list the names in a directory (read-only open)')
    .option('-l, --long', 'mode, owner, size and handle of each entry')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((dir: string, o: { region: string; long?: boolean; json?: boolean }) =>
      run(o.json, async () => {
        const [{ describeRecord }, { hex }] = await Promise.all([import('./targets.js'), import('../morsel/id.js')]);
        return withRegion(o.region, (m) => ({
          dir,
          entries: m.names.list(dir).map(({ name, rec }) => describeRecord(name, rec)),
          morsels: m.morsels.list().map((id) => hex(id)),
        }), { mode: 'readonly' });
      }, (r) => listing(r.entries as Out[], !!o.long)),
    );
}

/** `ls` text: one name a line, or with -l `-rw-r----- uid gid size handle name`. */
function listing(entries: Out[], long: boolean): string {
  const modeBits = (e: Out): string => {
    const bits = 'rwxrwxrwx';
    const mode = Number.parseInt(e.mode as string, 8);
    let s = e.kind === 'dir' ? 'd' : '-';
    for (let i = 0; i < bits.length; i++) s += mode & (1 << (8 - i)) ? bits[i] : '-';
    return s;
  };
  return entries.map((e) => (long ? `${modeBits(e)} ${e.uid} ${e.gid} ${String(e.sizeBytes).padStart(12)} ${e.handle ?? '-'} ${e.name}` : String(e.name))).join('\n');
}

/** `create <path> --size S …`: checks the flags, then returns the body that creates the name. */
async function namedCreate(path: string, o: CreateFlags): Promise<(m: Memory) => Out> {
  check(o.size !== undefined, 'EINVAL', 'a named morsel needs --size');
  check(!o.meta && o.address === undefined, 'EINVAL', 'named morsels take --fixed, not --meta/--address');
  check(o.levels === undefined || o.levels === '4' || o.levels === '5', 'EINVAL', () => `--levels must be 4 or 5, got ${o.levels}`);
  const [{ toOrder }, { parseMode }, { formatHandle }] = await Promise.all([import('../morsel/order.js'), import('../manage/rights.js'), import('../manage/handle.js')]);
  const opts = {
    sizeBytes: parseBytes(o.size, '--size'),
    order: o.order === undefined ? undefined : toOrder(o.order),
    mode: o.mode === undefined ? undefined : parseMode(o.mode),
    fixedAddress: o.fixed === undefined ? undefined : parseBytes(o.fixed, '--fixed'),
    levels: o.levels === '4' ? (4 as const) : (5 as const),
    huge: !!o.huge,
  };
  return (m) => {
    const h = m.names.create(path, opts);
    m.names.close(h);
    return { path, handle: formatHandle(h), order: h.dataOrder, sizeBytes: h.sizeBytes };
  };
}

/** `create --order N [--meta --address A [--size S]]`: an unnamed morsel; prints its raw ID (and handle under --json). */
async function rawCreate(o: CreateFlags): Promise<(m: Memory) => Out> {
  check(o.order !== undefined, 'EINVAL', 'create needs a /path (a named morsel, with --size) or --order (a raw one)');
  check(o.fixed === undefined && o.mode === undefined && o.levels === undefined, 'EINVAL', '--fixed, --levels and --mode are for named morsels; a raw one takes --meta --address');
  check(o.address === undefined || !!o.meta, 'EINVAL', '--address needs --meta');
  check(!o.meta || o.address !== undefined, 'EINVAL', '--meta needs --address');
  check(o.size === undefined || !!o.meta, 'EINVAL', 'a raw morsel spans its order; --size is for --meta (or give a /path)');
  const address = o.address === undefined ? undefined : parseBytes(o.address, '--address');
  const sizeBytes = o.size === undefined ? undefined : parseBytes(o.size, '--size');
  const [{ toOrder }, { hex, decodeIdBits }, { formatHandle }] = await Promise.all([import('../morsel/order.js'), import('../morsel/id.js'), import('../manage/handle.js')]);
  const order = toOrder(o.order);
  return (m) => {
    const huge = !!o.huge;
    const id = address !== undefined ? m.morsels.createMeta(order, { address, sizeBytes, huge }) : m.morsels.create(order, { huge });
    const d = decodeIdBits(id);
    return { id: hex(id), handle: formatHandle({ id: d.id, generation: m.morsels.generationOf(d.rootFrame) }) };
  };
}
