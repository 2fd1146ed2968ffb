/**
 * `deno task convert <checkpoint|url> --out <dir> [flags]`: a timm checkpoint → sharded weights folder.
 */
import { parseArgs } from "node:util";
import { convertCheckpoint } from "../lib/weights/convert.ts";

const HELP = `Usage: deno task convert <checkpoint-file-or-url> --out <dir> [options]

Converts a timm ViT checkpoint (.safetensors F32/F16/BF16, PyTorch .pth/.pth.tar incl. timm train.py
checkpoints, Google vision_transformer .npz) into model.json + sha256-verified shards.

Options:
  --out <dir>              output folder (replaced atomically)               [required]
  --arch <name>            timm architecture, e.g. vit_base_patch16_224 (fixes num_heads; guessed from
                           the file name or checkpoint when absent)
  --num-heads <n>          attention heads, when no architecture name fixes them
  --dtype float32|float16  storage dtype of the shards                       [float32]
  --shard-mb <n>           shard size in MiB                                 [4]
  --num-classes <n>        replace the head with a zero-initialised one (fine-tuning)
  --img-size <px>          resample pos_embed (bicubic, as timm) for another resolution
  --labels <file|a,b,c>    class names: a file (JSON array or one per line) or a comma list
  --mean <r,g,b>           normalisation mean                                [0.5,0.5,0.5]
  --std <r,g,b>            normalisation std                                 [0.5,0.5,0.5]
  --interpolation <m>      bilinear|bicubic                                  [bicubic]
  --crop-pct <f>           center-crop fraction for evaluation               [0.9]
  --use-ema                take state_dict_ema from a timm train.py checkpoint
  -h, --help               this text
`;

function triple(value: string | undefined, flag: string): [number, number, number] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(",").map(Number);
  if (parts.length !== 3 || parts.some((v) => !Number.isFinite(v))) {
    throw new Error(`${flag} must be three comma-separated numbers, got "${value}"`);
  }
  return parts as [number, number, number];
}

function num(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const v = Number(value);
  if (!Number.isFinite(v)) throw new Error(`${flag} must be a number, got "${value}"`);
  return v;
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
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      arch: { type: "string" },
      "num-heads": { type: "string" },
      dtype: { type: "string" },
      "shard-mb": { type: "string" },
      "num-classes": { type: "string" },
      "img-size": { type: "string" },
      labels: { type: "string" },
      mean: { type: "string" },
      std: { type: "string" },
      interpolation: { type: "string" },
      "crop-pct": { type: "string" },
      "use-ema": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length !== 1 || !values.out) {
    console.error(HELP);
    console.error(
      positionals.length !== 1 ? "error: give exactly one checkpoint" : "error: --out is required",
    );
    return 2;
  }
  if (values.dtype && values.dtype !== "float32" && values.dtype !== "float16") {
    throw new Error(`--dtype must be float32 or float16, got "${values.dtype}"`);
  }
  if (values.interpolation && !["bilinear", "bicubic"].includes(values.interpolation)) {
    throw new Error(`--interpolation must be bilinear or bicubic, got "${values.interpolation}"`);
  }
  const numHeads = num(values["num-heads"], "--num-heads");
  const started = performance.now();
  const manifest = await convertCheckpoint(positionals[0], values.out, {
    arch: values.arch,
    config: numHeads !== undefined ? { num_heads: numHeads } : undefined,
    dtype: values.dtype as "float32" | "float16" | undefined,
    shardMB: num(values["shard-mb"], "--shard-mb"),
    numClasses: num(values["num-classes"], "--num-classes"),
    imgSize: num(values["img-size"], "--img-size"),
    labels: await labels(values.labels),
    preprocessing: Object.fromEntries(
      Object.entries({
        mean: triple(values.mean, "--mean"),
        std: triple(values.std, "--std"),
        interpolation: values.interpolation,
        crop_pct: num(values["crop-pct"], "--crop-pct"),
      }).filter(([, v]) => v !== undefined),
    ),
    useEma: values["use-ema"],
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
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`convert: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
