/**
 * CLI start-up: what the `morsel` command costs above a bare `node` start
 * (issue 11: within 100 ms). Each repetition runs, interleaved so machine
 * noise hits every variant alike: `node -e 0`, `morsel --version` (parse
 * only: the CLI's own start), `morsel stat --json` on a small region file
 * (start + loading the library + opening the region + the addon). The
 * commands import their heavy modules lazily (src/cli/common.ts).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../src/memory.js';
import { MiB } from '../src/units.js';
import { claim, medianOf, ticker, variant, type RunOptions } from './measure.js';
import { nowNs } from './stats.js';
import type { ExperimentResult } from './stats.js';

/** The goal: the CLI adds at most this much to a bare `node` start. */
const BUDGET_MS = 100;
const REGION_BYTES = 16 * MiB;
const BIN = fileURLToPath(new URL('../../bin/morsel.js', import.meta.url));

export interface CliStartParams {
  reps: number;
}

export function cliStartParams(quick: boolean): CliStartParams {
  return { reps: quick ? 11 : 31 };
}

/** Wall time of one process start to exit, in ns; a failed run is an error, not a sample. */
function timeRun(args: string[]): number {
  const t0 = nowNs();
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const ns = nowNs() - t0;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}: ${r.stderr.toString().slice(0, 400)}`);
  return ns;
}

export async function runCliStart(opts: RunOptions & { params?: CliStartParams }): Promise<ExperimentResult> {
  const p = opts.params ?? cliStartParams(opts.quick);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'morsel-cli-start-'));
  try {
    const region = path.join(dir, 'small.region');
    Memory.create(region, REGION_BYTES).close();
    const variants: Record<string, string[]> = {
      node: ['-e', '0'],
      'morsel --version': [BIN, '--version'],
      'morsel stat --json': [BIN, 'stat', '--region', region, '--json'],
    };
    const samples: Record<string, number[]> = {};
    const tick = ticker(p.reps + 1, opts.progress);
    for (let rep = -1; rep < p.reps; rep++) {
      for (const [name, args] of Object.entries(variants)) {
        const ns = timeRun(args);
        if (rep >= 0) (samples[name] ??= []).push(ns); // rep -1 warms the page cache
      }
      tick();
    }
    const results = Object.entries(samples).map(([name, s]) => variant(name, 'start_ns', s));
    const aboveNodeMs = (name: string): number => (medianOf(results, name, 'start_ns') - medianOf(results, 'node', 'start_ns')) / 1e6;
    const version = aboveNodeMs('morsel --version');
    const stat = aboveNodeMs('morsel stat --json');
    return {
      id: 'cli-start',
      title: 'CLI start-up above bare node',
      anchor: `issue 11: the CLI starts within ${BUDGET_MS} ms of bare node`,
      params: { ...p, regionBytes: REGION_BYTES },
      results,
      claims: [
        claim(`CLI start: morsel --version above bare node, ms (lower is better; goal <= ${BUDGET_MS})`, version, { goal: BUDGET_MS, met: version <= BUDGET_MS }),
        claim('CLI start: morsel stat --json on a 16 MiB region above bare node, ms (lower is better)', stat),
      ],
      notes: ['medians of interleaved runs (node, --version, stat per repetition) after one discarded warm-up round; wall time from spawn to exit'],
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
