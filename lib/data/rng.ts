/**
 * Seeded, deterministic randomness for the data pipeline (shuffling, augmentation).
 *
 * Two ways to stay reproducible across an interrupted and resumed run:
 * - derive a fresh generator from the run's seed and *where* it is used (`Rng.derive(seed, epoch, index)`),
 *   so nothing needs saving — this is what the batcher does: epoch order depends on (seed, epoch), each
 *   sample's augmentation on (seed, epoch, sample id);
 * - or save and restore a generator's 32-bit `state` (it is one number, JSON-safe).
 *
 * The generator is mulberry32 (32-bit state, period 2^32): tiny and fast, plenty for shuffling and
 * augmentation draws, not for cryptography.
 *
 * @module
 */

/** A 32-bit FNV-1a hash of a string's UTF-16 code units, to turn names into seeds. */
export function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Mixes integers into one well-spread 32-bit seed (murmur3's finaliser after each word). */
export function mixSeed(...words: number[]): number {
  let h = 0x9e3779b9;
  for (const w of words) {
    h = (h ^ (w >>> 0)) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h >>> 0;
}

/** A small seeded generator (mulberry32) whose whole state is the number `state`. */
export class Rng {
  /** The generator's state: save it (a uint32) and pass it to `new Rng(state)` to resume the sequence. */
  state: number;

  /** A generator starting from `seed` (any number; taken modulo 2^32). */
  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A generator for one use of a run's seed, e.g. `Rng.derive(seed, epoch, sampleId)`. */
  static derive(...words: number[]): Rng {
    return new Rng(mixSeed(...words));
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.uniform();
  }

  /** A uniform integer in [0, n) (n ≤ 2^32). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
}

/** A standard normal sample from `rng` (Box–Muller, two uniform draws). */
export function normal(rng: Rng): number {
  const u = 1 - rng.uniform();
  const v = rng.uniform();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/**
 * A Gamma(`shape`, 1) sample (Marsaglia–Tsang; shapes below 1 through `Gamma(shape + 1)·U^(1/shape)`).
 * The number of draws it takes varies (rejection), but always follows from `rng`'s state.
 */
export function gamma(rng: Rng, shape: number): number {
  if (shape < 1) return gamma(rng, shape + 1) * Math.pow(1 - rng.uniform(), 1 / shape);
  const d = shape - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number, v: number;
    do {
      x = normal(rng);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng.uniform();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** A Beta(`a`, `b`) sample, as `X / (X + Y)` of two Gamma samples (numpy's `beta` for a, b > 0). */
export function beta(rng: Rng, a: number, b: number): number {
  const x = gamma(rng, a), y = gamma(rng, b);
  return x + y > 0 ? x / (x + y) : 0.5;
}

/** A seeded Fisher–Yates permutation of `0..n-1`. */
export function permutation(n: number, seed: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  const rng = new Rng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}
