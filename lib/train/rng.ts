/**
 * Training's randomness: lib/data's seeded, stateless generators (every draw a function of the run's seed and
 * where it is used: epoch, sample, tensor name), plus the normal samples weight initialisation needs.
 *
 * @module
 */
import type { Rng } from "../data/rng.ts";

export { hashString, mixSeed, permutation, Rng } from "../data/rng.ts";

/** A standard normal sample from `rng` (Box–Muller, two uniform draws). */
export function normal(rng: Rng): number {
  const u = 1 - rng.uniform();
  const v = rng.uniform();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}
