/**
 * What a fine-tuning session needs from the training layer, as one narrow function type
 * ({@linkcode FineTuner}), and the implementation used by default ({@linkcode fineTune}), built from
 * `lib/train`'s optimizer, schedule, data order and augmentation. The tuner awaits `onProgress` after every
 * optimizer step: that is where the session hands the device to waiting inference batches and where a
 * cancellation takes effect.
 *
 * @module
 */
import type { Freeze } from "../train/config.ts";
import type { ImageSet } from "../train/image_set.ts";
import { augmentBatch } from "../train/augment.ts";
import { Optimizer } from "../train/optimizer.ts";
import { mixSeed, permutation } from "../train/rng.ts";
import { learningRate } from "../train/scheduler.ts";
import { resolveConfig, timmConfig, type ViTConfig } from "../vit/config.ts";
import { createViT, type ViTModel } from "../vit/model.ts";
import type { StateDict } from "../vit/params.ts";
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

/** Marks parameters frozen per the policy (as `deno task train --freeze`). */
export function applyFreeze(model: ViTModel, freeze: Freeze): number {
  let trainable = 0;
  for (const [name, v] of model.variables) {
    let frozen = false;
    if (freeze === "head-only") frozen = !name.startsWith("head.");
    else if (freeze !== "none") {
      const m = /^blocks\.(\d+)\./.exec(name);
      frozen = m ? Number(m[1]) < freeze.blocks : !(name.startsWith("head.") || name.startsWith("norm."));
    }
    (v as { trainable: boolean }).trainable = !frozen;
    if (!frozen) trainable++;
  }
  return trainable;
}

/** Replaces the head with zeros when the class count differs (the ViT paper's fine-tuning recipe). */
function adaptHead(config: ViTConfig, state: StateDict, classes: number): boolean {
  const head = state.get("head.weight");
  const dim = resolveConfig(config).embed_dim;
  if (head && head.shape[0] === classes) return false;
  state.set("head.weight", { shape: [classes, dim], data: new Float32Array(classes * dim) });
  state.set("head.bias", { shape: [classes], data: new Float32Array(classes) });
  return true;
}

function abortError(): Error {
  return new DOMException("the fine-tuning session was cancelled", "AbortError");
}

/** The default {@linkcode FineTuner}: SGD with momentum, cosine schedule, horizontal flips. */
export const fineTune: FineTuner = async (job, onProgress, signal) => {
  const classes = job.labels.length;
  const config = timmConfig(resolveConfig({ ...job.config, num_classes: classes }));
  const state: StateDict = new Map(job.state);
  const headReinitialized = adaptHead(config, state, classes);
  const [C, H, W] = job.train.shape;
  if (C !== 3 || H !== config.img_size || W !== config.img_size) {
    throw new Error(
      `training images are [${job.train.shape}], the model expects [3, ${config.img_size}, ${config.img_size}]`,
    );
  }
  if (signal.aborted) throw abortError();
  const model = await createViT(config, state);
  let opt: Optimizer | undefined;
  try {
    applyFreeze(model, job.freeze);
    const trainable = new Map([...model.variables].filter(([, v]) => v.trainable));
    opt = new Optimizer(trainable, new Map(model.specs.map((s) => [s.name, s.shape])), {
      opt: "sgd",
      momentum: 0.9,
      weightDecay: 0,
    });
    const n = job.train.size;
    const bs = Math.min(job.batchSize, n);
    const perEpoch = Math.max(1, Math.floor(n / bs));
    const schedule = {
      sched: "cosine" as const,
      lr: job.lr,
      totalUpdates: job.steps,
      warmupUpdates: 0,
      warmupLr: 0,
      minLr: 0,
      decayUpdates: 1,
      decayRate: 1,
    };
    const fill = job.preprocessing.mean.map((m, c) => -m / job.preprocessing.std[c]);
    const shape = [bs, C, H, W] as [number, number, number, number];
    let loss = NaN;
    const t0 = performance.now();
    for (let step = 0; step < job.steps; step++) {
      if (signal.aborted) throw abortError();
      const epoch = Math.floor(step / perEpoch);
      const order = permutation(n, mixSeed(job.seed, epoch));
      const at = (step % perEpoch) * bs;
      const ids = Array.from({ length: bs }, (_, i) => order[at + i]);
      const x = await job.train.images(ids);
      augmentBatch(x, shape, ids, job.seed, epoch, { cropPad: 0, hflip: 0.5, fill });
      const y = Int32Array.from(ids, (i) => job.train.labels[i]);
      const lr = learningRate(schedule, step);
      const { loss: l, grads } = await model.lossAndDeviceGrads(x, shape, y);
      try {
        opt.apply(grads, lr);
      } finally {
        for (const g of grads.values()) g.dispose();
      }
      loss = l;
      if (!Number.isFinite(loss)) throw new Error(`the loss became ${loss} at step ${step + 1}`);
      const seconds = (performance.now() - t0) / 1000;
      await onProgress({
        step: step + 1,
        steps: job.steps,
        epoch: (step + 1) / perEpoch,
        loss,
        lr,
        imgPerSec: ((step + 1) * bs) / Math.max(seconds, 1e-9),
      });
    }
    if (signal.aborted) throw abortError();
    return { config, state: await model.stateDict(), finalLoss: loss, headReinitialized };
  } finally {
    opt?.dispose();
    model.dispose();
  }
};
