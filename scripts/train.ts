/**
 * `deno task train --config configs/x.yml [--key value ...]`: trains or fine-tunes a ViT as the config
 * says (timm `train.py` option names; command-line options override the file). `--resume` continues the
 * run in `--output` from its last checkpoint; `--export <dir>` also writes the final model there as
 * float16 shards (what `weights/` ships), or, when `max_updates` stopped the run, the weights reached.
 * `data_dir: synthetic:<n>` trains on generated images (tests).
 *
 * @module
 */
import { type EngineName, initBackend } from "../lib/backend/backend.ts";
import {
  checkpointDefaults,
  DEFAULTS,
  explicitKeys,
  mergeConfig,
  parseArgs,
  readConfigSource,
  TRAIN_CLI,
  type TrainConfig,
} from "../lib/train/config.ts";
import { helpText, OptionError } from "../lib/util/options.ts";
import { syntheticImageSet, syntheticPreprocessing } from "../lib/train/synthetic.ts";
import { train } from "../lib/train/trainer.ts";
import { readManifest } from "../lib/weights/load.ts";
import type { Preprocessing } from "../lib/weights/manifest.ts";
import { exportRun } from "../lib/train/export.ts";
import { carveHoldout, datasetImageSet, type ImageSet, openSplit } from "../lib/data/image_set.ts";
import { HOLDOUT_PATTERN } from "../lib/data/dataset.ts";

const USAGE = `Usage: deno task train --config <file.yml> [--<option> <value> ...] [--resume] [--export <dir>]

Trains or fine-tunes a ViT with timm train.py's option names (YAML keys or flags, "_" or "-"); flags override
the file. Lists in timm's form: --scale 0.08 1, --scale 0.08,1, --ratio 3/4 4/3.`;

async function preprocessingOf(c: TrainConfig): Promise<Preprocessing> {
  const base: Preprocessing = c.initial_checkpoint
    ? (await readManifest(c.initial_checkpoint)).preprocessing
    : syntheticPreprocessing(c.img_size);
  return {
    img_size: c.img_size,
    mean: c.mean ?? base.mean,
    std: c.std ?? base.std,
    interpolation: c.interpolation ?? base.interpolation,
    crop_pct: c.crop_pct ?? base.crop_pct,
  };
}

/** The train and validation sets and the class names a config names. */
async function openData(
  c: TrainConfig,
  pre: Preprocessing,
): Promise<{ train: ImageSet; val: ImageSet; labels: string[] }> {
  const synthetic = /^synthetic:(\d+)$/.exec(c.data_dir);
  if (synthetic) {
    const n = Number(synthetic[1]);
    return {
      train: syntheticImageSet(n, c.img_size, c.num_classes, c.seed, pre),
      val: syntheticImageSet(
        Math.max(c.num_classes, Math.floor(n / 4)),
        c.img_size,
        c.num_classes,
        c.seed + 1,
        pre,
      ),
      labels: Array.from({ length: c.num_classes }, (_, i) => `class_${i}`),
    };
  }
  const opened = await openSplit(c.data_dir, c.train_split);
  // holdout:<n> is carved from this run's training split, which then goes without it.
  const holdout = HOLDOUT_PATTERN.exec(c.val_split);
  const { train, val } = holdout
    ? carveHoldout(opened, Number(holdout[1]))
    : { train: opened, val: await openSplit(c.data_dir, c.val_split) };
  const classes = [...train.dataset.classes];
  if (classes.length !== c.num_classes) {
    throw new Error(
      `${c.data_dir} (${c.train_split}) has ${classes.length} classes, num_classes is ${c.num_classes}`,
    );
  }
  if (val.dataset.classes.join() !== classes.join()) {
    throw new Error(
      `${c.data_dir}: the ${c.val_split} split's classes differ from the ${c.train_split} split's`,
    );
  }
  console.error(
    `data: ${train.name}, ${train.dataset.length} training and ${val.dataset.length} validation images`,
  );
  return {
    train: datasetImageSet(train.dataset, pre),
    val: datasetImageSet(val.dataset, pre),
    labels: classes,
  };
}

if (import.meta.main) {
  try {
    const { config: file, export: exportDir, help, options } = parseArgs(Deno.args);
    if (help) {
      console.log(helpText(USAGE, TRAIN_CLI, { style: "snake" }));
      Deno.exit(0);
    }
    const raw = file ? await readConfigSource(file) : {};
    const merged = mergeConfig(mergeConfig(DEFAULTS, raw, `config ${file}`), options, "command line");
    const config = merged.initial_checkpoint
      ? checkpointDefaults(
        merged,
        (await readManifest(merged.initial_checkpoint)).vit,
        explicitKeys(raw, options),
      )
      : merged;
    await initBackend((config.backend || undefined) as EngineName | undefined);
    const pre = await preprocessingOf(config);
    const data = await openData(config, pre);
    const result = await train({
      config,
      train: data.train,
      val: data.val,
      labels: data.labels,
      preprocessing: pre,
    });
    if (!result.finished) {
      console.error(
        `stopped at update ${result.state.update} (max_updates); continue with --resume and the same options`,
      );
    }
    if (exportDir) console.error(await exportRun(result, exportDir));
  } catch (e) {
    console.error(`train: ${(e as Error).message}`);
    if (Deno.env.get("VIT_DEBUG")) console.error(e);
    Deno.exit(e instanceof OptionError ? 2 : 1);
  }
}
