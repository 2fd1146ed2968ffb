/**
 * The training loop shared by `deno task train` (trainer.ts) and the service's fine-tuning sessions
 * (lib/serve/finetune.ts): a seeded order over a pool of samples every epoch, lib/data's training
 * augmentation, gradient accumulation, clipping, and an optimizer step at the schedule's learning rate.
 * The caller owns the model, the optimizer and everything around the run (files, checkpoints, evaluation,
 * progress display) and hooks in after every update and at every epoch end; an `AbortSignal` cancels
 * between updates.
 *
 * Deterministic in the seed and the position: epoch e's order is a permutation seeded by (seed, e), each
 * sample's augmentation a function of (seed, e, sample id), each batch's mixup/CutMix and stochastic-depth
 * draws a function of (seed, e, batch in the epoch), the learning rate a function of the update number. A
 * loop started at a saved {@linkcode LoopPosition}, with the optimizer state restored, therefore continues
 * exactly as the uninterrupted loop would have.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { EpochAugment, TrainAugment } from "../data/augment.ts";
import { mixupBatch, type MixupOptions } from "../data/mixup.ts";
import { accumulateGrads, type ViTModel } from "../vit/model.ts";
import type { ImageSet } from "../data/image_set.ts";
import type { FrozenPrefixCache } from "./frozen_cache.ts";
import { clipGradNorm, type Optimizer } from "./optimizer.ts";
import { mixSeed, permutation, Rng } from "./rng.ts";
import { learningRate, type ScheduleOptions } from "./scheduler.ts";

/** Where a run is; {@linkcode trainLoop} advances it in place (checkpoints save it). */
export interface LoopPosition {
  /** Epoch in progress (0-based). */
  epoch: number;
  /** Optimizer updates already done within that epoch. */
  updateInEpoch: number;
  /** Optimizer updates done in total. */
  update: number;
}

/** What one optimizer update did. */
export interface StepReport {
  /** Updates done in total, this one included. */
  update: number;
  /** The epoch this update belongs to (0-based). */
  epoch: number;
  /** Updates done in that epoch, this one included; equals `updatesPerEpoch` at the epoch's last. */
  updateInEpoch: number;
  updatesPerEpoch: number;
  /** Mean training loss over the update's (accumulated) batches. */
  loss: number;
  /** The learning rate the update used. */
  lr: number;
  /** Global gradient norm before clipping; only when clipping. */
  gradNorm?: number;
  /** Images the update used (batch size × accumulation steps). */
  images: number;
}

/** Inputs of {@linkcode trainLoop}. */
export interface LoopOptions {
  model: ViTModel;
  /** Built over the model's trainable variables (freeze first); its state is the caller's to save. */
  optimizer: Optimizer;
  data: ImageSet;
  /** Sample indices of `data` an epoch visits (e.g. a class-balanced subset); all by default. */
  pool?: ArrayLike<number>;
  batchSize: number;
  /** Batches whose gradients are averaged into one update. Default 1. */
  gradAccumSteps?: number;
  /** Seed of the data order and the augmentation. */
  seed: number;
  /** Training augmentation (lib/data's); none by default. */
  augment?: TrainAugment;
  /** Label smoothing. Default 0. */
  smoothing?: number;
  /** Mixup/CutMix of every batch (lib/data's; soft targets, label smoothing folded in); none by default. */
  mixup?: MixupOptions;
  /** Stochastic depth rate (timm's `drop_path`, linear over the blocks); 0 (default) is off. */
  dropPath?: number;
  /** Clip the global gradient norm to this; 0 (default) does not clip. */
  clipGrad?: number;
  /** The learning-rate schedule, in updates. */
  schedule: ScheduleOptions;
  /** The loop ends when `position.update` reaches this (possibly mid-epoch). */
  totalUpdates: number;
  /** Where to start; advanced in place after every update. */
  position: LoopPosition;
  /**
   * Awaited after every update (the position already advanced, gradients freed); returning true stops
   * the loop there. A throw ends the loop with that error.
   */
  onStep?: (step: StepReport) => Promise<boolean | void> | boolean | void;
  /**
   * Awaited after an epoch's last update and its `onStep`, once the position has moved to the next epoch
   * (`epoch` is the one that ended); returning true stops the loop there.
   */
  onEpochEnd?: (epoch: number) => Promise<boolean | void> | boolean | void;
  /**
   * The frozen prefix's outputs by input view (frozen_cache.ts): steps then run through the trainable
   * suffix only. Built over `model`; none by default; not with `mixup` or `dropPath`.
   */
  prefixCache?: FrozenPrefixCache;
  /** Checked before every update; once aborted the loop throws the signal's reason (an `AbortError`). */
  signal?: AbortSignal;
}

/**
 * Full updates in one epoch over `samples` samples (a last, partial effective batch is dropped). Throws when
 * the samples do not fill one effective batch, since such a run would never update.
 */
export function updatesPerEpoch(samples: number, batchSize: number, gradAccumSteps = 1): number {
  const perEpoch = Math.floor(samples / (batchSize * gradAccumSteps));
  if (perEpoch < 1) {
    throw new Error(
      `the training set has ${samples} images, fewer than one effective batch (${
        batchSize * gradAccumSteps
      })`,
    );
  }
  return perEpoch;
}

/**
 * One epoch's batches of augmented images, the next one prepared ahead: decoding and augmenting a batch
 * (JPEG decoding on libvips' threads, crops, flips and normalisation here) then overlaps the step before it,
 * whose forward and backward run in the data-parallel workers while this isolate waits. Each image depends
 * only on (seed, epoch, sample id), so preparing it earlier changes no result.
 */
class BatchPrefetch {
  #next: { at: number; images: Promise<Float32Array> } | undefined;

  constructor(readonly data: ImageSet, readonly augment: EpochAugment | undefined) {}

  /** The images of the batch at position `at` of the epoch's order (`ids`). */
  take(at: number, ids: number[]): Promise<Float32Array> {
    const next = this.#next;
    this.#next = undefined;
    return next?.at === at ? next.images : this.data.images(ids, this.augment);
  }

  /**
   * Starts preparing the batch at `at` once the step just begun has handed its chunks to the workers (a
   * macrotask later: its messages are posted from microtasks), so that this work never delays them.
   */
  prepare(at: number, ids: number[]): void {
    const images = new Promise<void>((resolve) => setTimeout(resolve, 0))
      .then(() => this.data.images(ids, this.augment));
    // A batch never taken (the loop stopped or failed) must not surface as an unhandled rejection.
    images.catch(() => {});
    this.#next = { at, images };
  }
}

/**
 * Trains until `totalUpdates`, a hook asks to stop (`stopped: true`) or the signal aborts. Returns the
 * last update's loss (NaN when none ran).
 */
export async function trainLoop(o: LoopOptions): Promise<{ stopped: boolean; loss: number }> {
  const accum = o.gradAccumSteps ?? 1;
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1 || !Number.isInteger(accum) || accum < 1) {
    throw new Error(`batch size ${o.batchSize} × ${accum} accumulation steps: expected positive integers`);
  }
  if (o.prefixCache && (o.mixup || o.dropPath)) {
    // A cached prefix is the deterministic forward of one view: mixing images or dropping blocks would change
    // it.
    throw new Error("the frozen-prefix cache does not combine with mixup/CutMix or drop_path");
  }
  const pool = o.pool ? Int32Array.from(o.pool) : Int32Array.from({ length: o.data.size }, (_, i) => i);
  const eff = o.batchSize * accum;
  const perEpoch = updatesPerEpoch(pool.length, o.batchSize, accum);
  const shape = [o.batchSize, ...o.data.shape] as [number, number, number, number];
  const pos = o.position;
  let loss = NaN;
  while (pos.update < o.totalUpdates) {
    const order = permutation(pool.length, mixSeed(o.seed, pos.epoch, 0x0de7));
    const augment = o.augment ? { augment: o.augment, seed: o.seed, epoch: pos.epoch } : undefined;
    const idsAt = (at: number) => Array.from({ length: o.batchSize }, (_, i) => pool[order[at + i]]);
    const batches = new BatchPrefetch(o.data, augment);
    while (pos.updateInEpoch < perEpoch && pos.update < o.totalUpdates) {
      o.signal?.throwIfAborted();
      const lr = learningRate(o.schedule, pos.update);
      let grads: Map<string, tf.Tensor> | undefined;
      let stepLoss = 0, gradNorm: number | undefined;
      try {
        for (let k = 0; k < accum; k++) {
          const at = pos.updateInEpoch * eff + k * o.batchSize;
          const ids = idsAt(at);
          const x = await batches.take(at, ids);
          // The next batch of this epoch's updates is prepared while this one's step runs (none past the
          // last update: nothing would take it, and its decoding would outlive the loop).
          const nextNeeded = k + 1 < accum || pos.update + 1 < o.totalUpdates;
          if (nextNeeded && at + 2 * o.batchSize <= perEpoch * eff) {
            batches.prepare(at + o.batchSize, idsAt(at + o.batchSize));
          }
          const y = Int32Array.from(ids, (i) => o.data.labels[i]);
          const batchInEpoch = pos.updateInEpoch * accum + k;
          const targets = o.mixup
            ? mixupBatch(x, shape, y, o.mixup, Rng.derive(o.seed, pos.epoch, batchInEpoch, 0x313c))
            : y;
          const dpRng = Rng.derive(o.seed, pos.epoch, batchInEpoch, 0xd0d0);
          const lossOptions = {
            labelSmoothing: o.smoothing ?? 0,
            ...(o.dropPath ? { dropPath: { rate: o.dropPath, uniform: () => dpRng.uniform() } } : {}),
          };
          const step = o.prefixCache
            ? await o.prefixCache.lossAndDeviceGrads(ids, x, shape, targets, lossOptions)
            : await o.model.lossAndDeviceGrads(x, shape, targets, lossOptions);
          stepLoss += step.loss / accum;
          if (!grads) grads = step.grads;
          else accumulateGrads(grads, step.grads);
        }
        if (accum > 1) {
          for (const [name, g] of grads!) {
            grads!.set(name, tf.mul(g, 1 / accum));
            g.dispose();
          }
        }
        // Checked before the update, so that a diverged step never reaches the weights or the optimizer.
        if (!Number.isFinite(stepLoss)) {
          throw new Error(`the loss became ${stepLoss} at update ${pos.update + 1}`);
        }
        const clip = o.clipGrad ?? 0;
        if (clip > 0) gradNorm = await clipGradNorm(grads!, clip);
        o.optimizer.apply(grads!, lr);
      } finally {
        for (const g of grads?.values() ?? []) g.dispose();
      }
      loss = stepLoss;
      pos.update++;
      pos.updateInEpoch++;
      const stop = await o.onStep?.({
        update: pos.update,
        epoch: pos.epoch,
        updateInEpoch: pos.updateInEpoch,
        updatesPerEpoch: perEpoch,
        loss,
        lr,
        ...(gradNorm !== undefined ? { gradNorm } : {}),
        images: eff,
      });
      if (stop) return { stopped: true, loss };
    }
    if (pos.updateInEpoch < perEpoch) break; // totalUpdates reached within the epoch
    pos.epoch++;
    pos.updateInEpoch = 0;
    if (await o.onEpochEnd?.(pos.epoch - 1)) return { stopped: true, loss };
  }
  return { stopped: false, loss };
}
