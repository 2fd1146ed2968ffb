import * as tf from "@tensorflow/tfjs";
import { webgpuGelu, webgpuGeluGrad } from "../backend/webgpu_gelu.ts";

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * The exact GELU PyTorch uses by default, `x·Φ(x) = 0.5·x·(1 + erf(x/√2))` (not the tanh approximation), with
 * a hand-written gradient `Φ(x) + x·φ(x)` so that backward keeps only `x` alive instead of every
 * intermediate of the formula: the MLP activation is the largest tensor of a ViT. Where the backend has a fused
 * GELU kernel installed (the WGSL ones on a software WebGPU adapter, `lib/backend/webgpu_gelu.ts`) the value and
 * the gradient are those kernels', else tfjs ops'.
 */
export const gelu: <T extends tf.Tensor>(x: T) => T = tf.customGrad<tf.Tensor>((x, save) => {
  const input = x as tf.Tensor;
  (save as tf.GradSaveFunc)([input]);
  return {
    value: webgpuGelu(input) ??
      tf.tidy(() => tf.mul(tf.mul(input, 0.5), tf.add(tf.erf(tf.mul(input, Math.SQRT1_2)), 1))),
    gradFunc: (dy, [xs]) =>
      webgpuGeluGrad(xs, dy as tf.Tensor) ?? tf.tidy(() => {
        const cdf = tf.mul(tf.add(tf.erf(tf.mul(xs, Math.SQRT1_2)), 1), 0.5);
        const pdf = tf.mul(tf.exp(tf.mul(tf.square(xs), -0.5)), INV_SQRT_2PI);
        return tf.mul(dy as tf.Tensor, tf.add(cdf, tf.mul(xs, pdf)));
      }),
  };
}) as <T extends tf.Tensor>(x: T) => T;
