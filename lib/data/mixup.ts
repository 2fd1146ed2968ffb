/**
 * Mixup and CutMix as timm's `Mixup` (train.py `--mixup`, `--cutmix`, `--mixup-prob`,
 * `--mixup-switch-prob`, `--mixup-mode`), on a preprocessed NCHW batch: sample i is mixed with sample
 * `n − 1 − i` (the batch reversed), with one λ per batch (`batch`), per pair (`pair`) or per element
 * (`elem`); λ ~ Beta(α, α) with probability `prob` (else no mixing); with both alphas set, CutMix is chosen
 * with probability `switchProb`. CutMix pastes a box of area ≈ (1 − λ) (centre uniform, clipped at the
 * border) and λ is corrected to the pasted area. Targets become soft: `λ·onehot(y) + (1 − λ)·onehot(y_rev)`
 * with label smoothing folded in (off = s/K, on = 1 − s + s/K), so each row sums to 1.
 *
 * Every draw comes from the caller's `Rng` (the trainer derives it from seed, epoch and batch), in the
 * order of timm's code.
 *
 * @module
 */
import { beta, type Rng } from "./rng.ts";

/** How mixing parameters are drawn (timm's `mixup_mode`). */
export type MixupMode = "batch" | "pair" | "elem";

/** The mixup modes, for validation. */
export const MIXUP_MODES: readonly MixupMode[] = ["batch", "pair", "elem"];

/** Mixup / CutMix settings in timm's terms. */
export interface MixupOptions {
  /** Mixup's Beta α; 0 disables mixup (timm's `mixup`). */
  mixupAlpha: number;
  /** CutMix's Beta α; 0 disables CutMix (timm's `cutmix`). */
  cutmixAlpha: number;
  /** Probability of mixing a batch / pair / element (timm's `mixup_prob`, default 1). */
  prob: number;
  /** Probability of CutMix rather than mixup when both are on (timm's `mixup_switch_prob`, default 0.5). */
  switchProb: number;
  mode: MixupMode;
  /** Label smoothing folded into the soft targets (timm passes `smoothing`). */
  labelSmoothing: number;
  numClasses: number;
}

/** Throws unless `o` is usable, naming the bad key in timm's terms. */
export function checkMixup(o: MixupOptions): void {
  for (const [k, v] of [["mixup", o.mixupAlpha], ["cutmix", o.cutmixAlpha]] as const) {
    if (!(v >= 0) || !Number.isFinite(v)) throw new Error(`${k}: expected an alpha ≥ 0, got ${v}`);
  }
  if (!(o.mixupAlpha > 0 || o.cutmixAlpha > 0)) throw new Error("mixup: needs mixup > 0 or cutmix > 0");
  for (const [k, v] of [["mixup_prob", o.prob], ["mixup_switch_prob", o.switchProb]] as const) {
    if (!(v >= 0 && v <= 1)) throw new Error(`${k}: expected a probability in [0, 1], got ${v}`);
  }
  if (!MIXUP_MODES.includes(o.mode)) {
    throw new Error(`mixup_mode: expected one of ${MIXUP_MODES.join(", ")}, got ${JSON.stringify(o.mode)}`);
  }
  if (!(o.labelSmoothing >= 0 && o.labelSmoothing < 1)) {
    throw new Error(`smoothing: expected a number in [0, 1), got ${o.labelSmoothing}`);
  }
  if (!Number.isInteger(o.numClasses) || o.numClasses < 1) {
    throw new Error(`num_classes: expected a positive integer, got ${o.numClasses}`);
  }
}

/** One mixing decision: λ (1 = untouched) and whether it is a CutMix. */
interface MixParams {
  lam: number;
  cutmix: boolean;
}

/** timm's `_params_per_batch` (one draw set; with `perElem`, `_params_per_elem`'s for one element). */
function drawParams(o: MixupOptions, rng: Rng): MixParams {
  if (!(rng.uniform() < o.prob)) return { lam: 1, cutmix: false };
  let cutmix: boolean;
  if (o.mixupAlpha > 0 && o.cutmixAlpha > 0) cutmix = rng.uniform() < o.switchProb;
  else cutmix = o.cutmixAlpha > 0;
  const alpha = cutmix ? o.cutmixAlpha : o.mixupAlpha;
  return { lam: beta(rng, alpha, alpha), cutmix };
}

/** A CutMix box `[yl, yh) × [xl, xh)` for λ (timm's `rand_bbox`) and λ corrected to its area. */
export function cutmixBox(
  height: number,
  width: number,
  lam: number,
  rng: Rng,
): { yl: number; yh: number; xl: number; xh: number; lam: number } {
  const ratio = Math.sqrt(1 - lam);
  const cutH = Math.trunc(height * ratio), cutW = Math.trunc(width * ratio);
  const cy = rng.int(height), cx = rng.int(width);
  const clip = (v: number, hi: number) => Math.min(hi, Math.max(0, v));
  const yl = clip(cy - (cutH >> 1), height), yh = clip(cy + (cutH >> 1), height);
  const xl = clip(cx - (cutW >> 1), width), xh = clip(cx + (cutW >> 1), width);
  return { yl, yh, xl, xh, lam: 1 - ((yh - yl) * (xh - xl)) / (height * width) };
}

/**
 * Mixes the NCHW batch `x` (`shape` [n, C, H, W], n even) in place as timm's `Mixup(x, target)` and
 * returns the soft targets `[n, numClasses]` (row-major). `labels` are the batch's class indices.
 */
export function mixupBatch(
  x: Float32Array,
  shape: readonly number[],
  labels: ArrayLike<number>,
  o: MixupOptions,
  rng: Rng,
): Float32Array {
  const [n, C, H, W] = shape;
  if (n % 2 !== 0) throw new Error(`mixup: the batch size must be even (timm's Mixup), got ${n}`);
  const per = C * H * W, plane = H * W;
  const orig = x.slice();
  const lams = new Float64Array(n).fill(1);
  // Pastes box b of sample j's original into sample i.
  const paste = (i: number, j: number, b: { yl: number; yh: number; xl: number; xh: number }) => {
    for (let c = 0; c < C; c++) {
      for (let y = b.yl; y < b.yh; y++) {
        const row = c * plane + y * W;
        for (let xx = b.xl; xx < b.xh; xx++) x[i * per + row + xx] = orig[j * per + row + xx];
      }
    }
  };
  const blend = (i: number, j: number, lam: number) => {
    for (let k = 0; k < per; k++) x[i * per + k] = orig[i * per + k] * lam + orig[j * per + k] * (1 - lam);
  };
  if (o.mode === "batch") {
    const p = drawParams(o, rng);
    if (p.lam !== 1) {
      let lam = p.lam;
      if (p.cutmix) {
        const b = cutmixBox(H, W, lam, rng);
        lam = b.lam;
        for (let i = 0; i < n; i++) paste(i, n - 1 - i, b);
      } else {
        for (let i = 0; i < n; i++) blend(i, n - 1 - i, lam);
      }
      lams.fill(lam);
    }
  } else {
    // timm draws all elements' parameters first (vectorised), then the boxes in element order.
    const count = o.mode === "pair" ? n / 2 : n;
    const params = Array.from({ length: count }, () => drawParams(o, rng));
    for (let i = 0; i < count; i++) {
      const j = n - 1 - i;
      let lam = params[i].lam;
      if (lam === 1) continue;
      if (params[i].cutmix) {
        const b = cutmixBox(H, W, lam, rng);
        lam = b.lam;
        paste(i, j, b);
        if (o.mode === "pair") paste(j, i, b);
      } else {
        blend(i, j, lam);
        if (o.mode === "pair") blend(j, i, lam);
      }
      lams[i] = lam;
      if (o.mode === "pair") lams[j] = lam;
    }
  }
  return mixupTargets(labels, lams, o.numClasses, o.labelSmoothing);
}

/**
 * timm's `mixup_target`: `λ_i·smooth_onehot(y_i) + (1 − λ_i)·smooth_onehot(y_{n−1−i})`, each row summing to
 * 1.
 */
export function mixupTargets(
  labels: ArrayLike<number>,
  lams: ArrayLike<number>,
  numClasses: number,
  smoothing = 0,
): Float32Array {
  const n = labels.length, off = smoothing / numClasses, on = 1 - smoothing + off;
  const t = new Float32Array(n * numClasses);
  for (let i = 0; i < n; i++) {
    const lam = lams[i], row = i * numClasses;
    for (let k = 0; k < numClasses; k++) t[row + k] = off;
    t[row + labels[i]] += (on - off) * lam;
    t[row + labels[n - 1 - i]] += (on - off) * (1 - lam);
  }
  return t;
}
