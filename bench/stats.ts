/**
 * Measurement helpers shared by every benchmark suite: repeat, summarize with
 * median and spread (so machine noise is visible), and the result shape that
 * report.ts turns into results.json and the HTML report.
 */
export interface Summary {
  median: number;
  min: number;
  max: number;
  p25: number;
  p75: number;
  /** (p75 - p25) / median: relative interquartile spread */
  spread: number;
  n: number;
  samples: number[];
}

export function summarize(samples: number[]): Summary {
  if (samples.length === 0) throw new Error('summarize: no samples');
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number): number => {
    const pos = (s.length - 1) * p;
    const lo = Math.floor(pos);
    const hi = Math.ceil(pos);
    return s[lo] + (s[hi] - s[lo]) * (pos - lo);
  };
  const median = q(0.5);
  return {
    median,
    min: s[0],
    max: s[s.length - 1],
    p25: q(0.25),
    p75: q(0.75),
    spread: median === 0 ? 0 : (q(0.75) - q(0.25)) / median,
    n: s.length,
    samples,
  };
}

export const nowNs = (): number => Number(process.hrtime.bigint());

/** Runs `fn` `reps` times (after `warmup` unrecorded runs) and returns each run's duration in ns. */
export async function repeat(reps: number, fn: () => unknown | Promise<unknown>, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = nowNs();
    await fn();
    out.push(nowNs() - t0);
  }
  return out;
}

/** One measured variant of an experiment (e.g. "morsel", "conventional", "limit"). */
export interface VariantResult {
  variant: string;
  /** what the number is, with its unit, e.g. "map_ns", "GiB_per_s" */
  metric: string;
  /** x-axis value for scaling series (size in bytes, threads, ...) */
  x?: number;
  summary: Summary;
}

export interface Claim {
  /** e.g. "morsel vs conventional populate, map time at 7 GiB" */
  name: string;
  /** measured ratio (>1 = morsel better, as defined by `name`) */
  measured: number;
  /** the paper's figure, if it states one */
  anchor?: number;
  /** our own goal */
  goal?: number;
  met: boolean;
  note?: string;
}

export interface ExperimentResult {
  id: string;
  title: string;
  anchor: string;
  params: Record<string, unknown>;
  results: VariantResult[];
  claims: Claim[];
  notes: string[];
}
