/**
 * Streaming batches for training and evaluation: a (seeded, per-epoch) sample order, decoding and
 * preprocessing on the fly, NCHW float32 batches out. Only the batch being consumed and the one being
 * prepared exist as float tensors; decoded 8-bit images are kept only if the dataset is a `CachedDataset`.
 *
 * Reproducible and resumable without saved state: epoch e's order is a permutation seeded by (seed, e) and
 * each sample's augmentation draws come from `augmentRng(seed, e, sampleIndex)`, so batch b of epoch e is
 * the same whether the run got there directly or resumed with `epoch(e, { startBatch: b })`.
 *
 * @module
 */
import type { TrainAugment } from "./augment.ts";
import { checkIndex, type Dataset } from "./dataset.ts";
import { type PreprocessConfig, preprocessSample } from "./preprocess.ts";
import { mixSeed, permutation } from "./rng.ts";

/** How to batch. */
export interface BatcherOptions {
  preprocessing: PreprocessConfig;
  batchSize: number;
  /** Dataset sample indices to use (e.g. `classBalancedSubset(ds.labels, 1000)`); all when absent. */
  indices?: ArrayLike<number>;
  /** Reshuffle every epoch (seeded). Default false: selection order. */
  shuffle?: boolean;
  /** Training augmentation; absent means evaluation preprocessing. */
  augment?: TrainAugment;
  /** Seed of the order and the augmentation. Default 0. */
  seed?: number;
  /** Drop a last, smaller batch. Default false. */
  dropLast?: boolean;
  /** Images decoded at once (the native decoder works in parallel). Default 8. */
  concurrency?: number;
}

/** One batch. */
export interface Batch {
  /** `[n, 3, S, S]` row-major. */
  input: Float32Array;
  shape: [number, number, number, number];
  labels: Int32Array;
  /** Dataset sample index of each row. */
  indices: Int32Array;
  epoch: number;
  /** Batch number within the epoch. */
  batch: number;
}

/** Batches of one dataset under one preprocessing; see the module doc. */
export class Batcher {
  /** Samples per epoch (the selection's size). */
  readonly size: number;
  /** Labels of the selection, in selection order. */
  readonly labels: Int32Array;
  /** Dataset sample index of each selection position. */
  readonly indices: Int32Array;
  /** Channels, height, width of one preprocessed image. */
  readonly shape: readonly [number, number, number];
  readonly batchSize: number;
  #ds: Dataset;
  #o: BatcherOptions;

  constructor(dataset: Dataset, options: BatcherOptions) {
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) {
      throw new Error(`batchSize must be a positive integer, got ${options.batchSize}`);
    }
    this.#ds = dataset;
    this.#o = options;
    this.indices = options.indices
      ? Int32Array.from(options.indices as ArrayLike<number>)
      : Int32Array.from({ length: dataset.length }, (_, i) => i);
    for (const i of this.indices) checkIndex(i, dataset.length, "batcher selection");
    this.size = this.indices.length;
    this.labels = this.indices.map((i) => dataset.labels[i]);
    const s = options.preprocessing.img_size;
    this.shape = [3, s, s];
    this.batchSize = options.batchSize;
  }

  /** Batches in one epoch. */
  get batchesPerEpoch(): number {
    return this.#o.dropLast ? Math.floor(this.size / this.batchSize) : Math.ceil(this.size / this.batchSize);
  }

  /** Epoch `epoch`'s order, as selection positions. */
  order(epoch: number): Int32Array {
    if (!this.#o.shuffle) return Int32Array.from({ length: this.size }, (_, i) => i);
    return permutation(this.size, mixSeed(this.#o.seed ?? 0, epoch, 0x0da7a));
  }

  /**
   * Preprocessed images of selection positions `positions` as one `[n, 3, S, S]` array, with this
   * batcher's preprocessing (augmented with epoch `epoch`'s draws when it has `augment`). Compatible with
   * lib/train's `ImageSet.images`.
   */
  async images(positions: ArrayLike<number>, epoch = 0): Promise<Float32Array> {
    const p = this.#o.preprocessing;
    const per = 3 * p.img_size * p.img_size;
    const out = new Float32Array(positions.length * per);
    const n = positions.length;
    const augment = this.#o.augment
      ? { augment: this.#o.augment, seed: this.#o.seed ?? 0, epoch }
      : undefined;
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const row = next++;
        const pos = positions[row];
        checkIndex(pos, this.size, "batcher");
        const index = this.indices[pos];
        let sample;
        try {
          sample = await this.#ds.get(index);
        } catch (e) {
          throw new Error(`sample ${index} (${this.#ds.describe(index)}): ${(e as Error).message}`, {
            cause: e,
          });
        }
        preprocessSample(sample.image, p, index, augment, out, row * per);
      }
    };
    const workers = Math.max(1, Math.min(this.#o.concurrency ?? 8, n));
    await Promise.all(Array.from({ length: workers }, worker));
    return out;
  }

  /** Batch `batch` of epoch `epoch`. */
  async batch(epoch: number, batch: number, order: Int32Array = this.order(epoch)): Promise<Batch> {
    if (!Number.isInteger(batch) || batch < 0 || batch >= this.batchesPerEpoch) {
      throw new RangeError(`batch ${batch} is outside 0..${this.batchesPerEpoch - 1}`);
    }
    const positions = order.subarray(
      batch * this.batchSize,
      Math.min((batch + 1) * this.batchSize, this.size),
    );
    const input = await this.images(positions, epoch);
    const s = this.shape[1];
    return {
      input,
      shape: [positions.length, 3, s, s],
      labels: positions.map((p) => this.labels[p]),
      indices: positions.map((p) => this.indices[p]),
      epoch,
      batch,
    };
  }

  /**
   * The batches of epoch `epoch` from `startBatch` on, preparing the next batch while the caller works on
   * the current one.
   */
  async *epoch(epoch: number, options: { startBatch?: number } = {}): AsyncGenerator<Batch> {
    const order = this.order(epoch);
    const total = this.batchesPerEpoch;
    let b = options.startBatch ?? 0;
    if (b >= total) return;
    let pending = this.batch(epoch, b, order);
    pending.catch(() => {}); // a caller that stops early must not leave an unhandled rejection
    while (b < total) {
      const current = await pending;
      if (++b < total) {
        pending = this.batch(epoch, b, order);
        pending.catch(() => {});
      }
      yield current;
    }
  }
}
