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

/**
 * Mean cross-entropy against soft target distributions `[b, K]` (each row sums to 1), as timm's
 * `SoftTargetCrossEntropy`: `mean_b(Σ_k −t_bk · log p_bk)`. With one-hot rows it equals {@linkcode
 * crossEntropy}; mixup/CutMix targets (label smoothing folded in) use it.
 */
export function softTargetCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  if (logits.shape[0] !== targets.shape[0] || logits.shape[1] !== targets.shape[1]) {
    throw new Error(`soft targets [${targets.shape}] do not match the logits [${logits.shape}]`);
  }
  return tf.tidy(() => tf.mean(tf.neg(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), 1))) as tf.Scalar);
}
