/**
 * `npm run fuzz -- --cases N --seed S [--from K] [--cli-every C] [--no-mmu]`:
 * the metadata fuzzer's long run (see fuzz.ts). Prints a summary line and
 * every failure with the steps that replay it; exits 1 if any case failed.
 */
import * as os from 'node:os';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { fuzz } from './fuzz.js';

const program = new Command('fuzz')
  .option('--cases <n>', 'cases to run', '5000')
  .option('--seed <s>', 'seed', '1')
  .option('--from <k>', 'first case number (replay)', '0')
  .option('--cli-every <c>', 'every c-th case runs one CLI command in a child (0: none)', '10')
  .option('--no-mmu', 'leave out reads and writes through an address space and the MMU')
  .parse(process.argv);
const o = program.opts<{ cases: string; seed: string; from: string; cliEvery: string; mmu: boolean }>();
const num = (text: string, what: string): number => {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`fuzz: ${what} must be a non-negative integer, got ${JSON.stringify(text)}\n`);
    process.exit(2);
  }
  return n;
};
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'morsel-fuzz-'));
const bin = fileURLToPath(new URL('../../../../bin/morsel.js', import.meta.url));
const started = Date.now();
try {
  const report = fuzz(
    { seed: num(o.seed, '--seed'), cases: num(o.cases, '--cases'), from: num(o.from, '--from'), cliEvery: num(o.cliEvery, '--cli-every'), mmu: o.mmu, dir, bin },
    (done) => {
      if (done % 500 === 0) process.stderr.write(`fuzz: ${done} cases\n`);
    },
  );
  for (const f of report.failures) process.stdout.write(`FAIL (${f.kind})\n  ${f.steps.join('\n  ')}\n  => ${f.failure}\n`);
  process.stdout.write(
    `fuzz: ${report.cases} cases (${report.library} library, ${report.cli} CLI), seed ${o.seed}, mmu ${o.mmu}: ${report.failures.length} failure(s) in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
  );
  process.exitCode = report.failures.length > 0 ? 1 : 0;
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
