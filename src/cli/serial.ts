/**
 * `morsel save <target> <file|->` and `morsel load <file|-> [--name N]`:
 * a morsel to an image file (or stdout) and back (src/serial). With `-`
 * they compose with standard tools:
 *
 *   morsel save /a - | ssh host morsel load - --name /a
 *
 * A progress bar goes to stderr when stderr is a terminal (stdout may be
 * the image). --json prints bytes, pages, seconds and throughput (for
 * `save … -` on stderr, as are its errors: stdout is the image).
 */
import type { Command } from 'commander';
import { MiB, formatBytes } from '../units.js';
import { TARGET_HELP, jsonOption, regionOption, run, withRegion, type Out } from './common.js';

type ProgressFn = (doneBytes: number, totalBytes: number) => void;

/** A cli-progress bar on stderr when it is a terminal and not --json; else nothing. */
async function progressBar(json: boolean | undefined, what: string): Promise<{ onProgress?: ProgressFn; stop: () => void }> {
  if (json || !process.stderr.isTTY) return { stop: () => {} };
  const { SingleBar } = await import('cli-progress');
  const bar = new SingleBar({ format: `${what} [{bar}] {percentage}% | {value}/{total} MiB`, stream: process.stderr, hideCursor: true });
  let started = false;
  return {
    onProgress: (done, total) => {
      const totalMiB = Math.ceil(total / MiB);
      if (!started) bar.start(totalMiB, 0);
      started = true;
      bar.update(done >= total ? totalMiB : Math.floor(done / MiB));
    },
    stop: () => started && bar.stop(),
  };
}

const resultText = (verb: string) => (r: Out): string =>
  `${verb} ${String(r.name ?? r.target)}: ${formatBytes(r.bytes as number)}, ${String(r.pages)} pages in ${(r.seconds as number).toFixed(3)} s (${formatBytes(Math.round(r.bytesPerSecond as number))}/s)`;

export function registerSerial(program: Command): void {
  program
    .command('save')
    .argument('<target>', TARGET_HELP)
    .argument('<file>', 'image file (written to <file>.tmp-<pid>, fsync\'d, renamed), or - for stdout')
    .description('save a morsel (only its populated pages) to an image, from a copy-on-write snapshot taken at the start (others may keep writing)')
    .option('--no-sync', 'leave the image in the page cache: no fsync and no direct I/O (still renamed into place whole; a host crash may lose it)')
    .addOption(regionOption())
    .addOption(jsonOption())
    .action((text: string, file: string, o: { region: string; json?: boolean; sync: boolean }) => {
      // With `-` stdout carries the image: the result (JSON under --json) and errors go to stderr.
      const toStdout = file !== '-';
      return run(toStdout && o.json, async () => {
        const { save } = await import('../serial/save.js');
        const { fileSink, streamSink } = await import('../serial/streams.js');
        const { resolveTarget } = await import('./targets.js');
        const bar = await progressBar(o.json, 'save');
        try {
          const r = await withRegion(o.region, async (m) => {
            const t = resolveTarget(m, text);
            const sink = toStdout ? fileSink(file, { durable: o.sync }) : streamSink(process.stdout);
            return { target: text, file, ...(await save(m, t.form === 'path' ? t.text : t.ref, sink, { onProgress: bar.onProgress })) };
          });
          if (!toStdout && o.json) process.stderr.write(JSON.stringify(r) + '\n');
          return r;
        } finally {
          bar.stop();
        }
      }, toStdout ? resultText('saved') : undefined);
    });

  program
    .command('load')
    .argument('<file>', 'image file, or - for stdin')
    .description('load an image as a new named morsel (its saved name unless --name); nothing is left behind on failure')
    .addOption(regionOption())
    .option('--name <path>', 'name of the new morsel (default: the name saved in the image)')
    .option('--mode <octal>', 'permission bits (default: the saved ones)')
    .addOption(jsonOption())
    .action((file: string, o: { region: string; name?: string; mode?: string; json?: boolean }) =>
      run(o.json, async () => {
        const { load } = await import('../serial/load.js');
        const { fileSource, streamSource } = await import('../serial/streams.js');
        const { parseMode } = await import('../manage/rights.js');
        const mode = o.mode === undefined ? undefined : parseMode(o.mode);
        const source = file === '-' ? streamSource(process.stdin) : fileSource(file);
        const bar = await progressBar(o.json, 'load');
        try {
          return await withRegion(o.region, async (m) => ({ file, ...(await load(m, source, { name: o.name, mode, onProgress: bar.onProgress })) }));
        } finally {
          bar.stop();
          source.close();
        }
      }, resultText('loaded')),
    );
}
