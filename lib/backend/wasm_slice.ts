/**
 * `Slice` and `SplitV` for tfjs-wasm that copy only the part they return, registered in place of tfjs's own.
 *
 * tfjs-wasm 4.22's `Slice` (and `SplitV`, which calls it once per part) starts with `backend.readSync(x)`, a
 * copy of the *whole* input out of the wasm heap into a fresh JS buffer, before copying the slice it wants.
 * Slicing every item of a `[B, …]` tensor therefore copies B × the tensor: quadratic in the batch, and each
 * copy is a new multi-megabyte ArrayBuffer for the garbage collector. A per-item loop over attention's
 * `[batch·heads, T, T]` tensors (the per-item `BatchMatMul`, ./wasm_batch_matmul.ts, sliced this way) made
 * ViT forward time per image grow with the batch on wasm: ViT-Ti/16 `BatchMatMul` ~50–150 ms/image at batch 1
 * but 400–650 ms/image at batch 8 (tf.profile), and the qkv `SplitV` copies the whole qkv tensor three times.
 *
 * These kernels allocate the output first and then copy from views of the heap (views taken after the
 * allocation, which may grow and so replace the heap's buffer). The values are the same bytes, so results are
 * bit-identical to tfjs's; checked in tests/kernels_wasm_slice_test.ts.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { ReplacedKernels } from "./replaced_kernels.ts";
import "@tensorflow/tfjs-backend-wasm";

type Info = tf.TensorInfo;

/** The parts of tfjs-wasm's backend these kernels use (public methods of `BackendWasm`). */
export interface WasmHeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(t: Info): Float32Array | Int32Array | Uint8Array;
}

const BACKEND = "wasm";

function strides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) out[i] = out[i + 1] * shape[i + 1];
  return out;
}

/**
 * Copies `x[begin : begin + size]` into a new tensor of shape `size` on tfjs-wasm, touching only the copied
 * part. `begin` and `size` must be resolved (no -1) and within `x`; `x` must not be a string tensor.
 */
export function sliceCopy(backend: WasmHeapBackend, x: Info, begin: readonly number[], size: number[]): Info {
  const out = backend.makeOutput(size, x.dtype);
  const count = size.reduce((a, b) => a * b, 1);
  if (count === 0) return out;
  // Views only after makeOutput: an allocation that grows the heap detaches views taken before it.
  const src = backend.typedArrayFromHeap(x), dst = backend.typedArrayFromHeap(out);
  const rank = x.shape.length;
  const xs = strides(x.shape);
  // The trailing axes taken whole form one contiguous run per index of the axes before them.
  let inner = rank;
  while (inner > 0 && begin[inner - 1] === 0 && size[inner - 1] === x.shape[inner - 1]) inner--;
  if (inner > 0) inner--; // the first partial axis still reads a contiguous range
  const run = size.slice(inner).reduce((a, b) => a * b, 1);
  const outer = size.slice(0, inner);
  const idx = new Array<number>(inner).fill(0);
  for (let o = 0; o < count; o += run) {
    let off = 0;
    for (let d = 0; d < inner; d++) off += (begin[d] + idx[d]) * xs[d];
    for (let d = inner; d < rank; d++) off += begin[d] * xs[d];
    dst.set(src.subarray(off, off + run), o);
    for (let d = inner - 1; d >= 0; d--) {
      if (++idx[d] < outer[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

function resolve(x: Info, begin: number | number[], size?: number | number[]): [number[], number[]] {
  const rank = x.shape.length;
  const b = typeof begin === "number" ? [begin, ...new Array(rank - 1).fill(0)] : [...begin];
  while (b.length < rank) b.push(0);
  const s = size === undefined
    ? new Array(rank).fill(-1)
    : typeof size === "number"
    ? [size, ...new Array(rank - 1).fill(-1)]
    : [...size];
  while (s.length < rank) s.push(-1);
  return [b, s.map((v, i) => (v === -1 ? x.shape[i] - b[i] : v))];
}

function slice(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info {
  const { x } = args.inputs as { x: Info };
  if (x.dtype === "string") return wasmSliceKernels.stock(tf.Slice)(args) as Info;
  const { begin, size } = args.attrs as unknown as { begin: number | number[]; size?: number | number[] };
  const [b, s] = resolve(x, begin, size);
  for (let i = 0; i < b.length; i++) {
    if (b[i] < 0 || s[i] < 0 || b[i] + s[i] > x.shape[i]) {
      throw new Error(`Slice: begin [${b}] size [${s}] is outside the input's shape [${x.shape}]`);
    }
  }
  return sliceCopy(args.backend as unknown as WasmHeapBackend, x, b, s);
}

function splitV(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info[] {
  const { x } = args.inputs as { x: Info };
  if (x.dtype === "string") return wasmSliceKernels.stock(tf.SplitV)(args) as Info[];
  const { numOrSizeSplits, axis } = args.attrs as unknown as {
    numOrSizeSplits: number | number[];
    axis: number;
  };
  const rank = x.shape.length;
  const ax = axis < 0 ? axis + rank : axis;
  const length = x.shape[ax];
  let sizes: number[];
  if (typeof numOrSizeSplits === "number") {
    if (length % numOrSizeSplits !== 0) {
      throw new Error(
        `SplitV: axis ${ax} of [${x.shape}] does not split into ${numOrSizeSplits} equal parts`,
      );
    }
    sizes = new Array(numOrSizeSplits).fill(length / numOrSizeSplits);
  } else {
    // As tfjs: one -1 takes what the others leave.
    const known = numOrSizeSplits.reduce((a, v) => (v === -1 ? a : a + v), 0);
    sizes = numOrSizeSplits.map((v) => (v === -1 ? length - known : v));
  }
  const begin = new Array<number>(rank).fill(0);
  const backend = args.backend as unknown as WasmHeapBackend;
  return sizes.map((n) => {
    const size = [...x.shape];
    size[ax] = n;
    const part = sliceCopy(backend, x, begin, size);
    begin[ax] += n;
    return part;
  });
}

/** The heap-view `Slice` and `SplitV` for tfjs-wasm, in place of tfjs's. */
export const wasmSliceKernels = new ReplacedKernels(BACKEND, [[tf.Slice, slice], [tf.SplitV, splitV]]);
