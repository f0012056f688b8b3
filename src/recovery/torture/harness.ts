/**
 * The crash-torture harness (parent side). One persistent region in a temp
 * directory lives through the whole run, so damage accumulates if recovery
 * is ever wrong. Each iteration:
 *
 *   1. a child process (child.ts, >= 2 worker threads) runs random
 *      operations and logs each one's begin and acknowledgement;
 *   2. it dies by SIGKILL: at a random time (seeded), or at a crash point
 *      armed with MORSEL_CRASH_AT=point:k inside a multi-step update; points
 *      are armed round-robin so every window is hit, not only likely ones.
 *      Points inside recovery are armed in a second child that only opens
 *      the crashed region (so recovery itself is interrupted and redone);
 *   3. the parent reopens the region (recovery, timed), runs checkRegion
 *      (every invariant; lost frames must be 0) and verifies the region
 *      against the model replayed from the log: every acknowledged write
 *      reads back, every acknowledged destroy is gone, every acknowledged
 *      create is live, never-written bytes are zero.
 *
 * Every tenth iteration instead lets the child finish a small budget and
 * close cleanly, which checks the clean path (no recovery: an error path
 * that leaked a frame would show as lost frames).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Memory } from '../../memory.js';
import { CHILD_FRAMES } from '../../physical/layout.js';
import { PAGE_SIZE } from '../../units.js';
import { checkRegion } from '../check.js';
import { CRASH_ENV, CRASH_MARK, CRASH_POINTS, RECOVERY_CRASH_POINTS, type CrashPointName } from '../../crash-point.js';
import type { ChildConfig } from './child.js';
import { LogReader } from './log.js';
import { Model } from './model.js';
import { Prng, subSeed } from './prng.js';

export interface TortureOptions {
  crashes: number;
  seed: number;
  sizeBytes?: number;
  threads?: number;
  /** directory for the region and the log (default: a fresh temp dir, removed afterwards unless keep) */
  dir?: string;
  keep?: boolean;
  /** random kills land within this long after the child is ready */
  maxKillDelayMs?: number;
  /** an armed crash point not hit within this long is replaced by a random kill */
  armedTimeoutMs?: number;
  /** every n-th iteration is a clean run (0: never) */
  cleanEvery?: number;
  /** called with a progress line now and then */
  progress?: (line: string) => void;
}

export interface TortureReport {
  seed: number;
  sizeBytes: number;
  threads: number;
  crashes: number;
  randomCrashes: number;
  pointCrashes: number;
  recoveryCrashes: number;
  cleanRuns: number;
  ackedOps: number;
  ackedByOp: Record<string, number>;
  failedOps: number;
  violations: number;
  /** the first violations, verbatim */
  violationSamples: string[];
  lostFrames: number;
  recoveries: number;
  recoveryMs: { median: number; p95: number; max: number };
  /** hits per crash point; every one should be > 0 */
  pointHits: Record<string, number>;
  orphansAdopted: number;
  destroysCompletedByCrash: number;
  tornLogLines: number;
  durationMs: number;
}

interface Plan {
  kind: 'random' | 'point' | 'recovery-point' | 'clean';
  point?: CrashPointName;
  k?: number;
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** the crash point that fired, if one did */
  fired: string | null;
  stderr: string;
}

const MiB = 1024 * 1024;
const CHILD_JS = fileURLToPath(new URL('./child.js', import.meta.url));
const MAX_SAMPLES = 20;

/** How many hits of a point a run usually reaches (k is drawn from 1..this). */
function kMax(point: CrashPointName, children: number): number {
  switch (point) {
    case 'alloc:after-counter':
    case 'free:after-bit-clear':
    case 'populate:before-link':
      return 150;
    case 'destroy:after-unlink':
      return 30;
    case 'create:before-register':
    case 'destroy:after-unregister':
    case 'destroy:before-free-root':
      return 8;
    case 'open:rebuild-counters':
    case 'recover:rebuild-bitfields':
      return children;
    default:
      return 2;
  }
}

/** Chooses what each iteration does: random kills, each crash point in turn, clean runs. */
class Scheduler {
  private readonly rng: Prng;
  private next = 0;
  private iteration = 0;
  readonly hits: Record<string, number> = Object.fromEntries(CRASH_POINTS.map((p) => [p, 0]));

  constructor(
    seed: number,
    private readonly children: number,
    private readonly cleanEvery: number,
  ) {
    this.rng = new Prng(subSeed(seed, 1_000_003));
  }

  plan(): Plan {
    const i = this.iteration++;
    if (this.cleanEvery > 0 && i % this.cleanEvery === this.cleanEvery - 1) return { kind: 'clean' };
    if (i % 4 === 3) return { kind: 'random' };
    const point = CRASH_POINTS[this.next++ % CRASH_POINTS.length];
    // A point never hit yet gets k = 1: the likeliest to fire.
    const k = this.hits[point] === 0 ? 1 : 1 + this.rng.int(kMax(point, this.children));
    return { kind: RECOVERY_CRASH_POINTS.includes(point) ? 'recovery-point' : 'point', point, k };
  }

  delay(maxMs: number): number {
    return this.rng.int(maxMs + 1);
  }

  chance(p: number): boolean {
    return this.rng.int(1_000_000) < p * 1_000_000;
  }
}

/** Spawns a child and kills it per `kill`; resolves when it is gone. */
function runChild(cfg: ChildConfig, armed: string, kill: { afterSpawnMs?: number; afterReadyMs?: number; timeoutMs: number }): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CHILD_JS, JSON.stringify(cfg)], {
      env: { ...process.env, [CRASH_ENV]: armed },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const timers: NodeJS.Timeout[] = [];
    const killIn = (ms: number): void => void timers.push(setTimeout(() => child.kill('SIGKILL'), ms));
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdout.on('data', (b: Buffer) => {
      const wasReady = stdout.includes('ready\n');
      stdout += b.toString();
      if (!wasReady && stdout.includes('ready\n') && kill.afterReadyMs !== undefined) killIn(kill.afterReadyMs);
    });
    if (kill.afterSpawnMs !== undefined) killIn(kill.afterSpawnMs);
    killIn(kill.timeoutMs);
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      const m = new RegExp(`${CRASH_MARK} (\\S+):\\d+`).exec(stderr);
      resolve({ code, signal, fired: m ? m[1] : null, stderr });
    });
  });
}

export async function runTorture(opts: TortureOptions): Promise<TortureReport> {
  const started = performance.now();
  const sizeBytes = opts.sizeBytes ?? 32 * MiB;
  const threads = Math.max(2, opts.threads ?? 2);
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'morsel-torture-'));
  fs.mkdirSync(dir, { recursive: true });
  const regionPath = path.join(dir, 'torture.region');
  const logPath = path.join(dir, 'ack.log');
  fs.rmSync(logPath, { force: true });
  Memory.create(regionPath, sizeBytes, { force: true }).close();

  const children = Math.ceil(sizeBytes / PAGE_SIZE / CHILD_FRAMES);
  const sched = new Scheduler(opts.seed, children, opts.cleanEvery ?? 10);
  const reader = new LogReader(logPath);
  const model = new Model();
  const recoveryMs: number[] = [];
  const samples: string[] = [];
  const r = { crashes: 0, random: 0, point: 0, recovery: 0, clean: 0, violations: 0, lost: 0, adopted: 0, completed: 0 };
  const violation = (v: string): void => {
    r.violations++;
    if (samples.length < MAX_SAMPLES) samples.push(v);
    opts.progress?.(`VIOLATION: ${v}`);
  };
  const maxDelay = opts.maxKillDelayMs ?? 300;
  const armedTimeout = opts.armedTimeoutMs ?? 3000;

  try {
    for (let run = 0; r.crashes < opts.crashes; run++) {
      const plan = sched.plan();
      const cfg: ChildConfig = { mode: 'ops', region: regionPath, logPath, run, seed: subSeed(opts.seed, run), threads, budget: plan.kind === 'clean' ? 25 : null };
      const armed = plan.kind === 'point' ? `${plan.point}:${plan.k}` : '';
      const kill =
        plan.kind === 'clean'
          ? { timeoutMs: 60_000 }
          : plan.kind === 'point'
            ? { timeoutMs: armedTimeout }
            : sched.chance(0.15)
              ? { afterSpawnMs: 30 + sched.delay(200), timeoutMs: 60_000 } // sometimes during open / reaping
              : { afterReadyMs: sched.delay(maxDelay), timeoutMs: 60_000 };
      const res = await runChild(cfg, armed, kill);
      model.apply(reader.next());
      model.endRun();
      if (res.code !== null && res.code !== 0) violation(`run ${run}: child failed (exit ${res.code}): ${res.stderr.trim().slice(0, 2000)}`);
      if (res.signal === 'SIGKILL') {
        r.crashes++;
        if (res.fired !== null) {
          sched.hits[res.fired] = (sched.hits[res.fired] ?? 0) + 1;
          r.point++;
        } else r.random++;
      } else if (res.code === 0) r.clean++;

      if (plan.kind === 'recovery-point' && res.signal === 'SIGKILL') {
        // The region is crashed: recover it in a child that dies inside recovery.
        const rec = await runChild({ ...cfg, mode: 'recover' }, `${plan.point}:${plan.k}`, { timeoutMs: 60_000 });
        if (rec.code !== null && rec.code !== 0) violation(`run ${run}: recovery child failed (exit ${rec.code}): ${rec.stderr.trim().slice(0, 2000)}`);
        if (rec.signal === 'SIGKILL') {
          r.crashes++;
          r.recovery++;
          if (rec.fired !== null) sched.hits[rec.fired] = (sched.hits[rec.fired] ?? 0) + 1;
        }
      }

      if (!verify()) break;
      if (r.crashes % 25 === 0 && res.signal === 'SIGKILL') {
        opts.progress?.(`${r.crashes} crashes, ${model.acked} ops acked, ${r.violations} violations, ${r.lost} lost frames`);
      }
    }
  } finally {
    if (!opts.keep && opts.dir === undefined) fs.rmSync(dir, { recursive: true, force: true });
  }

  /** Reopen (recovering), check every invariant, compare with the model. False if the region cannot be opened. */
  function verify(): boolean {
    const t0 = performance.now();
    let memory: Memory;
    try {
      memory = Memory.open(regionPath);
    } catch (e) {
      violation(`reopen failed: ${(e as Error).message}`);
      return false;
    }
    try {
      if (memory.report?.crashed) recoveryMs.push(performance.now() - t0);
      const report = checkRegion(memory);
      for (const p of report.problems) violation(`check: ${p.code}: ${p.what} (${p.where})`);
      r.lost += report.lostFrames;
      const v = model.verify(memory);
      for (const x of v.violations) violation(x);
      r.adopted += v.adopted;
      r.completed += v.destroyedByCrash;
    } finally {
      memory.close();
    }
    return true;
  }

  const sorted = [...recoveryMs].sort((a, b) => a - b);
  const q = (f: number): number => (sorted.length === 0 ? 0 : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))] * 100) / 100);
  return {
    seed: opts.seed,
    sizeBytes,
    threads,
    crashes: r.crashes,
    randomCrashes: r.random,
    pointCrashes: r.point,
    recoveryCrashes: r.recovery,
    cleanRuns: r.clean,
    ackedOps: model.acked,
    ackedByOp: model.ackedByOp,
    failedOps: model.failed,
    violations: r.violations,
    violationSamples: samples,
    lostFrames: r.lost,
    recoveries: recoveryMs.length,
    recoveryMs: { median: q(0.5), p95: q(0.95), max: q(1) },
    pointHits: sched.hits,
    orphansAdopted: r.adopted,
    destroysCompletedByCrash: r.completed,
    tornLogLines: reader.torn,
    durationMs: Math.round(performance.now() - started),
  };
}
