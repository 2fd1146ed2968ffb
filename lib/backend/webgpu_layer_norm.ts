/**
 * LayerNorm over the last axis in one WGSL kernel for tfjs-webgpu, in place of the nine tfjs ops the model
 * composes it from (mean, sub, square, mean, add, rsqrt, mul, mul, add: one dispatch each). One invocation
 * per row, no workgroup memory and no barriers (which suits the software adapters of the CPU machines, where
 * every barrier splits a workgroup's loop over SIMD lanes): the row's mean, then its biased variance from the
 * centred values (two passes, as the composite), then `(x − mean)·rsqrt(var + eps)·gamma + beta`.
 *
 * tfjs has no LayerNorm kernel to replace, so this registers one under its own name ({@linkcode
 * LAYER_NORM_KERNEL}) and the model asks for it through {@linkcode webgpuLayerNorm}, which answers
 * `undefined` wherever the kernel is not installed on the current backend: the caller then composes it from
 * tfjs ops. Its gradient is the model's `tf.customGrad` (lib/vit/layer_norm.ts), which asks for the gradient
 * kernels here through {@linkcode webgpuLayerNormGrad}: row statistics, `dx` per row, and `dγ`, `dβ` per
 * column, four dispatches in place of some twenty tfjs ops.
 * Like the WGSL matmul and softmax it is installed only on a software adapter unless forced. Checked against
 * the composite and a host LayerNorm in tests/kernels_webgpu_test.ts.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { NamedKernels } from "./named_kernels.ts";
import "@tensorflow/tfjs-backend-webgpu";
import type { WebGPUBackendLike } from "./webgpu_program.ts";

type Info = tf.TensorInfo;
const BACKEND = "webgpu";
/** The names the kernels are registered under (tfjs has none for LayerNorm). */
export const LAYER_NORM_KERNEL = "VitLayerNorm", LAYER_NORM_GRAD_KERNEL = "VitLayerNormGrad";
const WG = 64;

/** WGSL for a row's mean and `rsqrt(var + eps)` of `x` from `base`, `m` loads of `c` components. */
function rowStats(t: string, c: number): string {
  const total = c === 4 ? "(v.x + v.y + v.z + v.w)" : "v";
  return `
fn rowTotal(v : ${t}) -> f32 { return ${total}; }
fn rowStats(base : i32, m : i32) -> vec2<f32> {
  var s = ${t}(0.0);
  for (var i = 0; i < m; i++) { s = s + x[base + i]; }
  let mean = rowTotal(s) / f32(uniforms.n);
  var q = ${t}(0.0);
  for (var i = 0; i < m; i++) {
    let d = x[base + i] - mean;
    q = q + d * d;
  }
  return vec2<f32>(mean, inverseSqrt(rowTotal(q) / f32(uniforms.n) + uniforms.eps));
}`;
}

/** The programs' common fields: one invocation per item of `count` (rows or columns), flat layout. */
function common(count: number) {
  return {
    // A flat layout: tfjs calls main with the invocation's global index.
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(count / WG), 1, 1],
    workgroupSize: [WG, 1, 1],
    uniforms: "rows : i32, n : i32, eps : f32,",
    size: false,
  };
}

/**
 * The forward pass, one invocation per row of `[rows, n]`; `c` components per load (4 when `n` is a multiple
 * of 4, which cuts the loops' trip count by four on a software adapter).
 */
function forwardProgram(rows: number, n: number, c: 1 | 4) {
  const t = c === 4 ? "vec4<f32>" : "f32";
  return {
    ...common(rows),
    variableNames: ["x", "gamma", "beta"],
    variableComponents: [c, c, c],
    outputComponent: c,
    outputShape: [rows, n],
    shaderKey: `vitLayerNorm_${WG}_${c}`,
    getUserCode: () =>
      `${rowStats(t, c)}
fn main(index : i32) {
  if (index >= uniforms.rows) { return; }
  let m = uniforms.n / ${c};
  let base = index * m;
  let st = rowStats(base, m);
  for (var i = 0; i < m; i++) { result[base + i] = (x[base + i] - st.x) * st.y * gamma[i] + beta[i]; }
}`,
  };
}

/** Each row's mean and `rsqrt(var + eps)`, `[rows, 2]`: what the gradient programs share. */
function statsProgram(rows: number, c: 1 | 4) {
  const t = c === 4 ? "vec4<f32>" : "f32";
  return {
    ...common(rows),
    variableNames: ["x"],
    variableComponents: [c],
    outputShape: [rows, 2],
    shaderKey: `vitLayerNormStats_${WG}_${c}`,
    getUserCode: () =>
      `${rowStats(t, c)}
fn main(index : i32) {
  if (index >= uniforms.rows) { return; }
  let m = uniforms.n / ${c};
  let st = rowStats(index * m, m);
  result[index * 2] = st.x;
  result[index * 2 + 1] = st.y;
}`,
  };
}

/**
 * `dx = r·(g − mean(g) − x̂·mean(g·x̂))` with `x̂ = (x − μ)·r`, `g = dy·γ`: one invocation per row, from the
 * row statistics.
 */
function dxProgram(rows: number, n: number, c: 1 | 4) {
  const t = c === 4 ? "vec4<f32>" : "f32";
  const total = c === 4 ? "(v.x + v.y + v.z + v.w)" : "v";
  return {
    ...common(rows),
    variableNames: ["x", "gamma", "dy", "stats"],
    variableComponents: [c, c, c, 1],
    outputComponent: c,
    outputShape: [rows, n],
    shaderKey: `vitLayerNormDx_${WG}_${c}`,
    getUserCode: () => `
fn rowTotal(v : ${t}) -> f32 { return ${total}; }
fn main(index : i32) {
  if (index >= uniforms.rows) { return; }
  let m = uniforms.n / ${c};
  let base = index * m;
  let mean = stats[index * 2];
  let rstd = stats[index * 2 + 1];
  var sg = ${t}(0.0);
  var sgx = ${t}(0.0);
  for (var i = 0; i < m; i++) {
    let g = dy[base + i] * gamma[i];
    sg = sg + g;
    sgx = sgx + g * (x[base + i] - mean) * rstd;
  }
  let mg = rowTotal(sg) / f32(uniforms.n);
  let mgx = rowTotal(sgx) / f32(uniforms.n);
  for (var i = 0; i < m; i++) {
    let xhat = (x[base + i] - mean) * rstd;
    result[base + i] = (dy[base + i] * gamma[i] - mg - xhat * mgx) * rstd;
  }
}`,
  };
}

/**
 * `dγ = Σ dy·x̂` (`beta` false) or `dβ = Σ dy` over the rows: one invocation per column, so that neighbouring
 * invocations read neighbouring addresses.
 */
function paramGradProgram(n: number, gamma: boolean) {
  const term = gamma ? "dy[k] * (x[k] - stats[r * 2]) * stats[r * 2 + 1]" : "dy[k]";
  return {
    ...common(n),
    variableNames: gamma ? ["dy", "x", "stats"] : ["dy"],
    outputShape: [n],
    shaderKey: `vitLayerNormDParam_${WG}_${gamma}`,
    getUserCode: () => `
fn main(index : i32) {
  if (index >= uniforms.n) { return; }
  var s = 0.0;
  for (var r = 0; r < uniforms.rows; r++) {
    let k = r * uniforms.n + index;
    s = s + ${term};
  }
  result[index] = s;
}`,
  };
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: tf.KernelBackend;
  attrs?: tf.NamedAttrMap;
}

/** `[rows, n, c]` of `x` and the uniforms every program takes. */
function geometry(x: Info, eps: number) {
  const n = x.shape[x.shape.length - 1];
  const rows = x.shape.reduce((a, b) => a * b, 1) / n;
  const c: 1 | 4 = n % 4 === 0 ? 4 : 1;
  const uniforms = [
    { type: "int32", data: [rows] },
    { type: "int32", data: [n] },
    { type: "float32", data: [eps] },
  ];
  return { rows, n, c, uniforms };
}

function layerNorm(args: KernelArgs): Info {
  const { x, gamma, beta } = args.inputs as Record<string, Info>;
  const { rows, n, c, uniforms } = geometry(x, (args.attrs as { eps: number }).eps);
  const out = (args.backend as WebGPUBackendLike).runWebGPUProgram(
    forwardProgram(rows, n, c),
    [x, gamma, beta],
    "float32",
    uniforms,
  );
  out.shape = [...x.shape];
  return out;
}

function layerNormGrad(args: KernelArgs): Info[] {
  const { x, gamma, dy } = args.inputs as Record<string, Info>;
  const { rows, n, c, uniforms } = geometry(x, (args.attrs as { eps: number }).eps);
  const backend = args.backend as WebGPUBackendLike;
  const stats = backend.runWebGPUProgram(statsProgram(rows, c), [x], "float32", uniforms);
  try {
    const dx = backend.runWebGPUProgram(dxProgram(rows, n, c), [x, gamma, dy, stats], "float32", uniforms);
    dx.shape = [...x.shape];
    const dGamma = backend.runWebGPUProgram(paramGradProgram(n, true), [dy, x, stats], "float32", uniforms);
    const dBeta = backend.runWebGPUProgram(paramGradProgram(n, false), [dy], "float32", uniforms);
    return [dx, dGamma, dBeta];
  } finally {
    backend.disposeData(stats.dataId);
  }
}

/**
 * LayerNorm of `x` over its last axis, `(x − mean)·rsqrt(var + eps)·gamma + beta` (biased variance, as
 * PyTorch), by the WGSL kernel; `undefined` where the kernel is not installed on the current backend, or `x`
 * is empty or not float32 (compose it from tfjs ops there). `gamma` and `beta` must be `[D]` for `x`
 * `[..., D]`. Not differentiable by itself: wrap it in a `tf.customGrad`.
 */
export function webgpuLayerNorm(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  eps: number,
): tf.Tensor | undefined {
  if (!webgpuLayerNormKernels.active() || x.dtype !== "float32" || x.size === 0 || x.rank < 1) {
    return undefined;
  }
  const d = x.shape[x.rank - 1];
  for (const [name, t] of [["gamma", gamma], ["beta", beta]] as const) {
    if (t.rank !== 1 || t.shape[0] !== d || t.dtype !== "float32") {
      throw new Error(
        `${LAYER_NORM_KERNEL}: ${name} must be float32 [${d}] for x [${x.shape}], got ${t.dtype} [${t.shape}]`,
      );
    }
  }
  return tf.engine().runKernel(LAYER_NORM_KERNEL, { x, gamma, beta }, { eps }) as tf.Tensor;
}

/**
 * LayerNorm's gradients `[dx, dγ, dβ]` for the upstream gradient `dy` (shaped as `x`) by the WGSL kernels
 * (row statistics, `dx` per row, `dγ` and `dβ` per column: four dispatches); `undefined` where
 * {@linkcode webgpuLayerNorm} would be.
 */
export function webgpuLayerNormGrad(
  x: tf.Tensor,
  gamma: tf.Tensor,
  dy: tf.Tensor,
  eps: number,
): [tf.Tensor, tf.Tensor, tf.Tensor] | undefined {
  if (!webgpuLayerNormKernels.active() || x.dtype !== "float32" || x.size === 0 || x.rank < 1) {
    return undefined;
  }
  const d = x.shape[x.rank - 1];
  if (gamma.rank !== 1 || gamma.shape[0] !== d || gamma.dtype !== "float32") {
    throw new Error(
      `${LAYER_NORM_GRAD_KERNEL}: gamma must be float32 [${d}] for x [${x.shape}], got ${gamma.dtype} [${gamma.shape}]`,
    );
  }
  if (!tf.util.arraysEqual(dy.shape, x.shape) || dy.dtype !== "float32") {
    throw new Error(
      `${LAYER_NORM_GRAD_KERNEL}: dy must be float32 [${x.shape}], got ${dy.dtype} [${dy.shape}]`,
    );
  }
  return tf.engine().runKernel(LAYER_NORM_GRAD_KERNEL, { x, gamma, dy }, { eps }) as unknown as [
    tf.Tensor,
    tf.Tensor,
    tf.Tensor,
  ];
}

/** The LayerNorm kernels on webgpu; `active()` while they run (so {@linkcode webgpuLayerNorm} uses them). */
export const webgpuLayerNormKernels = new NamedKernels(BACKEND, [
  [LAYER_NORM_KERNEL, layerNorm],
  [LAYER_NORM_GRAD_KERNEL, layerNormGrad],
]);
