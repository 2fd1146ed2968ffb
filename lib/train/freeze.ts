/**
 * Which parameters train (`--freeze`): all, only the classifier head, or everything but the head, the final
 * norm and the blocks from N on (patch embedding, class token, position embedding and blocks 0..N−1 fixed).
 *
 * @module
 */
import type { TrainAugment } from "../data/augment.ts";
import type { ViTModel } from "../vit/model.ts";
import type { Freeze } from "./config.ts";
import { cacheableAugment, type FrozenCacheOptions, FrozenPrefixCache } from "./frozen_cache.ts";
import { Optimizer, type OptimizerOptions } from "./optimizer.ts";

/** Marks `model`'s variables trainable or frozen per `freeze`; returns how many stay trainable. */
export function applyFreeze(model: ViTModel, freeze: Freeze): number {
  let trainable = 0;
  for (const [name, v] of model.variables) {
    let frozen = false;
    if (freeze === "head-only") frozen = !name.startsWith("head.");
    else if (freeze !== "none") {
      const m = /^blocks\.(\d+)\./.exec(name);
      frozen = m ? Number(m[1]) < freeze.blocks : !(name.startsWith("head.") || name.startsWith("norm."));
    }
    // tfjs exposes `trainable` read-only in its types; optimizers and gradients honour the field.
    (v as { trainable: boolean }).trainable = !frozen;
    if (!frozen) trainable++;
  }
  return trainable;
}

/** A model made ready to train by {@linkcode setUpTraining}. */
export interface TrainingSetup {
  /** Over the trainable variables; the caller disposes it. */
  optimizer: Optimizer;
  /** The frozen prefix's cache, when part of the network is frozen and the augmentation allows it. */
  prefixCache?: FrozenPrefixCache;
  /** One line saying what is cached, or why not (empty when nothing is frozen). */
  note: string;
}

/**
 * The set-up `deno task train` and fine-tuning sessions share: `freeze` applied, the optimizer built over
 * what trains (timm shapes decide weight decay), and the frozen prefix cached unless `cache` is false or
 * the augmentation makes every view new.
 */
export async function setUpTraining(model: ViTModel, o: {
  freeze: Freeze;
  optimizer: OptimizerOptions;
  augment?: TrainAugment;
  /** Why every forward of the prefix differs (mixup, drop_path …): caching is then off, saying so. */
  varies?: string;
  cache?: FrozenCacheOptions | false;
}): Promise<TrainingSetup> {
  applyFreeze(model, o.freeze);
  const trainable = new Map([...model.variables].filter(([, v]) => v.trainable));
  const optimizer = new Optimizer(trainable, new Map(model.specs.map((s) => [s.name, s.shape])), o.optimizer);
  const split = model.frozenSplit();
  if (split < 1) return { optimizer, note: "" };
  const what = split > model.config.depth ? "everything but the head" : `blocks 0..${split - 1}`;
  if (o.cache === false) {
    return { optimizer, note: `frozen-prefix cache off (${what} recomputed every step)` };
  }
  if (o.varies) return { optimizer, note: `frozen-prefix cache off: ${o.varies} (${what} recomputed)` };
  if (!cacheableAugment(o.augment)) {
    return {
      optimizer,
      note: `frozen-prefix cache off: the augmentation makes nearly every view new (${what} recomputed)`,
    };
  }
  const prefixCache = await FrozenPrefixCache.create(model, o.cache ?? {});
  const mib = (prefixCache!.options.memoryBytes / 2 ** 20).toFixed(0);
  return {
    optimizer,
    prefixCache,
    note: `frozen prefix (${what}) computed once per view and cached (${mib} MiB in memory` +
      `${prefixCache!.options.dir ? `, ${prefixCache!.options.dir} on disk` : ""})`,
  };
}
