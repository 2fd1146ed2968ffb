import * as tf from "@tensorflow/tfjs";
import { wasmLayerNorm, wasmLayerNormGrad, wasmLayerNormKernels } from "../backend/wasm_layer_norm.ts";
import {
  webgpuLayerNorm,
  webgpuLayerNormGrad,
  webgpuLayerNormKernels,
} from "../backend/webgpu_layer_norm.ts";

/** LayerNorm over the last axis from tfjs ops (autograd differentiates it). */
function composite(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  const axis = x.rank - 1;
  const mean = tf.mean(x, axis, true);
  const centered = tf.sub(x, mean);
  const variance = tf.mean(tf.square(centered), axis, true);
  const normed = tf.mul(centered, tf.rsqrt(tf.add(variance, eps)));
  return tf.add(tf.mul(normed, weight), bias);
}

/**
 * LayerNorm by the backend's fused kernel (`lib/backend/webgpu_layer_norm.ts`,
 * `lib/backend/wasm_layer_norm.ts`), with its gradient written out from the saved input: `x̂ = (x − μ)·r`, `g
 * = dy·γ`, `dx = r·(g − mean(g) − x̂·mean(g·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy` (sums over every axis but the
 * last), by the backend's gradient kernels where installed, else tfjs ops. Backward keeps only `x` and `γ`
 * alive instead of the composite's intermediates.
 */
function fused(eps: number) {
  return tf.customGrad((x, weight, bias, save) => {
    const [xs, w, b] = [x, weight, bias] as tf.Tensor[];
    (save as tf.GradSaveFunc)([xs, w]);
    return {
      value: webgpuLayerNorm(xs, w, b, eps) ?? wasmLayerNorm(xs, w, b, eps) ??
        tf.tidy(() => composite(xs, w, b, eps)),
      gradFunc: (dy, [xSaved, wSaved]) =>
        webgpuLayerNormGrad(xSaved, wSaved, dy as tf.Tensor, eps) ??
          wasmLayerNormGrad(xSaved, wSaved, dy as tf.Tensor, eps) ?? tf.tidy(() => {
            const axis = xSaved.rank - 1;
            const outer = xSaved.shape.slice(0, -1).map((_, i) => i);
            const centered = tf.sub(xSaved, tf.mean(xSaved, axis, true));
            const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(centered), axis, true), eps));
            const xhat = tf.mul(centered, rstd);
            const g = tf.mul(dy as tf.Tensor, wSaved);
            const dx = tf.mul(
              tf.sub(tf.sub(g, tf.mean(g, axis, true)), tf.mul(xhat, tf.mean(tf.mul(g, xhat), axis, true))),
              rstd,
            );
            return [dx, tf.sum(tf.mul(dy as tf.Tensor, xhat), outer), tf.sum(dy as tf.Tensor, outer)];
          }),
    };
  });
}

/**
 * LayerNorm over the last axis with timm's ViT epsilon (1e-6), biased variance as in PyTorch. Where the
 * backend has a fused LayerNorm kernel installed (the WGSL one on a software WebGPU adapter, the JS one on
 * wasm) it runs that, else tfjs ops.
 */
export class LayerNorm {
  private readonly fused: (x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor) => tf.Tensor;

  constructor(readonly weight: tf.Variable, readonly bias: tf.Variable, readonly eps = 1e-6) {
    this.fused = fused(eps);
  }

  apply<T extends tf.Tensor>(x: T): T {
    if ((webgpuLayerNormKernels.active() || wasmLayerNormKernels.active()) && x.dtype === "float32") {
      return this.fused(x, this.weight, this.bias) as T;
    }
    return tf.tidy(() => composite(x, this.weight, this.bias, this.eps)) as T;
  }
}
