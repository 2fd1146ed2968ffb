/**
 * Adapts a lib/data {@linkcode Dataset} (decoded on demand, cached) to the {@linkcode ImageSet} training and
 * evaluation read: batches are lib/data's evaluation preprocessing (resize, center crop, normalise) of the
 * model's {@linkcode Preprocessing}, or its training augmentation when asked (`preprocessSample`).
 *
 * @module
 */
import { openCifar10 } from "../data/cifar10.ts";
import type { EpochAugment } from "../data/augment.ts";
import { CachedDataset, type Dataset } from "../data/dataset.ts";
import { openImageFolder } from "../data/image_folder.ts";
import { preprocessSample } from "../data/preprocess.ts";
import type { Preprocessing } from "../weights/manifest.ts";
import type { ImageSet } from "./image_set.ts";
import { isDirectory } from "../util/fs.ts";

/**
 * An image set over `ds`, preprocessed for `pre`. Decoded images are cached in memory up to `cacheBytes`
 * (all of CIFAR-10's 50,000 training images take 150 MB), so each is decoded once per process.
 */
export function datasetImageSet(ds: Dataset, pre: Preprocessing, cacheBytes = 1024 * 2 ** 20): ImageSet {
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
 * Opens split `split` of `data` and names it: a folder holding `cifar-10-batches-bin/` (canonical) or
 * `cifar10-jpeg/<split>/` (as `deno task data` prepares), a folder with `<split>/<class>/*`, or a class
 * folder itself.
 */
export async function openEvalData(data: string, split: string): Promise<{ dataset: Dataset; name: string }> {
  if (
    (split === "test" || split === "train") &&
    (await isDirectory(`${data}/cifar-10-batches-bin`) || await isDirectory(`${data}/cifar10-jpeg`))
  ) {
    const { dataset, source } = await openCifar10(data, split);
    return { dataset, name: source === "binary" ? "CIFAR-10 (canonical binary)" : "CIFAR-10 (JPEG copy)" };
  }
  const dir = await isDirectory(`${data}/${split}`) ? `${data}/${split}` : data;
  const dataset = await openImageFolder(dir);
  const cifar = dataset.classes.join() === "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck";
  return { dataset, name: cifar ? "CIFAR-10 (JPEG copy)" : `image folder ${dir}` };
}
