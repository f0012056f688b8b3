/**
 * Smoke test of the evaluation: every suite runs with a tiny size (seconds in
 * total) and its result has the shape the report needs — medians present and
 * positive, claims computed, plots rendered. No timing assertions.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { MiB } from '../src/units.js';
import { releaseShared } from '../bench/env.js';
import { runCliStart } from '../bench/cli-start.js';
import { runFileCache } from '../bench/filecache.js';
import { fitLinear, sweepSlopes } from '../bench/fit.js';
import { DEFAULT_SUITES, SUITES, parseArgs, runSuites } from '../bench/main.js';
import { runMap } from '../bench/map.js';
import { runOverhead } from '../bench/overhead.js';
import { runPipeline } from '../bench/pipeline.js';
import { runPopulation } from '../bench/population.js';
import { machineInfo, summaryTable, writeReport, type RunReport } from '../bench/report.js';
import type { ExperimentResult } from '../bench/stats.js';
import { runTransfer } from '../bench/transfer.js';
import { runRefcount } from '../bench/refcount.js';
import { runSerial } from '../bench/serial.js';
import { runCow } from '../bench/cow.js';
import { runNames } from '../bench/names.js';
import { tempDir } from './helpers.js';

const experiments: ExperimentResult[] = [];
after(() => releaseShared());

/**
 * Phases a variant does not perform, so their duration may be 0; every other
 * duration must be positive. Each entry names one experiment, the variants
 * and the metric, says why, and must match a result (no stale entries).
 */
const NOT_PERFORMED: { experiment: string; variants: string[] | 'all'; metric: string; zeroSamples: boolean; why: string }[] = [
  { experiment: 'pipeline', variants: 'all', metric: 'checksum.alloc_ns', zeroSamples: true, why: 'the middle stage neither creates nor frees a buffer (its alloc lap never runs)' },
  { experiment: 'filecache', variants: ['readFile'], metric: 'exit_ns', zeroSamples: false, why: 'a read buffer has nothing to unmap: two back-to-back laps' },
];
const exemptionsUsed = new Set<number>();

function checkShape(e: ExperimentResult, id: string): void {
  experiments.push(e);
  assert.equal(e.id, id);
  assert.ok(e.title.length > 0 && e.anchor.length > 0);
  assert.ok(e.results.length > 0, 'has results');
  for (const r of e.results) {
    const what = `${e.id} ${r.variant} ${r.metric} ${r.x ?? ''}`;
    assert.ok(r.summary.n >= 1, `${what}: samples`);
    assert.ok(Number.isFinite(r.summary.median), `${what}: finite median`);
    if (!r.metric.endsWith('_ns')) continue;
    assert.ok(r.summary.samples.every((ns) => Number.isFinite(ns) && ns >= 0), `${what}: durations are finite and non-negative`);
    assert.ok(r.summary.n >= 5, `${what}: at least 5 repetitions`);
    assert.ok(r.summary.p25 <= r.summary.median && r.summary.median <= r.summary.p75, `${what}: p25 <= median <= p75`);
    const k = NOT_PERFORMED.findIndex((x) => x.experiment === e.id && x.metric === r.metric && (x.variants === 'all' || x.variants.includes(r.variant)));
    if (k < 0) {
      assert.ok(r.summary.median > 0, `${what}: positive median, got ${r.summary.median}`);
    } else {
      exemptionsUsed.add(k);
      if (NOT_PERFORMED[k].zeroSamples) assert.ok(r.summary.samples.every((ns) => ns === 0), `${what}: exempt as "${NOT_PERFORMED[k].why}", but it measured time`);
    }
  }
  assert.ok(e.claims.length > 0, 'has claims');
  for (const c of e.claims) {
    assert.ok(Number.isFinite(c.measured), `claim "${c.name}" computed, got ${c.measured}`);
    assert.equal(typeof c.met, 'boolean');
  }
}

test('names: tiny run; one- and two-thread throughput measured in interleaved pairs, beside the machine probes', async () => {
  const e = await runNames({ quick: true, params: { counts: [1000], ops: 500, reps: 5, pairs: 6 } });
  checkShape(e, 'names');
  for (const v of ['names-1-worker', 'names-2-workers', 'fs-shm-1-worker', 'fs-shm-2-workers']) {
    assert.equal(e.results.find((r) => r.variant === v && r.metric === 'open_close_per_s')?.summary.n, 6, `${v}: one sample per pair`);
  }
  for (const v of ['names-scaling', 'fs-shm-scaling', 'cpu-probe-scaling', 'map-probe-scaling']) {
    assert.equal(e.results.find((r) => r.variant === v && r.metric === 'pair_ratio')?.summary.n, 6, `${v}: one ratio per pair`);
  }
});

test('population: tiny run on a volatile and a file-backed region', async () => {
  const e = await runPopulation({ quick: true, params: { bytes: 8 * MiB, persistentBytes: 4 * MiB, reps: 5 } });
  checkShape(e, 'population');
  const durable = e.results.filter((r) => r.variant === 'morsel-lazy-durable');
  assert.deepEqual(durable.map((r) => `${r.metric} ${r.x}`), ['populate_file_ns 1', 'populate_file_ns 2'], 'durable population on the file-backed region only, 1 and 2 workers');
});

test('map: tiny size sweep and map+unmap per order', async () => {
  const e = await runMap({ quick: true, params: { pages: [1, 16, 256], reps: 5, smallReps: 5, inner: 20 } });
  checkShape(e, 'map');
  for (const v of ['morsel', 'conventional-lazy', 'conventional-populate']) {
    assert.ok(e.results.some((r) => r.variant === v && r.metric === 'map_ns' && r.x === 256), `${v} measured at 256 pages`);
  }
  assert.equal(e.results.filter((r) => r.metric === 'map_unmap_ns').length, 5, 'orders 0..4');
});

test('transfer: tiny packets through every mechanism', async () => {
  const e = await runTransfer({ quick: true, params: { packetBytes: 4 * MiB, count: 4, freshCount: 3, durableCount: 3, reps: 5 } });
  checkShape(e, 'transfer');
  assert.deepEqual(
    new Set(e.results.map((r) => r.variant)),
    new Set(['limit', 'limit-2threads', 'morsel-sender-only', 'morsel', 'morsel-huge', 'conventional', 'structured-clone', 'transferable', 'fresh-sab', 'morsel (file-backed)', 'morsel-durable (file-backed)']),
  );
  for (const r of e.results) assert.ok(r.summary.median > 0, `${r.variant} throughput positive`);
});

test('pipeline: tiny buffers through three stages', async () => {
  const e = await runPipeline({ quick: true, params: { bufBytes: 1 * MiB, count: 3, reps: 5 } });
  checkShape(e, 'pipeline');
  assert.ok(e.results.some((r) => r.metric === 'datasource.faults_normalized'));
});

test('filecache: tiny files', async () => {
  checkShape(await runFileCache({ quick: true, params: { sizes: [1 * MiB, 4 * MiB], reps: 5 } }), 'filecache');
});

test('overhead: tiny sweep, table overhead and root sizes', async () => {
  const e = await runOverhead({ quick: true, params: { pages: [16, 64, 256], populateUpTo: 1, reps: 5 } });
  checkShape(e, 'overhead');
  const roots = e.results.filter((r) => r.variant === 'morsel' && r.metric === 'root_bytes');
  assert.equal(roots.length, 5);
  for (const r of roots) assert.equal(r.summary.median, 4096, 'every root is one frame');
});

test('serial: tiny save/load, naive serializer, pmap vs v8 and JSON', async () => {
  const e = await runSerial({ quick: true, params: { sizesBytes: [4 * MiB], sparseFraction: 0.01, reps: 5, uncachedReps: 5, valueBytes: 100, pmapBytes: 4 * MiB, uncached: false } });
  checkShape(e, 'serial');
  for (const v of ['save', 'load (cached)', 'naive save', 'naive load (cached)', 'disk write (limit)', 'disk read (limit, cached)']) {
    assert.ok(e.results.some((r) => r.variant === `${v} (4 MiB)` && r.summary.median > 0), `${v} measured`);
  }
});

test('cow: clone vs full copy, fork model and host fork; fault latency; fork-heavy on both tables', async () => {
  const e = await runCow({ quick: true, params: { sizesBytes: [4 * MiB, 16 * MiB], reps: 5, inner: 5, writesPerRound: 8, rounds: 2, workloadBytes: 4 * MiB } });
  checkShape(e, 'cow');
  for (const v of ['morsel-clone', 'conventional-fork-model', 'full-copy', 'host-fork']) assert.ok(e.results.some((r) => r.variant === v && r.metric === 'clone_ns'), `${v} measured`);
  for (const k of ['rosebush', 'chained']) assert.ok(e.results.some((r) => r.variant === `morsel-clone-${k}`), `fork-heavy on ${k}`);
});

test('cli-start: interleaved process starts', async () => {
  const e = await runCliStart({ quick: true, params: { reps: 5 } });
  checkShape(e, 'cli-start');
  assert.deepEqual(e.results.map((r) => r.variant), ['node', 'morsel --version', 'morsel stat --json']);
});

test('refcount: both tables, sizes, 2 threads, during a resize', async () => {
  const e = await runRefcount({ quick: true }, { sizes: [1000, 4000], reps: 5, ops: 2000, faultN: 4000 });
  checkShape(e, 'refcount');
  for (const kind of ['rosebush', 'chained']) {
    assert.ok(e.results.some((r) => r.variant === kind && r.metric === 'accesses_per_lookup' && r.summary.median >= 2), `${kind}: a lookup reads at least the state word and a bucket`);
    assert.ok(e.results.some((r) => r.variant === `${kind} during resize` && r.metric === 'lookup_ns'));
  }
  assert.match(e.notes[0], /^Conclusion/);
});

test('every not-performed exemption matched a result', () => {
  assert.deepEqual(NOT_PERFORMED.filter((_, k) => !exemptionsUsed.has(k)).map((x) => `${x.experiment} ${x.metric}`), []);
});

test('report: results.json, index.html with SVG plots, summary table', async () => {
  assert.ok(experiments.length > 0);
  const dir = tempDir('morsel-report-');
  try {
    const report: RunReport = { profile: 'custom', startedAt: new Date().toISOString(), durationMs: 1, suites: experiments.map((e) => e.id), machine: machineInfo(), prefaultMs: 0, experiments, problems: [] };
    const files = await writeReport(dir, report);
    const json = JSON.parse(fs.readFileSync(files.json, 'utf8')) as RunReport;
    assert.equal(json.experiments.length, experiments.length);
    const html = fs.readFileSync(files.html, 'utf8');
    assert.ok((html.match(/<svg/g) ?? []).length >= experiments.length, 'at least one plot per experiment');
    assert.ok(!html.includes('plot failed'), 'every plot rendered');
    assert.match(summaryTable(report), /claim/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('each suite in its own process: the outcome comes back, a child that dies first is a problem', async () => {
  const ticks: number[] = [];
  const ok = await runSuites(['overhead'], true, () => (done) => ticks.push(done), false);
  assert.deepEqual(ok.problems, []);
  assert.deepEqual(ok.experiments.map((e) => e.id), ['overhead']);
  assert.ok(ok.experiments[0].claims.length > 0 && ok.prefaultNs > 0, 'claims and the child\'s pre-fault time come back');
  assert.ok(ticks.length > 0, 'progress crosses the process boundary');
  const bad = await runSuites(['no-such-suite'], true, undefined, false);
  assert.deepEqual(bad.experiments, []);
  assert.match(bad.problems[0], /^no-such-suite: its process exited with code \d+ before reporting/);
});

test('cli arguments and fits', () => {
  assert.deepEqual(parseArgs([]).suites, DEFAULT_SUITES);
  assert.deepEqual(parseArgs(['map', '--full', '--json']), { full: true, json: true, out: 'report', suites: ['map'], inProcess: false });
  assert.equal(parseArgs(['--in-process']).inProcess, true);
  assert.throws(() => parseArgs(['nope']));
  for (const s of DEFAULT_SUITES) assert.ok(s in SUITES);
  const f = fitLinear([1, 2, 3], [3, 5, 7]);
  assert.ok(Math.abs(f.slope - 2) < 1e-9 && Math.abs(f.intercept - 1) < 1e-9);
  assert.deepEqual(sweepSlopes([1, 2], [[1, 1], [3, 5]]), [2, 4]);
});
