/**
 * The crash-torture harness (parent side). One persistent region in a temp
 * directory lives through the whole run, so damage accumulates if recovery
 * is ever wrong. Each iteration runs TWO processes on the region at once:
 *
 *   1. P, the primitive child (child.ts "ops", >= 2 worker threads: morsels,
 *      data, population races, address spaces), opens it first (alone:
 *      recovering it if needed); then N, the names child (child.ts "names",
 *      names.ts: mkdir/rmdir, create, fixed-address create = reservation,
 *      unlink, rename, chmod, open/close, map/unmap of handles, stamps
 *      written through handles, and reaping of dead peers' slots) joins it.
 *      Both log each operation's begin and acknowledgement (fsynced);
 *   2. they die by SIGKILL: at random times (seeded; either one first, the
 *      other a little later), or each at a crash point armed with
 *      MORSEL_CRASH_AT=point:k inside a multi-step update (P: the primitive
 *      layers' points, N: the namespace's; round-robin so every window is
 *      hit, not only likely ones). Points inside recovery are armed in a
 *      third child that only opens the crashed region (so recovery itself is
 *      interrupted and redone). In "survivor" runs P is killed while N runs
 *      on, reaps P's slot (reapDeadSlots + reapPending) and closes cleanly;
 *   3. the parent reopens the region (recovery, timed; it must be alone),
 *      runs checkRegion (every invariant; lost frames must be 0), the
 *      management invariants (names-model.ts checkManagement: 0 dangling
 *      names, 0 PENDING orphans, 0 stuck usage counts, 0 overlapping or
 *      orphaned reservations) and verifies the region against both models
 *      replayed from the log: every acknowledged write reads back, every
 *      acknowledged destroy is gone, every acknowledged create is live,
 *      never-written bytes are zero; the namespace equals the acknowledged
 *      name operations (the interrupted one: before or after), and stamps
 *      written through handles read back.
 *
 * Every tenth iteration instead lets both children finish a small budget and
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
import { CRASH_ENV, CRASH_MARK, CRASH_POINTS, NAME_CRASH_POINTS, RECOVERY_CRASH_POINTS, type CrashPointName } from '../../crash-point.js';
import type { ChildConfig } from './child.js';
import { LogReader } from './log.js';
import { Model } from './model.js';
import { NAMES_THREAD } from './names.js';
import { NamesModel, checkManagement } from './names-model.js';
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
  /** runs of two children each (a primitive and a names process) */
  iterations: number;
  /** processes SIGKILLed (either child, or a recovery child) */
  crashes: number;
  randomCrashes: number;
  pointCrashes: number;
  recoveryCrashes: number;
  cleanRuns: number;
  /** runs where P was killed and N, the survivor, finished and closed cleanly */
  survivorRuns: number;
  ackedOps: number;
  ackedByOp: Record<string, number>;
  failedOps: number;
  /** dead slots the names child emptied while running (reapDeadSlots), and unlinked morsels destroyed then */
  survivorReaps: { slots: number; morsels: number };
  /** at the last verification: names, live reservations, stale (released lazily) reservations */
  finalNames: number;
  finalReservations: number;
  staleReservations: number;
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

/**
 * One iteration. `point`: P (the primitive child) and N (the names child)
 * each armed with their own point; a recovery point is armed in a recovery
 * child after both died. `survivor`: P is killed, N finishes a budget (it
 * reaps P's slot) and closes cleanly; the next open recovers.
 */
interface Plan {
  kind: 'random' | 'point' | 'survivor' | 'clean';
  primitive?: Armed;
  names?: Armed;
}

interface Armed {
  point: CrashPointName;
  k: number;
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
/** A child never runs longer than this (a hang is a violation, not a stuck test). */
const HARD_TIMEOUT_MS = 60_000;
/** Operations a names child finishes in clean and survivor runs; per thread of the primitive child in clean runs. */
const NAMES_BUDGET = 120;
const CLEAN_BUDGET = 25;
/** Points that can fire only once per region (the namespace header is created on first use): armed in the first run only. */
const ONCE_POINTS: readonly CrashPointName[] = ['names:before-link-table'];
const PRIMITIVE_POINTS = CRASH_POINTS.filter((p) => !NAME_CRASH_POINTS.includes(p as never));

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
    case 'names:after-count':
    case 'names:after-claim':
    case 'names:free-after-seq':
      return 8;
    case 'open:rebuild-counters':
    case 'recover:rebuild-bitfields':
      return children;
    default:
      return 2;
  }
}

/** Extra runs a crash point gets while it has never fired (its race may not happen in one run). */
const POINT_RETRIES = 3;

/** Chooses what each iteration does: random kills, each crash point in turn (both children), survivors, clean runs. */
class Scheduler {
  private readonly rng: Prng;
  private nextPrimitive = 0;
  private nextNames = 0;
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
    if (i === 0) return { kind: 'point', names: { point: ONCE_POINTS[0], k: 1 } };
    if (this.cleanEvery > 0 && i % this.cleanEvery === this.cleanEvery - 1) return { kind: 'clean' };
    if (i % 6 === 5) return { kind: 'survivor' };
    if (i % 6 === 3) return { kind: 'random' };
    const names = NAME_CRASH_POINTS.filter((p) => !ONCE_POINTS.includes(p));
    const primitive = this.retryOr(this.lastPrimitive, () => PRIMITIVE_POINTS[this.nextPrimitive++ % PRIMITIVE_POINTS.length]);
    const name = this.retryOr(this.lastNames, () => names[this.nextNames++ % names.length]);
    return { kind: 'point', primitive: this.arm(primitive), names: this.arm(name) };
  }

  /**
   * The point armed last time again if it has still never fired (a race it
   * needs, such as populate:lost-race, did not happen in that run), at most
   * POINT_RETRIES times; else the next one from `next`.
   */
  private retryOr(last: { point: CrashPointName | null; tries: number }, next: () => CrashPointName): CrashPointName {
    if (last.point !== null && this.hits[last.point] === 0 && last.tries < POINT_RETRIES) {
      last.tries++;
      return last.point;
    }
    last.point = next();
    last.tries = 0;
    return last.point;
  }

  private readonly lastPrimitive: { point: CrashPointName | null; tries: number } = { point: null, tries: 0 };
  private readonly lastNames: { point: CrashPointName | null; tries: number } = { point: null, tries: 0 };

  /** A point never hit yet gets k = 1: the likeliest to fire. */
  private arm(point: CrashPointName): Armed {
    return { point, k: this.hits[point] === 0 ? 1 : 1 + this.rng.int(kMax(point, this.children)) };
  }

  delay(maxMs: number): number {
    return this.rng.int(maxMs + 1);
  }

  chance(p: number): boolean {
    return this.rng.int(1_000_000) < p * 1_000_000;
  }
}

/** A running child: `ready` resolves true at its "ready" line, false if it ended first. */
interface Child {
  ready: Promise<boolean>;
  done: Promise<ChildResult>;
  killIn(ms: number): void;
}

function spawnChild(cfg: ChildConfig, armed: Armed | undefined): Child {
  const child = spawn(process.execPath, [CHILD_JS, JSON.stringify(cfg)], {
    env: { ...process.env, [CRASH_ENV]: armed === undefined ? '' : `${armed.point}:${armed.k}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const timers: NodeJS.Timeout[] = [];
  const killIn = (ms: number): void => void timers.push(setTimeout(() => child.kill('SIGKILL'), ms));
  let stderr = '';
  let stdout = '';
  let isReady: (ready: boolean) => void;
  const ready = new Promise<boolean>((res) => (isReady = res));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdout.on('data', (b: Buffer) => {
    stdout += b.toString();
    if (stdout.includes('ready\n')) isReady(true);
  });
  killIn(HARD_TIMEOUT_MS);
  const done = new Promise<ChildResult>((resolve) => {
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      isReady(false);
      const m = new RegExp(`${CRASH_MARK} (\\S+):\\d+`).exec(stderr);
      resolve({ code, signal, fired: m ? m[1] : null, stderr });
    });
  });
  return { ready, done, killIn };
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
  const namesModel = new NamesModel();
  const recoveryMs: number[] = [];
  const samples: string[] = [];
  const r = { iterations: 0, crashes: 0, random: 0, point: 0, recovery: 0, clean: 0, survivors: 0, violations: 0, lost: 0, adopted: 0, completed: 0 };
  const last = { names: 0, reservations: 0, staleReservations: 0 };
  /** What the run being verified did (plan, crash points fired, how each child ended): the context of its violations. */
  let runContext = '';
  const violation = (v: string): void => {
    r.violations++;
    if (samples.length < MAX_SAMPLES) samples.push(`${v} [${runContext}]`);
    opts.progress?.(`VIOLATION: ${v}`);
  };
  const maxDelay = opts.maxKillDelayMs ?? 300;
  const armedTimeout = opts.armedTimeoutMs ?? 3000;

  /** Counts a child's end: a SIGKILL is a crash (at a point or random), a non-zero exit a violation. */
  const settle = (res: ChildResult, what: string): void => {
    if (res.code !== null && res.code !== 0) violation(`run ${r.iterations}: ${what} child failed (exit ${res.code}): ${res.stderr.trim().slice(0, 2000)}`);
    if (res.signal !== 'SIGKILL') return;
    r.crashes++;
    if (res.fired === null) r.random++;
    else {
      sched.hits[res.fired] = (sched.hits[res.fired] ?? 0) + 1;
      r.point++;
    }
  };

  try {
    for (let run = 0; r.crashes < opts.crashes; run++) {
      r.iterations++;
      const plan = sched.plan();
      const base = { region: regionPath, logPath, run, threads };
      const clean = plan.kind === 'clean';
      const recoveryPoint = plan.primitive !== undefined && RECOVERY_CRASH_POINTS.includes(plan.primitive.point) ? plan.primitive : undefined;
      // P first, alone: it lists the primitive morsels before N creates any.
      const p = spawnChild({ ...base, mode: 'ops', seed: subSeed(opts.seed, run), budget: clean ? CLEAN_BUDGET : null }, recoveryPoint ? undefined : plan.primitive);
      if ((plan.kind === 'random' || plan.kind === 'survivor') && sched.chance(0.2)) p.killIn(30 + sched.delay(200)); // sometimes during open / recovery
      await p.ready;
      const n = spawnChild({ ...base, mode: 'names', seed: subSeed(opts.seed, run + 7_000_003), budget: clean || plan.kind === 'survivor' ? NAMES_BUDGET : null }, plan.names);
      await n.ready;
      if (plan.kind === 'point') {
        p.killIn(plan.primitive === undefined || recoveryPoint ? sched.delay(maxDelay) : armedTimeout);
        n.killIn(armedTimeout);
      } else if (plan.kind === 'random') {
        const first = sched.delay(maxDelay);
        const second = first + sched.delay(maxDelay);
        (sched.chance(0.5) ? [p, n] : [n, p]).forEach((c, i) => c.killIn(i === 0 ? first : second));
      } else if (plan.kind === 'survivor') p.killIn(sched.delay(maxDelay));
      const [pr, nr] = await Promise.all([p.done, n.done]);
      for (const e of reader.next()) (e.t === NAMES_THREAD ? namesModel : model).apply([e]);
      model.endRun();
      namesModel.endRun();
      const ended = (c: ChildResult): string => (c.signal !== null ? `${c.signal}${c.fired !== null ? ` at ${c.fired}` : ''}` : `exit ${c.code}`);
      runContext = `run ${r.iterations}: ${plan.kind}, primitive ${ended(pr)}, names ${ended(nr)}`;
      settle(pr, 'primitive');
      settle(nr, 'names');
      if (clean && pr.code === 0 && nr.code === 0) r.clean++;
      if (plan.kind === 'survivor' && pr.signal === 'SIGKILL' && nr.code === 0) r.survivors++;

      if (recoveryPoint !== undefined && (pr.signal === 'SIGKILL' || nr.signal === 'SIGKILL')) {
        // The region is crashed: recover it in a child that dies inside recovery.
        const rec = spawnChild({ ...base, mode: 'recover', seed: 0, budget: null }, recoveryPoint);
        const res = await rec.done;
        runContext += `, recovery ${ended(res)}`;
        settle(res, 'recovery');
        if (res.signal === 'SIGKILL') r.recovery++;
      }

      if (!verify()) break;
      if (r.iterations % 10 === 0) {
        opts.progress?.(`${r.crashes} crashes in ${r.iterations} runs, ${model.acked + namesModel.acked} ops acked, ${r.violations} violations, ${r.lost} lost frames`);
      }
    }
  } finally {
    if (!opts.keep && opts.dir === undefined) fs.rmSync(dir, { recursive: true, force: true });
  }

  /** Reopen (recovering), check every invariant, compare with the models. False if the region cannot be opened. */
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
      if (memory.report?.joined) violation('the verifier joined live users: a child outlived its run');
      const report = checkRegion(memory);
      for (const p of report.problems) violation(`check: ${p.code}: ${p.what} (${p.where})`);
      r.lost += report.lostFrames;
      const m = checkManagement(memory);
      for (const x of m.violations) violation(x);
      Object.assign(last, { names: m.names, reservations: m.reservations, staleReservations: m.staleReservations });
      const v = model.verify(memory, m.namedRoots);
      for (const x of v.violations) violation(x);
      for (const x of namesModel.verify(memory)) violation(x);
      r.adopted += v.adopted;
      r.completed += v.destroyedByCrash;
    } catch (e) {
      // A verifier that cannot even read the region (ECORRUPT, ...): the region is damaged.
      violation(`verification failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      return false;
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
    iterations: r.iterations,
    crashes: r.crashes,
    randomCrashes: r.random,
    pointCrashes: r.point,
    recoveryCrashes: r.recovery,
    cleanRuns: r.clean,
    survivorRuns: r.survivors,
    ackedOps: model.acked + namesModel.acked,
    ackedByOp: { ...model.ackedByOp, ...namesModel.ackedByOp },
    failedOps: model.failed + namesModel.failed,
    survivorReaps: { slots: namesModel.reapedSlots, morsels: namesModel.reapedMorsels },
    finalNames: last.names,
    finalReservations: last.reservations,
    staleReservations: last.staleReservations,
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
