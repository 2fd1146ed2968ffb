/**
 * The exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, in one elementwise WGSL kernel for tfjs-webgpu, in place of
 * the five tfjs ops the model composes it from (mul, mul, erf, add, mul: one dispatch and one full-size
 * intermediate each), and its gradient `dy·(Φ(x) + x·φ(x))` in another (in place of eleven). erf is
 * Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7, below float32's resolution of `1 + erf`), the same
 * formula tfjs's own `Erf` kernels use, so the results match the composite's.
 *
 * As with the LayerNorm kernel (`webgpu_layer_norm.ts`), tfjs has no kernel to replace: this registers one
 * under its own name ({@linkcode GELU_KERNEL}), the model asks for it through {@linkcode webgpuGelu} (which
 * answers `undefined` where it is not installed on the current backend), and the model's `tf.customGrad`
 * (lib/vit/gelu.ts) calls the gradient kernel. Installed only on a software adapter unless forced. Checked
 * against the composite and a host GELU in tests/kernels_webgpu_test.ts.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { NamedKernels } from "./named_kernels.ts";
import "@tensorflow/tfjs-backend-webgpu";
import type { WebGPUBackendLike } from "./webgpu_program.ts";

type Info = tf.TensorInfo;
const BACKEND = "webgpu";
/** The names the kernels are registered under (tfjs has no GELU kernel). */
export const GELU_KERNEL = "VitGelu", GELU_GRAD_KERNEL = "VitGeluGrad";
const WG = 64;

const ERF = (t: string) => `
fn erfAS(v : ${t}) -> ${t} {
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
  return sign(v) * (1.0 - poly * exp(-a * a));
}`;

/**
 * One invocation per `c` elements (4 when the size is a multiple of 4). Forward: `0.5·x·(1 + erf(x/√2))`;
 * `grad`: `dy·(Φ(x) + x·φ(x))` from the inputs `x` and `dy`.
 */
function program(size: number, c: 1 | 4, grad: boolean) {
  const t = c === 4 ? "vec4<f32>" : "f32";
  const names = grad ? ["x", "dy"] : ["x"];
  const body = grad
    ? `let cdf = 0.5 * (1.0 + erfAS(v * ${Math.SQRT1_2}));
  let pdf = exp(-0.5 * v * v) * ${1 / Math.sqrt(2 * Math.PI)};
  result[index] = dy[index] * (cdf + v * pdf);`
    : `result[index] = 0.5 * v * (1.0 + erfAS(v * ${Math.SQRT1_2}));`;
  return {
    variableNames: names,
    variableComponents: names.map(() => c),
    outputComponent: c,
    outputShape: [size],
    shaderKey: `vitGelu_${WG}_${c}_${grad}`,
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(size / c / WG), 1, 1],
    workgroupSize: [WG, 1, 1],
    uniforms: "count : i32,",
    size: false,
    getUserCode: () =>
      `${ERF(t)}
fn main(index : i32) {
  if (index >= uniforms.count) { return; }
  let v = x[index];
  ${body}
}`,
  };
}

function run(backend: tf.KernelBackend, inputs: Info[], grad: boolean): Info {
  const x = inputs[0];
  const size = x.shape.reduce((a, b) => a * b, 1);
  const c = size % 4 === 0 ? 4 : 1;
  const out = (backend as WebGPUBackendLike).runWebGPUProgram(program(size, c, grad), inputs, "float32", [
    { type: "int32", data: [size / c] },
  ]);
  out.shape = [...x.shape];
  return out;
}

function gelu(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend }): Info {
  return run(args.backend, [args.inputs.x as Info], false);
}

function geluGrad(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend }): Info {
  return run(args.backend, [args.inputs.x as Info, args.inputs.dy as Info], true);
}

/**
 * The exact GELU of `x` by the WGSL kernel; `undefined` where the kernel is not installed on the current
 * backend, or `x` is empty or not float32 (compose it from tfjs ops there). Not differentiable by itself:
 * wrap it in a `tf.customGrad`.
 */
export function webgpuGelu(x: tf.Tensor): tf.Tensor | undefined {
  if (!webgpuGeluKernels.active() || x.dtype !== "float32" || x.size === 0) return undefined;
  return tf.engine().runKernel(GELU_KERNEL, { x }) as tf.Tensor;
}

/**
 * GELU's gradient `dy·(Φ(x) + x·φ(x))` by the WGSL kernel, for `x` and `dy` of one shape; `undefined` where
 * {@linkcode webgpuGelu} would be.
 */
export function webgpuGeluGrad(x: tf.Tensor, dy: tf.Tensor): tf.Tensor | undefined {
  if (!webgpuGeluKernels.active() || x.dtype !== "float32" || dy.dtype !== "float32" || x.size === 0) {
    return undefined;
  }
  if (!tf.util.arraysEqual(x.shape, dy.shape)) {
    throw new Error(`${GELU_GRAD_KERNEL}: dy [${dy.shape}] must have x's shape [${x.shape}]`);
  }
  return tf.engine().runKernel(GELU_GRAD_KERNEL, { x, dy }) as tf.Tensor;
}

/** The GELU kernels on webgpu; `active()` while they run (so {@linkcode webgpuGelu} uses them). */
export const webgpuGeluKernels = new NamedKernels(BACKEND, [
  [GELU_KERNEL, gelu],
  [GELU_GRAD_KERNEL, geluGrad],
]);
