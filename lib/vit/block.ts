import * as tf from "@tensorflow/tfjs";
import type { Attention } from "./attention.ts";
import type { LayerNorm } from "./layer_norm.ts";
import type { Mlp } from "./mlp.ts";

/** timm's pre-norm transformer `Block`: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`. */
export class Block {
  constructor(
    readonly norm1: LayerNorm,
    readonly attn: Attention,
    readonly norm2: LayerNorm,
    readonly mlp: Mlp,
  ) {}

  apply(x: tf.Tensor2D, batch: number, tokens: number): tf.Tensor2D {
    return tf.tidy(() => {
      const h = tf.add(x, this.attn.apply(this.norm1.apply(x), batch, tokens)) as tf.Tensor2D;
      return tf.add(h, this.mlp.apply(this.norm2.apply(h))) as tf.Tensor2D;
    });
  }
}
