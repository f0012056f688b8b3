/**
 * The namespace commands of `morsel`: names and directories with modes and
 * owners (src/manage/names.ts). Commands that act on a named morsel's
 * bytes or life (create, read, write, inspect, destroy, stat, ls) live with
 * their kind (morsels.ts, io.ts, region.ts) and take a path too.
 *
 *   rm <path>                      remove a name; the morsel goes when its last user does
 *   mkdir [--mode 0755] <path>     rmdir <path>      mv <from> <to>
 *   chmod <mode> <path>            chown <uid[:gid]> <path>   (root only)
 *   clone [--mode 0600] <source> <path>   copy-on-write clone (source: a path or a handle)
 */
import type { Command } from 'commander';
import type { Memory } from '../memory.js';
import { MorselError } from '../errors.js';
import { jsonOption, regionOption, run, withRegion, type Out } from './common.js';

/** Largest uid/gid (POSIX uid_t is 32-bit unsigned). */
const MAX_ID = 0xffff_ffff;

/** A decimal uid or gid; EINVAL for anything else. */
function parseOwnerId(text: string, what: string): number {
  const n = /^\d{1,10}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(n <= MAX_ID)) throw new MorselError('EINVAL', `${what} must be a decimal number 0..${MAX_ID}, got ${JSON.stringify(text)}`);
  return n;
}

/** Registers one namespace command: positional args, then `body` on the opened region. */
function nameCommand(program: Command, spec: string, description: string, body: (m: Memory, args: string[], o: Record<string, string>) => Out | Promise<Out>, text?: (r: Out) => string): Command {
  return program
    .command(spec)
    .description(description)
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((...all: unknown[]) => {
      const o = all[all.length - 2] as Record<string, string> & { region: string; json?: boolean };
      const args = all.slice(0, -2) as string[];
      return run(o.json, () => withRegion(o.region, (m) => body(m, args, o)), text);
    });
}

export function registerNames(program: Command): void {
  nameCommand(program, 'rm <path>', 'remove a name; its morsel is destroyed now, or by its last user if open or mapped', (m, [path]) => ({ path, destroyed: m.names.unlink(path) }),
    (r) => (r.destroyed ? `removed ${r.path}` : `removed ${r.path} (in use: destroyed when its last user closes it)`));
  nameCommand(program, 'mkdir <path>', 'create a directory', async (m, [path], o) => {
    const { parseMode } = await import('../manage/rights.js');
    m.names.mkdir(path, { mode: o.mode === undefined ? undefined : parseMode(o.mode) });
    return { path };
  }).option('--mode <octal>', 'permission bits (default 0755)');
  nameCommand(program, 'rmdir <path>', 'remove an empty directory (ENOTEMPTY otherwise)', (m, [path]) => (m.names.rmdir(path), { path }));
  nameCommand(program, 'mv <from> <to>', 'rename a name (EEXIST if <to> exists)', (m, [from, to]) => (m.names.rename(from, to), { from, to }));
  nameCommand(program, 'chmod <mode> <path>', 'change permission bits, octal like 0640 (owner or root)', async (m, [mode, path]) => {
    const { parseMode } = await import('../manage/rights.js');
    m.names.chmod(path, parseMode(mode));
    return { path, mode };
  });
  nameCommand(program, 'clone <source> <path>', 'copy-on-write clone of <source> (a path or a 0x…@generation handle) as <path>, in constant time', async (m, [source, path], o) => {
    const { parseMode } = await import('../manage/rights.js');
    const { parseHandle } = await import('../manage/handle.js');
    const from = source.startsWith('/') ? source : parseHandle(source);
    const t0 = performance.now();
    const h = m.names.clone(from, path, { mode: o.mode === undefined ? undefined : parseMode(o.mode) });
    const micros = Math.round((performance.now() - t0) * 1000);
    m.names.close(h);
    const st = m.names.stat(path);
    return { source, path, handle: h.toString(), sizeBytes: st.sizeBytes, sharedFrames: st.sharedFrames, micros };
  }, (r) => `cloned ${r.source} as ${r.path} (${r.handle}) in ${r.micros} µs; ${r.sharedFrames} frame(s) shared`).option('--mode <octal>', 'permission bits of the clone (default 0600)');
  nameCommand(program, 'chown <owner> <path>', 'change owner to uid[:gid] (root only)', (m, [owner, path]) => {
    const [u, g] = owner.split(':');
    const uid = parseOwnerId(u, 'uid');
    const gid = g === undefined ? m.names.stat(path).gid : parseOwnerId(g, 'gid');
    m.names.chown(path, uid, gid);
    return { path, uid, gid };
  });
}
