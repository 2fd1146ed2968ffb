/**
 * A WGSL softmax over the last axis for tfjs-webgpu, registered in place of tfjs's `Softmax`: one invocation
 * per row (max, sum of exponentials, normalised write), no workgroup memory, no barriers. On the software
 * adapters of the CPU machines, where tfjs's workgroup reduction pays for every barrier, it measured ~32 →
 * ~14 ms of CPU on ViT-B/16's attention scores `[12, 197, 197]` (lavapipe). Like the WGSL matmul
 * (`webgpu_matmul.ts`) it is installed only on a software adapter unless forced. The gradient is tfjs's own
 * (it uses only the kernel's output). Checked against a host softmax in tests/kernels_webgpu_test.ts.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-webgpu";
import { ReplacedKernels } from "./replaced_kernels.ts";
import type { WebGPUBackendLike } from "./webgpu_program.ts";

type Info = tf.TensorInfo;
const BACKEND = "webgpu";
const WG = 64;

function program(rows: number, n: number) {
  return {
    variableNames: ["logits"],
    outputShape: [rows, n],
    shaderKey: `vitRowSoftmax_${WG}`,
    // A flat layout: tfjs calls main with the invocation's global index.
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(rows / WG), 1, 1],
    workgroupSize: [WG, 1, 1],
    uniforms: "rows : i32, n : i32,",
    size: false,
    getUserCode: () => `
fn main(index : i32) {
  if (index >= uniforms.rows) { return; }
  let base = index * uniforms.n;
  var m = logits[base];
  for (var i = 1; i < uniforms.n; i++) { m = max(m, logits[base + i]); }
  var s = 0.0;
  for (var i = 0; i < uniforms.n; i++) { s = s + exp(logits[base + i] - m); }
  let inv = 1.0 / s;
  for (var i = 0; i < uniforms.n; i++) { result[base + i] = exp(logits[base + i] - m) * inv; }
}`,
  };
}

function softmax(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info {
  const { logits } = args.inputs as { logits: Info };
  const dim = (args.attrs as { dim?: number } | undefined)?.dim ?? -1;
  const rank = logits.shape.length;
  const n = logits.shape[rank - 1];
  const size = logits.shape.reduce((a, b) => a * b, 1);
  if (logits.dtype !== "float32" || rank < 1 || (dim !== -1 && dim !== rank - 1) || size === 0) {
    return webgpuSoftmaxKernels.stock(tf.Softmax)(args) as Info;
  }
  const rows = size / n;
  const out = (args.backend as WebGPUBackendLike).runWebGPUProgram(program(rows, n), [logits], "float32", [
    { type: "int32", data: [rows] },
    { type: "int32", data: [n] },
  ]);
  out.shape = [...logits.shape];
  return out;
}

/** The WGSL row softmax on webgpu, in place of tfjs's. */
export const webgpuSoftmaxKernels = new ReplacedKernels(BACKEND, [[tf.Softmax, softmax]]);
