/**
 * `deno run -A scripts/bench_regularization.ts [--config configs/cifar10_vit_micro_stage3.yml]`: training
 * throughput of a config's recipe with each of timm's regularisation keys (mixup/cutmix, aa, reprob,
 * drop_path, model_ema) on, side by side in one process (lib/bench/regularization.ts), from fresh weights of
 * the config's architecture on the first `--images` images of its training split. Prints a Markdown table.
 * Run it under `flock /tmp/vit-bench.lock` and note `uptime`'s load with the figures.
 *
 * @module
 */
import { initBackend } from "../lib/backend/backend.ts";
import { benchRegularization } from "../lib/bench/regularization.ts";
import { readManifest } from "../lib/weights/load.ts";
import { DEFAULTS, mergeConfig, readConfigSource } from "../lib/train/config.ts";
import { datasetImageSet, openSplit } from "../lib/data/image_set.ts";
import { syntheticPreprocessing } from "../lib/train/synthetic.ts";
import type { Preprocessing } from "../lib/weights/manifest.ts";
import { commandLine } from "./_cli.ts";

const SCHEMA = {
  config: {
    type: "string",
    default: "configs/cifar10_vit_micro_stage3.yml",
    metavar: "file.yml",
    help: "training config whose model, recipe and data are measured (initial_checkpoint is not loaded)",
  },
  images: {
    type: "integer",
    default: 2048,
    range: [1, Infinity],
    help: "training images used (decoded once)",
  },
  updates: {
    type: "integer",
    default: 3,
    range: [1, Infinity],
    help: "optimizer updates per variant per round",
  },
  rounds: {
    type: "integer",
    default: 3,
    range: [1, Infinity],
    help: "timed rounds (after one warm-up round)",
  },
  preprocessing: {
    type: "string",
    default: "weights",
    metavar: "dir",
    help: "model folder whose preprocessing (mean, std) is used; 0.5 when it has none",
  },
} as const;

const { values } = commandLine(
  "bench_regularization",
  "Usage: deno run -A scripts/bench_regularization.ts [--config file.yml] [--images N] [--updates N] [--rounds N]",
  SCHEMA,
);
const raw = await readConfigSource(values.config as string);
delete raw.initial_checkpoint;
const config = mergeConfig(DEFAULTS, raw, `config ${values.config}`);
const backend = await initBackend((config.backend || undefined) as "wasm" | "webgpu" | "cpu" | undefined);
let pre: Preprocessing = syntheticPreprocessing(config.img_size);
try {
  pre = { ...(await readManifest(values.preprocessing as string)).preprocessing, img_size: config.img_size };
} catch {
  // no model folder: a from-scratch model's preprocessing
}
const { dataset } = await openSplit(config.data_dir, config.train_split);
const data = datasetImageSet(dataset, pre);
const pool = Int32Array.from({ length: Math.min(values.images as number, dataset.length) }, (_, i) => i);
await data.images(pool); // decode once, so no variant pays for decoding
console.error(`backend ${backend.name}${backend.threads ? ` (${backend.threads} threads)` : ""}`);
const results = await benchRegularization(config, data, pool, {
  updates: values.updates as number,
  rounds: values.rounds as number,
  log: (m) => console.error(m),
});
console.log(
  `| keys on (over ${values.config}'s recipe) | img/s | × baseline | img per CPU-s | × baseline (CPU) |\n` +
    "| --- | ---: | ---: | ---: | ---: |",
);
for (const r of results) {
  console.log(
    `| ${r.name} | ${r.imgPerSec.toFixed(1)} | ${r.ratio.toFixed(2)} | ${r.imgPerCpuSec.toFixed(1)} | ${
      r.cpuRatio.toFixed(2)
    } |`,
  );
}
