/**
 * What training and evaluation need from a dataset: its size, every label, and preprocessed NCHW float32
 * images for any list of sample indices, with or without one epoch's training augmentation. lib/data
 * preprocesses and augments (see `datasetImageSet`); synthetic sets for tests go through the same path.
 *
 * @module
 */
import type { EpochAugment } from "../data/augment.ts";
import { permutation } from "./rng.ts";

/** A labelled image set. */
export interface ImageSet {
  /** Number of samples. */
  readonly size: number;
  /** The label of every sample, in sample order. */
  readonly labels: Int32Array;
  /** Channels, height and width of one preprocessed image. */
  readonly shape: readonly [number, number, number];
  /**
   * Preprocessed images `[indices.length, C, H, W]`, row-major: the evaluation transform, or with `augment`
   * each sample's training augmentation in that epoch (drawn from the seed, the epoch and its index).
   */
  images(indices: ArrayLike<number>, augment?: EpochAugment): Promise<Float32Array>;
}

/**
 * The first `perClass` samples of each class, in sample order: a fixed, class-balanced subset (e.g. the
 * 1,000-image accuracy check is `firstPerClass(labels, 100)` of the CIFAR-10 test set).
 */
export function firstPerClass(labels: Int32Array, perClass: number): Int32Array {
  const seen = new Map<number, number>();
  const out: number[] = [];
  for (let i = 0; i < labels.length; i++) {
    const n = seen.get(labels[i]) ?? 0;
    if (n < perClass) {
      out.push(i);
      seen.set(labels[i], n + 1);
    }
  }
  return Int32Array.from(out);
}

/** A seeded, class-balanced random subset of `total` samples (in ascending index order). */
export function balancedSubset(labels: Int32Array, total: number, seed: number): Int32Array {
  if (total <= 0 || total >= labels.length) return Int32Array.from(labels.keys());
  const classes = [...new Set(labels)].sort((a, b) => a - b);
  const perm = permutation(labels.length, seed);
  const quota = new Map(
    classes.map((c, i) => [c, Math.floor(total / classes.length) + (i < total % classes.length ? 1 : 0)]),
  );
  const out: number[] = [];
  for (const i of perm) {
    const q = quota.get(labels[i])!;
    if (q > 0) {
      out.push(i);
      quota.set(labels[i], q - 1);
    }
  }
  return Int32Array.from(out.sort((a, b) => a - b));
}

/** Balanced subset with an even split: `total` ≤ 0 means every sample. */
export function evalIndices(labels: Int32Array, total: number): Int32Array {
  if (total <= 0 || total >= labels.length) return Int32Array.from(labels.keys());
  const k = new Set(labels).size;
  return firstPerClass(labels, Math.ceil(total / k)).slice(0, total);
}
