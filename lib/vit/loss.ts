import * as tf from "@tensorflow/tfjs";

/**
 * Mean cross-entropy with optional label smoothing, as PyTorch's `CrossEntropyLoss(label_smoothing=s)` and
 * timm's `LabelSmoothingCrossEntropy`: `(1 − s)·nll + s·mean_k(−log p_k)`.
 */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, labelSmoothing = 0): tf.Scalar {
  if (!(labelSmoothing >= 0 && labelSmoothing < 1)) {
    throw new Error(`labelSmoothing must be in [0, 1), got ${labelSmoothing}`);
  }
  return tf.tidy(() => {
    const numClasses = logits.shape[1];
    const logProbs = tf.logSoftmax(logits);
    const nll = tf.neg(tf.sum(tf.mul(logProbs, tf.oneHot(labels, numClasses)), 1));
    if (labelSmoothing === 0) return tf.mean(nll) as tf.Scalar;
    const smooth = tf.neg(tf.mean(logProbs, 1));
    return tf.mean(tf.add(tf.mul(nll, 1 - labelSmoothing), tf.mul(smooth, labelSmoothing))) as tf.Scalar;
  });
}
