/**
 * Timing and result helpers on top of stats.ts, shared by every experiment:
 * phase-split repetitions, per-operation timing of tiny operations, result
 * construction and claims. All durations are nanoseconds unless a metric
 * name says otherwise.
 */
import { nowNs, repeat, summarize, type Claim, type VariantResult } from './stats.js';

export type Progress = (done: number, total: number) => void;

export interface RunOptions {
  quick: boolean;
  progress?: Progress;
}

/** Minimum repetitions every measurement uses. */
export const MIN_REPS = 5;
/** Repetitions the profiles use (more where a run is cheap). */
export const REPS = 7;

/**
 * Runs `fn` `reps` times after `warmup` unrecorded runs; `fn` calls `lap(name)`
 * at the end of each phase and gets that phase's duration recorded
 * (time since the previous lap, or since the run started).
 */
export async function repeatPhases(
  reps: number,
  fn: (lap: (phase: string) => void, rep: number) => unknown | Promise<unknown>,
  warmup = 1,
): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (let i = -warmup; i < reps; i++) {
    let last = nowNs();
    const lap = (phase: string): void => {
      const t = nowNs();
      if (i >= 0) (out[phase] ??= []).push(t - last);
      last = nowNs();
    };
    await fn(lap, i);
  }
  return out;
}

/** Per-operation ns of an operation too short to time alone: `inner` calls per recorded run. */
export async function perOp(reps: number, inner: number, fn: (i: number) => unknown, warmup = 1): Promise<number[]> {
  const runs = await repeat(
    reps,
    () => {
      for (let i = 0; i < inner; i++) fn(i);
    },
    warmup,
  );
  return runs.map((ns) => ns / inner);
}

/**
 * Repetitions of a run that measures itself (e.g. from worker timestamps):
 * `fn` returns the duration in ns. `warmup` runs are discarded.
 */
export async function repeatMeasured(reps: number, fn: (rep: number) => Promise<number> | number, warmup = 1): Promise<number[]> {
  const out: number[] = [];
  for (let i = -warmup; i < reps; i++) {
    const ns = await fn(i);
    if (i >= 0) out.push(ns);
  }
  return out;
}

/** A VariantResult from raw samples. */
export function variant(name: string, metric: string, samples: number[], x?: number): VariantResult {
  return x === undefined ? { variant: name, metric, summary: summarize(samples) } : { variant: name, metric, x, summary: summarize(samples) };
}

/** Median of the result matching variant/metric (and x, if given); NaN when absent. */
export function medianOf(results: VariantResult[], name: string, metric: string, x?: number): number {
  const r = results.find((v) => v.variant === name && v.metric === metric && (x === undefined || v.x === x));
  return r ? r.summary.median : NaN;
}

/** Bytes per ns to GiB/s. */
export const gibPerS = (bytes: number, ns: number): number => bytes / 2 ** 30 / (ns / 1e9);

/**
 * A claim "morsel is `measured`x better". `measured` >= goal meets the goal;
 * the anchor (the paper's figure) is reported next to it, never judged.
 */
export function claim(name: string, measured: number, opts: { anchor?: number; goal?: number; note?: string; met?: boolean } = {}): Claim {
  const met = opts.met ?? (opts.goal === undefined ? true : Number.isFinite(measured) && measured >= opts.goal);
  const c: Claim = { name, measured: round(measured), met };
  if (opts.anchor !== undefined) c.anchor = opts.anchor;
  if (opts.goal !== undefined) c.goal = opts.goal;
  if (opts.note !== undefined) c.note = opts.note;
  return c;
}

/** "x% less" as a fraction: 1 - ours/theirs. */
export const reduction = (ours: number, theirs: number): number => 1 - ours / theirs;

export function round(v: number, digits = 4): number {
  if (!Number.isFinite(v)) return v;
  const m = 10 ** Math.max(0, digits - Math.ceil(Math.log10(Math.abs(v) + 1e-300)));
  return Math.abs(v) >= 10 ** digits ? Math.round(v) : Math.round(v * m) / m;
}

/** Reports progress in steps: `tick()` counts one unit of `total`. */
export function ticker(total: number, progress?: Progress): () => void {
  let done = 0;
  progress?.(0, total);
  return () => {
    done = Math.min(total, done + 1);
    progress?.(done, total);
  };
}
