/**
 * A synthetic, learnable image set for tests and smoke runs (`data_dir: synthetic:<n>`): each class is a
 * fixed colour-and-stripe pattern plus seeded noise, so a micro ViT can learn it within a few updates and
 * no dataset files are needed.
 *
 * @module
 */
import type { ImageSet } from "./image_set.ts";
import { mixSeed, normal, Rng } from "./rng.ts";

/** `n` images of `classes` classes at `size`×`size`, deterministic in `seed`. */
export function syntheticImageSet(n: number, size: number, classes = 10, seed = 1): ImageSet {
  const labels = Int32Array.from({ length: n }, (_, i) => i % classes);
  const plane = size * size;
  return {
    size: n,
    labels,
    shape: [3, size, size],
    images(indices: ArrayLike<number>): Promise<Float32Array> {
      const out = new Float32Array(indices.length * 3 * plane);
      for (let b = 0; b < indices.length; b++) {
        const i = indices[b];
        if (!(i >= 0 && i < n)) throw new Error(`synthetic set: index ${i} outside [0, ${n})`);
        const k = labels[i];
        const rng = new Rng(mixSeed(seed, i));
        for (let c = 0; c < 3; c++) {
          const base = Math.sin(k * 1.7 + c * 2.1);
          for (let y = 0; y < size; y++) {
            for (let x = 0; x < size; x++) {
              const stripe = ((k % 2 ? x : y) >> (k % 3)) & 1 ? 0.5 : -0.5;
              out[b * 3 * plane + c * plane + y * size + x] = base + stripe + 0.3 * normal(rng);
            }
          }
        }
      }
      return Promise.resolve(out);
    },
  };
}
