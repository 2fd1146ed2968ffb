/**
 * WGSL matrix products for tfjs-webgpu, registered in place of tfjs's `_FusedMatMul` and `BatchMatMul` for
 * the shapes where they were measured faster: (1) one product (batch 1), no transposes, inner and output
 * widths multiples of 4, bias (if any) a vector, no activation: every linear layer of a ViT (qkv, proj, fc1,
 * fc2, head when its width is a multiple of 4) and the `dy·Wᵀ` products of training; (2) batched products of
 * equal batch size without `transposeA` (attention's `q·kᵀ` and `softmax·v`, any widths). Everything else
 * goes to tfjs's kernels unchanged.
 *
 * The shader has no workgroup memory and no barriers: each invocation keeps `ROWS` rows × 4 columns of the
 * output in registers and reads A and B straight from their buffers. On a GPU this is a naive kernel; on the
 * software adapters of the CPU machines (llvmpipe / lavapipe, where a workgroup is a loop over SIMD lanes and
 * every barrier splits it) it beat tfjs's tiled `MatMulPackedProgram`, e.g. 197×768·768×3072 with bias: ~410
 * → ~210 ms of CPU (lavapipe, 2 contended cores). Whether to keep it on a real GPU is for the bench there to
 * say: `installProjectKernels` only installs it on a fallback (software) adapter unless forced.
 *
 * Results are checked against tfjs's kernel in tests/kernels_webgpu_test.ts and, installed, by the timm
 * parity tests.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-webgpu";
import { ReplacedKernels } from "./replaced_kernels.ts";
import type { WebGPUBackendLike } from "./webgpu_program.ts";

type Info = tf.TensorInfo;
interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: tf.KernelBackend;
  attrs?: tf.NamedAttrMap;
}
const BACKEND = "webgpu";
/** Output rows per invocation and the workgroup shape (columns of vec4 × row groups). */
const ROWS = 8, WG_X = 16, WG_Y = 4;

function program(m: number, n: number, withBias: boolean) {
  const names = withBias ? ["A", "B", "bias"] : ["A", "B"];
  return {
    variableNames: names,
    variableComponents: names.map(() => 4),
    outputComponent: 4,
    outputShape: [1, m, n],
    shaderKey: `vitRowsMatMul_${ROWS}_${WG_X}_${WG_Y}_${withBias}`,
    dispatchLayout: { x: [2], y: [1], z: [0] },
    dispatch: [Math.ceil(n / 4 / WG_X), Math.ceil(m / ROWS / WG_Y), 1],
    workgroupSize: [WG_X, WG_Y, 1],
    uniforms: "M : i32, K : i32, N : i32,",
    size: false,
    getUserCode: () => `
fn main() {
  let col4 = i32(globalId.x);
  let row0 = i32(globalId.y) * ${ROWS};
  let n4 = uniforms.N / 4;
  let k4 = uniforms.K / 4;
  if (col4 >= n4 || row0 >= uniforms.M) { return; }
  var acc : array<vec4<f32>, ${ROWS}>;
  for (var r = 0; r < ${ROWS}; r++) { acc[r] = vec4<f32>(0.0); }
  for (var kk = 0; kk < k4; kk++) {
    let k = kk * 4;
    let b0 = B[k * n4 + col4];
    let b1 = B[(k + 1) * n4 + col4];
    let b2 = B[(k + 2) * n4 + col4];
    let b3 = B[(k + 3) * n4 + col4];
    for (var r = 0; r < ${ROWS}; r++) {
      // Rows past the end repeat the last row (always in bounds) and are not written.
      let a = A[min(row0 + r, uniforms.M - 1) * k4 + kk];
      acc[r] = acc[r] + a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3;
    }
  }
  ${withBias ? "let bv = bias[col4];" : "let bv = vec4<f32>(0.0);"}
  for (var r = 0; r < ${ROWS}; r++) {
    let row = row0 + r;
    if (row < uniforms.M) { result[row * n4 + col4] = acc[r] + bv; }
  }
}`,
  };
}

/**
 * The batched product (attention's per-head `q·kᵀ` with `transposeB`, and `softmax·v`): any widths, scalar
 * loads, `ROWS` rows × 4 columns per invocation, one batch item per z. Measured against tfjs's kernels on
 * lavapipe for ViT-B/16 attention (12 heads × 197 tokens): `q·kᵀ` ~74 → ~25 ms CPU, `p·v` ~72 → ~18 ms.
 */
function batchedProgram(batch: number, m: number, n: number, transposeB: boolean) {
  const bIndex = transposeB ? "bBase + (col + j) * uniforms.K + k" : "bBase + k * uniforms.N + col + j";
  return {
    variableNames: ["A", "B"],
    outputShape: [batch, m, n],
    shaderKey: `vitBatchedMatMul_${ROWS}_${WG_X}_${WG_Y}_${transposeB}`,
    dispatchLayout: { x: [2], y: [1], z: [0] },
    dispatch: [Math.ceil(n / 4 / WG_X), Math.ceil(m / ROWS / WG_Y), batch],
    workgroupSize: [WG_X, WG_Y, 1],
    uniforms: "M : i32, K : i32, N : i32,",
    size: false,
    getUserCode: () => `
fn main() {
  let col = i32(globalId.x) * 4;
  let row0 = i32(globalId.y) * ${ROWS};
  let item = i32(globalId.z);
  if (col >= uniforms.N || row0 >= uniforms.M) { return; }
  let aBase = item * uniforms.M * uniforms.K;
  let bBase = item * uniforms.K * uniforms.N;
  var acc : array<vec4<f32>, ${ROWS}>;
  for (var r = 0; r < ${ROWS}; r++) { acc[r] = vec4<f32>(0.0); }
  for (var k = 0; k < uniforms.K; k++) {
    var bv : vec4<f32>;
    for (var jj = 0; jj < 4; jj++) {
      // Columns past the end repeat the last one (always in bounds) and are not written.
      let j = min(col + jj, uniforms.N - 1) - col;
      bv[jj] = B[${bIndex}];
    }
    for (var r = 0; r < ${ROWS}; r++) {
      let a = A[aBase + min(row0 + r, uniforms.M - 1) * uniforms.K + k];
      acc[r] = acc[r] + a * bv;
    }
  }
  let oBase = item * uniforms.M * uniforms.N;
  for (var r = 0; r < ${ROWS}; r++) {
    let row = row0 + r;
    if (row < uniforms.M) {
      for (var j = 0; j < 4; j++) {
        if (col + j < uniforms.N) { result[oBase + row * uniforms.N + col + j] = acc[r][j]; }
      }
    }
  }
}`,
  };
}

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** `[M, N]` when `a·b` is one product this kernel handles, else undefined. */
function handled(a: Info, b: Info, attrs: Record<string, unknown>): [number, number, number] | undefined {
  if (attrs.transposeA || attrs.transposeB || a.dtype !== "float32" || b.dtype !== "float32") {
    return undefined;
  }
  if (a.shape.length < 2 || b.shape.length < 2) return undefined;
  if (size(a.shape.slice(0, -2)) !== 1 || size(b.shape.slice(0, -2)) !== 1) return undefined;
  const m = a.shape[a.shape.length - 2], k = a.shape[a.shape.length - 1];
  const n = b.shape[b.shape.length - 1];
  if (b.shape[b.shape.length - 2] !== k || k % 4 !== 0 || n % 4 !== 0) return undefined;
  return [m, k, n];
}

function runProduct(
  backend: tf.KernelBackend,
  a: Info,
  b: Info,
  bias: Info | undefined,
  mkn: number[],
): Info {
  const [m, k, n] = mkn;
  const out = (backend as WebGPUBackendLike).runWebGPUProgram(
    program(m, n, bias !== undefined),
    bias ? [a, b, bias] : [a, b],
    "float32",
    [{ type: "int32", data: [m] }, { type: "int32", data: [k] }, { type: "int32", data: [n] }],
  );
  return out;
}

function fusedMatMul(args: KernelArgs): Info {
  const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, Info | undefined>;
  const attrs = (args.attrs ?? {}) as Record<string, unknown>;
  const mkn = handled(a!, b!, attrs);
  const plainBias = bias === undefined || (size(bias.shape) === mkn?.[2] && bias.dtype === "float32");
  if (
    !mkn || !plainBias || preluActivationWeights !== undefined ||
    (attrs.activation !== undefined && attrs.activation !== null && attrs.activation !== "linear")
  ) {
    return webgpuMatMulKernels.stock(tf._FusedMatMul)(args) as Info;
  }
  const out = runProduct(args.backend, a!, b!, bias, mkn);
  out.shape = [...a!.shape.slice(0, -2), mkn[0], mkn[2]];
  return out;
}

/** Runs `a·b` (`a·bᵀ`) batched when both have the same batch size and no `transposeA`; else undefined. */
function batched(
  backend: tf.KernelBackend,
  a: Info,
  b: Info,
  attrs: Record<string, unknown>,
): Info | undefined {
  if (attrs.transposeA || a.dtype !== "float32" || b.dtype !== "float32") return undefined;
  if (a.shape.length < 2 || b.shape.length < 2) return undefined;
  const batch = size(a.shape.slice(0, -2));
  if (size(b.shape.slice(0, -2)) !== batch) return undefined;
  const transposeB = Boolean(attrs.transposeB);
  const m = a.shape[a.shape.length - 2], k = a.shape[a.shape.length - 1];
  const [bk, n] = transposeB ? [b.shape[b.shape.length - 1], b.shape[b.shape.length - 2]] : b.shape.slice(-2);
  if (bk !== k) return undefined;
  const out = (backend as WebGPUBackendLike).runWebGPUProgram(
    batchedProgram(batch, m, n, transposeB),
    [a, b],
    "float32",
    [{ type: "int32", data: [m] }, { type: "int32", data: [k] }, { type: "int32", data: [n] }],
  );
  const outer = a.shape.length >= b.shape.length ? a.shape.slice(0, -2) : b.shape.slice(0, -2);
  out.shape = [...outer, m, n];
  return out;
}

function batchMatMul(args: KernelArgs): Info {
  const { a, b } = args.inputs as Record<string, Info>;
  const attrs = (args.attrs ?? {}) as Record<string, unknown>;
  const mkn = handled(a, b, attrs);
  if (!mkn) {
    return batched(args.backend, a, b, attrs) ?? webgpuMatMulKernels.stock(tf.BatchMatMul)(args) as Info;
  }
  const out = runProduct(args.backend, a, b, undefined, mkn);
  const outer = a.shape.length >= b.shape.length ? a.shape.slice(0, -2) : b.shape.slice(0, -2);
  out.shape = [...outer, mkn[0], mkn[2]];
  return out;
}

/** The WGSL product for `_FusedMatMul` and `BatchMatMul` on webgpu, in place of tfjs's. */
export const webgpuMatMulKernels = new ReplacedKernels(BACKEND, [
  [tf._FusedMatMul, fusedMatMul],
  [tf.BatchMatMul, batchMatMul],
]);
