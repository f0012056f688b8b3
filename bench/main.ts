/**
 * The evaluation driver (`npm start` = the quick profile).
 *
 *   node dist/bench/main.js [--full] [--json] [--out DIR] [suite ...]
 *
 * Runs the selected suites (default: all), each in a fresh child process
 * (as JMH forks per benchmark: one suite's JIT feedback, heap and region
 * state must not bias the next; a first clone measured 6-9 us alone and
 * 18-34 us after eight other suites in one process), shows a progress bar on
 * stderr, prints the claims table, and writes DIR/results.json and
 * DIR/index.html (default DIR: report/). --json prints results.json to
 * stdout instead of the table (which then goes to stderr). --in-process
 * runs every suite in this process instead.
 */
import { SingleBar } from 'cli-progress';
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
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
import { runSerial } from './serial.js';

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

/** Suites `npm start` runs (the quick profile takes about 7.5 minutes on 2 cores). */
export const DEFAULT_SUITES = ['alloc', 'primitive', 'population', 'map', 'transfer', 'pipeline', 'filecache', 'overhead', 'names', 'kv', 'serial', 'cow', 'refcount', 'cli-start'];

/** The shared volatile region the selected suites need, so it is created and pre-faulted once (serial maps region files of its own). */
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
  };
  return Math.max(0, ...suites.filter((s) => s in need).map((s) => need[s]()));
}

export interface CliArgs {
  full: boolean;
  json: boolean;
  out: string;
  suites: string[];
  /** run every suite in this process (default: one child process per suite) */
  inProcess: boolean;
}

const USAGE = `usage: node dist/bench/main.js [--full] [--json] [--out DIR] [--in-process] [suite ...]
suites: ${Object.keys(SUITES).join(', ')} (default: ${DEFAULT_SUITES.join(' ')})`;

export function parseArgs(argv: string[]): CliArgs {
  const args: CliArgs = { full: false, json: false, out: 'report', suites: [], inProcess: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--full') args.full = true;
    else if (a === '--quick') args.full = false;
    else if (a === '--json') args.json = true;
    else if (a === '--in-process') args.inProcess = true;
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

/** What one suite's run gives back: its experiment, or the problem that stopped it. */
type SuiteOutcome = { experiment: ExperimentResult; prefaultNs: number } | { problem: string; prefaultNs: number };

/** Runs one suite in this process on a shared region sized for `regionSuites`. */
async function runSuite(name: string, quick: boolean, regionSuites: string[], progress?: Progress): Promise<SuiteOutcome> {
  const before = totalPrefaultNs();
  const bytes = regionBytesFor(regionSuites, quick);
  if (bytes > 0) volatileMemory(bytes);
  try {
    return { experiment: await SUITES[name]({ quick, progress }), prefaultNs: totalPrefaultNs() - before };
  } catch (e) {
    process.stderr.write(`\nsuite ${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return { problem: `${name}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`, prefaultNs: totalPrefaultNs() - before };
  } finally {
    collectGarbage();
  }
}

/** A suite's child process sends its parent progress; its outcome goes to this file in the parent's directory. */
type ChildProgress = { done: number; total: number };
const outcomeFile = (tmp: string, name: string): string => join(tmp, `${name}.json`);

/**
 * Runs one suite in a fresh child process (this script with --child) and
 * reads its outcome from a file in `tmp` (experiments can hold tens of MB of
 * samples: a file, not an IPC message). A child that dies first is a problem.
 */
function runSuiteInChild(name: string, quick: boolean, tmp: string, progress?: Progress): Promise<SuiteOutcome> {
  return new Promise((resolve) => {
    const child = fork(fileURLToPath(import.meta.url), ['--child', name, ...(quick ? [] : ['--full']), '--out', tmp], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (m: ChildProgress) => progress?.(m.done, m.total));
    child.on('exit', (code, signal) => {
      const file = outcomeFile(tmp, name);
      if (fs.existsSync(file)) resolve(JSON.parse(fs.readFileSync(file, 'utf8')) as SuiteOutcome);
      else resolve({ problem: `${name}: its process exited with ${signal ?? `code ${code}`} before reporting`, prefaultNs: 0 });
    });
  });
}

/** The child side of runSuiteInChild: runs `name` on a region sized for it alone, writes its outcome into `tmp`. */
async function childMain(name: string, quick: boolean, tmp: string): Promise<number> {
  const outcome = await runSuite(name, quick, [name], (done, total) => void process.send?.({ done, total } satisfies ChildProgress));
  releaseShared();
  fs.writeFileSync(outcomeFile(tmp, name), JSON.stringify(outcome));
  return 0;
}

/**
 * Runs `suites` in order, each in its own child process unless `inProcess`
 * (then on one shared region sized for all); a failing suite is recorded as
 * a problem and the run goes on. Returns the host pre-fault time paid too.
 */
export async function runSuites(suites: string[], quick: boolean, progress?: (suite: string) => Progress, inProcess = true): Promise<{ experiments: ExperimentResult[]; problems: string[]; prefaultNs: number }> {
  const experiments: ExperimentResult[] = [];
  const problems: string[] = [];
  let prefaultNs = 0;
  const tmp = inProcess ? '' : fs.mkdtempSync(join(os.tmpdir(), 'morsel-bench-'));
  try {
    for (const name of suites) {
      const outcome = inProcess ? await runSuite(name, quick, suites, progress?.(name)) : await runSuiteInChild(name, quick, tmp, progress?.(name));
      if ('experiment' in outcome) experiments.push(outcome.experiment);
      else problems.push(outcome.problem);
      prefaultNs += outcome.prefaultNs;
    }
  } finally {
    if (!inProcess) fs.rmSync(tmp, { recursive: true, force: true });
  }
  return { experiments, problems, prefaultNs };
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
  const { experiments, problems, prefaultNs } = await runSuites(args.suites, !args.full, progress, args.inProcess);
  bar.update(args.suites.length * steps, { suite: 'done', elapsed: Math.round((Date.now() - started) / 1000) });
  bar.stop();
  const report: RunReport = {
    profile: args.full ? 'full' : 'quick',
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    suites: args.suites,
    machine: machineInfo(),
    prefaultMs: prefaultNs / 1e6,
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
  const argv = process.argv.slice(2);
  const child = argv[0] === '--child' ? parseArgs(argv.slice(2).concat(argv[1])) : null;
  (child !== null ? childMain(child.suites[0], !child.full, child.out) : main(argv)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
