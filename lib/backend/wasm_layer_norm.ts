/**
 * LayerNorm over the last axis and its gradient for tfjs-wasm, each one kernel in JS over views of
 * tfjs-wasm's heap, in place of the ops the model composes them from: forward mean, sub, square, mean, add,
 * rsqrt, mul, mul, add; backward some twenty more (and the tape's copies of their intermediates), each a full
 * pass and a new tensor. The forward reads each row twice (mean, then the biased variance of the centred
 * values, as the composite) and writes it once; the gradient recomputes the row statistics from the saved
 * input and returns `dx`, `dγ` and `dβ` from one pass over `x` and `dy`: `x̂ = (x − μ)·r`, `g = dy·γ`, `dx =
 * r·(g − mean(g) − x̂·mean(g·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
 *
 * Elementwise steps round to float32 as tfjs's ops do (`Math.fround`); sums are accumulated in float64
 * (tfjs's in float32), so results agree with the composite to about an ulp of the inputs' scale.
 *
 * Registered under the names the WGSL kernels use (`VitLayerNorm`, `VitLayerNormGrad`; tfjs has no LayerNorm
 * kernel), for backend wasm; the model asks for them through {@linkcode wasmLayerNorm} / {@linkcode
 * wasmLayerNormGrad}, which answer `undefined` where they are not installed on the current backend. Checked
 * against tfjs's composite in tests/kernels_wasm_fused_test.ts and, installed, by the timm parity tests.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { NamedKernels } from "./named_kernels.ts";
import "@tensorflow/tfjs-backend-wasm";
import type { WasmHeapBackend } from "./wasm_slice.ts";
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL } from "./webgpu_layer_norm.ts";

type Info = tf.TensorInfo;
const BACKEND = "wasm";
const fr = Math.fround;

/** Row `r`'s mean and `1/√(var + eps)` of `x` `[rows, n]`, as the composite rounds them. */
function rowStats(x: Float32Array, base: number, n: number, eps: number): [number, number] {
  let s = 0;
  for (let j = 0; j < n; j++) s += x[base + j];
  const mean = fr(s / n);
  let q = 0;
  for (let j = 0; j < n; j++) {
    const c = fr(x[base + j] - mean);
    q += fr(c * c);
  }
  return [mean, fr(1 / Math.sqrt(fr(fr(q / n) + eps)))];
}

function layerNorm(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info {
  const { x, gamma, beta } = args.inputs as { x: Info; gamma: Info; beta: Info };
  const eps = fr((args.attrs as { eps: number }).eps);
  const backend = args.backend as unknown as WasmHeapBackend;
  const n = x.shape[x.shape.length - 1];
  const out = backend.makeOutput([...x.shape], "float32");
  // Views only after makeOutput: an allocation that grows the heap detaches views taken before it.
  const xs = backend.typedArrayFromHeap(x) as Float32Array,
    ys = backend.typedArrayFromHeap(out) as Float32Array;
  const g = backend.typedArrayFromHeap(gamma) as Float32Array,
    b = backend.typedArrayFromHeap(beta) as Float32Array;
  for (let base = 0; base < xs.length; base += n) {
    const [mean, rstd] = rowStats(xs, base, n, eps);
    for (let j = 0; j < n; j++) ys[base + j] = fr(fr(fr(xs[base + j] - mean) * rstd) * g[j]) + b[j];
  }
  return out;
}

function layerNormGrad(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info[] {
  const { x, gamma, dy } = args.inputs as { x: Info; gamma: Info; dy: Info };
  const eps = fr((args.attrs as { eps: number }).eps);
  const backend = args.backend as unknown as WasmHeapBackend;
  const n = x.shape[x.shape.length - 1];
  const dxInfo = backend.makeOutput([...x.shape], "float32");
  const dgInfo = backend.makeOutput([n], "float32"), dbInfo = backend.makeOutput([n], "float32");
  const xs = backend.typedArrayFromHeap(x) as Float32Array,
    g = backend.typedArrayFromHeap(gamma) as Float32Array;
  const dys = backend.typedArrayFromHeap(dy) as Float32Array,
    dx = backend.typedArrayFromHeap(dxInfo) as Float32Array;
  const dgamma = new Float64Array(n),
    dbeta = new Float64Array(n),
    xhat = new Float32Array(n),
    gy = new Float32Array(n);
  for (let base = 0; base < xs.length; base += n) {
    const [mean, rstd] = rowStats(xs, base, n, eps);
    let sg = 0, sgx = 0;
    for (let j = 0; j < n; j++) {
      const d = dys[base + j];
      const h = fr(fr(xs[base + j] - mean) * rstd);
      const gj = fr(d * g[j]);
      xhat[j] = h;
      gy[j] = gj;
      sg += gj;
      sgx += fr(gj * h);
      dgamma[j] += fr(d * h);
      dbeta[j] += d;
    }
    const mg = fr(sg / n), mgx = fr(sgx / n);
    for (let j = 0; j < n; j++) dx[base + j] = fr(fr(gy[j] - mg) - fr(xhat[j] * mgx)) * rstd;
  }
  (backend.typedArrayFromHeap(dgInfo) as Float32Array).set(dgamma);
  (backend.typedArrayFromHeap(dbInfo) as Float32Array).set(dbeta);
  return [dxInfo, dgInfo, dbInfo];
}

function checkParam(x: tf.Tensor, p: tf.Tensor, name: string): void {
  const d = x.shape[x.rank - 1];
  if (p.rank !== 1 || p.shape[0] !== d) {
    throw new Error(`${LAYER_NORM_KERNEL}: ${name} must be [${d}] for x [${x.shape}], got [${p.shape}]`);
  }
}

/**
 * LayerNorm of `x` over its last axis with `weight` (γ) and `bias` (β) by the wasm kernel; `undefined` where
 * it is not installed on the current backend or a tensor is not float32. Not differentiable by itself: wrap
 * it in a `tf.customGrad` whose gradient is {@linkcode wasmLayerNormGrad}.
 */
export function wasmLayerNorm(
  x: tf.Tensor,
  weight: tf.Tensor,
  bias: tf.Tensor,
  eps: number,
): tf.Tensor | undefined {
  if (!wasmLayerNormKernels.active() || [x, weight, bias].some((t) => t.dtype !== "float32")) {
    return undefined;
  }
  checkParam(x, weight, "gamma");
  checkParam(x, bias, "beta");
  return tf.engine().runKernel(LAYER_NORM_KERNEL, { x, gamma: weight, beta: bias }, { eps }) as tf.Tensor;
}

/**
 * LayerNorm's gradients `[dx, dγ, dβ]` for `x`, γ and the output gradient `dy` by the wasm kernel;
 * `undefined` where {@linkcode wasmLayerNorm} would be.
 */
export function wasmLayerNormGrad(
  x: tf.Tensor,
  weight: tf.Tensor,
  dy: tf.Tensor,
  eps: number,
): tf.Tensor[] | undefined {
  if (!wasmLayerNormKernels.active() || [x, weight, dy].some((t) => t.dtype !== "float32")) return undefined;
  checkParam(x, weight, "gamma");
  if (!tf.util.arraysEqual(x.shape, dy.shape)) {
    throw new Error(`${LAYER_NORM_GRAD_KERNEL}: dy [${dy.shape}] must have x's shape [${x.shape}]`);
  }
  return tf.engine().runKernel(LAYER_NORM_GRAD_KERNEL, { x, gamma: weight, dy }, { eps }) as tf.Tensor[];
}

/**
 * The LayerNorm kernels on wasm; `active()` while they run (uninstalled, the model composes LayerNorm
 * from tfjs ops).
 */
export const wasmLayerNormKernels = new NamedKernels(BACKEND, [
  [LAYER_NORM_KERNEL, layerNorm],
  [LAYER_NORM_GRAD_KERNEL, layerNormGrad],
]);
