/**
 * The report: results.json (every experiment with params, per-variant
 * medians and spread, claims and notes) and index.html (summary table,
 * per-experiment SVG plots rendered headlessly by vega-lite -> vega, result
 * tables, claims, notes). Plus the plain-text summary main.ts prints.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import { formatBytes } from '../src/units.js';
import { round } from './measure.js';
import type { Claim, ExperimentResult, VariantResult } from './stats.js';

export interface RunReport {
  profile: 'quick' | 'full' | 'custom';
  startedAt: string;
  durationMs: number;
  suites: string[];
  machine: { cpus: number; cpuModel: string; totalMemBytes: number; node: string; platform: string };
  /** host pre-fault of the shared region, not part of any measurement */
  prefaultMs: number;
  experiments: ExperimentResult[];
  /** suites that failed or were skipped, with the reason */
  problems: string[];
}

export function machineInfo(): RunReport['machine'] {
  return { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', totalMemBytes: os.totalmem(), node: process.version, platform: `${os.platform()} ${os.release()}` };
}

/**
 * results.json: samples are kept so every summary can be recomputed; each
 * claim also carries measured/anchor and measured/goal.
 */
export function resultsJson(report: RunReport): string {
  const experiments = report.experiments.map((e) => ({
    ...e,
    claims: e.claims.map((c) => ({
      ...c,
      ...(c.anchor !== undefined ? { ofAnchor: round(c.measured / c.anchor) } : {}),
      ...(c.goal !== undefined ? { ofGoal: round(c.measured / c.goal) } : {}),
    })),
  }));
  const legend = 'claims: measured is "morsel x better" as each name says (ratios, fractions less, growth exponents where lower is better); ofAnchor = measured / anchor (the paper), ofGoal = measured / goal (ours); met says whether the goal is reached';
  return JSON.stringify({ legend, ...report, experiments }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2);
}

export async function writeReport(dir: string, report: RunReport): Promise<{ json: string; html: string }> {
  fs.mkdirSync(dir, { recursive: true });
  const json = join(dir, 'results.json');
  const html = join(dir, 'index.html');
  fs.writeFileSync(json, resultsJson(report));
  fs.writeFileSync(html, await renderHtml(report));
  return { json, html };
}

// --- plain text ------------------------------------------------------------------

const fmtNum = (v: number | undefined): string => (v === undefined ? '' : !Number.isFinite(v) ? String(v) : String(round(v, 4)));

/** Every claim of the run as an aligned text table. */
export function summaryTable(report: RunReport): string {
  const rows: string[][] = [['experiment', 'claim', 'measured', 'anchor', 'goal', 'met']];
  for (const e of report.experiments) for (const c of e.claims) rows.push([e.id, c.name, fmtNum(c.measured), fmtNum(c.anchor), fmtNum(c.goal), c.goal === undefined ? '(info)' : c.met ? 'yes' : 'NO']);
  const widths = rows[0].map((_, i) => Math.min(i === 1 ? 90 : 40, Math.max(...rows.map((r) => r[i].length))));
  const line = (r: string[]): string => r.map((cell, i) => (cell.length > widths[i] ? cell.slice(0, widths[i] - 1) + '…' : cell.padEnd(widths[i]))).join('  ');
  const out = [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  out.push('', `profile ${report.profile}, ${report.suites.join(', ')}: ${(report.durationMs / 1000).toFixed(1)} s on ${report.machine.cpus} cores`);
  for (const p of report.problems) out.push(`problem: ${p}`);
  return out.join('\n');
}

// --- plots --------------------------------------------------------------------------

interface Row {
  variant: string;
  x: number | null;
  median: number;
  p25: number;
  p75: number;
}

/** ns metrics are plotted in µs; everything else as measured. */
function scaleFor(metric: string): { factor: number; unit: string } {
  return metric.endsWith('_ns') ? { factor: 1e-3, unit: 'µs' } : { factor: 1, unit: '' };
}

type XKind = 'bytes' | 'pages' | 'workers' | 'threads' | 'x';

/** What the x values of a metric are (byte-valued axes are plotted in MiB). */
function xKind(expId: string, metric: string): XKind {
  if (expId === 'population') return 'workers';
  if (expId === 'alloc') return 'threads';
  if (expId === 'primitive') return 'bytes';
  if (expId === 'map') return metric === 'map_unmap_ns' ? 'bytes' : 'pages';
  if (expId === 'filecache') return 'bytes';
  if (expId === 'overhead') return /^(table|root|create)/.test(metric) ? 'bytes' : 'pages';
  return 'x';
}
const bytesAxis = (expId: string, metric: string): boolean => xKind(expId, metric) === 'bytes';

function rowsOf(expId: string, results: VariantResult[], metric: string): Row[] {
  const { factor } = scaleFor(metric);
  const xf = bytesAxis(expId, metric) ? 1 / 2 ** 20 : 1;
  return results
    .filter((r) => r.metric === metric)
    .map((r) => ({ variant: r.variant, x: r.x === undefined ? null : r.x * xf, median: r.summary.median * factor, p25: r.summary.p25 * factor, p75: r.summary.p75 * factor }));
}

const spanLog = (vals: number[]): boolean => {
  const pos = vals.filter((v) => v > 0);
  return pos.length === vals.length && pos.length > 1 && Math.max(...pos) / Math.min(...pos) >= 100;
};

/** One chart per metric: lines over x (log axes when values span decades), bars without x. */
export function metricSpec(expId: string, metric: string, rows: Row[]): TopLevelSpec {
  const { unit } = scaleFor(metric);
  const yTitle = `${metric.replace(/_ns$/, '')}${unit ? ` [${unit}]` : ''}`;
  const yLog = spanLog(rows.flatMap((r) => [r.median, r.p25, r.p75]));
  const y = { field: 'median', type: 'quantitative' as const, title: yTitle, scale: yLog ? { type: 'log' as const } : { zero: true } };
  const base = { $schema: 'https://vega.github.io/schema/vega-lite/v6.json' as const, title: `${expId}: ${metric}`, data: { values: rows as unknown as Record<string, unknown>[] }, width: 420, height: 240 };
  if (rows.every((r) => r.x !== null)) {
    const xs = rows.map((r) => r.x as number);
    const xLog = spanLog(xs);
    const x = { field: 'x', type: xLog ? ('quantitative' as const) : ('ordinal' as const), title: xTitle(expId, metric), scale: xLog ? { type: 'log' as const, base: 2 } : undefined };
    return {
      ...base,
      layer: [
        { mark: { type: 'line', point: true }, encoding: { x, y, color: { field: 'variant', type: 'nominal', legend: { labelLimit: 400 } } } },
        { mark: { type: 'rule' }, encoding: { x, y: { field: 'p25', type: 'quantitative', scale: y.scale }, y2: { field: 'p75' }, color: { field: 'variant', type: 'nominal' } } },
      ],
    } as TopLevelSpec;
  }
  const xq = { field: 'median', type: 'quantitative' as const, title: yTitle, scale: yLog ? { type: 'log' as const } : { zero: true } };
  return {
    ...base,
    height: Math.max(60, 22 * rows.length),
    layer: [
      { mark: 'bar', encoding: { y: { field: 'variant', type: 'nominal', sort: null }, x: xq, color: { field: 'variant', type: 'nominal', legend: null } } },
      { mark: { type: 'rule', color: 'black' }, encoding: { y: { field: 'variant', type: 'nominal', sort: null }, x: { field: 'p25', type: 'quantitative', scale: xq.scale }, x2: { field: 'p75' } } },
    ],
  } as TopLevelSpec;
}

function xTitle(expId: string, metric: string): string {
  return { bytes: 'size [MiB]', pages: 'object size [pages]', workers: 'workers', threads: 'threads', x: 'x' }[xKind(expId, metric)];
}

/** The pipeline's stacked, normalized component bars (the talk's figure). */
function pipelineSpec(results: VariantResult[]): TopLevelSpec | null {
  const rows = results
    .filter((r) => r.metric.endsWith('_normalized'))
    .map((r) => {
      const [stage, rest] = r.metric.split('.');
      return { bar: `${stage} / ${r.variant}`, component: rest.replace('_normalized', ''), share: r.summary.median * 100 };
    });
  if (rows.length === 0) return null;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'pipeline: stage runtime by component, % of the conventional stage',
    data: { values: rows },
    width: 420,
    height: 200,
    mark: 'bar',
    encoding: {
      y: { field: 'bar', type: 'nominal', sort: null, title: null },
      x: { field: 'share', type: 'quantitative', stack: 'zero', title: 'runtime [% of conventional stage]' },
      color: { field: 'component', type: 'nominal' },
    },
  } as TopLevelSpec;
}

export function specsFor(e: ExperimentResult): TopLevelSpec[] {
  const specs: TopLevelSpec[] = [];
  const metrics = [...new Set(e.results.map((r) => r.metric))];
  for (const metric of metrics) {
    if (metric.endsWith('_normalized')) continue;
    if (e.id === 'pipeline' && metric.includes('.')) continue; // covered by the stacked chart
    specs.push(metricSpec(e.id, metric, rowsOf(e.id, e.results, metric)));
  }
  const pipe = e.id === 'pipeline' ? pipelineSpec(e.results) : null;
  if (pipe) specs.unshift(pipe);
  return specs;
}

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// --- HTML ------------------------------------------------------------------------------

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function claimRows(e: ExperimentResult, c: Claim): string {
  const met = c.goal === undefined ? '<td>info</td>' : c.met ? '<td class="ok">met</td>' : '<td class="no">short</td>';
  return `<tr><td>${esc(e.id)}</td><td>${esc(c.name)}${c.note ? `<br><small>${esc(c.note)}</small>` : ''}</td><td>${fmtNum(c.measured)}</td><td>${fmtNum(c.anchor)}</td><td>${fmtNum(c.goal)}</td>${met}</tr>`;
}

function resultTable(results: VariantResult[]): string {
  const rows = results.map((r) => {
    const s = r.summary;
    const x = r.x === undefined ? '' : r.x >= 4096 && Number.isInteger(r.x / 4096) && r.x > 64 ? formatBytes(r.x) : String(r.x);
    return `<tr><td>${esc(r.variant)}</td><td>${esc(r.metric)}</td><td>${x}</td><td>${fmtNum(s.median)}</td><td>${fmtNum(s.p25)}</td><td>${fmtNum(s.p75)}</td><td>${fmtNum(s.spread)}</td><td>${s.n}</td></tr>`;
  });
  return `<details><summary>all results (${results.length})</summary><table><tr><th>variant</th><th>metric</th><th>x</th><th>median</th><th>p25</th><th>p75</th><th>spread</th><th>n</th></tr>${rows.join('')}</table></details>`;
}

async function renderHtml(report: RunReport): Promise<string> {
  const sections: string[] = [];
  for (const e of report.experiments) {
    const svgs: string[] = [];
    for (const spec of specsFor(e)) {
      try {
        svgs.push(`<figure>${await renderSvg(spec)}</figure>`);
      } catch (err) {
        svgs.push(`<p class="no">plot failed: ${esc(String(err))}</p>`);
      }
    }
    sections.push(`<section id="${esc(e.id)}"><h2>${esc(e.title)}</h2>
<p><b>Anchor:</b> ${esc(e.anchor)}</p>
<table><tr><th>experiment</th><th>claim</th><th>measured</th><th>anchor</th><th>goal</th><th></th></tr>${e.claims.map((c) => claimRows(e, c)).join('')}</table>
<div class="plots">${svgs.join('\n')}</div>
<ul>${e.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>
<details><summary>parameters</summary><pre>${esc(JSON.stringify(e.params, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2))}</pre></details>
${resultTable(e.results)}</section>`);
  }
  const m = report.machine;
  return `<!doctype html><html><head><meta charset="utf-8"><title>morsel evaluation (${report.profile})</title>
<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}
.ok{background:#dfd}.no{background:#fdd}.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}small{color:#555}</style></head><body>
<h1>morsel evaluation — ${esc(report.profile)} profile</h1>
<p>${esc(report.startedAt)}, ${(report.durationMs / 1000).toFixed(1)} s; ${m.cpus} × ${esc(m.cpuModel)}, ${formatBytes(m.totalMemBytes)} RAM, Node ${esc(m.node)}, ${esc(m.platform)}. Host pre-fault of the shared region: ${(report.prefaultMs / 1000).toFixed(2)} s (not measured).
Medians of ≥ 5 repetitions; spread = (p75 − p25) / median; error bars p25–p75. Claims: measured ratio (“morsel x better” as each claim says) against the paper's anchor and our goal.</p>
${report.problems.length ? `<ul>${report.problems.map((p) => `<li class="no">${esc(p)}</li>`).join('')}</ul>` : ''}
<h2>Summary</h2><table><tr><th>experiment</th><th>claim</th><th>measured</th><th>anchor</th><th>goal</th><th></th></tr>
${report.experiments.flatMap((e) => e.claims.map((c) => claimRows(e, c))).join('\n')}</table>
${sections.join('\n')}
</body></html>`;
}
