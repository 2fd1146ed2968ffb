/**
 * `Sum` over leading axes for tfjs-wasm without a transpose, registered in place of tfjs's own.
 *
 * tfjs-wasm 4.22 reduces only innermost axes: a sum over the rows of `[rows, n]` (every bias gradient of a
 * training step, `Σ_rows dy`) first transposes the whole input into a new tensor, then sums each of its rows.
 * This kernel adds the rows into one float32 accumulator row in order, which is the same sequence of float32
 * additions per output (tfjs's sums each transposed row from its first element on), so results are
 * bit-identical; checked in tests/kernels_wasm_fused_test.ts. Other reductions go to tfjs's kernel unchanged.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { ReplacedKernels } from "./replaced_kernels.ts";
import type { WasmHeapBackend } from "./wasm_slice.ts";

type Info = tf.TensorInfo;
const BACKEND = "wasm";

function sum(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info {
  const x = args.inputs.x as Info;
  const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
  const rank = x.shape.length;
  // Axes as given: tfjs's transpose keeps their order, which sets the order of the additions.
  const axes = (Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + rank : a));
  const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
  if (x.dtype !== "float32" || !leading) return wasmSumKernels.stock(tf.Sum)(args) as Info;
  const kept = x.shape.slice(axes.length);
  const n = kept.reduce((a, b) => a * b, 1);
  const backend = args.backend as unknown as WasmHeapBackend;
  const out = backend.makeOutput(keepDims ? [...axes.map(() => 1), ...kept] : kept, "float32");
  // Views only after makeOutput: an allocation that grows the heap detaches views taken before it.
  const xs = backend.typedArrayFromHeap(x) as Float32Array,
    acc = backend.typedArrayFromHeap(out) as Float32Array;
  acc.fill(0);
  // Each store into the Float32Array rounds: float32 additions, row after row.
  for (let base = 0; base < xs.length; base += n) {
    for (let j = 0; j < n; j++) acc[j] += xs[base + j];
  }
  return out;
}

/** The leading-axes `Sum` for tfjs-wasm, in place of tfjs's. */
export const wasmSumKernels = new ReplacedKernels(BACKEND, [[tf.Sum, sum]]);
