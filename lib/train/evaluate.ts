/**
 * Classification metrics of a model on an image set: top-1, top-5, mean cross-entropy, per-class accuracy
 * and the confusion matrix (rows = true class, columns = predicted).
 *
 * @module
 */
import type { ViTModel } from "../vit/model.ts";
import type { ImageSet } from "../data/image_set.ts";

/** The result of {@linkcode evaluate}. */
export interface EvalResult {
  n: number;
  top1: number;
  top5: number;
  loss: number;
  /** `[k * k]`, row-major: `confusion[t * k + p]` counts images of class t predicted as p. */
  confusion: Int32Array;
  perClass: number[];
  /** Images per second of the forward passes. */
  imgPerSec: number;
}

/** Per-image top-k correctness and loss of one logits row. */
function score(
  row: Float32Array,
  label: number,
): { top1: boolean; top5: boolean; pred: number; loss: number } {
  let max = -Infinity, pred = 0;
  for (let j = 0; j < row.length; j++) if (row[j] > max) [max, pred] = [row[j], j];
  let sum = 0, higher = 0;
  for (let j = 0; j < row.length; j++) {
    sum += Math.exp(row[j] - max);
    // Ties count against the label so a constant output never scores.
    if (j !== label && row[j] >= row[label]) higher++;
  }
  return { top1: pred === label, top5: higher < 5, pred, loss: Math.log(sum) + max - row[label] };
}

/** Evaluates `model` on `indices` of `set` (all samples by default), `batchSize` images at a time. */
export async function evaluate(
  model: ViTModel,
  set: ImageSet,
  options: {
    indices?: ArrayLike<number>;
    batchSize?: number;
    onProgress?: (done: number, total: number) => void;
  } = {},
): Promise<EvalResult> {
  const indices = options.indices ?? Int32Array.from({ length: set.size }, (_, i) => i);
  const bs = options.batchSize ?? 250;
  const k = model.config.num_classes;
  const confusion = new Int32Array(k * k);
  let top1 = 0, top5 = 0, loss = 0, time = 0;
  for (let start = 0; start < indices.length; start += bs) {
    const ids = Array.from({ length: Math.min(bs, indices.length - start) }, (_, i) => indices[start + i]);
    const x = await set.images(ids);
    const t0 = performance.now();
    const logits = await model.logits(x, [ids.length, ...set.shape]);
    time += performance.now() - t0;
    for (let i = 0; i < ids.length; i++) {
      const label = set.labels[ids[i]];
      const s = score(logits.subarray(i * k, (i + 1) * k), label);
      if (s.top1) top1++;
      if (s.top5) top5++;
      loss += s.loss;
      confusion[label * k + s.pred]++;
    }
    options.onProgress?.(Math.min(indices.length, start + bs), indices.length);
  }
  const n = indices.length;
  const perClass = Array.from({ length: k }, (_, t) => {
    let row = 0;
    for (let p = 0; p < k; p++) row += confusion[t * k + p];
    return row ? confusion[t * k + t] / row : NaN;
  });
  return {
    n,
    top1: top1 / n,
    top5: top5 / n,
    loss: loss / n,
    confusion,
    perClass,
    imgPerSec: n / (time / 1000),
  };
}
