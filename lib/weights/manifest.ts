/**
 * `model.json`: the tfjs weights-manifest layout (`weightsManifest` groups of shard paths and
 * `{name, shape, dtype, quantization?}` entries) extended with what a ViT needs to be used and verified:
 * its timm config, preprocessing, class labels, where it came from, and the sha256 of every shard.
 *
 * @module
 */
import type { ViTConfig } from "../vit/config.ts";

/** The format tag written into every manifest. */
export const MANIFEST_FORMAT = "vit-deno/weights@1";

/**
 * One weight entry, as tfjs writes it. Stored float16 entries carry tfjs's quantization record. int8 entries
 * (`deno task convert --dtype int8`; the blocks' linear weights, `[out, in]`) are this project's own: their
 * bytes are the int8 values `[in, out]` (transposed) followed by one float32 scale per output channel, value
 * = q · scale (lib/vit/int8.ts); tfjs cannot read them.
 */
export interface WeightEntry {
  name: string;
  shape: number[];
  dtype: "float32";
  quantization?:
    | { dtype: "float16"; original_dtype: "float32" }
    | { dtype: "int8"; original_dtype: "float32"; scheme: typeof INT8_SCHEME };
}

/** The int8 scheme of an int8 entry: symmetric, one scale per output channel, stored `[in, out]`. */
export const INT8_SCHEME = "symmetric_per_output_channel_in_out";

/** One tfjs weights group: its shard files and the weights stored back to back across them. */
export interface WeightsGroup {
  paths: string[];
  weights: WeightEntry[];
}

/** How images are prepared for the model, in timm's terms (`timm.data.resolve_data_config`). */
export interface Preprocessing {
  img_size: number;
  mean: [number, number, number];
  std: [number, number, number];
  interpolation: "bilinear" | "bicubic";
  crop_pct: number;
}

/** Where the weights came from. */
export interface SourceInfo {
  /** File name or URL of the checkpoint converted, or a description (e.g. "trained by deno task train"). */
  file: string;
  /** sha256 of that file, when it was a file. */
  sha256?: string;
  /** The checkpoint's format. */
  format?: string;
  /** The timm architecture name, when known. */
  arch?: string;
  // The adaptations below are the weights' lineage: a model fine-tuned from an adapted one keeps them, and a
  // later adaptation of the same kind replaces the entry.
  /** Set when the classifier head was replaced (fresh init) for fine-tuning. */
  head_reinitialized?: { num_classes: number; init: "zeros" };
  /** Set when the patch embedding was resampled to another patch size (timm's `resample_patch_embed`). */
  patch_embed_resampled?: { from: number; to: number };
  /** Set when pos_embed was resampled to another resolution. */
  pos_embed_resampled?: { from: number; to: number };
  /** Set when blocks `from…to−1` were appended as identities to a shallower checkpoint. */
  blocks_added?: { from: number; to: number; init: "identity" };
}

/** The whole `model.json`. */
export interface ModelManifest {
  format: typeof MANIFEST_FORMAT;
  weightsManifest: WeightsGroup[];
  vit: ViTConfig;
  preprocessing: Preprocessing;
  labels: string[];
  source: SourceInfo;
  /** sha256 (hex) of every shard, by path. */
  shards: Record<string, string>;
  /**
   * Storage dtype of the weights; `int8`: the blocks' linear weights int8, every other weight float32 (see
   * {@linkcode WeightEntry}).
   */
  dtype: "float32" | "float16" | "int8";
  created: string;
  /** Anything else worth keeping (e.g. training metrics of the run that produced the weights). */
  extra?: Record<string, unknown>;
}

/** timm's defaults for ImageNet ViTs (`vit_*_patch16_224.augreg*`): mean = std = 0.5, bicubic, crop 0.9. */
export function defaultPreprocessing(imgSize: number): Preprocessing {
  return {
    img_size: imgSize,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
    interpolation: "bicubic",
    crop_pct: 0.9,
  };
}

function fail(source: string, field: string, expected: string, got: unknown): never {
  throw new Error(
    `${source}: field "${field}" must be ${expected}, got ${JSON.stringify(got)?.slice(0, 80)}`,
  );
}

/** What {@linkcode isShardPath} accepts, for messages. */
export const SHARD_PATH_RULE =
  "a relative path inside the model folder (segments of letters, digits, '.', '_', '-', not starting with " +
  "'.'), not under onnx-engine/";

const SHARD_PATH = /^[A-Za-z0-9_][A-Za-z0-9._-]*(\/[A-Za-z0-9_][A-Za-z0-9._-]*)*$/;

/**
 * Whether `path` can name a shard: a plain relative path, so that reading it, fetching it (a URL's
 * `new URL(path, base)`: no scheme, `..`, `%` escapes or queries) and writing a copy of it stay inside the
 * model folder, and outside the folder's `onnx-engine/` (engine cache entries, lib/weights/engine.ts, which a
 * manifest must not supply).
 */
export function isShardPath(path: string): boolean {
  // Compared without case: on a case-insensitive filesystem ONNX-ENGINE/ is the same folder.
  return SHARD_PATH.test(path) && path.split("/")[0].toLowerCase() !== "onnx-engine";
}

/** Validates a parsed `model.json`; every error names the field and what was expected. */
export function validateManifest(json: unknown, source = "model.json"): ModelManifest {
  if (typeof json !== "object" || json === null) fail(source, "(root)", "an object", json);
  const m = json as Record<string, unknown>;
  if (m.format !== MANIFEST_FORMAT) fail(source, "format", `"${MANIFEST_FORMAT}"`, m.format);
  if (!Array.isArray(m.weightsManifest) || m.weightsManifest.length === 0) {
    fail(source, "weightsManifest", "a non-empty array of {paths, weights}", m.weightsManifest);
  }
  for (const [i, g] of (m.weightsManifest as WeightsGroup[]).entries()) {
    if (!Array.isArray(g.paths) || !g.paths.every((p) => typeof p === "string")) {
      fail(source, `weightsManifest[${i}].paths`, "an array of shard paths", g.paths);
    }
    for (const p of g.paths) {
      if (!isShardPath(p)) fail(source, `weightsManifest[${i}].paths`, SHARD_PATH_RULE, p);
      if (typeof (m.shards as Record<string, unknown>)?.[p] !== "string") {
        fail(source, `shards["${p}"]`, "the shard's sha256", (m.shards as Record<string, unknown>)?.[p]);
      }
    }
    if (!Array.isArray(g.weights)) fail(source, `weightsManifest[${i}].weights`, "an array", g.weights);
    for (const w of g.weights) {
      if (typeof w.name !== "string" || !Array.isArray(w.shape) || w.dtype !== "float32") {
        fail(source, `weightsManifest[${i}].weights`, "{name, shape, dtype: float32} entries", w);
      }
      const q = w.quantization;
      if (q && q.dtype !== "float16" && q.dtype !== "int8") {
        fail(
          source,
          `weights["${w.name}"].quantization.dtype`,
          '"float16" or "int8"',
          (q as { dtype: unknown }).dtype,
        );
      }
      if (q?.dtype === "int8" && (q.scheme !== INT8_SCHEME || w.shape.length !== 2)) {
        fail(
          source,
          `weights["${w.name}"].quantization`,
          `scheme "${INT8_SCHEME}" on an [out, in] weight`,
          q,
        );
      }
    }
  }
  if (typeof m.vit !== "object" || m.vit === null) fail(source, "vit", "the ViT config object", m.vit);
  const p = m.preprocessing as Preprocessing;
  if (
    typeof p !== "object" || p === null || !(p.img_size > 0) || p.mean?.length !== 3 || p.std?.length !== 3 ||
    !["bilinear", "bicubic"].includes(p.interpolation) || !(p.crop_pct > 0 && p.crop_pct <= 1)
  ) {
    fail(source, "preprocessing", "{img_size, mean[3], std[3], interpolation, crop_pct in (0, 1]}", p);
  }
  if (!Array.isArray(m.labels) || !m.labels.every((l) => typeof l === "string")) {
    fail(source, "labels", "an array of class names", m.labels);
  }
  return json as ModelManifest;
}
