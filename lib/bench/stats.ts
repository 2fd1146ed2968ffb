/**
 * Timing statistics for the bench: every figure is the median of several runs taken after warm-up.
 *
 * @module
 */

/** The runs behind one figure, in milliseconds. */
export interface Timing {
  /** Median of `runs`. */
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** Each timed run, in order (warm-up runs excluded). */
  runs: number[];
  /** Warm-up runs done before timing (the first includes shader compilation / kernel set-up). */
  warmup: number;
  /** Duration of the first warm-up run, when there was one. */
  firstMs?: number;
}

/** The median of a non-empty list. */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error("median of an empty list");
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Runs `fn` `warmup` times untimed, then `runs` times timed; `fn` must finish its work (await data). */
export async function measure(fn: () => Promise<unknown>, warmup: number, runs: number): Promise<Timing> {
  if (!(runs >= 1)) throw new Error(`runs must be at least 1, got ${runs}`);
  let firstMs: number | undefined;
  for (let i = 0; i < warmup; i++) {
    const t = performance.now();
    await fn();
    if (i === 0) firstMs = performance.now() - t;
  }
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  return {
    medianMs: median(times),
    minMs: Math.min(...times),
    maxMs: Math.max(...times),
    runs: times.map((x) => Math.round(x * 100) / 100),
    warmup,
    ...(firstMs !== undefined ? { firstMs: Math.round(firstMs * 100) / 100 } : {}),
  };
}
