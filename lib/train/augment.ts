/**
 * Training augmentation on preprocessed NCHW images, CIFAR style: pad-and-random-crop (padding filled with
 * the normalised value of a black pixel, as torchvision pads before normalising) and a random horizontal
 * flip (timm's `hflip`). Each image's draws depend only on (seed, epoch, sample index), so a resumed run
 * augments exactly as an uninterrupted one.
 *
 * @module
 */
import { mixSeed, Rng } from "./rng.ts";

/** Augmentation parameters. */
export interface AugmentOptions {
  /** Pixels of padding for the random crop; 0 disables cropping. */
  cropPad: number;
  /** Probability of a horizontal flip. */
  hflip: number;
  /** Per-channel value the padding takes (the normalised 0 pixel: −mean/std). */
  fill: readonly number[];
}

/** Augments `x` (`[n, C, H, W]`) in place; `sampleIds[i]` identifies image i for its random draws. */
export function augmentBatch(
  x: Float32Array,
  shape: readonly [number, number, number, number],
  sampleIds: ArrayLike<number>,
  seed: number,
  epoch: number,
  o: AugmentOptions,
): void {
  const [n, C, H, W] = shape;
  if (o.cropPad <= 0 && o.hflip <= 0) return;
  const plane = H * W;
  const tmp = new Float32Array(C * plane);
  for (let i = 0; i < n; i++) {
    const rng = new Rng(mixSeed(seed, epoch, sampleIds[i], 0xa0a0));
    const dy = o.cropPad > 0 ? rng.int(2 * o.cropPad + 1) - o.cropPad : 0;
    const dx = o.cropPad > 0 ? rng.int(2 * o.cropPad + 1) - o.cropPad : 0;
    const flip = rng.uniform() < o.hflip;
    if (dx === 0 && dy === 0 && !flip) continue;
    const img = x.subarray(i * C * plane, (i + 1) * C * plane);
    tmp.set(img);
    for (let c = 0; c < C; c++) {
      const src = c * plane;
      for (let y = 0; y < H; y++) {
        const sy = y + dy;
        for (let xo = 0; xo < W; xo++) {
          const xx = flip ? W - 1 - xo : xo;
          const sx = xx + dx;
          img[src + y * W + xo] = sy >= 0 && sy < H && sx >= 0 && sx < W ? tmp[src + sy * W + sx] : o.fill[c];
        }
      }
    }
  }
}
