/**
 * The common dataset interface (labelled RGB images, decoded on demand), subsets and an in-memory cache of
 * decoded images.
 *
 * Every reader (CIFAR binary batches, class folders, flat folders) knows all labels without decoding, so
 * class-balanced subsets and label statistics are free; pixels are produced by `get(i)`.
 *
 * @module
 */
import type { RgbImage } from "./image.ts";
import { permutation } from "./rng.ts";

/** One labelled image. */
export interface Sample {
  image: RgbImage;
  /** Index into the dataset's `classes`. */
  label: number;
}

/** A labelled image collection. */
export interface Dataset {
  /** Number of samples. */
  readonly length: number;
  /** Class names; label `k` is `classes[k]`. */
  readonly classes: readonly string[];
  /** Every sample's label, in sample order (known without decoding). */
  readonly labels: Int32Array;
  /** Sample `i` (0 ≤ i < length), decoded. Rejects with an error naming the file or record on bad data. */
  get(i: number): Promise<Sample>;
  /** Where sample `i` comes from (a file path, "batch.bin#record 7"), for messages. */
  describe(i: number): string;
}

/** Throws a RangeError unless `i` is a valid sample index of a dataset of `length`. */
export function checkIndex(i: number, length: number, what: string): void {
  if (!Number.isInteger(i) || i < 0 || i >= length) {
    throw new RangeError(`${what}: sample ${i} is outside 0..${length - 1}`);
  }
}

/**
 * A class-balanced subset of `total` samples, as ascending sample indices: each of the `k` classes gives
 * `floor(total / k)` samples and the first `total % k` classes one more. Without `seed` a class gives its
 * first samples in sample order, a fixed subset (the accuracy check's 1,000 CIFAR-10 test images are the
 * first 100 of each class); with `seed` a seeded random choice (`train_subset`). `total` 0, or at least the
 * number of samples, is every sample. The classes are `0..numClasses-1`, or the labels present. Throws when
 * a class has too few samples.
 */
export function classBalancedSubset(
  labels: Int32Array,
  total: number,
  { seed, numClasses }: { seed?: number; numClasses?: number } = {},
): Int32Array {
  if (!Number.isInteger(total) || total < 0) throw new Error(`subset size ${total} must be a count`);
  if (total === 0 || total >= labels.length) return Int32Array.from(labels.keys());
  const classes = numClasses !== undefined
    ? Array.from({ length: numClasses }, (_, c) => c)
    : [...new Set(labels)].sort((a, b) => a - b);
  const k = classes.length;
  const quota = new Map(classes.map((c, i) => [c, Math.floor(total / k) + (i < total % k ? 1 : 0)]));
  const order = seed === undefined ? labels.keys() : permutation(labels.length, seed);
  const out: number[] = [];
  for (const i of order) {
    const q = quota.get(labels[i]) ?? 0;
    if (q > 0) {
      out.push(i);
      quota.set(labels[i], q - 1);
      if (out.length === total) break;
    }
  }
  const short = [...quota].find(([, q]) => q > 0);
  if (short) throw new Error(`class-balanced subset of ${total}: class ${short[0]} has too few samples`);
  return Int32Array.from(out.sort((a, b) => a - b));
}

/** The samples `indices` of `ds`, as a dataset of their own (same classes). */
export function subsetDataset(ds: Dataset, indices: ArrayLike<number>): Dataset {
  const idx = Int32Array.from(indices as ArrayLike<number>);
  for (const i of idx) checkIndex(i, ds.length, "subset");
  const labels = new Int32Array(idx.length);
  for (let j = 0; j < idx.length; j++) labels[j] = ds.labels[idx[j]];
  return {
    length: idx.length,
    classes: ds.classes,
    labels,
    get: async (i) => {
      checkIndex(i, idx.length, "subset");
      return await ds.get(idx[i]);
    },
    describe: (i) => ds.describe(idx[i]),
  };
}

/** `val_split` value that carves a fixed validation split out of the training split (`holdout:5000`). */
export const HOLDOUT_PATTERN = /^holdout:(\d+)$/;

/**
 * Splits `ds` into a training part and a fixed, class-balanced validation part of `total` samples: the last
 * `total / k` samples of each of the `k` classes in sample order. The split depends on nothing but the
 * dataset's labels, so every run that names the same `total` validates on the same images (selection
 * never looks at the test set).
 */
export function holdoutSplit(ds: Dataset, total: number): { train: Dataset; val: Dataset } {
  const reversed = Int32Array.from(ds.labels).reverse();
  if (!(total > 0 && total < ds.length)) {
    throw new Error(`holdout:${total}: expected between 1 and ${ds.length - 1} held-out samples`);
  }
  const tail = classBalancedSubset(reversed, total, { numClasses: ds.classes.length });
  const held = new Set(Array.from(tail, (i) => ds.length - 1 - i));
  const val = [...held].sort((a, b) => a - b);
  const train = Array.from(ds.labels.keys()).filter((i) => !held.has(i));
  return { train: subsetDataset(ds, train), val: subsetDataset(ds, val) };
}

/**
 * Keeps decoded images in memory (up to `maxBytes` of pixels, default 512 MiB; later images are decoded
 * each time), so small images (CIFAR's 32×32: 150 MB for 50,000) are decoded once per run. Only raw 8-bit
 * images are cached, never preprocessed tensors. A cached sample is shared between callers: don't mutate it.
 */
export class CachedDataset implements Dataset {
  readonly length: number;
  readonly classes: readonly string[];
  readonly labels: Int32Array;
  #inner: Dataset;
  #cache = new Map<number, Promise<Sample>>();
  #bytes = 0;
  #maxBytes: number;

  constructor(inner: Dataset, maxBytes = 512 * 2 ** 20) {
    this.#inner = inner;
    this.length = inner.length;
    this.classes = inner.classes;
    this.labels = inner.labels;
    this.#maxBytes = maxBytes;
  }

  /** Bytes of pixels held. */
  get cachedBytes(): number {
    return this.#bytes;
  }

  get(i: number): Promise<Sample> {
    const hit = this.#cache.get(i);
    if (hit) return hit;
    const p = this.#inner.get(i);
    if (this.#bytes < this.#maxBytes) {
      this.#cache.set(i, p);
      p.then((s) => {
        this.#bytes += s.image.data.length;
      }, () => this.#cache.delete(i));
    }
    return p;
  }

  describe(i: number): string {
    return this.#inner.describe(i);
  }
}
