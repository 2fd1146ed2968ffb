/**
 * `deno task convert <checkpoint|url> --out <dir> [flags]`: a timm checkpoint → sharded weights folder.
 */
import type { Schema } from "../lib/util/options.ts";
import { convertCheckpoint } from "../lib/weights/convert.ts";
import { writeModelFolderEngine } from "../lib/weights/load.ts";
import { commandLine, runTask } from "./_cli.ts";

const USAGE = `Usage: deno task convert <checkpoint-file-or-url> --out <dir> [options]

Converts a timm ViT checkpoint (.safetensors F32/F16/BF16, PyTorch .pth/.pth.tar incl. timm train.py
checkpoints, Google vision_transformer .npz) into model.json + sha256-verified shards.`;

/** The options of `deno task convert`. */
export const CONVERT_OPTIONS = {
  out: { type: "string", metavar: "dir", required: true, help: "output folder, replaced atomically" },
  arch: {
    type: "string",
    metavar: "name",
    help: "timm architecture, e.g. vit_base_patch16_224 (fixes num_heads; guessed from the file name or " +
      "checkpoint when absent)",
  },
  "num-heads": {
    type: "integer",
    range: [1, Infinity],
    help: "attention heads, when no architecture name fixes them",
  },
  dtype: {
    type: "string",
    default: "float32",
    range: ["float32", "float16", "int8"],
    help: "storage dtype of the shards (int8: the blocks' linear weights, for the onnx engine's int8 graph)",
  },
  "shard-mb": { type: "number", default: 4, range: [Number.MIN_VALUE, Infinity], help: "shard size in MiB" },
  "num-classes": {
    type: "integer",
    range: [1, Infinity],
    help: "replace the head with a zero-initialised one (fine-tuning)",
  },
  "img-size": {
    type: "integer",
    range: [1, Infinity],
    help: "resample pos_embed (bicubic, as timm) for another resolution",
  },
  labels: {
    type: "string",
    metavar: "file|a,b,c",
    help: "class names: a file (JSON array or one per line) or a comma list",
  },
  mean: { type: "string", metavar: "r,g,b", defaultText: "0.5,0.5,0.5", help: "normalisation mean" },
  std: { type: "string", metavar: "r,g,b", defaultText: "0.5,0.5,0.5", help: "normalisation std" },
  interpolation: {
    type: "string",
    range: ["bilinear", "bicubic"],
    defaultText: "bicubic",
    help: "resize interpolation",
  },
  "crop-pct": {
    type: "number",
    range: [Number.MIN_VALUE, 1],
    defaultText: "0.9",
    help: "center-crop fraction for evaluation",
  },
  "use-ema": { type: "boolean", default: false, help: "take state_dict_ema from a timm train.py checkpoint" },
  "onnx-engine": {
    type: "boolean",
    default: false,
    help:
      "also write the onnx engine cache (onnx-engine/ in the folder) for this CPU and ONNX Runtime version",
  },
} satisfies Schema;

function triple(value: string | undefined, flag: string): [number, number, number] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(",").map(Number);
  if (parts.length !== 3 || parts.some((v) => !Number.isFinite(v))) {
    throw new Error(`${flag} must be three comma-separated numbers, got "${value}"`);
  }
  return parts as [number, number, number];
}

async function labels(value: string | undefined): Promise<string[] | undefined> {
  if (value === undefined) return undefined;
  try {
    const text = await Deno.readTextFile(value);
    const trimmed = text.trim();
    return trimmed.startsWith("[") ? JSON.parse(trimmed) : trimmed.split(/\r?\n/).map((l) => l.trim());
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    return value.split(",").map((l) => l.trim());
  }
}

async function main(): Promise<number> {
  const { values, positionals } = commandLine("convert", USAGE, CONVERT_OPTIONS, Deno.args, {
    allowPositionals: true,
  });
  if (positionals.length !== 1) {
    console.error("convert: give exactly one checkpoint (see deno task convert --help)");
    return 2;
  }
  const numHeads = values["num-heads"] as number | undefined;
  const started = performance.now();
  const manifest = await convertCheckpoint(positionals[0], values.out as string, {
    arch: values.arch as string | undefined,
    config: numHeads !== undefined ? { num_heads: numHeads } : undefined,
    dtype: values.dtype as "float32" | "float16" | "int8" | undefined,
    shardMB: values["shard-mb"] as number,
    numClasses: values["num-classes"] as number | undefined,
    imgSize: values["img-size"] as number | undefined,
    labels: await labels(values.labels as string | undefined),
    preprocessing: Object.fromEntries(
      Object.entries({
        mean: triple(values.mean as string | undefined, "--mean"),
        std: triple(values.std as string | undefined, "--std"),
        interpolation: values.interpolation,
        crop_pct: values["crop-pct"],
      }).filter(([, v]) => v !== undefined),
    ),
    useEma: values["use-ema"] as boolean,
  });
  const shards = manifest.weightsManifest.reduce((a, g) => a + g.paths.length, 0);
  const c = manifest.vit;
  console.log(
    `converted ${
      positionals[0]
    } → ${values.out}: ${manifest.source.format}, ${manifest.dtype}, ${shards} shards, ` +
      `img ${c.img_size} patch ${c.patch_size} dim ${c.embed_dim} depth ${c.depth} heads ${c.num_heads} ` +
      `classes ${c.num_classes} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
  );
  if (values["onnx-engine"]) {
    const at = performance.now();
    const entry = await writeModelFolderEngine(values.out as string, { onnxWeights: "float32" });
    console.log(`onnx engine cache → ${entry} (${((performance.now() - at) / 1000).toFixed(1)} s)`);
  }
  return 0;
}

if (import.meta.main) await runTask("convert", main);
