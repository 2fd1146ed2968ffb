/**
 * Timing statistics for the bench: every figure is the median of several runs taken after warm-up.
 *
 * @module
 */
import process from "node:process";

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
  /**
   * Median CPU time (user + system, all threads of this process) per timed run. On a shared machine it moves
   * far less with contention than wall time does, for the single-threaded wasm and cpu backends above all.
   */
  cpuMs: number;
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
  const times: number[] = [], cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c = process.cpuUsage();
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
    const used = process.cpuUsage(c);
    cpu.push((used.user + used.system) / 1000);
  }
  return {
    medianMs: median(times),
    minMs: Math.min(...times),
    maxMs: Math.max(...times),
    runs: times.map((x) => Math.round(x * 100) / 100),
    warmup,
    cpuMs: Math.round(median(cpu) * 100) / 100,
    ...(firstMs !== undefined ? { firstMs: Math.round(firstMs * 100) / 100 } : {}),
  };
}

/**
 * Like {@linkcode measure} for several functions at once, run in turn (a, b, a, b, …) so that a change in the
 * machine's load while they are timed falls on each of them alike: what a side-by-side ratio needs on a
 * shared machine.
 */
export async function measureInterleaved(
  fns: readonly (() => Promise<unknown>)[],
  warmup: number,
  runs: number,
): Promise<Timing[]> {
  if (!(runs >= 1)) throw new Error(`runs must be at least 1, got ${runs}`);
  const first: number[] = [];
  for (let i = 0; i < warmup; i++) {
    for (const [k, fn] of fns.entries()) {
      const t = performance.now();
      await fn();
      if (i === 0) first[k] = performance.now() - t;
    }
  }
  const times = fns.map(() => [] as number[]), cpu = fns.map(() => [] as number[]);
  for (let i = 0; i < runs; i++) {
    for (const [k, fn] of fns.entries()) {
      const c = process.cpuUsage();
      const t = performance.now();
      await fn();
      times[k].push(performance.now() - t);
      const used = process.cpuUsage(c);
      cpu[k].push((used.user + used.system) / 1000);
    }
  }
  return fns.map((_, k) => ({
    medianMs: median(times[k]),
    minMs: Math.min(...times[k]),
    maxMs: Math.max(...times[k]),
    runs: times[k].map((x) => Math.round(x * 100) / 100),
    warmup,
    cpuMs: Math.round(median(cpu[k]) * 100) / 100,
    ...(first[k] !== undefined ? { firstMs: Math.round(first[k] * 100) / 100 } : {}),
  }));
}
