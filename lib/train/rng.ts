/**
 * Training's randomness: lib/data's seeded, stateless generators (every draw a function of the run's seed and
 * where it is used: epoch, sample, tensor name) and distributions (the normal samples weight initialisation
 * needs, Beta for mixup).
 *
 * @module
 */
export { beta, gamma, hashString, mixSeed, normal, permutation, Rng } from "../data/rng.ts";
