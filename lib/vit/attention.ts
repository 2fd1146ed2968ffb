import * as tf from "@tensorflow/tfjs";
import { wasmSplitHeads } from "../backend/wasm_heads.ts";
import type { Linear } from "./linear.ts";
import { matMul } from "./matmul.ts";

/**
 * timm's multi-head self-attention: one fused qkv projection, softmax(q·kᵀ/√d)·v per head, output projection.
 * Takes and returns tokens flattened to rows, `[batch * tokens, dim]`.
 */
export class Attention {
  readonly scale: number;

  constructor(
    readonly qkv: Linear,
    readonly proj: Linear,
    readonly numHeads: number,
    readonly dim: number,
  ) {
    this.scale = 1 / Math.sqrt(dim / numHeads);
  }

  apply(x: tf.Tensor2D, batch: number, tokens: number): tf.Tensor2D {
    const heads = this.numHeads, headDim = this.dim / this.numHeads;
    const out = tf.tidy(() => {
      const qkv = this.qkv.apply(x);
      // [b*T, 3D] → q·scale, k, v as [b, heads, T, head_dim]: one pass on wasm (lib/backend/wasm_heads.ts).
      const [qs, k, v] = wasmSplitHeads(qkv, batch, tokens, heads, this.scale) ?? (() => {
        const [q, k, v] = tf.split(qkv, 3, 1).map((t) =>
          tf.transpose(tf.reshape(t, [batch, tokens, heads, headDim]), [0, 2, 1, 3])
        );
        return [tf.mul(q, this.scale), k, v];
      })();
      const scores = matMul(qs, k, true);
      const context = matMul(tf.softmax(scores), v);
      return tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch * tokens, this.dim]) as tf.Tensor2D;
    });
    return this.proj.apply(out);
  }
}
