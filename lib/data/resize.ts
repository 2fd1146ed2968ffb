/**
 * Separable image resampling with PyTorch's numerics, written straight into a normalised NCHW tensor.
 *
 * Without antialias it is `F.interpolate(x, mode, align_corners=False)`: half-pixel centres, source
 * coordinate `scale·(dst + ½) − ½`, bilinear clamps that coordinate at 0, bicubic uses Keys' kernel with
 * a = −0.75 and clamps taps at the border. With antialias it is `F.interpolate(..., antialias=True)` (PIL's
 * algorithm): the kernel widens by the scale when shrinking (a = −0.5 for bicubic), weights renormalised.
 * Results are not clamped to [0, 255] (as PyTorch on float tensors).
 *
 * One call resizes a source window (a crop box) to a virtual size and produces only a sub-rectangle of that
 * resized image, so "resize shorter side then center crop" and "random resized crop" are each one pass and
 * never materialise the full resized image.
 *
 * @module
 */
import type { RgbImage } from "./image.ts";

/** Interpolation kernels, in timm's names. */
export type Interpolation = "bilinear" | "bicubic";

/** A rectangle in pixels: left, top, width, height. */
export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Per output index: `taps` source indices and weights (row-major, zero-weight padded). */
interface AxisWeights {
  taps: number;
  index: Int32Array;
  weight: Float32Array;
}

function cubic1(x: number, a: number): number {
  return ((a + 2) * x - (a + 3)) * x * x + 1;
}

function cubic2(x: number, a: number): number {
  return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
}

function aaFilter(interp: Interpolation, x: number): number {
  x = Math.abs(x);
  if (interp === "bilinear") return x < 1 ? 1 - x : 0;
  return x < 1 ? cubic1(x, -0.5) : x < 2 ? cubic2(x, -0.5) : 0;
}

/**
 * Weights mapping `inSize` source pixels to output indices `first..first+count-1` of a resize to `outSize`.
 * Source indices are relative to the window (0..inSize-1).
 */
function axisWeights(
  inSize: number,
  outSize: number,
  first: number,
  count: number,
  interp: Interpolation,
  antialias: boolean,
): AxisWeights {
  const scale = inSize / outSize;
  const last = inSize - 1;
  if (antialias) {
    const support = (interp === "bilinear" ? 1 : 2) * Math.max(scale, 1);
    const invScale = 1 / Math.max(scale, 1);
    const taps = Math.ceil(support) * 2 + 1;
    const index = new Int32Array(count * taps);
    const weight = new Float32Array(count * taps);
    for (let o = 0; o < count; o++) {
      const center = scale * (first + o + 0.5);
      const lo = Math.max(Math.trunc(center - support + 0.5), 0);
      const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
      let total = 0;
      const w: number[] = [];
      for (let j = lo; j < hi; j++) {
        const v = aaFilter(interp, (j - center + 0.5) * invScale);
        w.push(v);
        total += v;
      }
      for (let k = 0; k < w.length && k < taps; k++) {
        index[o * taps + k] = lo + k;
        weight[o * taps + k] = total !== 0 ? w[k] / total : 0;
      }
      for (let k = w.length; k < taps; k++) index[o * taps + k] = Math.min(lo, last);
    }
    return { taps, index, weight };
  }
  if (interp === "bilinear") {
    const index = new Int32Array(count * 2);
    const weight = new Float32Array(count * 2);
    for (let o = 0; o < count; o++) {
      const src = Math.max(scale * (first + o + 0.5) - 0.5, 0);
      const i0 = Math.min(Math.floor(src), last);
      const l1 = src - i0;
      index[2 * o] = i0;
      index[2 * o + 1] = Math.min(i0 + 1, last);
      weight[2 * o] = 1 - l1;
      weight[2 * o + 1] = l1;
    }
    return { taps: 2, index, weight };
  }
  const index = new Int32Array(count * 4);
  const weight = new Float32Array(count * 4);
  const a = -0.75;
  for (let o = 0; o < count; o++) {
    const src = scale * (first + o + 0.5) - 0.5;
    const i0 = Math.floor(src);
    const t = src - i0;
    const w = [cubic2(t + 1, a), cubic1(t, a), cubic1(1 - t, a), cubic2(2 - t, a)];
    for (let k = 0; k < 4; k++) {
      index[4 * o + k] = Math.min(Math.max(i0 - 1 + k, 0), last);
      weight[4 * o + k] = w[k];
    }
  }
  return { taps: 4, index, weight };
}

/** What to produce from one image. */
export interface ResampleSpec {
  /** The source window that is resized (a crop box inside the image). */
  window: Box;
  /** The size the window is resized to. */
  resizeWidth: number;
  resizeHeight: number;
  /** The part of the resized image to output (`w`×`h` pixels starting at `x`, `y`). */
  crop: Box;
  interpolation: Interpolation;
  antialias: boolean;
  /** Mirror the output left–right. */
  flip: boolean;
  /** Per-channel mean and std applied to pixel/255. */
  mean: readonly number[];
  std: readonly number[];
}

/**
 * Resamples `img` per `spec` and writes `(v/255 − mean)/std` as CHW planes of `crop.h × crop.w` into `out`
 * starting at `offset` (3·crop.w·crop.h floats).
 */
export function resampleInto(img: RgbImage, spec: ResampleSpec, out: Float32Array, offset: number): void {
  const { window: win, crop } = spec;
  if (
    win.x < 0 || win.y < 0 || win.w < 1 || win.h < 1 || win.x + win.w > img.width ||
    win.y + win.h > img.height
  ) {
    throw new Error(
      `resample: window ${JSON.stringify(win)} is outside the ${img.width}x${img.height} image`,
    );
  }
  if (
    crop.x < 0 || crop.y < 0 || crop.w < 1 || crop.h < 1 || crop.x + crop.w > spec.resizeWidth ||
    crop.y + crop.h > spec.resizeHeight
  ) {
    throw new Error(
      `resample: crop ${JSON.stringify(crop)} is outside the ${spec.resizeWidth}x${spec.resizeHeight} resize`,
    );
  }
  if (out.length < offset + 3 * crop.w * crop.h) {
    throw new Error(`resample: output holds ${out.length} floats, needs ${offset + 3 * crop.w * crop.h}`);
  }
  const xw = axisWeights(win.w, spec.resizeWidth, crop.x, crop.w, spec.interpolation, spec.antialias);
  const yw = axisWeights(win.h, spec.resizeHeight, crop.y, crop.h, spec.interpolation, spec.antialias);
  // Only source rows some output row reads need the horizontal pass.
  let rowLo = win.h, rowHi = -1;
  for (let i = 0; i < yw.index.length; i++) {
    rowLo = Math.min(rowLo, yw.index[i]);
    rowHi = Math.max(rowHi, yw.index[i]);
  }
  const W = crop.w, H = crop.h, src = img.data, stride = img.width * 3;
  const tmp = new Float32Array((rowHi - rowLo + 1) * W * 3);
  const xt = xw.taps;
  for (let r = rowLo; r <= rowHi; r++) {
    const rowBase = (win.y + r) * stride + win.x * 3;
    const tBase = (r - rowLo) * W * 3;
    for (let o = 0; o < W; o++) {
      let s0 = 0, s1 = 0, s2 = 0;
      for (let k = 0; k < xt; k++) {
        const w = xw.weight[o * xt + k];
        const p = rowBase + xw.index[o * xt + k] * 3;
        s0 += w * src[p];
        s1 += w * src[p + 1];
        s2 += w * src[p + 2];
      }
      const t = tBase + o * 3;
      tmp[t] = s0;
      tmp[t + 1] = s1;
      tmp[t + 2] = s2;
    }
  }
  const plane = W * H;
  const a0 = 1 / (255 * spec.std[0]), a1 = 1 / (255 * spec.std[1]), a2 = 1 / (255 * spec.std[2]);
  const b0 = spec.mean[0] / spec.std[0], b1 = spec.mean[1] / spec.std[1], b2 = spec.mean[2] / spec.std[2];
  const yt = yw.taps;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let s0 = 0, s1 = 0, s2 = 0;
      for (let k = 0; k < yt; k++) {
        const w = yw.weight[y * yt + k];
        const t = ((yw.index[y * yt + k] - rowLo) * W + x) * 3;
        s0 += w * tmp[t];
        s1 += w * tmp[t + 1];
        s2 += w * tmp[t + 2];
      }
      const o = offset + y * W + (spec.flip ? W - 1 - x : x);
      out[o] = s0 * a0 - b0;
      out[o + plane] = s1 * a1 - b1;
      out[o + 2 * plane] = s2 * a2 - b2;
    }
  }
}
