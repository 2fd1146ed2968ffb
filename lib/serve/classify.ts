/**
 * Classifying uploaded images with a served model: each image is decoded (header checked against the pixel
 * limit first) and preprocessed as the model's manifest says, all of them are admitted to the inference
 * queue at once (or refused with 503), classified through the model's dynamic batcher, and turned into
 * top-k labels with softmax probabilities and per-image timings.
 *
 * @module
 */
import { decodeImage, ImageDecodeError } from "../data/decode.ts";
import { preprocessEval } from "../data/preprocess.ts";
import { type ErrorKind, ServiceError } from "./errors.ts";
import type { ServedModel } from "./registry.ts";

/** One uploaded image, still encoded. */
export interface InputImage {
  name: string;
  bytes: Uint8Array;
}

/** One label and its probability. */
export interface Prediction {
  label: string;
  index: number;
  probability: number;
}

/** The answer for one image. */
export interface ImageResult {
  name: string;
  width: number;
  height: number;
  predictions: Prediction[];
  timing_ms: { decode: number; preprocess: number; queue_and_inference: number; total: number };
}

const DECODE_ERRORS: Record<string, [ErrorKind, string]> = {
  empty: ["invalid", "empty_image"],
  unsupported_format: ["unsupported", "unsupported_image_format"],
  too_large: ["too_large", "image_too_large"],
  truncated: ["invalid", "truncated_image"],
  corrupt: ["invalid", "corrupt_image"],
  decoder_unavailable: ["internal", "decoder_unavailable"],
};

/** Maps an image decode failure to the service error it is reported as. */
export function decodeErrorToApi(e: unknown, index: number, count: number): ServiceError {
  if (e instanceof ImageDecodeError) {
    const [kind, code] = DECODE_ERRORS[e.code] ?? ["invalid", "invalid_image"];
    const which = count > 1 ? `image ${index + 1} of ${count}: ` : "";
    return new ServiceError(kind, code, `${which}${e.message}`);
  }
  return e instanceof ServiceError ? e : new ServiceError("invalid", "invalid_image", (e as Error).message);
}

/** Softmax of one logits row, then the `k` largest with their labels. */
export function topK(logits: Float32Array, labels: readonly string[], k: number): Prediction[] {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const p = Array.from(logits, (v) => Math.exp(v - max));
  const sum = p.reduce((a, b) => a + b, 0);
  return p.map((v, index) => ({ index, probability: v / sum }))
    .sort((a, b) => b.probability - a.probability || a.index - b.index)
    .slice(0, k)
    .map(({ index, probability }) => ({ label: labels[index] ?? String(index), index, probability }));
}

const ms = (t: number) => Math.round(t * 100) / 100;

/** Classifies `images` with `served`, returning the top `k` per image. */
export async function classifyImages(
  served: ServedModel,
  images: InputImage[],
  k: number,
  maxPixels: number,
): Promise<ImageResult[]> {
  const pre = served.manifest.preprocessing;
  const prepared: Array<
    { input: Float32Array; width: number; height: number; decode: number; preprocess: number; t0: number }
  > = [];
  for (const [i, img] of images.entries()) {
    const t0 = performance.now();
    let decoded;
    try {
      decoded = await decodeImage(img.bytes, { maxPixels, source: img.name });
    } catch (e) {
      throw decodeErrorToApi(e, i, images.length);
    }
    const t1 = performance.now();
    const input = preprocessEval(decoded, pre);
    prepared.push({
      input,
      width: decoded.width,
      height: decoded.height,
      decode: t1 - t0,
      preprocess: performance.now() - t1,
      t0,
    });
  }
  served.batcher.admission.admit(prepared.length);
  const t2 = performance.now();
  const logits = await served.batcher.classify(prepared.map((p) => p.input));
  const t3 = performance.now();
  return prepared.map((p, i) => ({
    name: images[i].name,
    width: p.width,
    height: p.height,
    predictions: topK(logits[i], served.manifest.labels, k),
    timing_ms: {
      decode: ms(p.decode),
      preprocess: ms(p.preprocess),
      queue_and_inference: ms(t3 - t2),
      total: ms(t3 - p.t0),
    },
  }));
}
