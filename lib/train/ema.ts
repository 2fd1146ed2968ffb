/**
 * An exponential moving average of a model's weights, as timm's `ModelEmaV3` (train.py `--model-ema`,
 * `--model-ema-decay`, no warm-up): after every optimizer update `ema ← lerp(ema, weights, 1 − decay)`, i.e.
 * `ema + (1 − decay)·(weights − ema)`, for every parameter (frozen ones stay exactly the model's). The
 * average is itself a `ViTModel` (not trainable), so it is evaluated and exported like any model; its weights
 * go into checkpoints so a resumed run continues the same average.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { createViT, type ViTModel } from "../vit/model.ts";
import type { StateDict } from "../vit/params.ts";
import { timmConfig } from "../vit/config.ts";

/** timm's default `model_ema_decay`. */
export const EMA_DEFAULT_DECAY = 0.9998;

/** Throws unless `decay` is a usable EMA decay. */
export function checkEmaDecay(decay: number): void {
  if (!(decay >= 0 && decay < 1)) {
    throw new Error(`model_ema_decay: expected a number in [0, 1), got ${JSON.stringify(decay)}`);
  }
}

/** The EMA of a model's weights. */
export class ModelEma {
  private constructor(readonly model: ViTModel, readonly decay: number) {}

  /**
   * An EMA of `source` starting at `state` (a checkpoint's EMA weights on resume) or at the source's
   * current weights.
   */
  static async create(source: ViTModel, decay: number, state?: StateDict): Promise<ModelEma> {
    checkEmaDecay(decay);
    // tfjs Variables (trainable: true) even on the onnx engine, where an inference-only model has none; the
    // optimizer never sees them (it holds the trained model's), so they only change through update().
    const model = await createViT(timmConfig(source.config), state ?? await source.stateDict());
    return new ModelEma(model, decay);
  }

  /** One update from `source`'s current weights (call after every optimizer step). */
  update(source: ViTModel): void {
    const d = this.decay;
    for (const [name, ema] of this.model.variables) {
      const w = source.variables.get(name);
      if (!w) throw new Error(`internal: the EMA has "${name}", the model does not`);
      const next = tf.tidy(() => tf.add(ema, tf.mul(tf.sub(w, ema), 1 - d)));
      ema.assign(next);
      next.dispose();
    }
  }

  /** The averaged weights in timm's names and layouts (what checkpoints and the export hold). */
  stateDict(): Promise<StateDict> {
    return this.model.stateDict();
  }

  /** Frees the average's device tensors. */
  dispose(): void {
    this.model.dispose();
  }
}
