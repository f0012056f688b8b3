/**
 * Least-squares line fits: how a cost grows with size. A slope near zero
 * (relative to the intercept) means constant time.
 */
export interface LinearFit {
  slope: number;
  intercept: number;
  /** coefficient of determination (1 = perfect line; NaN for constant y) */
  r2: number;
}

export function fitLinear(xs: number[], ys: number[]): LinearFit {
  if (xs.length !== ys.length || xs.length < 2) throw new Error('fitLinear: need two or more (x, y) pairs');
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (xs[i] - mx) ** 2;
    sxy += (xs[i] - mx) * (ys[i] - my);
    syy += (ys[i] - my) ** 2;
  }
  const slope = sxx === 0 ? 0 : sxy / sxx;
  const intercept = my - slope * mx;
  const r2 = syy === 0 ? NaN : (sxy * sxy) / (sxx * syy);
  return { slope, intercept, r2 };
}

/**
 * Growth exponent k of y ~ x^k: the least-squares slope in log-log space.
 * 0 = constant, 1 = linear in x.
 */
export function growthExponent(xs: number[], ys: number[]): number {
  return fitLinear(xs.map(Math.log2), ys.map(Math.log2)).slope;
}

/** A claim for "constant in x": measured exponent, met when it stays at or below `max`. */
export const CONSTANT_MAX_EXPONENT = 0.05;

/**
 * Per-repetition slopes of a size sweep: `samples[k][i]` is repetition i at
 * size xs[k]; repetition i across all sizes forms one sweep, fitted alone,
 * so the slopes carry the run-to-run spread.
 */
export function sweepSlopes(xs: number[], samples: number[][]): number[] {
  const reps = Math.min(...samples.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < reps; i++) out.push(fitLinear(xs, samples.map((s) => s[i])).slope);
  return out;
}
