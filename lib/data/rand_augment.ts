/**
 * RandAugment as timm's `auto_augment.py` defines it (`--aa rand-m9-mstd0.5-inc1`), on 8-bit RGB images:
 * each image gets `n` ops drawn uniformly with replacement from timm's RandAugment op list (the
 * "increasing" variants with `inc1`); each op runs with probability 0.5 at magnitude `m` (out of 10),
 * jittered by a normal of std `mstd` (uniform in [0, m] when `mstd` > 100) and clipped to [0, `mmax`
 * (default 10)]. The ops are Pillow's (ImageOps, ImageEnhance, `Image.transform`/`rotate` with the fill
 * colour = the normalisation mean in 8 bits and a random choice of bilinear or bicubic resampling, as timm's
 * default `train_interpolation: random`); their numerics follow Pillow's C code (blends truncate, the
 * smoothing filter rounds, affine resampling truncates).
 *
 * Written here rather than taken from npm: no npm image library reproduces Pillow's op definitions, and
 * these are a few table lookups and one affine sampler. Every draw comes from the `Rng` the caller passes
 * (a function of seed, epoch and sample id), so augmentation stays deterministic and resumable.
 *
 * @module
 */
import type { RgbImage } from "./image.ts";
import { normal, type Rng } from "./rng.ts";

/** A parsed RandAugment spec (timm's `rand-...` string). */
export interface RandAugmentConfig {
  /** The spec as given, e.g. `rand-m9-mstd0.5-inc1`. */
  spec: string;
  /** Magnitude in [0, 10] (`m`, default 10). */
  magnitude: number;
  /** Ops per image (`n`, default 2). */
  numLayers: number;
  /** Std of the magnitude's normal jitter (`mstd`, default 0); Infinity means uniform in [0, magnitude]. */
  magnitudeStd: number;
  /** Upper clip of the jittered magnitude (`mmax`, default 10). */
  magnitudeMax: number;
  /** timm's `_RAND_INCREASING_TRANSFORMS` (`inc1`) instead of `_RAND_TRANSFORMS`. */
  increasing: boolean;
}

/** timm's `_RAND_TRANSFORMS`. */
export const RAND_OPS = [
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "Posterize",
  "Solarize",
  "SolarizeAdd",
  "Color",
  "Contrast",
  "Brightness",
  "Sharpness",
  "ShearX",
  "ShearY",
  "TranslateXRel",
  "TranslateYRel",
] as const;

/** timm's `_RAND_INCREASING_TRANSFORMS`. */
export const RAND_INCREASING_OPS = [
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "PosterizeIncreasing",
  "SolarizeIncreasing",
  "SolarizeAdd",
  "ColorIncreasing",
  "ContrastIncreasing",
  "BrightnessIncreasing",
  "SharpnessIncreasing",
  "ShearX",
  "ShearY",
  "TranslateXRel",
  "TranslateYRel",
] as const;

/** An op name of either list. */
export type RandOp = typeof RAND_OPS[number] | typeof RAND_INCREASING_OPS[number];

const LEVEL_DENOM = 10;

/**
 * Parses timm's RandAugment string (`rand` followed by `-`-separated sections `m<int>`, `n<int>`,
 * `mstd<float>`, `mmax<int>`, `inc<0|1>`). Throws naming the bad section; AutoAugment policies, AugMix and
 * op weights (`w`) are not implemented.
 */
export function parseRandAugment(spec: string): RandAugmentConfig {
  const bad = (why: string): never => {
    throw new Error(`aa: ${JSON.stringify(spec)} ${why}`);
  };
  if (typeof spec !== "string") bad("must be a string such as rand-m9-mstd0.5-inc1");
  const parts = spec.split("-");
  if (parts[0] !== "rand") {
    bad(
      "is not a RandAugment string (expected rand-m<M>[-n<N>][-mstd<S>][-mmax<X>][-inc<0|1>], e.g. " +
        "rand-m9-mstd0.5-inc1; AutoAugment policies and augmix are not implemented)",
    );
  }
  const c: RandAugmentConfig = {
    spec,
    magnitude: LEVEL_DENOM,
    numLayers: 2,
    magnitudeStd: 0,
    magnitudeMax: LEVEL_DENOM,
    increasing: false,
  };
  for (const section of parts.slice(1)) {
    const m = /^([a-z]+)(\d.*)$/.exec(section);
    if (!m) bad(`has a section ${JSON.stringify(section)} that is not <key><number>`);
    const [, key, val] = m!;
    const num = Number(val);
    const int = () => {
      if (!/^\d+$/.test(val)) bad(`section ${JSON.stringify(section)}: ${key} takes an integer`);
      return num;
    };
    if (key === "m") c.magnitude = int();
    else if (key === "n") c.numLayers = int();
    else if (key === "mmax") c.magnitudeMax = int();
    else if (key === "inc") c.increasing = int() !== 0;
    else if (key === "mstd") {
      if (!Number.isFinite(num) || num < 0) {
        bad(`section ${JSON.stringify(section)}: mstd takes a number ≥ 0`);
      }
      c.magnitudeStd = num > 100 ? Infinity : num;
    } else if (key === "w") bad("uses op weights (w), which are not implemented");
    else bad(`has an unknown section ${JSON.stringify(section)} (known: m, n, mstd, mmax, inc)`);
  }
  if (c.numLayers < 1) bad("needs n ≥ 1");
  return c;
}

// ---- Pillow's point ops and enhancers ----

function mapLut(img: RgbImage, lut: (v: number, band: number) => number): RgbImage {
  const tables = [0, 1, 2].map((b) => Uint8Array.from({ length: 256 }, (_, v) => lut(v, b)));
  const data = new Uint8Array(img.data.length);
  for (let i = 0; i < data.length; i++) data[i] = tables[i % 3][img.data[i]];
  return { width: img.width, height: img.height, data };
}

function histograms(img: RgbImage): Int32Array[] {
  const h = [new Int32Array(256), new Int32Array(256), new Int32Array(256)];
  for (let i = 0; i < img.data.length; i++) h[i % 3][img.data[i]]++;
  return h;
}

/** `ImageOps.autocontrast(img)` (cutoff 0): each band stretched so its darkest value is 0, brightest 255. */
export function autoContrast(img: RgbImage): RgbImage {
  const luts = histograms(img).map((h) => {
    let lo = 0, hi = 255;
    while (lo < 256 && h[lo] === 0) lo++;
    while (hi >= 0 && h[hi] === 0) hi--;
    if (hi <= lo) return (v: number) => v;
    const scale = 255 / (hi - lo), offset = -lo * scale;
    return (v: number) => Math.min(255, Math.max(0, Math.trunc(v * scale + offset)));
  });
  return mapLut(img, (v, b) => luts[b](v));
}

/** `ImageOps.equalize(img)`: each band's histogram equalised (Pillow's step and rounding). */
export function equalize(img: RgbImage): RgbImage {
  const luts = histograms(img).map((h) => {
    const nonzero = [...h].filter((x) => x > 0);
    if (nonzero.length <= 1) return null;
    const step = Math.floor((nonzero.reduce((a, b) => a + b, 0) - nonzero[nonzero.length - 1]) / 255);
    if (step === 0) return null;
    const lut = new Uint8Array(256);
    let n = Math.floor(step / 2);
    for (let i = 0; i < 256; i++) {
      lut[i] = Math.min(255, Math.floor(n / step));
      n += h[i];
    }
    return lut;
  });
  return mapLut(img, (v, b) => luts[b] ? luts[b]![v] : v);
}

/** `ImageOps.invert`. */
export function invert(img: RgbImage): RgbImage {
  return mapLut(img, (v) => 255 - v);
}

/** `ImageOps.posterize(img, bits)`: keeps the top `bits` bits (timm: unchanged at 8 or more). */
export function posterize(img: RgbImage, bits: number): RgbImage {
  if (bits >= 8) return img;
  const mask = ~((1 << (8 - bits)) - 1) & 0xff;
  return mapLut(img, (v) => v & mask);
}

/** `ImageOps.solarize(img, threshold)`: values at or above the threshold inverted. */
export function solarize(img: RgbImage, threshold: number): RgbImage {
  return mapLut(img, (v) => v < threshold ? v : 255 - v);
}

/** timm's `solarize_add`: `add` added (clipped at 255) to values below `threshold` (128). */
export function solarizeAdd(img: RgbImage, add: number, threshold = 128): RgbImage {
  return mapLut(img, (v) => v < threshold ? Math.min(255, v + add) : v);
}

/** Pillow's `Image.blend(a, b, alpha)` on 8-bit data: `a + alpha·(b − a)` in float32, truncated, clipped. */
function blend(a: Uint8Array, b: Uint8Array, alpha: number, width: number, height: number): RgbImage {
  if (alpha === 0) return { width, height, data: a.slice() };
  if (alpha === 1) return { width, height, data: b.slice() };
  const f = Math.fround(alpha);
  const data = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const t = Math.fround(a[i] + Math.fround(f * (b[i] - a[i])));
    data[i] = t <= 0 ? 0 : t >= 255 ? 255 : Math.trunc(t);
  }
  return { width, height, data };
}

/** Pillow's RGB → L: `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`. */
function luma(d: Uint8Array, p: number): number {
  return (d[p] * 19595 + d[p + 1] * 38470 + d[p + 2] * 7471 + 0x8000) >> 16;
}

/** `ImageEnhance.Color(img).enhance(factor)`: blend with the image's greyscale. */
export function color(img: RgbImage, factor: number): RgbImage {
  const grey = new Uint8Array(img.data.length);
  for (let p = 0; p < grey.length; p += 3) grey[p] = grey[p + 1] = grey[p + 2] = luma(img.data, p);
  return blend(grey, img.data, factor, img.width, img.height);
}

/** `ImageEnhance.Contrast(img).enhance(factor)`: blend with a flat image at the mean greyscale (rounded). */
export function contrast(img: RgbImage, factor: number): RgbImage {
  let sum = 0;
  for (let p = 0; p < img.data.length; p += 3) sum += luma(img.data, p);
  const mean = Math.floor(sum / (img.width * img.height) + 0.5);
  return blend(new Uint8Array(img.data.length).fill(mean), img.data, factor, img.width, img.height);
}

/** `ImageEnhance.Brightness(img).enhance(factor)`: blend with black. */
export function brightness(img: RgbImage, factor: number): RgbImage {
  return blend(new Uint8Array(img.data.length), img.data, factor, img.width, img.height);
}

/**
 * `ImageEnhance.Sharpness(img).enhance(factor)`: blend with `ImageFilter.SMOOTH` (3×3 kernel
 * [[1,1,1],[1,5,1],[1,1,1]]/13, rounded; border pixels kept).
 */
export function sharpness(img: RgbImage, factor: number): RgbImage {
  const { width: W, height: H, data: s } = img;
  const smooth = s.slice();
  const k = Math.fround(1 / 13);
  for (let y = 1; y < H - 1; y++) {
    for (let x = 1; x < W - 1; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            sum += s[((y + dy) * W + x + dx) * 3 + c] * (dx === 0 && dy === 0 ? 5 : 1);
          }
        }
        const v = Math.fround(sum * k + 0.5);
        smooth[(y * W + x) * 3 + c] = v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v);
      }
    }
  }
  return blend(smooth, s, factor, W, H);
}

// ---- Pillow's affine transform ----

/** Resampling of the geometric ops (Pillow's BILINEAR / BICUBIC affine filters). */
export type AffineResample = "bilinear" | "bicubic";

/**
 * `img.transform(size, AFFINE, m, resample, fillcolor=fill)`: output pixel (x, y) samples the input at
 * `(m0(x+½) + m1(y+½) + m2, m3(x+½) + m4(y+½) + m5)`; samples outside the image take `fill`.
 */
export function affine(
  img: RgbImage,
  m: readonly number[],
  resample: AffineResample,
  fill: readonly number[],
): RgbImage {
  const { width: W, height: H, data: s } = img;
  const data = new Uint8Array(s.length);
  const xc = (x: number) => x < 0 ? 0 : x >= W ? W - 1 : x;
  const yc = (y: number) => y < 0 ? 0 : y >= H ? H - 1 : y;
  // Pillow's cubic (a = −1) on four taps.
  const cubic = (v1: number, v2: number, v3: number, v4: number, d: number) =>
    v2 + d * (-v1 + v3 + d * (2 * (v1 - v2) + v3 - v4 + d * (-v1 + v2 - v3 + v4)));
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const o = (y * W + x) * 3;
      let xin = m[0] * (x + 0.5) + m[1] * (y + 0.5) + m[2];
      let yin = m[3] * (x + 0.5) + m[4] * (y + 0.5) + m[5];
      if (xin < 0 || xin >= W || yin < 0 || yin >= H) {
        data[o] = fill[0];
        data[o + 1] = fill[1];
        data[o + 2] = fill[2];
        continue;
      }
      xin -= 0.5;
      yin -= 0.5;
      const fx = Math.floor(xin), fy = Math.floor(yin);
      const dx = xin - fx, dy = yin - fy;
      for (let c = 0; c < 3; c++) {
        const at = (xx: number, yy: number) => s[(yy * W + xc(xx)) * 3 + c];
        let v: number;
        if (resample === "bilinear") {
          const r0 = yc(fy);
          const a = at(fx, r0) + (at(fx + 1, r0) - at(fx, r0)) * dx;
          let b = a;
          if (fy + 1 >= 0 && fy + 1 < H) b = at(fx, fy + 1) + (at(fx + 1, fy + 1) - at(fx, fy + 1)) * dx;
          v = a + (b - a) * dy;
        } else {
          const row = (yy: number) => cubic(at(fx - 1, yy), at(fx, yy), at(fx + 1, yy), at(fx + 2, yy), dx);
          const v1 = row(yc(fy - 1));
          const v2 = fy >= 0 && fy < H ? row(fy) : v1;
          const v3 = fy + 1 >= 0 && fy + 1 < H ? row(fy + 1) : v2;
          const v4 = fy + 2 >= 0 && fy + 2 < H ? row(fy + 2) : v3;
          v = cubic(v1, v2, v3, v4, dy);
        }
        data[o + c] = v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v);
      }
    }
  }
  return { width: W, height: H, data };
}

/** `img.rotate(degrees, resample, fillcolor=fill)`: counter-clockwise about the centre, same size. */
export function rotate(
  img: RgbImage,
  degrees: number,
  resample: AffineResample,
  fill: readonly number[],
): RgbImage {
  if (degrees % 360 === 0) return { ...img, data: img.data.slice() };
  const cx = img.width / 2, cy = img.height / 2;
  const a = -degrees * Math.PI / 180;
  const r = (v: number) => Math.round(v * 1e15) / 1e15; // Pillow rounds the matrix to 15 digits
  const m = [r(Math.cos(a)), r(Math.sin(a)), 0, r(-Math.sin(a)), r(Math.cos(a)), 0];
  m[2] = m[0] * -cx + m[1] * -cy + cx;
  m[5] = m[3] * -cx + m[4] * -cy + cy;
  return affine(img, m, resample, fill);
}

// ---- timm's level → argument mapping and the op table ----

/** What an op needs besides its magnitude. */
export interface OpContext {
  /** Fill colour of the geometric ops: the normalisation mean in 8 bits (timm's `img_mean`). */
  fill: readonly number[];
  /** Draws for random signs and the resampling choice. */
  rng: Rng;
}

function negate(v: number, rng: Rng): number {
  return rng.uniform() > 0.5 ? -v : v;
}

function resampling(rng: Rng): AffineResample {
  return rng.uniform() < 0.5 ? "bilinear" : "bicubic";
}

/**
 * Applies op `name` at `magnitude` (0..10, already jittered) as timm's `AugmentOp` does after its
 * probability check: the level function (with its random sign), then the Pillow op.
 */
export function applyOp(img: RgbImage, name: RandOp, magnitude: number, ctx: OpContext): RgbImage {
  const level = magnitude / LEVEL_DENOM, rng = ctx.rng;
  const enhance = () => level * 1.8 + 0.1;
  const enhanceInc = () => Math.max(0.1, 1 + negate(level * 0.9, rng));
  const shear = () => negate(level * 0.3, rng);
  const translate = () => negate(level * 0.45, rng);
  switch (name) {
    case "AutoContrast":
      return autoContrast(img);
    case "Equalize":
      return equalize(img);
    case "Invert":
      return invert(img);
    case "Rotate": {
      const deg = negate(level * 30, rng);
      return rotate(img, deg, resampling(rng), ctx.fill);
    }
    case "Posterize":
      return posterize(img, Math.trunc(level * 4));
    case "PosterizeIncreasing":
      return posterize(img, 4 - Math.trunc(level * 4));
    case "Solarize":
      return solarize(img, Math.trunc(level * 256));
    case "SolarizeIncreasing":
      return solarize(img, 256 - Math.trunc(level * 256));
    case "SolarizeAdd":
      return solarizeAdd(img, Math.trunc(level * 110));
    case "Color":
      return color(img, enhance());
    case "ColorIncreasing":
      return color(img, enhanceInc());
    case "Contrast":
      return contrast(img, enhance());
    case "ContrastIncreasing":
      return contrast(img, enhanceInc());
    case "Brightness":
      return brightness(img, enhance());
    case "BrightnessIncreasing":
      return brightness(img, enhanceInc());
    case "Sharpness":
      return sharpness(img, enhance());
    case "SharpnessIncreasing":
      return sharpness(img, enhanceInc());
    case "ShearX": {
      const f = shear();
      return affine(img, [1, f, 0, 0, 1, 0], resampling(rng), ctx.fill);
    }
    case "ShearY": {
      const f = shear();
      return affine(img, [1, 0, 0, f, 1, 0], resampling(rng), ctx.fill);
    }
    case "TranslateXRel": {
      const px = translate() * img.width;
      return affine(img, [1, 0, px, 0, 1, 0], resampling(rng), ctx.fill);
    }
    case "TranslateYRel": {
      const px = translate() * img.height;
      return affine(img, [1, 0, 0, 0, 1, px], resampling(rng), ctx.fill);
    }
  }
}

/**
 * timm's `RandAugment(img)`: `numLayers` ops drawn uniformly with replacement, each applied with
 * probability 0.5 at the (jittered, clipped) magnitude. Draw order per op: its index (all indices first),
 * then per op the probability, the magnitude jitter, the sign, the resampling.
 */
export function randAugment(
  img: RgbImage,
  c: RandAugmentConfig,
  rng: Rng,
  fill: readonly number[],
): RgbImage {
  const ops = c.increasing ? RAND_INCREASING_OPS : RAND_OPS;
  const chosen = Array.from({ length: c.numLayers }, () => ops[rng.int(ops.length)]);
  let out = img;
  for (const name of chosen) {
    if (rng.uniform() > 0.5) continue;
    let m = c.magnitude;
    if (c.magnitudeStd === Infinity) m = rng.range(0, m);
    else if (c.magnitudeStd > 0) m = m + c.magnitudeStd * normal(rng);
    m = Math.max(0, Math.min(m, c.magnitudeMax));
    out = applyOp(out, name, m, { fill, rng });
  }
  return out;
}

/** timm's RandAugment fill colour for a normalisation mean: `min(255, round(255·mean))` per channel. */
export function fillColor(mean: readonly number[]): number[] {
  return mean.map((m) => Math.min(255, Math.round(255 * m)));
}
