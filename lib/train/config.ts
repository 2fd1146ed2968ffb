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
 * @module
 */
import { parse as parseYaml } from "yaml";
import { RRC_DEFAULTS, type TrainAugment } from "../data/augment.ts";
import { archConfig } from "../vit/archs.ts";
import type { ViTConfig } from "../vit/config.ts";
import type { OptimizerName } from "./optimizer.ts";

/** What `freeze` may say: nothing, everything but the head, or the patch embedding plus the first N blocks. */
export type Freeze = "none" | "head-only" | { blocks: number };

/** Every training option, in timm's names (underscored). */
export interface TrainConfig {
  /** A timm arch name (`vit_base_patch16_224`), or an explicit ViT config object for training from scratch. */
  model: string | Partial<ViTConfig>;
  /** A converted weights folder (`deno task convert`) to start from; its head is replaced when `num_classes` differs. */
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
  /** Force a tfjs backend (webgpu, wasm, cpu); empty = automatic. */
  backend: string;
  /** Continue from the last checkpoint in `output`. */
  resume: boolean;
  /** Stop after this many optimizer updates in this process (for tests and time-boxed runs); 0 = no limit. */
  max_updates: number;
}

/** Defaults (timm's where timm has one). */
export const DEFAULTS: TrainConfig = {
  model: "vit_base_patch16_224",
  num_classes: 10,
  img_size: 224,
  batch_size: 64,
  grad_accum_steps: 1,
  opt: "sgd",
  momentum: 0.9,
  weight_decay: 0,
  lr: 0.03,
  min_lr: 0,
  sched: "cosine",
  warmup_epochs: 0,
  warmup_lr: 0,
  decay_epochs: 30,
  decay_rate: 0.1,
  epochs: 10,
  smoothing: 0,
  clip_grad: 0,
  seed: 42,
  freeze: "none",
  data_dir: "data/cifar10-jpeg",
  train_split: "train",
  val_split: "test",
  train_subset: 0,
  eval_subset: 0,
  hflip: 0.5,
  crop_pad: 0,
  output: "runs/train",
  checkpoint_every: 0,
  checkpoint_keep: 2,
  backend: "",
  resume: false,
  max_updates: 0,
};

const NUMBER_KEYS = [
  "num_classes",
  "img_size",
  "batch_size",
  "grad_accum_steps",
  "momentum",
  "weight_decay",
  "lr",
  "min_lr",
  "warmup_epochs",
  "warmup_lr",
  "decay_epochs",
  "decay_rate",
  "epochs",
  "smoothing",
  "clip_grad",
  "seed",
  "train_subset",
  "eval_subset",
  "hflip",
  "crop_pad",
  "checkpoint_every",
  "checkpoint_keep",
  "max_updates",
  "crop_pct",
] as const;
const INT_KEYS = new Set([
  "num_classes",
  "img_size",
  "batch_size",
  "grad_accum_steps",
  "epochs",
  "seed",
  "train_subset",
  "eval_subset",
  "crop_pad",
  "checkpoint_every",
  "checkpoint_keep",
  "max_updates",
]);
const STRING_KEYS = [
  "interpolation",
  "initial_checkpoint",
  "data_dir",
  "train_split",
  "val_split",
  "output",
  "backend",
] as const;
const KNOWN = new Set<string>([
  ...Object.keys(DEFAULTS),
  "initial_checkpoint",
  "mean",
  "std",
  "interpolation",
  "crop_pct",
  "train_crop_mode",
  "scale",
  "ratio",
]);
const ALIASES: Record<string, string> = { "smooth": "smoothing", "data": "data_dir", "clip": "clip_grad" };

function normKey(key: string): string {
  const k = key.replace(/^--?/, "").replaceAll("-", "_");
  return ALIASES[k] ?? k;
}

function parseFreeze(v: unknown, source: string): Freeze {
  if (v === undefined || v === null || v === "none" || v === false) return "none";
  if (v === "head-only" || v === "head_only") return "head-only";
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v === 0 ? "none" : { blocks: v };
  if (typeof v === "object" && v !== null && Number.isInteger((v as { blocks: number }).blocks)) {
    return { blocks: (v as { blocks: number }).blocks };
  }
  const m = typeof v === "string" ? /^(?:blocks?[:=]|first[_-])?(\d+)$/.exec(v) : null;
  if (m) return Number(m[1]) === 0 ? "none" : { blocks: Number(m[1]) };
  throw new Error(`${source}: "freeze" must be none, head-only or blocks:N, got ${JSON.stringify(v)}`);
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
function parseRange(key: "scale" | "ratio", value: unknown, source: string): [number, number] {
  const v = numberList(value);
  const max = key === "scale" ? 1 : Infinity;
  if (!v || v.length !== 2 || !(v[0] > 0 && v[0] <= v[1] && v[1] <= max)) {
    throw new Error(
      `${source}: "${key}" must be two numbers [lo, hi] with 0 < lo ≤ hi${key === "scale" ? " ≤ 1" : ""}` +
        ` (timm's default ${key === "scale" ? "[0.08, 1]" : "[3/4, 4/3]"}), got ${JSON.stringify(value)}`,
    );
  }
  return [v[0], v[1]];
}

function parseCropMode(value: unknown, source: string): "rrc" | "none" {
  if (value === "rrc" || value === true) return "rrc";
  if (value === "none" || value === false) return "none";
  const note = value === "rkrc" || value === "rkrr" ? " (timm's rkrc/rkrr are not implemented)" : "";
  throw new Error(
    `${source}: "train_crop_mode" must be rrc (RandomResizedCrop) or none${note}, got ${
      JSON.stringify(value)
    }`,
  );
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
    const key = normKey(key0);
    if (!KNOWN.has(key)) throw new Error(`${source}: unknown option "${key0}"`);
    if ((NUMBER_KEYS as readonly string[]).includes(key)) {
      const n = typeof value === "string" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n) || (INT_KEYS.has(key) && !Number.isInteger(n))) {
        throw new Error(
          `${source}: "${key}" must be ${INT_KEYS.has(key) ? "an integer" : "a number"}, got ${
            JSON.stringify(value)
          }`,
        );
      }
      out[key] = n;
    } else if ((STRING_KEYS as readonly string[]).includes(key)) {
      if (typeof value !== "string") {
        throw new Error(`${source}: "${key}" must be a string, got ${JSON.stringify(value)}`);
      }
      out[key] = value;
    } else if (key === "mean" || key === "std") {
      const v = typeof value === "string" ? value.split(/[ ,]+/).filter(Boolean).map(Number) : value;
      if (
        !Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === "number" && Number.isFinite(x))
      ) {
        throw new Error(`${source}: "${key}" must be three numbers, got ${JSON.stringify(value)}`);
      }
      out[key] = v;
    } else if (key === "scale" || key === "ratio") {
      out[key] = parseRange(key, value, source);
      rrcKeys.push(key);
    } else if (key === "train_crop_mode") {
      cropMode = parseCropMode(value, source);
    } else if (key === "resume") {
      out[key] = value === true || value === "true" || value === "";
    } else if (key === "freeze") {
      out[key] = parseFreeze(value, source);
    } else if (key === "model") {
      if (typeof value === "string" && value.trim().startsWith("{")) out[key] = JSON.parse(value);
      else if (typeof value === "string" || (typeof value === "object" && value !== null)) out[key] = value;
      else throw new Error(`${source}: "model" must be a timm arch name or a ViT config object`);
    } else if (key === "opt") {
      if (!["sgd", "momentum", "adamw"].includes(String(value))) {
        throw new Error(`${source}: "opt" must be sgd, momentum or adamw, got ${JSON.stringify(value)}`);
      }
      out[key] = value;
    } else if (key === "sched") {
      if (!["cosine", "step", "constant"].includes(String(value))) {
        throw new Error(`${source}: "sched" must be cosine, step or constant, got ${JSON.stringify(value)}`);
      }
      out[key] = value;
    }
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
  return validate(out as unknown as TrainConfig, source);
}

function validate(c: TrainConfig, source: string): TrainConfig {
  const positive = ["num_classes", "img_size", "batch_size", "grad_accum_steps", "epochs", "lr"] as const;
  for (const k of positive) {
    if (!(c[k] > 0)) throw new Error(`${source}: "${k}" must be positive, got ${c[k]}`);
  }
  if (!(c.smoothing >= 0 && c.smoothing < 1)) throw new Error(`${source}: "smoothing" must be in [0, 1)`);
  if (!(c.hflip >= 0 && c.hflip <= 1)) throw new Error(`${source}: "hflip" must be in [0, 1]`);
  if (!(c.crop_pad >= 0)) throw new Error(`${source}: "crop_pad" must be ≥ 0, got ${c.crop_pad}`);
  if (c.train_crop_mode === "rrc" && c.crop_pad > 0) {
    throw new Error(
      `${source}: "crop_pad" (${c.crop_pad}) and RandomResizedCrop (train_crop_mode rrc, scale, ratio) ` +
        `are alternative training crops (timm has only RRC); set crop_pad to 0 or train_crop_mode to none`,
    );
  }
  for (
    const k of ["momentum", "weight_decay", "warmup_epochs", "warmup_lr", "clip_grad", "min_lr"] as const
  ) {
    if (!(c[k] >= 0)) throw new Error(`${source}: "${k}" must be ≥ 0, got ${c[k]}`);
  }
  return c;
}

/** Reads a YAML config file over the defaults. */
export async function readConfigFile(path: string, base: TrainConfig = DEFAULTS): Promise<TrainConfig> {
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
  if (raw === null || raw === undefined) return base;
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new Error(`config ${path}: expected a mapping of options`);
  }
  return mergeConfig(base, raw as Record<string, unknown>, `config ${path}`);
}

/**
 * Splits command-line arguments into options: `--key value`, `--key=value`, `--key v1 v2` (the list
 * `"v1 v2"`), bare `--flag` (true) and `--no-flag` (false). `--config` is returned separately.
 */
export function parseArgs(args: readonly string[]): { config?: string; options: Record<string, unknown> } {
  const options: Record<string, unknown> = {};
  let config: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument "${a}" (options are --key value)`);
    let key = a.slice(2), value: unknown;
    const eq = key.indexOf("=");
    if (eq >= 0) {
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    } else if (i + 1 < args.length && !args[i + 1].startsWith("--")) {
      // Several values (timm's nargs lists, `--scale 0.08 1`) are joined as one space-separated list.
      const values = [args[++i]];
      while (i + 1 < args.length && !args[i + 1].startsWith("--")) values.push(args[++i]);
      value = values.join(" ");
    } else if (key.startsWith("no-")) {
      key = key.slice(3);
      value = key === "hflip" ? 0 : false;
    } else {
      value = true;
    }
    if (normKey(key) === "config") config = String(value);
    else options[key] = value;
  }
  return { config, options };
}

/**
 * The training augmentation lib/data applies for `c`. Without RandomResizedCrop it is exactly what runs
 * used before RRC was configurable (same fields, so the same draws).
 */
export function trainAugment(c: TrainConfig): TrainAugment {
  const aug: TrainAugment = { crop_padding: c.crop_pad, hflip: c.hflip };
  if (c.train_crop_mode === "rrc" || c.scale || c.ratio) {
    aug.random_resized_crop = {
      scale: c.scale ?? [...RRC_DEFAULTS.scale],
      ratio: c.ratio ?? [...RRC_DEFAULTS.ratio],
    };
  }
  return aug;
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
