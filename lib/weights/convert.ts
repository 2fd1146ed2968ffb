/**
 * timm checkpoint → sharded weights: read any supported checkpoint (file or URL), infer or check its config,
 * optionally replace the head or resample `pos_embed`, and write `model.json` + shards atomically.
 *
 * @module
 */
import { resolveConfig, timmConfig, type ViTConfig } from "../vit/config.ts";
import type { StateDict } from "../vit/params.ts";
import { readCheckpoint } from "./checkpoint.ts";
import { archFromName, inferConfig } from "./infer_config.ts";
import { defaultPreprocessing, type ModelManifest, type Preprocessing, type SourceInfo } from "./manifest.ts";
import { adaptForFineTuning } from "./adapt.ts";
import { sha256Hex } from "./sha256.ts";
import { saveModel } from "./shards.ts";

/** Options of {@linkcode convertCheckpoint}. */
export interface ConvertOptions {
  /**
   * timm architecture name (`vit_base_patch16_224`); fixes `num_heads`. Guessed from the file name if absent.
   */
  arch?: string;
  /** Explicit config fields (e.g. `num_heads`), overriding what is inferred. */
  config?: Partial<ViTConfig>;
  /**
   * Storage dtype of the shards; float32 by default. `int8`: the blocks' linear weights int8
   * (lib/vit/int8.ts), the rest float32; for the onnx engine's int8 graph (other engines widen them back,
   * with a log line).
   */
  dtype?: "float32" | "float16" | "int8";
  /** Shard size in MiB; 4 by default. */
  shardMB?: number;
  /** Replace the classifier with a fresh zero-initialised one of this many classes (for fine-tuning). */
  numClasses?: number;
  /** Resample `pos_embed` for this input resolution. */
  imgSize?: number;
  /** Class names; `class_<i>` by default. */
  labels?: string[];
  /** Preprocessing to record; timm's ViT defaults (mean = std = 0.5, bicubic, crop 0.9) by default. */
  preprocessing?: Partial<Preprocessing>;
  /** Use the EMA weights of a timm train.py checkpoint instead of the raw ones. */
  useEma?: boolean;
  /** fetch for URL inputs (tests inject one). */
  fetch?: typeof fetch;
}

async function readInput(input: string, fetcher: typeof fetch): Promise<Uint8Array> {
  if (/^https?:\/\//i.test(input)) {
    const res = await fetcher(input).catch((e) => {
      throw new Error(`${input}: download failed (${(e as Error).message})`);
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`${input}: HTTP ${res.status}`);
    }
    return new Uint8Array(await res.arrayBuffer());
  }
  try {
    return await Deno.readFile(input);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${input}: no such file`);
    throw e;
  }
}

/**
 * Converts a timm checkpoint (`.safetensors` F32/F16/BF16, `.pth`/`.pth.tar`, Google `.npz`; path or
 * http(s) URL) into a sharded model folder `outDir`, and returns the manifest written.
 */
export async function convertCheckpoint(
  input: string,
  outDir: string,
  options: ConvertOptions = {},
): Promise<ModelManifest> {
  const bytes = await readInput(input, options.fetch ?? fetch);
  const sha256 = await sha256Hex(bytes);
  const name = input.split(/[\\/]/).pop() ?? input;
  const checkpoint = await readCheckpoint(bytes, { name });
  let state: StateDict = checkpoint.state;
  if (options.useEma) {
    if (!checkpoint.ema) {
      throw new Error(`${input}: --use-ema was given but the checkpoint has no state_dict_ema`);
    }
    state = checkpoint.ema;
  }
  const metaArch = typeof checkpoint.meta?.arch === "string" ? checkpoint.meta.arch : undefined;
  const arch = options.arch ?? archFromName(metaArch) ?? archFromName(name);
  let config: ViTConfig = {
    ...inferConfig(state, { arch, numHeads: options.config?.num_heads, source: input }),
    ...options.config,
  };
  const source: SourceInfo = { file: input, sha256, format: checkpoint.format, ...(arch ? { arch } : {}) };

  if (options.imgSize !== undefined && !Number.isInteger(options.imgSize / config.patch_size)) {
    throw new Error(`--img-size ${options.imgSize} is not a multiple of patch_size ${config.patch_size}`);
  }
  const k = options.numClasses ?? config.num_classes;
  if (!Number.isInteger(k) || k < 1) throw new Error(`--num-classes must be a positive integer, got ${k}`);
  if (options.imgSize !== undefined || options.numClasses !== undefined) {
    const target = { ...resolveConfig(config), img_size: options.imgSize ?? config.img_size, num_classes: k };
    const adapted = adaptForFineTuning(state, target);
    state = adapted.state;
    Object.assign(source, adapted.changes);
    config = { ...config, img_size: target.img_size, num_classes: k };
  }
  const resolved = resolveConfig(config);
  const labels = options.labels ?? Array.from({ length: resolved.num_classes }, (_, i) => `class_${i}`);
  if (labels.length !== resolved.num_classes) {
    throw new Error(`labels: ${labels.length} names given for ${resolved.num_classes} classes`);
  }
  return await saveModel(outDir, {
    config: timmConfig(resolved),
    state,
    labels,
    preprocessing: {
      ...defaultPreprocessing(resolved.img_size),
      ...options.preprocessing,
      img_size: resolved.img_size,
    },
    source,
    dtype: options.dtype,
    shardMB: options.shardMB,
  });
}
