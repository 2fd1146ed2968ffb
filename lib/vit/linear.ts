import type * as tf from "@tensorflow/tfjs";
import { linear } from "./matmul.ts";

/**
 * A fully connected layer, `y = x·W + b`, with `W` stored `[in, out]` (see `params.ts`). Applied to 2-D
 * activations `[rows, in]`; callers flatten tokens into rows so that one matmul covers the batch.
 */
export class Linear {
  constructor(readonly weight: tf.Variable, readonly bias?: tf.Variable) {}

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return linear(x, this.weight as tf.Tensor2D, this.bias as tf.Tensor1D | undefined);
  }
}
