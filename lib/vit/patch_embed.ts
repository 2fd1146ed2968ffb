import * as tf from "@tensorflow/tfjs";
import type { Linear } from "./linear.ts";

/**
 * timm's `PatchEmbed`: a convolution whose stride equals its kernel, computed as a matmul on flattened
 * non-overlapping patches (the same arithmetic, and a single large matmul is what WebGPU runs fastest).
 */
export class PatchEmbed {
  constructor(readonly proj: Linear, readonly patchSize: number) {}

  /** `[b, C, H, W]` (NCHW, as timm) → patch tokens `[b, (H/p)·(W/p), D]` in row-major patch order. */
  apply(x: tf.Tensor4D): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, c, h, w] = x.shape;
      const p = this.patchSize, gh = h / p, gw = w / p;
      // [b, C, gh, p, gw, p] → [b, gh, gw, C, p, p]: each row is one patch in the kernel's (c, kh, kw) order.
      const patches = tf.transpose(tf.reshape(x, [b, c, gh, p, gw, p]), [0, 2, 4, 1, 3, 5]);
      const rows = tf.reshape(patches, [b * gh * gw, c * p * p]) as tf.Tensor2D;
      const embedded = this.proj.apply(rows);
      return tf.reshape(embedded, [b, gh * gw, embedded.shape[1]]) as tf.Tensor3D;
    });
  }
}
