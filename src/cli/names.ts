/**
 * The management commands of the `morsel` CLI: named morsels with modes,
 * handles (ID@generation) and paths. Self-contained: registerNames(program)
 * adds mkdir, rmdir, mv, rm, chmod, chown and REPLACES create, stat, ls,
 * read, write, inspect and destroy with versions that take a path, a handle
 * or (where the primitive allows it) a raw ID, keeping the raw forms:
 *
 *   morsel create <path> --size 50MiB [--order N] [--mode 0640] [--fixed ADDR] [--levels 4|5]
 *   morsel create --order N [--meta --address A [--size S]]     raw, unnamed (prints the ID)
 *   morsel ls [-l] [dir]        names in dir (default /); --json also lists raw live IDs
 *   morsel stat [path]          a name (size, mode, handle, users), or the region without one
 *   morsel read <target> [--offset N] [--length N]   without --length: the logical size
 *   morsel write <target> [--offset N] [--file F]
 *   morsel inspect <target>     raw entry, generation, frames
 *   morsel destroy <target>     EBUSY while open or mapped anywhere
 *   morsel rm | mkdir [--mode] | rmdir | mv <from> <to> | chmod <mode> <path> | chown <uid[:gid]> <path>
 *
 * <target> = /path | 0x…@generation (a handle: ESTALE once destroyed) | 0x… (a raw ID).
 * --region defaults to $MORSEL_REGION. Every command takes --json.
 */
import * as fs from 'node:fs';
import { Command, Option } from 'commander';
import { MorselError, check, isMorselError } from '../errors.js';
import { Memory } from '../memory.js';
import { decodeIdBits, hex, parseId } from '../morsel/id.js';
import { describeMeta } from '../morsel/meta.js';
import { orderBytes, toOrder } from '../morsel/order.js';
import { FORMAT_VERSION } from '../physical/superblock.js';
import { formatBytes, parseSize } from '../units.js';
import { formatHandle, isHandleText, parseHandle, type MorselHandle } from '../manage/handle.js';
import { parseMode } from '../manage/rights.js';
import { forEachUsageFrame } from '../morsel/usage.js';
import type { NameRecord, NameStat } from '../manage/names.js';

type Out = Record<string, unknown>;
const REPLACED = ['create', 'stat', 'ls', 'read', 'write', 'inspect', 'destroy'];

function run(json: boolean, body: () => Out, text?: (o: Out) => string): void {
  try {
    const o = body();
    if (json) process.stdout.write(JSON.stringify(o) + '\n');
    else if (text) process.stdout.write(text(o) + '\n');
  } catch (e) {
    const err = isMorselError(e) ? e : new MorselError('EINVAL', e instanceof Error ? e.message : String(e));
    if (!isMorselError(e) && process.env.MORSEL_DEBUG) console.error(e);
    if (json) process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message } }) + '\n');
    else process.stderr.write(`morsel: ${err.message}\n`);
    process.exitCode = 2;
  }
}

/** Opens the region for one command; `readonly` for commands that only look (stat, ls: never a recovery or a slot). */
function withRegion<T>(file: string, fn: (m: Memory) => T, opts: { readonly?: boolean } = {}): T {
  const memory = Memory.open(file, opts.readonly ? { mode: 'readonly' } : {});
  try {
    return fn(memory);
  } finally {
    memory.close();
  }
}

function parseNumber(text: string, what: string): number {
  const t = text.trim();
  const n = /^0x[0-9a-f]+$/i.test(t) ? Number.parseInt(t, 16) : /^\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n)) throw new MorselError('EINVAL', `${what} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}

/** Opens a target: a path (mode checked), a handle (ESTALE when gone) or a raw ID (its current incarnation). */
function openTarget(m: Memory, target: string, write: boolean): MorselHandle {
  if (target.startsWith('/')) return m.names.open(target, { write });
  check(isHandleText(target), 'EINVAL', () => `${JSON.stringify(target)} is neither a /path, a handle (0x…@generation) nor a morsel ID`);
  if (target.includes('@')) return m.names.openRef(parseHandle(target), { write });
  const d = m.morsels.decode(parseId(target));
  return m.names.openRef({ id: d.id, generation: m.morsels.generationOf(d.rootFrame) }, { write });
}

/** The logical size of a target, found without opening (counting) it: a bad range then changes nothing. */
function sizeOfTarget(m: Memory, target: string): number {
  if (target.startsWith('/')) return m.names.ns.lookup(target).sizeBytes;
  const d = target.includes('@') ? m.morsels.decodeHandle(parseHandle(target).id, parseHandle(target).generation) : m.morsels.decode(parseId(target));
  return d.meta ? m.morsels.metaOf(d).sizeBytes : orderBytes(d.order);
}

function checkRange(m: Memory, target: string, offset: number, length: number | undefined): number {
  const size = sizeOfTarget(m, target);
  const len = length ?? Math.max(0, size - offset);
  check(offset + len <= size, 'ERANGE', () => `[${offset}, ${offset + len}) is outside the ${size}-byte morsel`);
  return len;
}

function withTarget<T>(m: Memory, target: string, write: boolean, fn: (h: MorselHandle) => T): T {
  const h = openTarget(m, target, write);
  try {
    return fn(h);
  } finally {
    m.names.close(h);
  }
}

const modeText = (rec: { kind: string; mode: number }): string => {
  const bits = 'rwxrwxrwx';
  let s = rec.kind === 'dir' ? 'd' : '-';
  for (let i = 0; i < 9; i++) s += rec.mode & (1 << (8 - i)) ? bits[i] : '-';
  return s;
};

const describeRecord = (name: string, rec: NameRecord): Out => ({
  name,
  kind: rec.kind,
  mode: '0' + rec.mode.toString(8).padStart(3, '0'),
  uid: rec.uid,
  gid: rec.gid,
  sizeBytes: rec.sizeBytes,
  mtimeMs: rec.mtimeMs,
  ...(rec.kind === 'morsel' ? { handle: formatHandle({ id: decodeIdBits(rec.id).id, generation: rec.generation }), fixedAddress: rec.fixedAddress } : {}),
});

const describeStat = (s: NameStat): Out => ({ ...s, mode: '0' + s.mode.toString(8).padStart(3, '0') });

function readInput(file: string | undefined): Uint8Array {
  try {
    return file === undefined ? fs.readFileSync(0) : fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MorselError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot read ${file ?? 'stdin'}: ${(e as Error).message}`);
  }
}

function regionStat(m: Memory): Out {
  const total = m.region.frameCount;
  const allocatable = m.alloc.totalAllocatable();
  const free = m.alloc.freeFrames();
  return { version: FORMAT_VERSION, persistent: m.region.persistent, frames: { total, allocatable, free, used: allocatable - free, reserved: total - allocatable }, morsels: m.morsels.list().length };
}

/** Free frames, counting this process's usage-registry tables as free (they go at close). */
function freeFrames(m: Memory): number {
  let tables = 0;
  forEachUsageFrame(m.region, m.alloc, m.region.userSlot, () => tables++);
  return m.alloc.freeFrames() + tables;
}

const textOf = (r: Out): string => Object.entries(r).map(([k, v]) => `${k}: ${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`).join('\n');

export function registerNames(program: Command): void {
  const commands = program.commands as Command[];
  for (let i = commands.length - 1; i >= 0; i--) if (REPLACED.includes(commands[i].name())) commands.splice(i, 1);
  const json = () => new Option('--json', 'print one JSON object on stdout');
  const region = () => new Option('--region <file>', 'region file (default $MORSEL_REGION)').env('MORSEL_REGION').makeOptionMandatory();
  type R = { region: string; json?: boolean };

  program
    .command('create [path]')
    .description('create a named morsel (--size; order from the size), or a raw one (--order)')
    .addOption(region())
    .option('--size <bytes>', 'logical size, e.g. 50MiB')
    .option('--order <n>', 'order 0..4 (default: the smallest that holds --size)')
    .option('--mode <octal>', 'permission bits of a named morsel', '0600')
    .option('--fixed <addr>', 'fixed mapping address (reserved region-wide)')
    .option('--levels <n>', 'paging levels the fixed address must be mappable with (4 or 5)', '5')
    .option('--meta', 'raw: create a meta morsel with a fixed mapping address')
    .option('--address <addr>', 'raw: fixed mapping address for --meta')
    .addOption(json())
    .action((path: string | undefined, o: R & { size?: string; order?: string; mode: string; fixed?: string; levels: string; meta?: boolean; address?: string }) =>
      run(!!o.json, () =>
        withRegion(o.region, (m) => {
          if (path === undefined) return createRaw(m, o);
          check(o.size !== undefined, 'EINVAL', 'a named morsel needs --size');
          check(!o.meta && o.address === undefined, 'EINVAL', 'named morsels take --fixed, not --meta/--address');
          check(o.levels === '4' || o.levels === '5', 'EINVAL', `--levels must be 4 or 5, got ${o.levels}`);
          const h = m.names.create(path, {
            sizeBytes: parseSize(o.size),
            order: o.order === undefined ? undefined : toOrder(o.order),
            mode: parseMode(o.mode),
            fixedAddress: o.fixed === undefined ? undefined : parseNumber(o.fixed, '--fixed'),
            levels: o.levels === '4' ? 4 : 5,
          });
          m.names.close(h);
          return { path, handle: formatHandle(h), order: h.dataOrder, sizeBytes: h.sizeBytes };
        }), (r) => String(path === undefined ? r.id : r.handle)),
    );

  program
    .command('ls [dir]')
    .description('list the names in a directory (default /)')
    .addOption(region())
    .option('-l, --long', 'mode, owner, size and handle of each entry')
    .addOption(json())
    .action((dir: string | undefined, o: R & { long?: boolean }) =>
      run(!!o.json, () =>
        withRegion(o.region, (m) => ({
          dir: dir ?? '/',
          entries: m.names.list(dir ?? '/').map(({ name, rec }) => describeRecord(name, rec)),
          morsels: m.morsels.list().map((id) => hex(id)),
        }), { readonly: true }), (r) =>
        (r.entries as Out[]).map((e) => (o.long ? `${modeText({ kind: e.kind as string, mode: Number.parseInt(e.mode as string, 8) })} ${e.uid} ${e.gid} ${String(e.sizeBytes).padStart(12)} ${e.handle ?? '-'} ${e.name}` : String(e.name))).join('\n'),
      ),
    );

  program
    .command('stat [path]')
    .description('a name: kind, size, mode, owner, handle, users; without a path: the region')
    .addOption(region())
    .addOption(json())
    .action((path: string | undefined, o: R) =>
      run(!!o.json, () => withRegion(o.region, (m) => (path === undefined ? { ...regionStat(m), recovery: m.report } : describeStat(m.names.stat(path))), { readonly: true }), (r) => {
        if (path !== undefined) return textOf(r);
        const f = r.frames as Record<string, number>;
        return `format version ${r.version}\nframes total ${f.total}, allocatable ${f.allocatable}, free ${f.free}, used ${f.used}\nlive morsels ${r.morsels}`;
      }),
    );

  program
    .command('read <target>')
    .description('read bytes of a morsel to stdout (default: its whole logical size)')
    .addOption(region())
    .option('--offset <n>', 'byte offset', '0')
    .option('--length <n>', 'number of bytes (default: logical size - offset)')
    .addOption(json())
    .action((target: string, o: R & { offset: string; length?: string }) => {
      let data: Uint8Array | null = null;
      run(!!o.json, () => {
        const offset = parseNumber(o.offset, '--offset');
        const length = o.length === undefined ? undefined : parseNumber(o.length, '--length');
        data = withRegion(o.region, (m) => {
          const len = checkRange(m, target, offset, length);
          return withTarget(m, target, false, (h) => m.names.read(h, offset, len));
        });
        return { target, offset, length: data.length, base64: Buffer.from(data).toString('base64') };
      });
      if (!o.json && data !== null) process.stdout.write(data);
    });

  program
    .command('write <target>')
    .description('write bytes from a file (or stdin) into a morsel')
    .addOption(region())
    .option('--offset <n>', 'byte offset', '0')
    .option('--file <f>', 'read the bytes from this file instead of stdin')
    .addOption(json())
    .action((target: string, o: R & { offset: string; file?: string }) =>
      run(!!o.json, () => {
        const offset = parseNumber(o.offset, '--offset');
        const bytes = readInput(o.file);
        withRegion(o.region, (m) => {
          checkRange(m, target, offset, bytes.length);
          withTarget(m, target, true, (h) => m.names.write(h, offset, bytes));
        });
        return { target, offset, written: bytes.length };
      }),
    );

  program
    .command('inspect <target>')
    .description('raw entry, generation, order and frames of a morsel')
    .addOption(region())
    .addOption(json())
    .action((target: string, o: R) =>
      run(!!o.json, () =>
        withRegion(o.region, (m) =>
          withTarget(m, target, false, (h) => {
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
              virtualBytes: s.virtualBytes,
              users: m.morsels.usage.total(h.dataRoot) - 1, // without this command's own handle
              ...(s.metaInfo ? { metadata: describeMeta(s.metaInfo), dataRootFrame: s.data!.rootFrame } : {}),
            };
          }),
        ), textOf),
    );

  program
    .command('destroy <target>')
    .description('destroy a morsel now (EBUSY while open or mapped anywhere); a path also loses its name')
    .addOption(region())
    .addOption(json())
    .action((target: string, o: R) =>
      run(!!o.json, () =>
        withRegion(o.region, (m) => {
          const freeBefore = freeFrames(m);
          if (target.startsWith('/')) {
            const destroyed = m.names.destroy(target);
            return { target, destroyed, freedFrames: freeFrames(m) - freeBefore };
          }
          check(isHandleText(target), 'EINVAL', () => `${JSON.stringify(target)} is neither a /path, a handle nor a morsel ID`);
          const ref = target.includes('@') ? parseHandle(target) : null;
          const id = ref?.id ?? parseId(target);
          m.morsels.destroy(id, { generation: ref?.generation });
          return { id: hex(id), destroyed: true, freedFrames: freeFrames(m) - freeBefore };
        }), (r) => `destroyed ${r.id ?? r.target} (${r.freedFrames} frames freed)`),
    );

  const simple = (name: string, args: string, description: string, body: (m: Memory, a: string[], o: Out) => Out, extra?: (c: Command) => Command) => {
    let c = program.command(`${name} ${args}`).description(description).addOption(region()).addOption(json());
    if (extra) c = extra(c);
    c.action((...all: unknown[]) => {
      const o = all[all.length - 2] as R & Out;
      const a = all.slice(0, -2) as string[];
      run(!!o.json, () => withRegion(o.region, (m) => body(m, a, o)), (r) => (r.destroyed === false ? 'unlinked (destroy deferred to the last user)' : ''));
    });
  };
  simple('rm', '<path>', 'remove a name; the morsel goes when its last user does', (m, [p]) => ({ path: p, destroyed: m.names.unlink(p) }));
  simple('mkdir', '<path>', 'create a directory', (m, [p], o) => (m.names.mkdir(p, { mode: parseMode(o.mode as string) }), { path: p }), (c) => c.option('--mode <octal>', 'permission bits', '0755'));
  simple('rmdir', '<path>', 'remove an empty directory', (m, [p]) => (m.names.rmdir(p), { path: p }));
  simple('mv', '<from> <to>', 'rename (EEXIST if <to> exists)', (m, [from, to]) => (m.names.rename(from, to), { from, to }));
  simple('chmod', '<mode> <path>', 'change permission bits (owner or root)', (m, [mode, p]) => (m.names.chmod(p, parseMode(mode)), { path: p, mode }));
  simple('chown', '<owner> <path>', 'change owner uid[:gid] (root only)', (m, [owner, p]) => {
    const [u, g] = owner.split(':');
    const uid = parseNumber(u, 'uid');
    const gid = g === undefined ? m.names.stat(p).gid : parseNumber(g, 'gid');
    m.names.chown(p, uid, gid);
    return { path: p, uid, gid };
  });
}

/** `create --order N [--meta --address A [--size S]]`: an unnamed morsel (prints its ID and handle). */
function createRaw(m: Memory, o: { order?: string; meta?: boolean; address?: string; size?: string; fixed?: string }): Out {
  check(o.order !== undefined, 'EINVAL', 'create needs a path (named) or --order (raw)');
  check(o.fixed === undefined, 'EINVAL', '--fixed is for named morsels; raw ones take --meta --address');
  const order = toOrder(o.order);
  if (o.address !== undefined && !o.meta) throw new MorselError('EINVAL', '--address needs --meta');
  if (o.meta && o.address === undefined) throw new MorselError('EINVAL', '--meta needs --address');
  const id = o.meta ? m.morsels.createMeta(order, { address: parseNumber(o.address!, '--address'), sizeBytes: o.size === undefined ? undefined : parseSize(o.size) }) : m.morsels.create(order);
  const d = decodeIdBits(id);
  return { id: hex(id), handle: formatHandle({ id: d.id, generation: m.morsels.generationOf(d.rootFrame) }), bytes: formatBytes(2 ** (12 + 9 * order)) };
}
