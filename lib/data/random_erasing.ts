/**
 * Random erasing as timm's `RandomErasing` (train.py `--reprob`, `--remode`, `--recount`): applied to one
 * normalised CHW image, with probability `prob` it replaces k rectangles, k uniform in [1, `count`] (timm's
 * `min_count` 1, `max_count` = `recount`), each up to 10 tries at an area fraction uniform in [0.02, 1/3]
 * divided by k and a log-uniform aspect ratio in [0.3, 1/0.3],
 * by zeros (`const`), one normal value per channel (`rand`) or a normal value per pixel (`pixel`, timm's
 * default). Because the image is already normalised, zero is the dataset mean and the normal values are
 * noise of the dataset's spread, as in timm. Every draw comes from the caller's `Rng`.
 *
 * @module
 */
import { normal, type Rng } from "./rng.ts";

/** What fills an erased rectangle (timm's `remode`). */
export type EraseMode = "const" | "rand" | "pixel";

/** Random-erasing settings. */
export interface RandomErasing {
  /** Probability that an image is erased at all (timm's `reprob`). */
  prob: number;
  /** Fill (timm's `remode`, default `pixel`). */
  mode: EraseMode;
  /** The most rectangles per erased image (timm's `recount`, default 1); the count is drawn in [1, count]. */
  count: number;
}

/** The erase modes, for validation. */
export const ERASE_MODES: readonly EraseMode[] = ["const", "rand", "pixel"];

const MIN_AREA = 0.02, MAX_AREA = 1 / 3, LOG_ASPECT = [Math.log(0.3), Math.log(1 / 0.3)];

/** Throws unless `re` is usable, naming the bad field. */
export function checkRandomErasing(re: RandomErasing): void {
  if (!(re.prob >= 0 && re.prob <= 1)) {
    throw new Error(`reprob: expected a probability in [0, 1], got ${JSON.stringify(re.prob)}`);
  }
  if (!ERASE_MODES.includes(re.mode)) {
    throw new Error(`remode: expected one of ${ERASE_MODES.join(", ")}, got ${JSON.stringify(re.mode)}`);
  }
  if (!Number.isInteger(re.count) || re.count < 1) {
    throw new Error(`recount: expected a positive integer, got ${JSON.stringify(re.count)}`);
  }
}

/**
 * Erases in place the `channels`×`height`×`width` image at `offset` of `data` as timm's
 * `RandomErasing._erase` does. Returns the rectangles erased (for tests and logs).
 */
export function randomErase(
  data: Float32Array,
  offset: number,
  channels: number,
  height: number,
  width: number,
  re: RandomErasing,
  rng: Rng,
): Array<{ top: number; left: number; h: number; w: number }> {
  const boxes: Array<{ top: number; left: number; h: number; w: number }> = [];
  if (rng.uniform() > re.prob) return boxes;
  const area = height * width, plane = height * width;
  const count = re.count === 1 ? 1 : 1 + rng.int(re.count);
  for (let n = 0; n < count; n++) {
    for (let attempt = 0; attempt < 10; attempt++) {
      const target = rng.range(MIN_AREA, MAX_AREA) * area / count;
      const aspect = Math.exp(rng.range(LOG_ASPECT[0], LOG_ASPECT[1]));
      const h = Math.round(Math.sqrt(target * aspect));
      const w = Math.round(Math.sqrt(target / aspect));
      if (w < width && h < height) {
        const top = rng.int(height - h + 1), left = rng.int(width - w + 1);
        for (let c = 0; c < channels; c++) {
          const v = re.mode === "rand" ? normal(rng) : 0;
          for (let y = top; y < top + h; y++) {
            const row = offset + c * plane + y * width;
            for (let x = left; x < left + w; x++) data[row + x] = re.mode === "pixel" ? normal(rng) : v;
          }
        }
        boxes.push({ top, left, h, w });
        break;
      }
    }
  }
  return boxes;
}
