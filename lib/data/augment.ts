/**
 * Training augmentation, as timm/torchvision define it on the source image: a random crop of the image's
 * own size from the image padded with black pixels (torchvision `RandomCrop(size, padding, fill=0)`, the
 * CIFAR recipe), RandomResizedCrop (torchvision's sampling, timm's defaults scale (0.08, 1), ratio
 * (3/4, 4/3)) and a horizontal flip with probability `hflip` (timm's `hflip`); then, as timm's
 * `transforms_imagenet_train`, RandAugment on the 8-bit cropped image (rand_augment.ts, timm's `aa`) and
 * random erasing on the normalised one (random_erasing.ts, timm's `reprob`/`remode`/`recount`).
 * `preprocessTrain` (preprocess.ts) applies the draws while resampling, so training, fine-tuning and the
 * batcher share this one implementation. (Mixup/CutMix mix whole batches: mixup.ts, applied by the
 * training loop.)
 *
 * Every draw of a sample comes from {@linkcode augmentRng}`(seed, epoch, sampleId)`: an image's
 * augmentation does not depend on the batch it lands in, the data order or what ran before, so a run
 * resumed from a checkpoint augments exactly as an uninterrupted one.
 *
 * @module
 */
import type { RgbImage } from "./image.ts";
import type { Box } from "./resize.ts";
import type { RandAugmentConfig } from "./rand_augment.ts";
import { checkRandomErasing, type RandomErasing } from "./random_erasing.ts";
import { Rng } from "./rng.ts";

/** Training augmentation. Omitted fields are off. */
export interface TrainAugment {
  /** RandomResizedCrop to img_size; `true` means timm's defaults (scale (0.08, 1), ratio (3/4, 4/3)). */
  random_resized_crop?: boolean | { scale: [number, number]; ratio: [number, number] };
  /** Pixels of black padding (in source pixels) for a random crop of the source's own size (CIFAR: 4). */
  crop_padding?: number;
  /** Probability of a horizontal flip (timm: 0.5). */
  hflip?: number;
  /** RandAugment (timm's `aa`, parsed by `parseRandAugment`), after the crop and flip. */
  rand_augment?: RandAugmentConfig;
  /** Random erasing of the normalised image (timm's `reprob`, `remode`, `recount`). */
  random_erasing?: RandomErasing;
}

/** One epoch's augmentation of a run: what to do and the run's seed; draws are per sample. */
export interface EpochAugment {
  augment: TrainAugment;
  seed: number;
  epoch: number;
}

/** timm's RandomResizedCrop defaults. */
export const RRC_DEFAULTS = {
  scale: [0.08, 1] as [number, number],
  ratio: [3 / 4, 4 / 3] as [number, number],
};

/**
 * The generator of sample `sampleId`'s draws in `epoch` of a run seeded `seed`. The salt keeps these
 * draws apart from the run's other uses of the seed (data order, weight init); it is also what training
 * runs checkpointed by earlier versions drew with, so they resume bit-exactly.
 */
export function augmentRng(seed: number, epoch: number, sampleId: number): Rng {
  return Rng.derive(seed, epoch, sampleId, 0xa0a0);
}

/** Whether `aug` changes anything (so evaluation preprocessing can be used instead). */
export function augments(aug: TrainAugment): boolean {
  return Boolean(aug.random_resized_crop) || (aug.crop_padding ?? 0) > 0 || (aug.hflip ?? 0) > 0 ||
    Boolean(aug.rand_augment) || (aug.random_erasing?.prob ?? 0) > 0;
}

/** Throws unless `aug` is usable, naming the bad field. */
export function checkAugment(aug: TrainAugment): void {
  const p = aug.crop_padding ?? 0;
  if (!Number.isInteger(p) || p < 0) {
    throw new Error(`augment.crop_padding: expected a non-negative integer, got ${JSON.stringify(p)}`);
  }
  const h = aug.hflip ?? 0;
  if (!(h >= 0 && h <= 1)) throw new Error(`augment.hflip: expected a probability in [0, 1], got ${h}`);
  if (aug.random_erasing) checkRandomErasing(aug.random_erasing);
  const r = aug.random_resized_crop;
  if (typeof r === "object") {
    const ok = (v: unknown) =>
      Array.isArray(v) && v.length === 2 && v.every((x) => Number.isFinite(x) && x > 0) && v[0] <= v[1];
    if (!ok(r.scale)) {
      throw new Error(`augment.random_resized_crop.scale: expected [lo, hi] with 0 < lo ≤ hi`);
    }
    if (!ok(r.ratio)) {
      throw new Error(`augment.random_resized_crop.ratio: expected [lo, hi] with 0 < lo ≤ hi`);
    }
  }
}

/**
 * torchvision's RandomResizedCrop box for a `width`×`height` image: up to 10 draws of area fraction in
 * `scale` and log-uniform aspect ratio in `ratio`, falling back to the largest centred box within `ratio`.
 */
export function randomResizedCropBox(
  width: number,
  height: number,
  rng: Rng,
  scale: readonly [number, number] = RRC_DEFAULTS.scale,
  ratio: readonly [number, number] = RRC_DEFAULTS.ratio,
): Box {
  const area = width * height;
  const logLo = Math.log(ratio[0]), logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.range(scale[0], scale[1]);
    const aspect = Math.exp(rng.range(logLo, logHi));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const y = rng.int(height - h + 1);
      const x = rng.int(width - w + 1);
      return { x, y, w, h };
    }
  }
  const inRatio = width / height;
  let w = width, h = height;
  if (inRatio < Math.min(...ratio)) h = Math.round(w / Math.min(...ratio));
  else if (inRatio > Math.max(...ratio)) w = Math.round(h * Math.max(...ratio));
  return { x: Math.floor((width - w) / 2), y: Math.floor((height - h) / 2), w, h };
}

/**
 * A random crop of the image's own size from the image padded by `pad` black pixels on every side
 * (torchvision `RandomCrop(size, padding=pad, fill=0)`); draws the row offset, then the column offset.
 */
export function randomPadCrop(img: RgbImage, pad: number, rng: Rng): RgbImage {
  const { width: W, height: H } = img;
  const dy = rng.int(2 * pad + 1) - pad;
  const dx = rng.int(2 * pad + 1) - pad;
  const data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    const sy = y + dy;
    if (sy < 0 || sy >= H) continue;
    for (let x = 0; x < W; x++) {
      const sx = x + dx;
      if (sx < 0 || sx >= W) continue;
      const s = (sy * W + sx) * 3, d = (y * W + x) * 3;
      data[d] = img.data[s];
      data[d + 1] = img.data[s + 1];
      data[d + 2] = img.data[s + 2];
    }
  }
  return { width: W, height: H, data };
}
