/**
 * Which parameters train (`--freeze`): all, only the classifier head, or everything but the head, the final
 * norm and the blocks from N on (patch embedding, class token, position embedding and blocks 0..N−1 fixed).
 *
 * @module
 */
import type { ViTModel } from "../vit/model.ts";
import type { Freeze } from "./config.ts";

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
