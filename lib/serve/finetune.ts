/**
 * What a fine-tuning session needs from the training layer, as one narrow function type
 * ({@linkcode FineTuner}), and the implementation used by default ({@linkcode fineTune}): `lib/train`'s
 * training loop (the one `deno task train` runs: data order, augmentation, optimizer step, schedule) on an
 * in-memory copy of the weights, with no files. The tuner awaits `onProgress` after every optimizer step:
 * that is where the session hands the device to waiting inference batches and where a cancellation takes
 * effect.
 *
 * @module
 */
import type { Freeze } from "../train/config.ts";
import { setUpTraining } from "../train/freeze.ts";
import type { FrozenCacheOptions } from "../train/frozen_cache.ts";
import type { ImageSet } from "../data/image_set.ts";
import { trainLoop, updatesPerEpoch } from "../train/loop.ts";
import type { Optimizer } from "../train/optimizer.ts";
import { resolveConfig, timmConfig, type ViTConfig } from "../vit/config.ts";
import { checkImageShape, createViT } from "../vit/model.ts";
import type { StateDict } from "../vit/params.ts";
import { adaptForFineTuning } from "../weights/adapt.ts";
import type { Preprocessing } from "../weights/manifest.ts";

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
 * Runs a job; awaits `onProgress` after each step and stops with an `AbortError` once `signal` is aborted.
 */
export type FineTuner = (
  job: FineTuneJob,
  onProgress: (p: FineTuneProgress) => Promise<void>,
  signal: AbortSignal,
) => Promise<FineTuneResult>;

function abortError(): Error {
  return new DOMException("the fine-tuning session was cancelled", "AbortError");
}

/**
 * The default {@linkcode FineTuner}: SGD with momentum and a cosine schedule on `lib/train`'s one training
 * loop, the weights adapted as `deno task train` adapts them (lib/weights/adapt.ts). With a frozen prefix
 * (`head-only`, `blocks:N`) that prefix is computed once per image and cached, and images are not flipped
 * (a short session then costs about one forward pass per image plus the trainable part); with nothing frozen,
 * horizontal flips.
 */
export const fineTune: FineTuner = async (job, onProgress, signal) => {
  const classes = job.labels.length;
  const config = timmConfig(resolveConfig({ ...job.config, num_classes: classes }));
  const { state, changes } = adaptForFineTuning(job.state, config);
  checkImageShape(job.train.shape, config, "training images");
  if (signal.aborted) throw abortError();
  const model = await createViT(config, state);
  let opt: Optimizer | undefined;
  try {
    const augment = job.freeze === "none" ? { hflip: 0.5 } : {};
    const setup = await setUpTraining(model, {
      freeze: job.freeze,
      optimizer: { opt: "sgd", momentum: 0.9, weightDecay: 0 },
      augment,
      cache: job.cache ?? {},
    });
    opt = setup.optimizer;
    const bs = Math.min(job.batchSize, job.train.size);
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
        augment,
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
};
