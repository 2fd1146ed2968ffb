/**
 * The training configuration: timm `train.py`'s option names (a YAML file as timm's `--config`, keys with
 * `_` or `-`), defaults, validation with errors naming the key, and command-line overrides
 * (`--lr 0.01`, `--sched=step`, `--no-hflip`, lists as `--scale 0.08 1` or `--scale 0.08,1`).
 *
 * The training crop: by default none (the evaluation geometry, plus `crop_pad`'s padded random crop when
 * set), so configs written before RandomResizedCrop existed train exactly as before. timm's
 * RandomResizedCrop (`train_crop_mode: rrc`, timm's own default) is on when a source (the YAML file or
 * the command line) sets `train_crop_mode: rrc`, or sets `scale` or `ratio` without naming a
 * `train_crop_mode`; `scale`/`ratio` left out take timm's defaults. A later source's
 * `train_crop_mode: none` turns it off again. RRC and `crop_pad` are alternatives, as in timm (which has
 * no padded crop): asking for both is an error.
 *
 * timm's regularisation keys (`mixup`, `cutmix`, `mixup_prob`, `mixup_switch_prob`, `mixup_mode`, `aa`,
 * `reprob`, `remode`, `recount`, `drop_path`, `model_ema`, `model_ema_decay`) are off by default and are
 * recorded only when they differ from timm's defaults ({@linkcode REGULARIZATION_DEFAULTS}), so configs
 * written before they existed train, record and resume exactly as before.
 *
 * @module
 */
import { parse as parseYaml } from "yaml";
import { RRC_DEFAULTS, type TrainAugment } from "../data/augment.ts";
import { MIXUP_MODES, type MixupMode, type MixupOptions } from "../data/mixup.ts";
import { parseRandAugment } from "../data/rand_augment.ts";
import { ERASE_MODES, type EraseMode } from "../data/random_erasing.ts";
import { archConfig } from "../vit/archs.ts";
import type { ViTConfig } from "../vit/config.ts";
import type { OptimizerName } from "./optimizer.ts";
import {
  OptionError,
  optionKey,
  optionValue,
  readCommandLine,
  type Schema,
  schemaDefaults,
} from "../util/options.ts";

/**
 * What `freeze` may say: nothing, everything but the head, or the patch embedding plus the first N blocks.
 */
export type Freeze = "none" | "head-only" | { blocks: number };

/** Every training option, in timm's names (underscored). */
export interface TrainConfig {
  /**
   * A timm arch name (`vit_base_patch16_224`), or an explicit ViT config object for training from scratch.
   */
  model: string | Partial<ViTConfig>;
  /**
   * A converted weights folder (`deno task convert`) to start from; its head is replaced when `num_classes`
   * differs.
   */
  initial_checkpoint?: string;
  num_classes: number;
  img_size: number;
  /** Images per forward/backward pass. */
  batch_size: number;
  /** Passes accumulated per optimizer update (effective batch = batch_size × grad_accum_steps). */
  grad_accum_steps: number;
  opt: OptimizerName;
  momentum: number;
  weight_decay: number;
  lr: number;
  min_lr: number;
  sched: "cosine" | "step" | "constant";
  warmup_epochs: number;
  warmup_lr: number;
  decay_epochs: number;
  decay_rate: number;
  epochs: number;
  /** Label smoothing. */
  smoothing: number;
  /** Normalisation mean (timm's `--mean`); the initial checkpoint's, else 0.5, when absent. */
  mean?: [number, number, number];
  /** Normalisation std (timm's `--std`). */
  std?: [number, number, number];
  /** Resize interpolation (timm's `--interpolation`). */
  interpolation?: "bilinear" | "bicubic";
  /** Center-crop fraction at evaluation (timm's `--crop-pct`). */
  crop_pct?: number;
  /** Max global gradient norm; 0 disables clipping. */
  clip_grad: number;
  seed: number;
  /** `none`, `head-only`, or `blocks:N` (patch embedding, tokens and the first N blocks frozen). */
  freeze: Freeze;
  /** Dataset folder (`<split>/<class>/*.jpg` or CIFAR-10's binary batches). */
  data_dir: string;
  /** Training split name. */
  train_split: string;
  /** Evaluation split name, or `holdout:N`: N class-balanced images carved out of the training split. */
  val_split: string;
  /** Use only this many training images (class-balanced, seeded); 0 = all. */
  train_subset: number;
  /** Evaluate each epoch on this many validation images (class-balanced); 0 = all. */
  eval_subset: number;
  /** Probability of a horizontal flip (timm's `hflip`). */
  hflip: number;
  /**
   * Random-crop padding in source-image pixels, filled black (CIFAR's pad-and-crop, lib/data's
   * `crop_padding`); 0 disables it.
   */
  crop_pad: number;
  /**
   * `rrc`: timm's RandomResizedCrop to `img_size` (timm's `--train-crop-mode`); absent: no random crop
   * (see the module doc for when it is on). Always present with `scale` and `ratio` after
   * {@linkcode mergeConfig}.
   */
  train_crop_mode?: "rrc";
  /** RandomResizedCrop's range of the crop's area fraction (timm's `--scale`, default [0.08, 1]). */
  scale?: [number, number];
  /** RandomResizedCrop's range of the crop's aspect ratio w/h (timm's `--ratio`, default [3/4, 4/3]). */
  ratio?: [number, number];
  /** Run folder: checkpoints, metrics.jsonl, curves.svg. */
  output: string;
  /** Checkpoint every this many optimizer updates (and at every epoch end); 0 = only at epoch ends. */
  checkpoint_every: number;
  /** How many step checkpoints to keep. */
  checkpoint_keep: number;
  /**
   * Force an engine (webgpu, onnx, wasm, cpu; onnx evaluates on ONNX Runtime, trains on tfjs); empty =
   * automatic.
   */
  backend: string;
  /** Continue from the last checkpoint in `output`. */
  resume: boolean;
  /** Stop after this many optimizer updates in this process (for tests and time-boxed runs); 0 = no limit. */
  max_updates: number;
  /** Mixup's Beta α (timm's `--mixup`); absent = off. */
  mixup?: number;
  /** CutMix's Beta α (timm's `--cutmix`); absent = off. */
  cutmix?: number;
  /** Probability of mixing a batch / pair / element (timm's `--mixup-prob`, default 1). */
  mixup_prob?: number;
  /** Probability of CutMix instead of mixup when both are on (timm's `--mixup-switch-prob`, default 0.5). */
  mixup_switch_prob?: number;
  /** Mixing parameters per `batch` (default), `pair` or `elem` (timm's `--mixup-mode`). */
  mixup_mode?: MixupMode;
  /** RandAugment string (timm's `--aa`, e.g. `rand-m9-mstd0.5-inc1`); absent = off. */
  aa?: string;
  /** Random-erasing probability (timm's `--reprob`); absent = off. */
  reprob?: number;
  /** Random-erasing fill: const, rand or pixel (timm's `--remode`, default pixel). */
  remode?: EraseMode;
  /**
   * The most random-erasing rectangles per image, the count drawn in [1, recount] (timm's `--recount`, 1).
   */
  recount?: number;
  /** Stochastic depth rate of the last block, linear from 0 at the first (timm's `--drop-path`). */
  drop_path?: number;
  /** Keep an EMA of the weights, evaluate it each epoch and export it (timm's `--model-ema`). */
  model_ema?: boolean;
  /** The EMA's decay per update (timm's `--model-ema-decay`, default 0.9998). */
  model_ema_decay?: number;
  /** Cache the frozen prefix's outputs (lib/train/frozen_cache.ts) when `freeze` leaves one. */
  frozen_cache: boolean;
  /** Memory for that cache, MiB. */
  frozen_cache_mb: number;
  /** A folder for cache entries beyond memory, kept across runs; empty = none. */
  frozen_cache_dir: string;
  /**
   * The epoch a fresh run starts at (timm's `--start-epoch`): its schedule and data order begin there, the
   * weights from `initial_checkpoint`. Absent = 0. A resume starts where its checkpoint is.
   */
  start_epoch?: number;
}

const positiveInt = [1, Infinity] as const, nonNegative = [0, Infinity] as const;

/**
 * Every option of `deno task train`, in timm's names, declared once: the defaults, the validation, `--help`
 * and README's option list come from here. The order of the keys with a default is the order a run records
 * its config in (metrics.jsonl, checkpoints), which resume compares: append new keys, never reorder.
 */
export const TRAIN_OPTIONS = {
  model: {
    type: "string",
    default: "vit_base_patch16_224",
    defaultText: "vit_base_patch16_224, or initial_checkpoint's",
    metavar: "arch",
    help: "timm arch name, or a ViT config object (JSON) to train from scratch; left out with " +
      "initial_checkpoint, the checkpoint's architecture, img_size and preprocessing",
    parse: parseModel,
  },
  num_classes: {
    type: "integer",
    default: 10,
    range: positiveInt,
    help: "classes (the head is replaced when it differs)",
  },
  img_size: {
    type: "integer",
    default: 224,
    range: positiveInt,
    help: "input resolution (pos_embed is resampled)",
  },
  batch_size: { type: "integer", default: 64, range: positiveInt, help: "images per forward/backward pass" },
  grad_accum_steps: {
    type: "integer",
    default: 1,
    range: positiveInt,
    help: "passes accumulated per optimizer update (effective batch = batch_size × grad_accum_steps)",
  },
  opt: { type: "string", default: "sgd", range: ["sgd", "momentum", "adamw"], help: "optimizer" },
  momentum: { type: "number", default: 0.9, range: nonNegative, help: "SGD momentum" },
  weight_decay: { type: "number", default: 0, range: nonNegative, help: "weight decay" },
  lr: { type: "number", default: 0.03, range: [Number.MIN_VALUE, Infinity], help: "peak learning rate" },
  min_lr: { type: "number", default: 0, range: nonNegative, help: "cosine schedule's floor" },
  sched: { type: "string", default: "cosine", range: ["cosine", "step", "constant"], help: "LR schedule" },
  warmup_epochs: { type: "number", default: 0, range: nonNegative, help: "linear warm-up, in epochs" },
  warmup_lr: {
    type: "number",
    default: 0,
    range: nonNegative,
    help: "learning rate the warm-up starts from",
  },
  decay_epochs: { type: "number", default: 30, help: "step schedule: epochs between decays" },
  decay_rate: { type: "number", default: 0.1, help: "step schedule: LR factor per decay" },
  epochs: { type: "integer", default: 10, range: positiveInt, help: "epochs" },
  smoothing: { type: "number", default: 0, aliases: ["smooth"], help: "label smoothing, in [0, 1)" },
  clip_grad: {
    type: "number",
    default: 0,
    range: nonNegative,
    aliases: ["clip"],
    help: "max global gradient norm; 0 disables clipping",
  },
  seed: { type: "integer", default: 42, help: "random seed (init, order, augmentation)" },
  freeze: {
    type: "string",
    default: "none",
    metavar: "none|head-only|blocks:N",
    help: "train everything, only the head, or freeze the patch embedding and the first N blocks",
    parse: parseFreeze,
  },
  data_dir: {
    type: "string",
    default: "data/cifar10-jpeg",
    metavar: "dir",
    aliases: ["data"],
    help: "dataset folder (<split>/<class>/*.jpg or CIFAR-10's binary batches), or synthetic:N",
  },
  train_split: { type: "string", default: "train", help: "training split" },
  val_split: {
    type: "string",
    default: "test",
    help: "evaluation split, or holdout:N (N class-balanced images held out of the training split)",
  },
  train_subset: {
    type: "integer",
    default: 0,
    range: nonNegative,
    help: "use only this many training images (class-balanced, seeded); 0 = all",
  },
  eval_subset: {
    type: "integer",
    default: 0,
    range: nonNegative,
    help: "evaluate each epoch on this many validation images (class-balanced); 0 = all",
  },
  hflip: { type: "number", default: 0.5, range: [0, 1], negate: 0, help: "horizontal flip probability" },
  crop_pad: {
    type: "integer",
    default: 0,
    range: nonNegative,
    help: "random-crop padding in source pixels (CIFAR's pad-and-crop); 0 disables it",
  },
  output: {
    type: "string",
    default: "runs/train",
    metavar: "dir",
    help: "run folder: checkpoints, metrics, curves",
  },
  checkpoint_every: {
    type: "integer",
    default: 0,
    range: nonNegative,
    help: "checkpoint every N optimizer updates (and at each epoch end); 0 = epoch ends only",
  },
  checkpoint_keep: { type: "integer", default: 2, range: nonNegative, help: "step checkpoints to keep" },
  backend: {
    type: "string",
    default: "",
    range: ["webgpu", "onnx", "wasm", "cpu"],
    defaultText: "automatic",
    metavar: "webgpu|onnx|wasm|cpu",
    help: "engine (onnx: evaluation on ONNX Runtime, training on the automatic tfjs backend)",
  },
  resume: { type: "boolean", default: false, help: "continue from the last checkpoint in output" },
  max_updates: {
    type: "integer",
    default: 0,
    range: nonNegative,
    help: "stop after this many optimizer updates in this process; 0 = no limit",
  },
  initial_checkpoint: {
    type: "string",
    metavar: "dir",
    help: "converted weights folder to fine-tune from (deno task convert, or a trained model)",
  },
  mean: {
    type: "numbers",
    metavar: "r g b",
    help: "normalisation mean [initial_checkpoint's, else 0.5]",
    parse: triple,
  },
  std: {
    type: "numbers",
    metavar: "r g b",
    help: "normalisation std [initial_checkpoint's, else 0.5]",
    parse: triple,
  },
  interpolation: {
    type: "string",
    range: ["bilinear", "bicubic"],
    help: "resize interpolation [initial_checkpoint's, else bicubic]",
  },
  crop_pct: { type: "number", range: [Number.MIN_VALUE, 1], help: "center-crop fraction at evaluation [1]" },
  train_crop_mode: {
    type: "string",
    bare: "rrc",
    negate: "none",
    metavar: "rrc|none",
    help: "rrc: timm's RandomResizedCrop (on by itself when scale or ratio is set); not with crop_pad",
    parse: parseCropMode,
  },
  scale: {
    type: "numbers",
    nargs: true,
    metavar: "lo hi",
    help: "RandomResizedCrop area fraction range [0.08 1]",
    parse: (v: unknown) => parseRange("scale", v),
  },
  ratio: {
    type: "numbers",
    nargs: true,
    metavar: "lo hi",
    help: "RandomResizedCrop aspect-ratio range, fractions allowed [3/4 4/3]",
    parse: (v: unknown) => parseRange("ratio", v),
  },
  mixup: { type: "number", range: nonNegative, metavar: "alpha", help: "mixup Beta alpha; 0 = off [0]" },
  cutmix: { type: "number", range: nonNegative, metavar: "alpha", help: "CutMix Beta alpha; 0 = off [0]" },
  mixup_prob: {
    type: "number",
    range: [0, 1],
    help: "probability of mixing a batch / pair / element with mixup or CutMix [1]",
  },
  mixup_switch_prob: {
    type: "number",
    range: [0, 1],
    help: "probability of CutMix rather than mixup when both are on [0.5]",
  },
  mixup_mode: {
    type: "string",
    range: MIXUP_MODES,
    help: "draw mixup/CutMix parameters per batch, pair or elem(ent) [batch]",
  },
  aa: {
    type: "string",
    metavar: "rand-m9-mstd0.5-inc1",
    help: "RandAugment (timm's rand-m<M>[-n<N>][-mstd<S>][-mmax<X>][-inc<0|1>]); none = off",
    parse: parseAa,
  },
  reprob: { type: "number", range: [0, 1], help: "random-erasing probability, after normalisation [0]" },
  remode: { type: "string", range: ERASE_MODES, help: "random-erasing fill: const, rand or pixel [pixel]" },
  recount: {
    type: "integer",
    range: positiveInt,
    help: "the most random-erasing rectangles per image (drawn in 1..N) [1]",
  },
  drop_path: {
    type: "number",
    range: [0, 1],
    parse: belowOne,
    metavar: "rate",
    help: "stochastic depth rate of the last block, linear from 0 over the blocks (timm's dpr) [0]",
  },
  model_ema: {
    type: "boolean",
    help: "keep an EMA of the weights; evaluated every epoch and exported instead of the raw weights",
  },
  model_ema_decay: {
    type: "number",
    range: [0, 1],
    parse: belowOne,
    help: "EMA decay per update [0.9998]",
  },
  frozen_cache: {
    type: "boolean",
    default: true,
    help: "with freeze head-only or blocks:N, compute the frozen prefix once per image view and cache it",
  },
  frozen_cache_mb: {
    type: "integer",
    default: 512,
    range: nonNegative,
    help: "memory for the frozen-prefix cache, MiB",
  },
  frozen_cache_dir: {
    type: "string",
    default: "",
    metavar: "dir",
    help: "also keep frozen-prefix entries there (2 GiB at most), across runs; empty = memory only",
  },
  start_epoch: {
    type: "integer",
    range: nonNegative,
    metavar: "n",
    help: "a fresh run starts its schedule and data order at this epoch (continue a long run from an " +
      "initial_checkpoint without its optimizer state) [0]",
  },
} satisfies Schema;

/** timm's defaults of the regularisation keys; a key at its default is not recorded (see the module doc). */
export const REGULARIZATION_DEFAULTS = {
  mixup: 0,
  cutmix: 0,
  mixup_prob: 1,
  mixup_switch_prob: 0.5,
  mixup_mode: "batch" as MixupMode,
  aa: "",
  reprob: 0,
  remode: "pixel" as EraseMode,
  recount: 1,
  drop_path: 0,
  model_ema: false,
  model_ema_decay: 0.9998,
};

function belowOne(value: unknown): number {
  if (!((value as number) < 1)) throw new Error("a number in [0, 1)");
  return value as number;
}

function parseAa(value: unknown): string {
  if (value === null || value === false || value === "" || value === "none") return "";
  if (typeof value !== "string") throw new Error("a RandAugment string such as rand-m9-mstd0.5-inc1");
  try {
    parseRandAugment(value);
  } catch (e) {
    // parseRandAugment names the key and the value; optionValue adds both again.
    throw new Error((e as Error).message.replace(/^aa: "[^"]*" /, "a RandAugment string that ").trim());
  }
  return value;
}

/** `deno task train`'s command line: the config keys, plus the file and the export folder. */
export const TRAIN_CLI: Schema = {
  config: {
    type: "string",
    metavar: "file.yml",
    cliOnly: true,
    help: "YAML config (timm's --config); flags override it",
  },
  ...TRAIN_OPTIONS,
  export: {
    type: "string",
    metavar: "dir",
    cliOnly: true,
    help:
      "also write the final model there as float16 shards (what weights/ ships); a run that max_updates " +
      "stopped writes the weights it reached",
  },
};

/** Defaults (timm's where timm has one), from {@linkcode TRAIN_OPTIONS}. */
export const DEFAULTS: TrainConfig = schemaDefaults(TRAIN_OPTIONS) as unknown as TrainConfig;

function parseModel(value: unknown): string | Partial<ViTConfig> {
  if (typeof value === "string" && value.trim().startsWith("{")) return JSON.parse(value);
  if (typeof value === "string" || (typeof value === "object" && value !== null)) {
    return value as string | Partial<ViTConfig>;
  }
  throw new Error("a timm arch name or a ViT config object");
}

function triple(value: unknown): [number, number, number] {
  const v = numberList(value);
  if (!v || v.length !== 3) throw new Error("three numbers");
  return v as [number, number, number];
}

function parseFreeze(v: unknown): Freeze {
  if (v === undefined || v === null || v === "none" || v === false) return "none";
  if (v === "head-only" || v === "head_only") return "head-only";
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v === 0 ? "none" : { blocks: v };
  if (typeof v === "object" && v !== null && Number.isInteger((v as { blocks: number }).blocks)) {
    return { blocks: (v as { blocks: number }).blocks };
  }
  const m = typeof v === "string" ? /^(?:blocks?[:=]|first[_-])?(\d+)$/.exec(v) : null;
  if (m) return Number(m[1]) === 0 ? "none" : { blocks: Number(m[1]) };
  throw new Error("none, head-only or blocks:N");
}

/**
 * A list of numbers from YAML (`[0.08, 1]`) or the command line (`"0.08 1"`, `"0.08,1"`); tokens may be
 * fractions (`3/4`). Undefined when `value` is not such a list.
 */
function numberList(value: unknown): number[] | undefined {
  const items = typeof value === "string"
    ? value.split(/[ ,]+/).filter(Boolean)
    : typeof value === "number"
    ? [value]
    : value;
  if (!Array.isArray(items)) return undefined;
  const nums = items.map((x) => {
    if (typeof x === "number") return x;
    if (typeof x !== "string") return NaN;
    const f = /^\s*([^/]+)\/([^/]+)\s*$/.exec(x);
    return f ? Number(f[1]) / Number(f[2]) : Number(x);
  });
  return nums.every(Number.isFinite) ? nums : undefined;
}

/** `scale` or `ratio`: two numbers, 0 < lo ≤ hi (and hi ≤ 1 for `scale`, an area fraction). */
function parseRange(key: "scale" | "ratio", value: unknown): [number, number] {
  const v = numberList(value);
  const max = key === "scale" ? 1 : Infinity;
  if (!v || v.length !== 2 || !(v[0] > 0 && v[0] <= v[1] && v[1] <= max)) {
    throw new Error(
      `two numbers [lo, hi] with 0 < lo ≤ hi${key === "scale" ? " ≤ 1" : ""}` +
        ` (timm's default ${key === "scale" ? "[0.08, 1]" : "[3/4, 4/3]"})`,
    );
  }
  return [v[0], v[1]];
}

function parseCropMode(value: unknown): "rrc" | "none" {
  if (value === "rrc" || value === true) return "rrc";
  if (value === "none" || value === false) return "none";
  const note = value === "rkrc" || value === "rkrr" ? " (timm's rkrc/rkrr are not implemented)" : "";
  throw new Error(`rrc (RandomResizedCrop) or none${note}`);
}

/**
 * Merges raw key/value pairs (from YAML or the command line) over `base`, validating each; `source` names
 * where they came from in errors. Unknown keys are an error (a typo must not silently train something else).
 */
export function mergeConfig(
  base: TrainConfig,
  raw: Record<string, unknown>,
  source: string,
): TrainConfig {
  const out: Record<string, unknown> = { ...base };
  let cropMode: "rrc" | "none" | undefined;
  const rrcKeys: string[] = [];
  for (const [key0, value] of Object.entries(raw)) {
    const key = optionKey(TRAIN_OPTIONS, key0);
    if (key === undefined) throw new OptionError(`${source}: unknown option "${key0}"`);
    const v = optionValue(TRAIN_OPTIONS, key, value, source);
    if (key === "train_crop_mode") cropMode = v as "rrc" | "none";
    else out[key] = v;
    if (key === "scale" || key === "ratio") rrcKeys.push(key);
  }
  // This source's word on the crop wins over the base's; scale/ratio alone imply rrc (see the module doc).
  if (cropMode === "none" && rrcKeys.length) {
    throw new Error(
      `${source}: "${rrcKeys[0]}" is a RandomResizedCrop option, but "train_crop_mode" is none ` +
        `(use train_crop_mode: rrc, or drop ${rrcKeys.join(" and ")})`,
    );
  }
  const rrc = cropMode
    ? cropMode === "rrc"
    : rrcKeys.length > 0 || out.train_crop_mode === "rrc" || out.scale !== undefined ||
      out.ratio !== undefined;
  const scale = out.scale ?? [...RRC_DEFAULTS.scale], ratio = out.ratio ?? [...RRC_DEFAULTS.ratio];
  // Absent rather than "none" without RRC, so such runs record the same config as before RRC existed;
  // with it, all three in a fixed order, so the recorded config (metrics.jsonl, resume checks) is complete.
  delete out.train_crop_mode;
  delete out.scale;
  delete out.ratio;
  if (rrc) Object.assign(out, { train_crop_mode: "rrc", scale, ratio });
  for (const [k, d] of Object.entries(REGULARIZATION_DEFAULTS)) if (out[k] === d) delete out[k];
  // Recorded only when set, so runs from before it existed record and resume as before.
  if (out.start_epoch === 0) delete out.start_epoch;
  return validate(out as unknown as TrainConfig, source);
}

/** Checks across keys (each key's own range is checked by its schema entry). */
function validate(c: TrainConfig, source: string): TrainConfig {
  if ((c.start_epoch ?? 0) >= c.epochs) {
    throw new Error(`${source}: "start_epoch" (${c.start_epoch}) must be below "epochs" (${c.epochs})`);
  }
  if (!(c.smoothing >= 0 && c.smoothing < 1)) throw new Error(`${source}: "smoothing" must be in [0, 1)`);
  if (c.train_crop_mode === "rrc" && c.crop_pad > 0) {
    throw new Error(
      `${source}: "crop_pad" (${c.crop_pad}) and RandomResizedCrop (train_crop_mode rrc, scale, ratio) ` +
        `are alternative training crops (timm has only RRC); set crop_pad to 0 or train_crop_mode to none`,
    );
  }
  if (trainMixup(c) && c.batch_size % 2 !== 0) {
    throw new Error(
      `${source}: mixup/cutmix pair sample i with sample n−1−i of each batch, so "batch_size" must be even ` +
        `(got ${c.batch_size})`,
    );
  }
  return c;
}

/** A YAML config file's options as written (keys in any spelling; {@linkcode mergeConfig} checks them). */
export async function readConfigSource(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`config ${path}: cannot be read (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new Error(`config ${path}: not valid YAML (${(e as Error).message})`);
  }
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new Error(`config ${path}: expected a mapping of options`);
  }
  return raw as Record<string, unknown>;
}

/** Reads a YAML config file over the defaults. */
export async function readConfigFile(path: string, base: TrainConfig = DEFAULTS): Promise<TrainConfig> {
  const raw = await readConfigSource(path);
  return Object.keys(raw).length ? mergeConfig(base, raw, `config ${path}`) : base;
}

/**
 * What the initial checkpoint decides when the config leaves it out (timm fine-tunes the checkpoint's own
 * model): without `model`, the architecture is the checkpoint's, and so are `img_size` and `num_classes`
 * unless set. `explicit` holds the keys a source set.
 */
export function checkpointDefaults(
  c: TrainConfig,
  vit: ViTConfig,
  explicit: ReadonlySet<string>,
): TrainConfig {
  if (!c.initial_checkpoint || explicit.has("model")) return c;
  const { img_size, num_classes, ...arch } = vit;
  return {
    ...c,
    model: arch,
    img_size: explicit.has("img_size") ? c.img_size : img_size,
    num_classes: explicit.has("num_classes") ? c.num_classes : num_classes,
  };
}

/** The schema keys `raw` sets (its keys in any spelling). */
export function explicitKeys(...raw: Record<string, unknown>[]): Set<string> {
  return new Set(raw.flatMap((r) => Object.keys(r).map((k) => optionKey(TRAIN_OPTIONS, k) ?? k)));
}

/**
 * Splits command-line arguments by {@linkcode TRAIN_CLI}: `--key value`, `--key=value`, `--key v1 v2` for
 * timm's nargs lists (the list `"v1 v2"`), bare `--flag` (true) and `--no-flag`. `--config` and `--export`
 * are returned separately; values stay as typed ({@linkcode mergeConfig} checks them).
 */
export function parseArgs(
  args: readonly string[],
): { config?: string; export?: string; help: boolean; options: Record<string, unknown> } {
  const { values, help } = readCommandLine(TRAIN_CLI, args);
  const { config, export: exportDir, ...options } = values;
  return { config: config as string | undefined, export: exportDir as string | undefined, help, options };
}

/**
 * The training augmentation lib/data applies for `c`. Without RandomResizedCrop it is exactly what runs
 * used before RRC was configurable (same fields, so the same draws).
 */
export function trainAugment(c: TrainConfig): TrainAugment {
  const aug: TrainAugment = { crop_padding: c.crop_pad, hflip: c.hflip };
  if (c.aa) aug.rand_augment = parseRandAugment(c.aa);
  if (c.reprob) {
    const d = REGULARIZATION_DEFAULTS;
    aug.random_erasing = { prob: c.reprob, mode: c.remode ?? d.remode, count: c.recount ?? d.recount };
  }
  if (c.train_crop_mode === "rrc" || c.scale || c.ratio) {
    aug.random_resized_crop = {
      scale: c.scale ?? [...RRC_DEFAULTS.scale],
      ratio: c.ratio ?? [...RRC_DEFAULTS.ratio],
    };
  }
  return aug;
}

/**
 * The mixup/CutMix lib/data applies to every batch for `c` (timm's Mixup arguments), or undefined when off.
 */
export function trainMixup(c: TrainConfig): MixupOptions | undefined {
  if (!c.mixup && !c.cutmix) return undefined;
  const d = REGULARIZATION_DEFAULTS;
  return {
    mixupAlpha: c.mixup ?? 0,
    cutmixAlpha: c.cutmix ?? 0,
    prob: c.mixup_prob ?? d.mixup_prob,
    switchProb: c.mixup_switch_prob ?? d.mixup_switch_prob,
    mode: c.mixup_mode ?? d.mixup_mode,
    labelSmoothing: c.smoothing,
    numClasses: c.num_classes,
  };
}

/**
 * What the training loop takes of a config's recipe: augmentation, mixup/CutMix, smoothing, stochastic depth.
 */
export interface Recipe {
  augment: TrainAugment;
  mixup?: MixupOptions;
  smoothing: number;
  dropPath: number;
  /** Why every forward differs from the last for the same image (the frozen-prefix cache is then off). */
  varies?: string;
}

/** The recipe the training loop runs for `c` (`deno task train` and fine-tuning sessions alike). */
export function trainRecipe(c: TrainConfig): Recipe {
  const mixup = trainMixup(c);
  return {
    augment: trainAugment(c),
    ...(mixup ? { mixup } : {}),
    smoothing: c.smoothing,
    dropPath: c.drop_path ?? 0,
    ...(mixup || c.drop_path ? { varies: "mixup/CutMix or drop_path is on" } : {}),
  };
}

/**
 * The keys of a training config that a fine-tuning session of the service may set: augmentation and
 * regularisation, with timm's names and semantics. The rest of a session's recipe (SGD with momentum, a
 * cosine schedule without warm-up, its steps, lr, batch size and seed) comes from the session's own fields.
 */
export const SESSION_RECIPE_KEYS: readonly string[] = [
  "smoothing",
  "hflip",
  "crop_pad",
  "train_crop_mode",
  "scale",
  "ratio",
  "mixup",
  "cutmix",
  "mixup_prob",
  "mixup_switch_prob",
  "mixup_mode",
  "aa",
  "reprob",
  "remode",
  "recount",
  "drop_path",
];

/**
 * A fine-tuning session's training config: `recipe` (keys of {@linkcode SESSION_RECIPE_KEYS}, validated as a
 * YAML's are) over the session's `base` (batch size, classes and its default flips). Throws an
 * {@linkcode OptionError} naming `source` and the field for any other key or a bad value.
 *
 * @example
 * ```ts
 * const c = sessionConfig({ mixup: 0.8, smoothing: 0.1 }, { batch_size: 16, num_classes: 3, hflip: 0.5 }, "request");
 * trainRecipe(c).mixup?.mixupAlpha; // 0.8
 * ```
 */
export function sessionConfig(
  recipe: Record<string, unknown>,
  base: Pick<TrainConfig, "batch_size" | "num_classes" | "hflip">,
  source: string,
): TrainConfig {
  for (const k of Object.keys(recipe)) {
    const key = optionKey(TRAIN_OPTIONS, k);
    if (key === undefined || !SESSION_RECIPE_KEYS.includes(key)) {
      throw new OptionError(
        `${source}: "${k}" is not a fine-tuning session option; expected some of ${
          SESSION_RECIPE_KEYS.join(", ")
        }`,
      );
    }
  }
  return mergeConfig({ ...DEFAULTS, smoothing: 0, crop_pad: 0, ...base }, recipe, source);
}

/** The model EMA's decay for `c`, or undefined when `model_ema` is off. */
export function trainEmaDecay(c: TrainConfig): number | undefined {
  return c.model_ema ? c.model_ema_decay ?? REGULARIZATION_DEFAULTS.model_ema_decay : undefined;
}

/** Resolves `model` to a full ViT config with this run's `num_classes` and `img_size`. */
export function modelConfig(c: TrainConfig): ViTConfig {
  let base: Partial<ViTConfig> | undefined;
  if (typeof c.model === "string") {
    base = archConfig(c.model);
    if (!base) throw new Error(`model: unknown timm arch "${c.model}" (or give an explicit config object)`);
  } else {
    base = c.model;
  }
  return { ...base, img_size: c.img_size, num_classes: c.num_classes } as ViTConfig;
}
