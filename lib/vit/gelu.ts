import * as tf from "@tensorflow/tfjs";
import { wasmGelu } from "../backend/wasm_gelu.ts";
import { webgpuGelu, webgpuGeluGrad } from "../backend/webgpu_gelu.ts";

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** `dy·(Φ(x) + x·φ(x))` from `x` and `1 + erf(x/√2)`, by tfjs ops. */
function gradOps(xs: tf.Tensor, dy: tf.Tensor, onePlusErf: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const cdf = tf.mul(onePlusErf, 0.5);
    const pdf = tf.mul(tf.exp(tf.mul(tf.square(xs), -0.5)), INV_SQRT_2PI);
    return tf.mul(dy, tf.add(cdf, tf.mul(xs, pdf)));
  });
}

/**
 * The exact GELU PyTorch uses by default, `x·Φ(x) = 0.5·x·(1 + erf(x/√2))` (not the tanh approximation), with
 * a hand-written gradient `Φ(x) + x·φ(x)` so that backward keeps only `x` and `1 + erf(x/√2)` alive instead
 * of every intermediate of the formula (the MLP activation is the largest tensor of a ViT), and does not
 * compute `erf` a second time. Where the backend has a fused GELU kernel installed (the WGSL ones on a
 * software WebGPU adapter, `lib/backend/webgpu_gelu.ts`; the JS one on wasm, `lib/backend/wasm_gelu.ts`,
 * which returns the slope with the value) the value and the gradient are those kernels', else tfjs ops'.
 */
export const gelu: <T extends tf.Tensor>(x: T) => T = tf.customGrad<tf.Tensor>((x, save) => {
  const input = x as tf.Tensor;
  const fused = webgpuGelu(input);
  if (fused) {
    (save as tf.GradSaveFunc)([input]);
    return {
      value: fused,
      gradFunc: (dy, [xs]) =>
        webgpuGeluGrad(xs, dy as tf.Tensor) ??
          gradOps(xs, dy as tf.Tensor, tf.add(tf.erf(tf.mul(xs, Math.SQRT1_2)), 1)),
    };
  }
  // Under a gradient (tf.grad / variableGrads) the wasm kernel also returns the slope, so backward is one
  // multiply; inference computes the value only.
  const wasm = wasmGelu(input, tf.engine().state.gradientDepth > 0);
  if (wasm) {
    if (wasm.slope) (save as tf.GradSaveFunc)([wasm.slope]);
    return { value: wasm.value, gradFunc: (dy, [slope]) => tf.mul(dy as tf.Tensor, slope) };
  }
  const onePlusErf = tf.tidy(() => tf.add(tf.erf(tf.mul(input, Math.SQRT1_2)), 1));
  (save as tf.GradSaveFunc)([input, onePlusErf]);
  return {
    value: tf.tidy(() => tf.mul(tf.mul(input, 0.5), onePlusErf)),
    gradFunc: (dy, [xs, e]) => gradOps(xs, dy as tf.Tensor, e),
  };
}) as <T extends tf.Tensor>(x: T) => T;
