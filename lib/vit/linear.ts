import * as tf from "@tensorflow/tfjs";

/**
 * A fully connected layer, `y = x·W + b`, with `W` stored `[in, out]` (see `params.ts`).
 * Applied to 2-D activations `[rows, in]`; callers flatten tokens into rows so that one matmul covers the batch.
 */
export class Linear {
  constructor(readonly weight: tf.Variable, readonly bias?: tf.Variable) {}

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.fused.matMul({ a: x, b: this.weight as tf.Tensor2D, bias: this.bias });
  }
}
