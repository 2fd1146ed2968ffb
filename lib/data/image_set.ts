/**
 * What training and evaluation read from a dataset (an {@linkcode ImageSet}: its size, every label, and
 * preprocessed NCHW float32 images for any list of sample indices, with or without one epoch's training
 * augmentation), the adapter from a {@linkcode Dataset} to it, and finding a split on disk: the one place
 * that decides what `--data`, `data_dir` and a fine-tuning dataset name point at.
 *
 * @module
 */
import type { EpochAugment } from "./augment.ts";
import { openCifar10 } from "./cifar10.ts";
import { CachedDataset, type Dataset, HOLDOUT_PATTERN, holdoutSplit } from "./dataset.ts";
import { openImageFolder } from "./image_folder.ts";
import { type PreprocessConfig, preprocessSample } from "./preprocess.ts";
import { isDirectory } from "../util/fs.ts";

/** A labelled image set, preprocessed. */
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
 * An image set over `ds`, preprocessed for `pre` (a model's preprocessing). Decoded images are cached in
 * memory up to `cacheBytes` (all of CIFAR-10's 50,000 training images take 150 MB), so each is decoded once
 * per process.
 */
export function datasetImageSet(ds: Dataset, pre: PreprocessConfig, cacheBytes = 1024 * 2 ** 20): ImageSet {
  const cached = new CachedDataset(ds, cacheBytes);
  const s = pre.img_size, per = 3 * s * s;
  return {
    size: ds.length,
    labels: ds.labels,
    shape: [3, s, s],
    async images(indices: ArrayLike<number>, augment?: EpochAugment): Promise<Float32Array> {
      const out = new Float32Array(indices.length * per);
      const samples = await Promise.all(Array.from(indices, (i) => cached.get(i)));
      samples.forEach((sample, b) => preprocessSample(sample.image, pre, indices[b], augment, out, b * per));
      return out;
    },
  };
}

/**
 * The class folder of split `split` under `dir`: `dir/<split>` when it exists, after descending through
 * single wrapper folders (an archive's `mydata/<class>/…`); else `dir` itself.
 */
export async function splitFolder(dir: string, split: string): Promise<string> {
  for (let depth = 0; depth < 4; depth++) {
    if (await isDirectory(`${dir}/${split}`)) return `${dir}/${split}`;
    const entries: Deno.DirEntry[] = [];
    for await (const e of Deno.readDir(dir)) if (!e.name.startsWith(".")) entries.push(e);
    if (entries.length !== 1 || !entries[0].isDirectory) return dir;
    const inner = `${dir}/${entries[0].name}`;
    let hasSubdir = false;
    for await (const e of Deno.readDir(inner)) if (e.isDirectory && !e.name.startsWith(".")) hasSubdir = true;
    if (!hasSubdir) return dir;
    dir = inner;
  }
  return dir;
}

/** A dataset split as opened, with a name for reports. */
export interface OpenedSplit {
  dataset: Dataset;
  name: string;
}

/**
 * Carves `holdout:<n>` out of an opened training split ({@linkcode holdoutSplit}): what training keeps and
 * the held-out validation images, each named.
 */
export function carveHoldout(train: OpenedSplit, n: number): { train: OpenedSplit; val: OpenedSplit } {
  const parts = holdoutSplit(train.dataset, n);
  return {
    train: { dataset: parts.train, name: train.name },
    val: { dataset: parts.val, name: `${train.name} (held out: the last ${n} class-balanced)` },
  };
}

/**
 * Opens split `split` of `data` and names it: a folder holding `cifar-10-batches-bin/` (canonical) or
 * `cifar10-jpeg/<split>/` (as `deno task data` prepares), a folder with `<split>/<class>/*`, or a class
 * folder itself; `holdout:<n>` is the validation images training carves out of the `train` split (the
 * split that selection, never the test set, is made on).
 *
 * @example The held-out images of `val_split: holdout:5000`
 * ```ts
 * const { dataset, name } = await openSplit("data", "holdout:5000");
 * console.log(`${name}: ${dataset.length} images`);
 * ```
 */
export async function openSplit(data: string, split: string): Promise<OpenedSplit> {
  const holdout = HOLDOUT_PATTERN.exec(split);
  if (holdout) return carveHoldout(await openSplit(data, "train"), Number(holdout[1])).val;
  if (
    (split === "test" || split === "train") &&
    (await isDirectory(`${data}/cifar-10-batches-bin`) || await isDirectory(`${data}/cifar10-jpeg`))
  ) {
    const { dataset, source } = await openCifar10(data, split);
    return { dataset, name: source === "binary" ? "CIFAR-10 (canonical binary)" : "CIFAR-10 (JPEG copy)" };
  }
  const dir = await splitFolder(data, split);
  const dataset = await openImageFolder(dir);
  const cifar = dataset.classes.join() === "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck";
  return { dataset, name: cifar ? "CIFAR-10 (JPEG copy)" : `image folder ${dir}` };
}
