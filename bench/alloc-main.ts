/**
 * Standalone entry for the allocator benchmark:
 *   node dist/bench/alloc-main.js [--full]
 * prints a table and writes report/alloc.json (relative to the working directory).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runAllocBench } from './alloc.js';

const fmt = (v: number): string => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(v < 10 ? 3 : 1));

const quick = !process.argv.includes('--full');
const t0 = Date.now();
const result = await runAllocBench({ quick, progress: (d, n) => process.stderr.write(`\ralloc bench ${d}/${n}`) });
process.stderr.write('\n');

console.log(`${result.title} (${quick ? 'quick' : 'full'}, ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
console.log(['variant'.padEnd(30), 'metric'.padEnd(16), 'threads'.padStart(7), 'median'.padStart(10), 'p25'.padStart(10), 'p75'.padStart(10), 'spread'.padStart(7)].join(' '));
for (const r of result.results) {
  const s = r.summary;
  console.log([r.variant.padEnd(30), r.metric.padEnd(16), String(r.x ?? '').padStart(7), fmt(s.median).padStart(10), fmt(s.p25).padStart(10), fmt(s.p75).padStart(10), `${(s.spread * 100).toFixed(1)}%`.padStart(7)].join(' '));
}
for (const c of result.claims) console.log(`claim: ${c.name}: ${c.measured.toFixed(2)}x (goal ${c.goal}x) ${c.met ? 'MET' : 'NOT MET'}`);
for (const n of result.notes) console.log(`note: ${n}`);

mkdirSync('report', { recursive: true });
const out = join('report', 'alloc.json');
writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${out}`);
