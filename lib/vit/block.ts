import * as tf from "@tensorflow/tfjs";
import type { Attention } from "./attention.ts";
import type { LayerNorm } from "./layer_norm.ts";
import type { Mlp } from "./mlp.ts";

/**
 * One block's stochastic-depth draws: per residual branch, a `[batch, 1, 1]` tensor holding, per sample,
 * 0 (branch dropped) or `1 / keep_prob` (kept), as timm's `drop_path`; absent = identity.
 */
export interface DropPathScales {
  attn?: tf.Tensor3D;
  mlp?: tf.Tensor3D;
}

/**
 * timm's per-block drop-path rates `dpr = torch.linspace(0, rate, depth)` (float32, torch's two-sided
 * formula): block 0 never drops, the last drops with probability `rate`.
 */
export function dropPathRates(depth: number, rate: number): number[] {
  if (!(rate >= 0 && rate < 1)) throw new Error(`drop_path: expected a rate in [0, 1), got ${rate}`);
  if (depth === 1) return [0];
  const step = Math.fround(Math.fround(rate) / (depth - 1));
  return Array.from(
    { length: depth },
    (_, i) =>
      i < depth / 2
        ? Math.fround(i * step)
        : Math.fround(Math.fround(rate) - Math.fround((depth - 1 - i) * step)),
  );
}

/** timm's `drop_path(x)` with the draws given: each sample's rows of `x` `[b·T, D]` times its scale. */
export function dropPath(
  x: tf.Tensor2D,
  scale: tf.Tensor3D | undefined,
  batch: number,
  tokens: number,
): tf.Tensor2D {
  if (!scale) return x;
  return tf.tidy(() =>
    tf.reshape(tf.mul(tf.reshape(x, [batch, tokens, x.shape[1]]), scale), x.shape) as tf.Tensor2D
  );
}

/**
 * timm's pre-norm transformer `Block`: `x + drop_path(attn(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`
 * (drop path only when training draws are given).
 */
export class Block {
  constructor(
    readonly norm1: LayerNorm,
    readonly attn: Attention,
    readonly norm2: LayerNorm,
    readonly mlp: Mlp,
  ) {}

  apply(x: tf.Tensor2D, batch: number, tokens: number, drop?: DropPathScales): tf.Tensor2D {
    return tf.tidy(() => {
      const a = dropPath(this.attn.apply(this.norm1.apply(x), batch, tokens), drop?.attn, batch, tokens);
      const h = tf.add(x, a) as tf.Tensor2D;
      return tf.add(
        h,
        dropPath(this.mlp.apply(this.norm2.apply(h)), drop?.mlp, batch, tokens),
      ) as tf.Tensor2D;
    });
  }
}
