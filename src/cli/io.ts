/**
 * `morsel write <target>` and `morsel read <target>`: bytes in and out of a
 * morsel named by a /path, a handle (0x…@generation) or a raw ID (see
 * targets.ts), always through a handle.
 *
 * write reads a file (or stdin) in bounded chunks: a file's size is checked
 * before anything is read or opened; a pipe is staged up to STAGE_BYTES and
 * checked before the target is opened (see targets.ts). Input longer than
 * the morsel is ERANGE; an error part-way reports `written` (bytes that
 * landed). read streams to stdout in MiB pieces, or prints base64 under
 * --json; without --length it reads to the end of the logical size.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { MorselError } from '../errors.js';
import { MiB, parseBytes } from '../units.js';
import { TARGET_HELP, jsonOption, regionOption, run, withRegion } from './common.js';

/** Input chunks and output pieces (bounded memory whatever the sizes). */
const CHUNK_BYTES = 1 * MiB;
/** --json prints the bytes as one base64 string, so it is capped; plain read streams any length. */
const JSON_READ_MAX_BYTES = 64 * MiB;

interface Input {
  chunks: AsyncIterable<Uint8Array>;
  /** known up front for regular files (and stdin redirected from one) */
  sizeBytes: number | undefined;
  close(): void;
}

/** Opens the input (before the region, so a missing file changes nothing) and learns its size if it has one. */
function openInput(file: string | undefined): Input {
  const fd = file === undefined ? 0 : fs.openSync(file, 'r');
  const st = fs.fstatSync(fd);
  const stream = file === undefined ? process.stdin : fs.createReadStream('', { fd, highWaterMark: CHUNK_BYTES, autoClose: false });
  return {
    chunks: stream,
    sizeBytes: st.isFile() ? st.size : undefined,
    close: () => (file === undefined ? undefined : fs.closeSync(fd)),
  };
}

export function registerIo(program: Command): void {
  program
    .command('write')
    .argument('<target>', TARGET_HELP)
    .description('write bytes from a file (or stdin) into a morsel')
    .addOption(regionOption())
    .option('--offset <bytes>', 'byte offset in the morsel (e.g. 4096, 0x1000, 4KiB)', '0')
    .option('--file <f>', 'read the bytes from this file instead of stdin')
    .addOption(jsonOption())
    .action((text: string, o: { region: string; offset: string; file?: string; json?: boolean }) =>
      run(o.json, async () => {
        const offset = parseBytes(o.offset, '--offset');
        const input = openInput(o.file);
        try {
          const { resolveTarget, checkRange, writeFrom } = await import('./targets.js');
          return await withRegion(o.region, async (m) => {
            const t = resolveTarget(m, text);
            checkRange(t, offset, input.sizeBytes ?? 0);
            return { target: text, offset, written: await writeFrom(m, t, offset, input.chunks) };
          });
        } finally {
          input.close();
        }
      }),
    );

  program
    .command('read')
    .argument('<target>', TARGET_HELP)
    .description('read bytes from a morsel to stdout (default: from --offset to the end of its logical size)')
    .addOption(regionOption())
    .option('--offset <bytes>', 'byte offset in the morsel (e.g. 4096, 0x1000, 4KiB)', '0')
    .option('--length <bytes>', 'number of bytes (e.g. 5, 1MiB; default: the rest of the logical size)')
    .addOption(jsonOption())
    .action((text: string, o: { region: string; offset: string; length?: string; json?: boolean }) =>
      run(o.json, async () => {
        const offset = parseBytes(o.offset, '--offset');
        const asked = o.length === undefined ? undefined : parseBytes(o.length, '--length');
        const { resolveTarget, checkRange, withTarget, copyOut } = await import('./targets.js');
        const pieces: Uint8Array[] = [];
        const length = await withRegion(o.region, (m) => {
          const t = resolveTarget(m, text);
          const lengthBytes = asked ?? Math.max(0, t.sizeBytes - offset);
          checkRange(t, offset, lengthBytes);
          if (o.json && lengthBytes > JSON_READ_MAX_BYTES) {
            throw new MorselError('ERANGE', `--json prints at most ${JSON_READ_MAX_BYTES} bytes (base64); read without --json streams any length`);
          }
          return withTarget(m, t, false, (h) => {
            copyOut(m, h, offset, lengthBytes, CHUNK_BYTES, (p) => (o.json ? pieces.push(p) : process.stdout.write(p)));
            return lengthBytes;
          });
        });
        return { target: text, offset, length, base64: Buffer.concat(pieces).toString('base64') };
      }),
    );
}
