import * as tf from "@tensorflow/tfjs";

/** LayerNorm over the last axis with timm's ViT epsilon (1e-6), biased variance as in PyTorch. */
export class LayerNorm {
  constructor(readonly weight: tf.Variable, readonly bias: tf.Variable, readonly eps = 1e-6) {}

  apply<T extends tf.Tensor>(x: T): T {
    return tf.tidy(() => {
      const axis = x.rank - 1;
      const mean = tf.mean(x, axis, true);
      const centered = tf.sub(x, mean);
      const variance = tf.mean(tf.square(centered), axis, true);
      const normed = tf.mul(centered, tf.rsqrt(tf.add(variance, this.eps)));
      return tf.add(tf.mul(normed, this.weight), this.bias) as T;
    });
  }
}
