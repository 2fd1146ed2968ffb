/**
 * A synthetic, learnable image set for tests and smoke runs (`data_dir: synthetic:<n>`): each class is a
 * fixed colour-and-stripe pattern plus seeded noise, so a micro ViT can learn it within a few updates and
 * no dataset files are needed. The images are 8-bit RGB like decoded files, so they take the same
 * preprocessing and training augmentation as real data.
 *
 * @module
 */
import { checkIndex, type Dataset } from "../data/dataset.ts";
import { defaultPreprocessing, type Preprocessing } from "../weights/manifest.ts";
import { datasetImageSet, type ImageSet } from "../data/image_set.ts";
import { mixSeed, normal, Rng } from "./rng.ts";

/** `n` RGB images of `classes` classes at `size`×`size`, deterministic in `seed`. */
export function syntheticDataset(n: number, size: number, classes = 10, seed = 1): Dataset {
  const labels = Int32Array.from({ length: n }, (_, i) => i % classes);
  return {
    length: n,
    classes: Array.from({ length: classes }, (_, k) => `class_${k}`),
    labels,
    get(i: number) {
      checkIndex(i, n, "synthetic set");
      const k = labels[i];
      const rng = new Rng(mixSeed(seed, i));
      const data = new Uint8Array(size * size * 3);
      for (let c = 0; c < 3; c++) {
        const base = Math.sin(k * 1.7 + c * 2.1);
        for (let y = 0; y < size; y++) {
          for (let x = 0; x < size; x++) {
            const stripe = ((k % 2 ? x : y) >> (k % 3)) & 1 ? 0.5 : -0.5;
            // ±1 around mid-grey is ±0.5 after the default normalisation (mean = std = 0.5).
            const v = 127.5 + 63.75 * (base + stripe + 0.3 * normal(rng));
            data[(y * size + x) * 3 + c] = Math.min(255, Math.max(0, Math.round(v)));
          }
        }
      }
      return Promise.resolve({ image: { width: size, height: size, data }, label: k });
    },
    describe: (i) => `synthetic image ${i}`,
  };
}

/** The preprocessing of a model trained from scratch (`deno task train` without a checkpoint). */
export function syntheticPreprocessing(size: number): Preprocessing {
  return { ...defaultPreprocessing(size), crop_pct: 1 };
}

/** {@linkcode syntheticDataset} as an {@linkcode ImageSet}, preprocessed with `pre`. */
export function syntheticImageSet(
  n: number,
  size: number,
  classes = 10,
  seed = 1,
  pre: Preprocessing = syntheticPreprocessing(size),
): ImageSet {
  return datasetImageSet(syntheticDataset(n, size, classes, seed), pre);
}
