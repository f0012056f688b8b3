/**
 * Crash torture: `node dist/bench/torture.js --crashes N --seed S
 * [--size 32MiB] [--threads 2] [--dir D] [--keep] [--json]`.
 *
 * Kills child processes that share one persistent region by SIGKILL, at
 * random times and at every crash point inside multi-step updates, then
 * recovers, checks every invariant and verifies every acknowledged operation
 * (src/recovery/torture). Exit status 0 iff there were no violations and no
 * lost frames.
 */
import { parseArgs } from 'node:util';
import { runTorture, type TortureReport } from '../src/recovery/torture/harness.js';
import { parseSize } from '../src/units.js';

function parseIntArg(text: string | undefined, name: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}

function summary(r: TortureReport): string {
  const hits = Object.entries(r.pointHits);
  const missed = hits.filter(([, n]) => n === 0).map(([p]) => p);
  return [
    `seed ${r.seed}, region ${r.sizeBytes / 1048576} MiB, ${r.threads} threads, ${(r.durationMs / 1000).toFixed(1)} s`,
    `crashes ${r.crashes} in ${r.iterations} runs of two processes (random ${r.randomCrashes}, at crash points ${r.pointCrashes}, inside recovery ${r.recoveryCrashes}); clean runs ${r.cleanRuns}, survivor runs ${r.survivorRuns}`,
    `acked ops ${r.ackedOps} ${JSON.stringify(r.ackedByOp)}; failed (ENOSPC) ${r.failedOps}`,
    `violations ${r.violations} (dangling names, orphans, overlapping reservations, stuck counts, lost names/data included), lost frames ${r.lostFrames}`,
    `survivor reaps: ${r.survivorReaps.slots} dead slots, ${r.survivorReaps.morsels} unlinked morsels destroyed; at the end ${r.finalNames} names, ${r.finalReservations} reservations (+${r.staleReservations} stale)`,
    `recovery ${r.recoveries}x: median ${r.recoveryMs.median} ms, p95 ${r.recoveryMs.p95} ms, max ${r.recoveryMs.max} ms`,
    `crash points hit: ${hits.filter(([, n]) => n > 0).length}/${hits.length}${missed.length ? ` (never: ${missed.join(', ')})` : ''}`,
    `  ${hits.map(([p, n]) => `${p} ${n}`).join(', ')}`,
    `orphans adopted ${r.orphansAdopted}, interrupted destroys completed ${r.destroysCompletedByCrash}, torn log lines ${r.tornLogLines}`,
    ...r.violationSamples.map((v) => `  ! ${v}`),
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      crashes: { type: 'string' },
      seed: { type: 'string' },
      size: { type: 'string' },
      threads: { type: 'string' },
      dir: { type: 'string' },
      keep: { type: 'boolean' },
      json: { type: 'boolean' },
    },
  });
  const report = await runTorture({
    crashes: parseIntArg(values.crashes, 'crashes', 100),
    seed: parseIntArg(values.seed, 'seed', 1),
    sizeBytes: values.size === undefined ? undefined : parseSize(values.size),
    threads: parseIntArg(values.threads, 'threads', 2),
    dir: values.dir,
    keep: values.keep,
    progress: values.json ? undefined : (line) => console.error(line),
  });
  console.log(values.json ? JSON.stringify(report) : summary(report));
  process.exitCode = report.violations === 0 && report.lostFrames === 0 ? 0 : 1;
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 2;
});
