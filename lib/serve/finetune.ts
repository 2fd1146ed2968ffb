/**
 * A fine-tuning session's training, in two layers. {@linkcode fineTune} trains an in-memory copy of the
 * weights on an `ImageSet` with `lib/train`'s one training loop (the one `deno task train` runs: data order,
 * augmentation, optimizer step, schedule). {@linkcode runFineTuneSpec} is a whole session's work described by
 * files ({@linkcode FineTuneSpec}: the base model's location, the dataset's folder, where to write the
 * result): it loads the weights, opens the images, trains, and writes the fine-tuned model atomically. The
 * service runs it in a worker process (finetune_host.ts), so that a training step, one synchronous tfjs call
 * that lasts minutes for ViT-B/16 on wasm, never holds the server's event loop. Both await `onProgress` after
 * every optimizer step: that is where the session hands a shared device to waiting inference batches.
 *
 * @module
 */
import { type Freeze, sessionConfig, trainRecipe } from "../train/config.ts";
import { abortError } from "./errors.ts";
import { setUpTraining } from "../train/freeze.ts";
import type { FrozenCacheOptions } from "../train/frozen_cache.ts";
import type { ImageSet } from "../data/image_set.ts";
import { trainLoop, updatesPerEpoch } from "../train/loop.ts";
import type { Optimizer } from "../train/optimizer.ts";
import { resolveConfig, timmConfig, type ViTConfig } from "../vit/config.ts";
import { checkImageShape, createViT } from "../vit/model.ts";
import type { StateDict } from "../vit/params.ts";
import { datasetImageSet } from "../data/image_set.ts";
import { openImageFolder } from "../data/image_folder.ts";
import { adaptForFineTuning } from "../weights/adapt.ts";
import { loadWeights } from "../weights/load.ts";
import type { Preprocessing, SourceInfo } from "../weights/manifest.ts";
import { saveModel } from "../weights/shards.ts";

/** One fine-tuning job: a private copy of the base weights and the data to fit. */
export interface FineTuneJob {
  /** The base model's config; `num_classes` is replaced by the dataset's. */
  config: ViTConfig;
  /** A copy of the base weights (the served base model is never touched). */
  state: StateDict;
  preprocessing: Preprocessing;
  train: ImageSet;
  /** Class names of the dataset, in label order. */
  labels: string[];
  /** Optimizer steps to run. */
  steps: number;
  lr: number;
  freeze: Freeze;
  batchSize: number;
  seed: number;
  /** The frozen-prefix cache's budgets, or false to recompute the prefix every step; 512 MiB by default. */
  cache?: FrozenCacheOptions | false;
  /**
   * Augmentation and regularisation with timm's keys (`SESSION_RECIPE_KEYS` of lib/train/config.ts: mixup,
   * cutmix, aa, reprob, drop_path, smoothing, hflip, crop_pad …), validated as a training YAML is.
   */
  recipe?: Record<string, unknown>;
  /**
   * The part of the available memory this session's model counts as its own (`CreateOptions.memoryShare`);
   * the session manager sets it for the sessions that run at once.
   */
  memoryShare?: number;
}

/** Progress after one optimizer step. */
export interface FineTuneProgress {
  step: number;
  steps: number;
  /** Fractional epochs over the training set. */
  epoch: number;
  loss: number;
  lr: number;
  imgPerSec: number;
}

/** The fine-tuned weights. */
export interface FineTuneResult {
  config: ViTConfig;
  state: StateDict;
  finalLoss: number;
  /** Whether the classifier head was replaced because the class count changed. */
  headReinitialized: boolean;
}

/**
 * A whole session's work, described by files and small values only: what is posted to the training worker
 * (no weights or images cross the thread boundary; the worker reads them itself).
 */
export interface FineTuneSpec extends
  Pick<
    FineTuneJob,
    "labels" | "steps" | "lr" | "freeze" | "batchSize" | "seed" | "recipe" | "memoryShare"
  > {
  /** The base model: a model folder or an http(s) URL, as `loadWeights` reads it. */
  base: string;
  /** The training images: a folder of class folders, and the largest image (in pixels) to decode. */
  data: { root: string; maxPixels: number };
  /**
   * The model folder to write (atomically) and what its manifest records of its origin: `source.file`,
   * and `extra` (whose `finetune` record gains the final loss).
   */
  out: { dir: string; file: string; extra: Record<string, unknown> };
}

/** How a session's work ended, once its model folder is written. */
export interface FineTuneOutcome {
  finalLoss: number;
  /** Whether the classifier head was replaced because the class count changed. */
  headReinitialized: boolean;
}

/**
 * Runs a session's work; awaits `onProgress` after each step and stops with an `AbortError` once `signal`
 * is aborted. The service's default runs {@linkcode runFineTuneSpec} in a worker process (finetune_host.ts).
 */
export type FineTuner = (
  spec: FineTuneSpec,
  onProgress: (p: FineTuneProgress) => Promise<void>,
  signal: AbortSignal,
) => Promise<FineTuneOutcome>;

/**
 * Fine-tunes an in-memory job: SGD with momentum and a cosine schedule on `lib/train`'s one training
 * loop, the weights adapted as `deno task train` adapts them (lib/weights/adapt.ts). With a frozen prefix
 * (`head-only`, `blocks:N`) that prefix is computed once per image and cached, and images are not flipped
 * (a short session then costs about one forward pass per image plus the trainable part); with nothing frozen,
 * horizontal flips. `job.recipe` adds timm's augmentation and regularisation (which turn the cache off when
 * they make every view new).
 */
export async function fineTune(
  job: FineTuneJob,
  onProgress: (p: FineTuneProgress) => Promise<void>,
  signal: AbortSignal,
): Promise<FineTuneResult> {
  const classes = job.labels.length;
  const config = timmConfig(resolveConfig({ ...job.config, num_classes: classes }));
  const { state, changes } = adaptForFineTuning(job.state, config);
  checkImageShape(job.train.shape, config, "training images");
  if (signal.aborted) throw abortError();
  const model = await createViT(config, state, { memoryShare: job.memoryShare });
  let opt: Optimizer | undefined;
  try {
    const bs = Math.min(job.batchSize, job.train.size);
    const recipe = trainRecipe(sessionConfig(job.recipe ?? {}, {
      batch_size: bs,
      num_classes: classes,
      hflip: job.freeze === "none" ? 0.5 : 0,
    }, "fine-tuning session"));
    const setup = await setUpTraining(model, {
      freeze: job.freeze,
      optimizer: { opt: "sgd", momentum: 0.9, weightDecay: 0 },
      augment: recipe.augment,
      ...(recipe.varies ? { varies: recipe.varies } : {}),
      cache: job.cache ?? {},
    });
    opt = setup.optimizer;
    const perEpoch = updatesPerEpoch(job.train.size, bs);
    const t0 = performance.now();
    let loss: number;
    try {
      ({ loss } = await trainLoop({
        model,
        optimizer: opt,
        ...(setup.prefixCache ? { prefixCache: setup.prefixCache } : {}),
        data: job.train,
        batchSize: bs,
        seed: job.seed,
        augment: recipe.augment,
        smoothing: recipe.smoothing,
        ...(recipe.mixup ? { mixup: recipe.mixup } : {}),
        dropPath: recipe.dropPath,
        schedule: {
          sched: "cosine",
          lr: job.lr,
          totalUpdates: job.steps,
          warmupUpdates: 0,
          warmupLr: 0,
          minLr: 0,
          decayUpdates: 1,
          decayRate: 1,
        },
        totalUpdates: job.steps,
        position: { epoch: 0, updateInEpoch: 0, update: 0 },
        signal,
        onStep: async (s) => {
          const seconds = (performance.now() - t0) / 1000;
          await onProgress({
            step: s.update,
            steps: job.steps,
            epoch: s.update / perEpoch,
            loss: s.loss,
            lr: s.lr,
            imgPerSec: (s.update * bs) / Math.max(seconds, 1e-9),
          });
        },
      }));
    } catch (e) {
      // The loop throws the signal's reason; callers of a FineTuner get this module's AbortError.
      if (signal.aborted) throw abortError();
      throw e;
    }
    if (signal.aborted) throw abortError();
    return {
      config,
      state: await model.stateDict(),
      finalLoss: loss,
      headReinitialized: changes.head_reinitialized !== undefined,
    };
  } finally {
    opt?.dispose();
    model.dispose();
  }
}

/**
 * A session's work from its {@linkcode FineTuneSpec}: loads the base weights and the images, runs
 * {@linkcode fineTune}, and writes the fine-tuned model to `spec.out.dir` atomically (calling `onSaving`
 * first: from then on the work is no longer cancelled, only finished).
 */
export async function runFineTuneSpec(
  spec: FineTuneSpec,
  onProgress: (p: FineTuneProgress) => Promise<void>,
  signal: AbortSignal,
  onSaving: () => void = () => {},
): Promise<FineTuneOutcome> {
  const { manifest, state } = await loadWeights(spec.base);
  const ds = await openImageFolder(spec.data.root, { maxPixels: spec.data.maxPixels });
  if (ds.classes.join("\n") !== spec.labels.join("\n")) {
    throw new Error(
      `the dataset's class folders changed since the session was accepted ` +
        `(${JSON.stringify(ds.classes)}, expected ${JSON.stringify(spec.labels)})`,
    );
  }
  const result = await fineTune(
    {
      config: manifest.vit,
      state,
      preprocessing: manifest.preprocessing,
      train: datasetImageSet(ds, manifest.preprocessing),
      labels: spec.labels,
      steps: spec.steps,
      lr: spec.lr,
      freeze: spec.freeze,
      batchSize: spec.batchSize,
      seed: spec.seed,
      ...(spec.recipe ? { recipe: spec.recipe } : {}),
      ...(spec.memoryShare !== undefined ? { memoryShare: spec.memoryShare } : {}),
    },
    onProgress,
    signal,
  );
  onSaving();
  const source: SourceInfo = {
    ...manifest.source,
    file: spec.out.file,
    ...(result.headReinitialized
      ? { head_reinitialized: { num_classes: spec.labels.length, init: "zeros" as const } }
      : {}),
  };
  const finetune = spec.out.extra.finetune;
  await saveModel(spec.out.dir, {
    config: result.config,
    state: result.state,
    preprocessing: manifest.preprocessing,
    labels: spec.labels,
    source,
    extra: {
      ...spec.out.extra,
      ...(finetune && typeof finetune === "object"
        ? { finetune: { ...finetune, final_loss: result.finalLoss } }
        : {}),
    },
  });
  return { finalLoss: result.finalLoss, headReinitialized: result.headReinitialized };
}
