/**
 * Image → model input, as timm prepares it; the one implementation shared by training, evaluation and
 * serving. Output is float32 CHW per image, NCHW for a batch (the model takes `[n, 3, H, W]`).
 *
 * Evaluation (timm `transforms_imagenet_eval`, crop_mode "center"): resize the shorter side to
 * `floor(img_size / crop_pct)` (the longer side to `trunc(size · long / short)`, as torchvision), take the
 * centred `img_size` square (offsets rounded half-to-even, as torchvision's `round`), then
 * `(x/255 − mean) / std`. With crop_pct = 1 a square image is simply resized to img_size. Resizing follows
 * `F.interpolate` (see resize.ts); `antialias: true` gives PIL-like shrinking for large photos.
 *
 * Training: optional CIFAR-style random crop with black padding (on the source pixels), then either
 * RandomResizedCrop or the evaluation geometry, an optional horizontal flip, RandAugment and random
 * erasing, as augment.ts defines them; {@linkcode preprocessSample} takes a sample's draws from its
 * (seed, epoch, sample id).
 *
 * @module
 */
import type { Preprocessing } from "../weights/manifest.ts";
import {
  augmentRng,
  augments,
  checkAugment,
  type EpochAugment,
  randomPadCrop,
  randomResizedCropBox,
  RRC_DEFAULTS,
  type TrainAugment,
} from "./augment.ts";
import { checkRgbImage, type RgbImage } from "./image.ts";
import { fillColor, randAugment } from "./rand_augment.ts";
import { randomErase } from "./random_erasing.ts";
import { type Box, resampleInto } from "./resize.ts";
import type { Rng } from "./rng.ts";

export type { Preprocessing } from "../weights/manifest.ts";

/** Preprocessing plus how to shrink: `antialias` (default false, as the fixtures and `F.interpolate`). */
export type PreprocessConfig = Preprocessing & { antialias?: boolean };

/** Python's `round` (half to even), which torchvision's center crop uses. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Throws unless `p` is a usable preprocessing config, naming the bad field. */
export function checkPreprocessing(p: PreprocessConfig): void {
  const bad = (field: string, want: string, got: unknown) => {
    throw new Error(`preprocessing.${field}: expected ${want}, got ${JSON.stringify(got)}`);
  };
  if (!Number.isInteger(p.img_size) || p.img_size < 1) bad("img_size", "a positive integer", p.img_size);
  if (!(p.crop_pct > 0 && p.crop_pct <= 1)) bad("crop_pct", "a number in (0, 1]", p.crop_pct);
  if (p.interpolation !== "bilinear" && p.interpolation !== "bicubic") {
    bad("interpolation", '"bilinear" or "bicubic"', p.interpolation);
  }
  for (const f of ["mean", "std"] as const) {
    const v = p[f];
    if (
      !Array.isArray(v) || v.length !== 3 || v.some((x) => !Number.isFinite(x) || (f === "std" && x <= 0))
    ) {
      bad(f, f === "std" ? "three positive numbers" : "three numbers", v);
    }
  }
}

/** Evaluation geometry for a `width`×`height` image: the resize size and the crop box in it. */
export function evalGeometry(
  width: number,
  height: number,
  p: Pick<Preprocessing, "img_size" | "crop_pct">,
): { resizeWidth: number; resizeHeight: number; crop: Box } {
  const size = p.img_size;
  const scaleSize = Math.floor(size / p.crop_pct);
  let resizeWidth: number, resizeHeight: number;
  if (width <= height) {
    resizeWidth = scaleSize;
    resizeHeight = Math.trunc((scaleSize * height) / width);
  } else {
    resizeHeight = scaleSize;
    resizeWidth = Math.trunc((scaleSize * width) / height);
  }
  const crop = {
    x: roundHalfEven((resizeWidth - size) / 2),
    y: roundHalfEven((resizeHeight - size) / 2),
    w: size,
    h: size,
  };
  return { resizeWidth, resizeHeight, crop };
}

function target(p: PreprocessConfig, out: Float32Array | undefined, offset: number): Float32Array {
  checkPreprocessing(p);
  const n = 3 * p.img_size * p.img_size;
  const buf = out ?? new Float32Array(n);
  if (buf.length < offset + n) {
    throw new Error(`preprocess: output holds ${buf.length} floats, needs ${offset + n}`);
  }
  return buf;
}

/**
 * Evaluation preprocessing of one image into `out` at `offset` (a fresh `[3, S, S]` array when omitted).
 * Returns the array written.
 */
export function preprocessEval(
  img: RgbImage,
  p: PreprocessConfig,
  out?: Float32Array,
  offset = 0,
): Float32Array {
  checkRgbImage(img);
  const buf = target(p, out, offset);
  const g = evalGeometry(img.width, img.height, p);
  resampleInto(
    img,
    {
      window: { x: 0, y: 0, w: img.width, h: img.height },
      ...g,
      interpolation: p.interpolation,
      antialias: p.antialias ?? false,
      flip: false,
      mean: p.mean,
      std: p.std,
    },
    buf,
    offset,
  );
  return buf;
}

/**
 * Training preprocessing of one image: padded random crop, RandomResizedCrop (or the eval geometry),
 * flip, RandAugment and random erasing as `aug` says, every draw from `rng` (fixed order: pad offsets, crop
 * box, flip, RandAugment, erasing). With RandAugment the crop is first resampled to an 8-bit image (as
 * timm's PIL pipeline hands RandAugment a uint8 image), augmented, then normalised.
 */
export function preprocessTrain(
  img: RgbImage,
  p: PreprocessConfig,
  aug: TrainAugment,
  rng: Rng,
  out?: Float32Array,
  offset = 0,
): Float32Array {
  checkRgbImage(img);
  checkAugment(aug);
  const buf = target(p, out, offset);
  const src = aug.crop_padding && aug.crop_padding > 0 ? randomPadCrop(img, aug.crop_padding, rng) : img;
  let window: Box = { x: 0, y: 0, w: src.width, h: src.height };
  let geometry: { resizeWidth: number; resizeHeight: number; crop: Box };
  if (aug.random_resized_crop) {
    const o = aug.random_resized_crop === true ? RRC_DEFAULTS : aug.random_resized_crop;
    window = randomResizedCropBox(src.width, src.height, rng, o.scale, o.ratio);
    const s = p.img_size;
    geometry = { resizeWidth: s, resizeHeight: s, crop: { x: 0, y: 0, w: s, h: s } };
  } else {
    geometry = evalGeometry(src.width, src.height, p);
  }
  const flip = (aug.hflip ?? 0) > 0 && rng.uniform() < aug.hflip!;
  const spec = {
    window,
    ...geometry,
    interpolation: p.interpolation,
    antialias: p.antialias ?? false,
    flip,
    mean: p.mean,
    std: p.std,
  };
  if (aug.rand_augment) {
    const crop = toUint8(src, spec, p.img_size);
    const augmented = randAugment(crop, aug.rand_augment, rng, fillColor(p.mean));
    normalizeInto(augmented, p, buf, offset);
  } else {
    resampleInto(src, spec, buf, offset);
  }
  if (aug.random_erasing && aug.random_erasing.prob > 0) {
    randomErase(buf, offset, 3, p.img_size, p.img_size, aug.random_erasing, rng);
  }
  return buf;
}

/** The resampled crop as an 8-bit HWC image (rounded and clipped, as PIL's resize outputs). */
function toUint8(src: RgbImage, spec: Parameters<typeof resampleInto>[1], size: number): RgbImage {
  const plane = size * size, chw = new Float32Array(3 * plane);
  resampleInto(src, { ...spec, mean: [0, 0, 0], std: [1 / 255, 1 / 255, 1 / 255] }, chw, 0);
  const data = new Uint8Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) data[i * 3 + c] = Math.min(255, Math.max(0, Math.round(chw[c * plane + i])));
  }
  return { width: size, height: size, data };
}

/** `(v/255 − mean)/std` of an 8-bit HWC image into CHW planes of `out` at `offset`. */
function normalizeInto(img: RgbImage, p: Preprocessing, out: Float32Array, offset: number): void {
  const plane = img.width * img.height;
  for (let c = 0; c < 3; c++) {
    const a = 1 / (255 * p.std[c]), b = p.mean[c] / p.std[c];
    for (let i = 0; i < plane; i++) out[offset + c * plane + i] = img.data[i * 3 + c] * a - b;
  }
}

/**
 * Sample `sampleId`'s model input: with `aug`, its training augmentation in `aug.epoch` (draws from
 * `augmentRng(aug.seed, aug.epoch, sampleId)`), else (or when `aug` augments nothing) the evaluation
 * preprocessing. Writes into `out` at `offset` (a fresh array when omitted) and returns the array.
 */
export function preprocessSample(
  img: RgbImage,
  p: PreprocessConfig,
  sampleId: number,
  aug?: EpochAugment,
  out?: Float32Array,
  offset = 0,
): Float32Array {
  if (!aug || !augments(aug.augment)) return preprocessEval(img, p, out, offset);
  return preprocessTrain(img, p, aug.augment, augmentRng(aug.seed, aug.epoch, sampleId), out, offset);
}

/** Evaluation preprocessing of several images into one NCHW batch. */
export function preprocessEvalBatch(
  images: readonly RgbImage[],
  p: PreprocessConfig,
): { input: Float32Array; shape: [number, number, number, number] } {
  const s = p.img_size, per = 3 * s * s;
  const input = new Float32Array(images.length * per);
  images.forEach((img, i) => preprocessEval(img, p, input, i * per));
  return { input, shape: [images.length, 3, s, s] };
}
