/**
 * Writing a model as sharded weights: `model.json` (see `manifest.ts`) plus `group1-shard{i}of{n}.bin`
 * files of at most `shardMB` MiB holding every weight back to back in timm's state-dict order, as float32,
 * as tfjs-style float16, or with the blocks' linear weights as int8 (lib/vit/int8.ts; the rest float32).
 * The folder is written atomically.
 *
 * @module
 */
import { resolveConfig, timmConfig, type ViTConfig } from "../vit/config.ts";
import { checkStateDict, paramSpecs, type StateDict } from "../vit/params.ts";
import { encodeInt8Entry, int8EntryBytes, int8WeightNames, quantizeLinear } from "../vit/int8.ts";
import { writeDirAtomic } from "../util/fs.ts";
import { f32ToF16 } from "./dtype.ts";
import {
  INT8_SCHEME,
  MANIFEST_FORMAT,
  type ModelManifest,
  type Preprocessing,
  type SourceInfo,
  type WeightEntry,
} from "./manifest.ts";
import { sha256Hex } from "./sha256.ts";

/** What {@linkcode saveModel} writes. */
export interface SaveModelOptions {
  config: ViTConfig;
  state: StateDict;
  preprocessing: Preprocessing;
  labels: string[];
  source: SourceInfo;
  /** Storage dtype; float32 by default. `int8`: the blocks' linear weights int8, the rest float32. */
  dtype?: "float32" | "float16" | "int8";
  /** Shard size in MiB; 4 by default. */
  shardMB?: number;
  extra?: Record<string, unknown>;
  /**
   * Further files, by name, written into the folder in the same atomic replacement (a training checkpoint's
   * optimizer state), so the folder appears whole or not at all.
   */
  files?: Record<string, Uint8Array>;
}

/** Writes `outDir` (replacing it atomically) and returns the manifest written. */
export async function saveModel(outDir: string, options: SaveModelOptions): Promise<ModelManifest> {
  const config = resolveConfig(options.config);
  const specs = paramSpecs(config);
  checkStateDict(specs, options.state);
  const dtype = options.dtype ?? "float32";
  const shardBytes = Math.floor((options.shardMB ?? 4) * 2 ** 20);
  if (!(shardBytes >= 1024)) throw new Error(`shardMB must be at least 1 KiB, got ${options.shardMB}`);
  if (options.labels.length !== config.num_classes) {
    throw new Error(`labels: ${options.labels.length} names for ${config.num_classes} classes`);
  }
  const int8 = dtype === "int8" ? int8WeightNames(config.depth) : new Set<string>();
  const entries: WeightEntry[] = specs.map((s) => ({
    name: s.name,
    shape: s.shape,
    dtype: "float32",
    ...(dtype === "float16" ? { quantization: { dtype: "float16", original_dtype: "float32" } } : {}),
    ...(int8.has(s.name)
      ? { quantization: { dtype: "int8", original_dtype: "float32", scheme: INT8_SCHEME } }
      : {}),
  }));
  // Bytes of one entry: int8 values and a float32 scale per output row, or 2 / 4 bytes per value.
  const entryBytes = (s: { name: string; shape: number[] }) => {
    if (int8.has(s.name)) return int8EntryBytes(s.shape);
    return s.shape.reduce((a, b) => a * b, 1) * (dtype === "float16" ? 2 : 4);
  };
  const total = specs.reduce((sum, s) => sum + entryBytes(s), 0);
  const count = Math.max(1, Math.ceil(total / shardBytes));
  const paths = Array.from({ length: count }, (_, i) => `group1-shard${i + 1}of${count}.bin`);
  const shards: Record<string, string> = {};

  await writeDirAtomic(outDir, async (tmp) => {
    let index = 0, fill = 0;
    let buffer = new Uint8Array(Math.min(shardBytes, total));
    const flush = async () => {
      const bytes = buffer.subarray(0, fill);
      shards[paths[index]] = await sha256Hex(bytes);
      await Deno.writeFile(`${tmp}/${paths[index]}`, bytes);
      index++;
      fill = 0;
      buffer = new Uint8Array(Math.max(0, Math.min(shardBytes, total - index * shardBytes)));
    };
    for (const spec of specs) {
      const t = options.state.get(spec.name)!;
      let raw: Uint8Array;
      if (int8.has(spec.name)) {
        raw = encodeInt8Entry(t.int8 ?? quantizeLinear(t.data, spec.shape[0], spec.shape[1]));
      } else {
        raw = dtype === "float16"
          ? new Uint8Array(f32ToF16(t.data).buffer)
          : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      }
      for (let at = 0; at < raw.length;) {
        const n = Math.min(raw.length - at, buffer.length - fill);
        buffer.set(raw.subarray(at, at + n), fill);
        fill += n;
        at += n;
        if (fill === buffer.length) await flush();
      }
    }
    if (fill > 0) await flush();
    const manifest: ModelManifest = {
      format: MANIFEST_FORMAT,
      weightsManifest: [{ paths, weights: entries }],
      vit: timmConfig(config),
      preprocessing: options.preprocessing,
      labels: options.labels,
      source: options.source,
      shards,
      dtype,
      created: new Date().toISOString(),
      ...(options.extra ? { extra: options.extra } : {}),
    };
    await Deno.writeTextFile(`${tmp}/model.json`, JSON.stringify(manifest, null, 1) + "\n");
    for (const [name, bytes] of Object.entries(options.files ?? {})) {
      await Deno.writeFile(`${tmp}/${name}`, bytes);
    }
  });
  return JSON.parse(await Deno.readTextFile(`${outDir}/model.json`));
}
