/**
 * The evaluation driver (`npm start` = the quick profile).
 *
 *   node dist/bench/main.js [--full] [--json] [--out DIR] [suite ...]
 *
 * Runs the selected suites (default: all) in one process, shows a progress
 * bar on stderr, prints the claims table, and writes DIR/results.json and
 * DIR/index.html (default DIR: report/). --json prints results.json to
 * stdout instead of the table (which then goes to stderr).
 */
import { SingleBar } from 'cli-progress';
import { runAllocBench } from './alloc.js';
import { runCliStart } from './cli-start.js';
import { runKv } from './kv.js';
import { runPrimitive } from './primitive.js';
import { fileURLToPath } from 'node:url';
import { fileCacheParams, fileCacheRegionBytes, runFileCache } from './filecache.js';
import { mapParams, mapRegionBytes, runMap } from './map.js';
import type { Progress, RunOptions } from './measure.js';
import { overheadParams, overheadRegionBytes, runOverhead } from './overhead.js';
import { pipelineParams, pipelineRegionBytes, runPipeline } from './pipeline.js';
import { populationParams, populationRegionBytes, runPopulation } from './population.js';
import { machineInfo, resultsJson, summaryTable, writeReport, type RunReport } from './report.js';
import { collectGarbage, releaseShared, totalPrefaultNs, volatileMemory } from './env.js';
import type { ExperimentResult } from './stats.js';
import { runTransfer, transferParams, transferRegionBytes } from './transfer.js';
import { runNames } from './names.js';
import { cowParams, cowRegionBytes, runCow } from './cow.js';
import { refcountParams, refcountRegionBytes, runRefcount } from './refcount.js';
import { runSerial, serialParams, serialRegionBytes } from './serial.js';

type Runner = (opts: RunOptions) => Promise<ExperimentResult>;

/** Every suite, in run order. */
export const SUITES: Record<string, Runner> = {
  alloc: runAllocBench,
  primitive: runPrimitive,
  population: runPopulation,
  map: runMap,
  transfer: runTransfer,
  pipeline: runPipeline,
  filecache: runFileCache,
  overhead: runOverhead,
  'cli-start': runCliStart,
  names: runNames,
  kv: runKv,
  cow: runCow,
  refcount: runRefcount,
  serial: runSerial,
};

/** Suites `npm start` runs (the quick profile takes about 4 minutes on 2 cores). */
export const DEFAULT_SUITES = ['alloc', 'primitive', 'population', 'map', 'transfer', 'pipeline', 'filecache', 'overhead', 'names', 'kv', 'serial', 'cow', 'refcount', 'cli-start'];

/** The shared volatile region the selected suites need, so it is created and pre-faulted once. */
export function regionBytesFor(suites: string[], quick: boolean): number {
  const need: Record<string, () => number> = {
    population: () => populationRegionBytes(populationParams(quick)),
    map: () => mapRegionBytes(mapParams(quick)),
    transfer: () => transferRegionBytes(transferParams(quick)),
    pipeline: () => pipelineRegionBytes(pipelineParams(quick)),
    filecache: () => fileCacheRegionBytes(fileCacheParams(quick)),
    overhead: () => overheadRegionBytes(overheadParams(quick)),
    cow: () => cowRegionBytes(cowParams(quick)),
    refcount: () => refcountRegionBytes(refcountParams(quick)),
    serial: () => serialRegionBytes(serialParams(quick)),
  };
  return Math.max(0, ...suites.filter((s) => s in need).map((s) => need[s]()));
}

export interface CliArgs {
  full: boolean;
  json: boolean;
  out: string;
  suites: string[];
}

const USAGE = `usage: node dist/bench/main.js [--full] [--json] [--out DIR] [suite ...]
suites: ${Object.keys(SUITES).join(', ')} (default: ${DEFAULT_SUITES.join(' ')})`;

export function parseArgs(argv: string[]): CliArgs {
  const args: CliArgs = { full: false, json: false, out: 'report', suites: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--full') args.full = true;
    else if (a === '--quick') args.full = false;
    else if (a === '--json') args.json = true;
    else if (a === '--out') args.out = argv[++i] ?? '';
    else if (a === '--help' || a === '-h') throw new UsageError(USAGE);
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}\n${USAGE}`);
    else if (a in SUITES) args.suites.push(a);
    else throw new UsageError(`unknown suite ${a}\n${USAGE}`);
  }
  if (args.out === '') throw new UsageError(`--out needs a directory\n${USAGE}`);
  if (args.suites.length === 0) args.suites = [...DEFAULT_SUITES];
  return args;
}

export class UsageError extends Error {}

/** Runs `suites` in order; a failing suite is recorded as a problem and the run goes on. */
export async function runSuites(suites: string[], quick: boolean, progress?: (suite: string) => Progress): Promise<{ experiments: ExperimentResult[]; problems: string[] }> {
  const experiments: ExperimentResult[] = [];
  const problems: string[] = [];
  const bytes = regionBytesFor(suites, quick);
  if (bytes > 0) volatileMemory(bytes);
  for (const name of suites) {
    try {
      experiments.push(await SUITES[name]({ quick, progress: progress?.(name) }));
    } catch (e) {
      problems.push(`${name}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
      process.stderr.write(`\nsuite ${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    }
    collectGarbage();
  }
  return { experiments, problems };
}

async function main(argv: string[]): Promise<number> {
  let args: CliArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return e instanceof UsageError && /^usage/.test((e as Error).message) ? 0 : 2;
  }
  const started = Date.now();
  const bar = new SingleBar({ format: 'evaluation [{bar}] {percentage}% | {suite} | {elapsed}s', stream: process.stderr, hideCursor: true, clearOnComplete: false, etaBuffer: 20 });
  const steps = 100;
  bar.start(args.suites.length * steps, 0, { suite: args.suites[0], elapsed: 0 });
  const progress = (suite: string): Progress => {
    const index = args.suites.indexOf(suite);
    return (done, total) => bar.update(index * steps + Math.floor((steps * done) / Math.max(1, total)), { suite, elapsed: Math.round((Date.now() - started) / 1000) });
  };
  const { experiments, problems } = await runSuites(args.suites, !args.full, progress);
  bar.update(args.suites.length * steps, { suite: 'done', elapsed: Math.round((Date.now() - started) / 1000) });
  bar.stop();
  const report: RunReport = {
    profile: args.full ? 'full' : 'quick',
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    suites: args.suites,
    machine: machineInfo(),
    prefaultMs: totalPrefaultNs() / 1e6,
    experiments,
    problems,
  };
  releaseShared();
  const files = await writeReport(args.out, report);
  const table = summaryTable(report);
  if (args.json) {
    process.stdout.write(resultsJson(report) + '\n');
    process.stderr.write(table + '\n');
  } else {
    process.stdout.write(table + '\n');
  }
  process.stderr.write(`wrote ${files.json} and ${files.html}\n`);
  return problems.length === 0 ? 0 : 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
