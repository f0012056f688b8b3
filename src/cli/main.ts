/**
 * The `morsel` command line. Every command takes --json and then prints one
 * JSON object on stdout; errors exit non-zero with a typed code, as
 * {"error":{"code","message"}} under --json.
 */
import * as fs from 'node:fs';
import { Command, Option } from 'commander';
import { MorselError, isMorselError } from '../errors.js';
import { Memory, type OpenOptions } from '../memory.js';
import { hex, parseId } from '../morsel/id.js';
import { describeMeta } from '../morsel/meta.js';
import { toOrder } from '../morsel/order.js';
import { Mmu } from '../space/mmu.js';
import { formatBytes, parseSize } from '../units.js';
import { FORMAT_VERSION } from '../physical/superblock.js';
import { registerHwcheck } from '../hwcheck/cli.js';
import { registerCheck } from './check.js';
import { registerNames } from './names.js';

type Out = Record<string, unknown>;

/** Runs a command body: prints its result (JSON or text) or its typed error. */
function run(json: boolean, body: () => Out | Promise<Out>, text?: (o: Out) => string): Promise<void> {
  return Promise.resolve()
    .then(body)
    .then((o) => {
      if (json) process.stdout.write(JSON.stringify(o) + '\n');
      else if (text) process.stdout.write(text(o) + '\n');
    })
    .catch((e: unknown) => {
      const err = isMorselError(e) ? e : new MorselError('EINVAL', e instanceof Error ? e.message : String(e));
      if (!isMorselError(e) && process.env.MORSEL_DEBUG) console.error(e);
      if (json) process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message } }) + '\n');
      else process.stderr.write(`morsel: ${err.message}\n`);
      process.exitCode = 2;
    });
}

/** Opens a region for one command and closes it cleanly afterwards, whatever happens. */
function withRegion<T>(path: string, fn: (m: Memory) => T, opts: OpenOptions = {}): T {
  const memory = Memory.open(path, opts);
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

/**
 * Maps the morsel in a scratch space and hands the caller an MMU at its
 * address. The byte range is validated first, so a bad request changes nothing.
 */
function withMapping<T>(m: Memory, idText: string, range: { offset: number; length: number; write: boolean }, fn: (mmu: Mmu, base: number) => T): T {
  const id = parseId(idText);
  const d = m.morsels.decode(id);
  const data = m.morsels.dataOf(d);
  const sizeBytes = d.meta ? m.morsels.metaOf(d).sizeBytes : 2 ** (12 + 9 * data.order);
  if (range.offset + range.length > sizeBytes) throw new MorselError('ERANGE', `[${range.offset}, ${range.offset + range.length}) is outside the ${sizeBytes}-byte morsel`);
  const write = range.write;
  const space = m.createSpace({ levels: data.order === 4 ? 5 : 4 });
  try {
    const base = space.map(id, { rights: { write } });
    try {
      return fn(new Mmu(space), base);
    } finally {
      space.unmap(base);
    }
  } finally {
    space.destroy();
  }
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command('morsel')
    .description('Morsels: memory objects built from x86-64 page-table subtrees')
    .showHelpAfterError()
    .exitOverride((err) => {
      // Usage errors exit 2 like every other error; 1 means "ran, found problems" (check, hwcheck).
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  const json = new Option('--json', 'print one JSON object on stdout');
  const regionOpt = new Option('--region <file>', 'persistent region file').makeOptionMandatory();

  program
    .command('init <file>')
    .description('create and format a persistent region file')
    .requiredOption('--size <bytes>', 'region size, e.g. 256MiB, 8GiB')
    .option('--force', 'overwrite an existing file')
    .addOption(json)
    .action((file: string, o: { size: string; force?: boolean; json?: boolean }) =>
      run(!!o.json, () => {
        const m = Memory.create(file, parseSize(o.size), { force: !!o.force });
        const out = statOf(m);
        m.close();
        return { file, ...out };
      }, (r) => `created ${file}: ${formatBytes((r.frames as Out).total as number * 4096)}`),
    );

  program
    .command('stat')
    .description('frames total/free/used and the format version of a region')
    .addOption(regionOpt)
    .addOption(json)
    .action((o: { region: string; json?: boolean }) =>
      // Read-only: stat never recovers or changes a region (a crashed one reports recovery pending).
      run(!!o.json, () => withRegion(o.region, (m) => ({ ...statOf(m), recovery: m.report }), { mode: 'readonly' }), (r) => {
        const f = r.frames as Record<string, number>;
        return `format version ${r.version}\nframes total ${f.total}, allocatable ${f.allocatable}, free ${f.free}, used ${f.used}\nlive morsels ${r.morsels}`;
      }),
    );

  program
    .command('create')
    .description('create a morsel (prints its ID)')
    .addOption(regionOpt)
    .requiredOption('--order <n>', 'order 0..4 (4 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB)')
    .option('--meta', 'create a meta morsel with a fixed mapping address')
    .option('--address <addr>', 'fixed mapping address for --meta')
    .option('--size <bytes>', 'byte size recorded in the meta morsel')
    .addOption(json)
    .action((o: { region: string; order: string; meta?: boolean; address?: string; size?: string; json?: boolean }) =>
      run(!!o.json, () =>
        withRegion(o.region, (m) => {
          const order = toOrder(o.order);
          if (o.address !== undefined && !o.meta) throw new MorselError('EINVAL', '--address needs --meta');
          if (o.meta && o.address === undefined) throw new MorselError('EINVAL', '--meta needs --address');
          const id = o.meta
            ? m.morsels.createMeta(order, { address: parseNumber(o.address!, '--address'), sizeBytes: o.size === undefined ? undefined : parseSize(o.size) })
            : m.morsels.create(order);
          return { id: hex(id) };
        }), (r) => String(r.id)),
    );

  program
    .command('write <id>')
    .description('write bytes from a file (or stdin) into a morsel')
    .addOption(regionOpt)
    .option('--offset <n>', 'byte offset in the morsel', '0')
    .option('--file <f>', 'read the bytes from this file instead of stdin')
    .addOption(json)
    .action((idText: string, o: { region: string; offset: string; file?: string; json?: boolean }) =>
      run(!!o.json, () => {
        const offset = parseNumber(o.offset, '--offset');
        const bytes = readInput(o.file);
        return withRegion(o.region, (m) =>
          withMapping(m, idText, { offset, length: bytes.length, write: true }, (mmu, base) => {
            mmu.write(base + offset, bytes);
            return { id: idText, offset, written: bytes.length };
          }),
        );
      }),
    );

  program
    .command('read <id>')
    .description('read bytes from a morsel to stdout')
    .addOption(regionOpt)
    .option('--offset <n>', 'byte offset in the morsel', '0')
    .requiredOption('--length <n>', 'number of bytes')
    .addOption(json)
    .action((idText: string, o: { region: string; offset: string; length: string; json?: boolean }) => {
      let data: Uint8Array | null = null;
      return run(!!o.json, () => {
        const offset = parseNumber(o.offset, '--offset');
        const length = parseNumber(o.length, '--length');
        data = withRegion(o.region, (m) =>
          withMapping(m, idText, { offset, length, write: false }, (mmu, base) => {
            const out = new Uint8Array(length);
            mmu.read(base + offset, out);
            return out;
          }),
        );
        if (!o.json) process.stdout.write(data);
        return { id: idText, offset, length, base64: Buffer.from(data).toString('base64') };
      });
    });

  program
    .command('inspect <id>')
    .description('order, root frame and frames in a morsel subtree')
    .addOption(regionOpt)
    .addOption(json)
    .action((idText: string, o: { region: string; json?: boolean }) =>
      run(!!o.json, () =>
        withRegion(o.region, (m) => {
          const s = m.morsels.stats(parseId(idText));
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
        }), (r) => Object.entries(r).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('\n')),
    );

  program
    .command('destroy <id>')
    .description('destroy a morsel and free its frames (post-order)')
    .addOption(regionOpt)
    .addOption(json)
    .action((idText: string, o: { region: string; json?: boolean }) =>
      run(!!o.json, () =>
        withRegion(o.region, (m) => {
          const id = parseId(idText);
          const freeBefore = m.alloc.freeFrames();
          m.morsels.destroy(id);
          return { id: hex(id), freedFrames: m.alloc.freeFrames() - freeBefore };
        }), (r) => `destroyed ${r.id} (${r.freedFrames} frames freed)`),
    );

  program
    .command('ls')
    .description('list the live morsels of a region')
    .addOption(regionOpt)
    .addOption(json)
    .action((o: { region: string; json?: boolean }) =>
      run(!!o.json, () => withRegion(o.region, (m) => ({ morsels: m.morsels.list().map((id) => hex(id)) })), (r) => (r.morsels as string[]).join('\n')),
    );

  registerCheck(program);
  registerHwcheck(program);
  registerNames(program);
  await program.parseAsync(argv);
}

function statOf(m: Memory): Out {
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

function readInput(file: string | undefined): Uint8Array {
  try {
    return file === undefined ? fs.readFileSync(0) : fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MorselError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot read ${file ?? 'stdin'}: ${(e as Error).message}`);
  }
}
