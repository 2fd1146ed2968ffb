import type * as tf from "@tensorflow/tfjs";
import { gelu } from "./gelu.ts";
import type { Linear } from "./linear.ts";

/** timm's `Mlp`: fc1 → GELU → fc2 (no dropout: the family is used with drop rates of 0). */
export class Mlp {
  constructor(readonly fc1: Linear, readonly fc2: Linear) {}

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return this.fc2.apply(gelu(this.fc1.apply(x)));
  }
}
