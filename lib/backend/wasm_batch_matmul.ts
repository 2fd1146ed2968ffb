/**
 * A faster `BatchMatMul` for tfjs-wasm, registered in place of tfjs's own.
 *
 * tfjs-wasm 4.22 sends a matrix product to XNNPACK only when it is a single product without transposes; a
 * batched product (attention's per-head `q·kᵀ` and `p·v`) or one with `transposeB` goes to a naive loop that
 * runs at well under 1 GFLOP/s. Measured on this 2-core machine for ViT-B/16 attention (12 heads, 197
 * tokens): `p·v` 154 ms → 18 ms and `q·kᵀ` 68 ms → 35 ms when each head is one XNNPACK product. This kernel
 * does exactly that: one transpose of each operand asked to be transposed (`transposeB` in attention,
 * `transposeA` in every weight gradient `xᵀ·dy` of training), then one product per batch item through tfjs's
 * own kernel (which takes its fast path for a single product). Items are copied in and results written into
 * one output straight through views of tfjs-wasm's heap, not with tfjs's `Slice` and `Concat`. Anything else
 * (general broadcasting, non-float32, small products) goes to tfjs's kernel unchanged.
 *
 * The result is the same arithmetic as tfjs's single-product path, checked against the stock kernel in
 * tests/kernels_wasm_test.ts and, with the kernel installed, by the timm parity tests.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { ReplacedKernels } from "./replaced_kernels.ts";

type Info = tf.TensorInfo;
/** The parts of tfjs-wasm's backend this kernel uses (public methods of its `BackendWasm`). */
type Backend = tf.KernelBackend & {
  disposeData(id: object, force?: boolean): boolean;
  makeOutput(shape: number[], dtype: "float32"): Info;
  typedArrayFromHeap(t: Info): Float32Array;
};

const BACKEND = "wasm";
/**
 * Products smaller than this many multiply-adds per batch item stay on tfjs's kernel: there the slicing and
 * the per-call XNNPACK set-up cost about what the naive loop does (the fixtures' micro model, 65 tokens × 16
 * per head: 67,600, no faster per item). Attention at 65 tokens × 32 per head (135,200: the shipped network
 * at patch 4) runs 2–3× faster per item here, which made its training step 1.8× faster on one thread
 * (docs/benchmarks.md).
 */
const MIN_MACS_PER_ITEM = 1 << 17;

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function run(name: string, inputs: unknown, backend: Backend, attrs: Record<string, unknown>): Info {
  const kernel = tf.getKernel(name, BACKEND);
  if (!kernel) throw new Error(`tfjs-wasm has no ${name} kernel`);
  return kernel.kernelFunc({
    inputs: inputs as tf.NamedTensorInfoMap,
    backend,
    attrs: attrs as tf.NamedAttrMap,
  }) as Info;
}

/**
 * Item `i` of a `[batch, rows, cols]` float32 tensor as a tensor `[1, rows, cols]` of its own: one copy of
 * that item. tfjs-wasm's `Slice` kernel would first copy the whole input out of the heap (`readSync`), which
 * made slicing every item of a batch cost batch² item copies: at batch 8 the attention products took twice as
 * long per image as at batch 1, at batch 32 far more.
 */
function item(backend: Backend, x3: Info, i: number): Info {
  const [, rows, cols] = x3.shape;
  const per = rows * cols;
  const out = backend.makeOutput([1, rows, cols], "float32");
  // Views are taken after the allocation: growing the heap detaches views taken before it.
  backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(x3).subarray(i * per, (i + 1) * per));
  return out;
}

function perItemBatchMatMul(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info {
  const original = wasmBatchMatMulKernels.stock(tf.BatchMatMul) as unknown as (a: typeof args) => Info;
  const { a, b } = args.inputs as { a: Info; b: Info };
  const { transposeA, transposeB } = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
  const backend = args.backend as Backend;
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = size(outerA), batchB = size(outerB);
  const batch = Math.max(batchA, batchB);
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (
    a.dtype !== "float32" || b.dtype !== "float32" || (batch === 1 && !transposeA && !transposeB) ||
    !(sameOuter || batchA === 1 || batchB === 1)
  ) {
    return original(args);
  }
  const ra = a.shape[a.shape.length - 2], ca = a.shape[a.shape.length - 1];
  const [M, K] = transposeA ? [ca, ra] : [ra, ca];
  const N = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  const outer = sameOuter ? outerA : (batchA === 1 ? outerB : outerA);
  if (M * K * N < MIN_MACS_PER_ITEM) return original(args);
  const temps: Info[] = [];
  let a3 = run("Reshape", { x: a }, backend, { shape: transposeA ? [batchA, K, M] : [batchA, M, K] });
  temps.push(a3);
  if (transposeA) {
    // Training's weight gradients (xᵀ·dy): one transpose, then XNNPACK instead of tfjs's naive loop.
    a3 = run("Transpose", { x: a3 }, backend, { perm: [0, 2, 1] });
    temps.push(a3);
  }
  let b3 = run("Reshape", { x: b }, backend, { shape: transposeB ? [batchB, N, K] : [batchB, K, N] });
  temps.push(b3);
  if (transposeB) {
    b3 = run("Transpose", { x: b3 }, backend, { perm: [0, 2, 1] });
    temps.push(b3);
  }
  const out = backend.makeOutput([...outer, M, N], "float32");
  try {
    for (let i = 0; i < batch; i++) {
      const ai = batchA === 1 ? a3 : item(backend, a3, i);
      const bi = batchB === 1 ? b3 : item(backend, b3, i);
      try {
        const part = original({
          inputs: { a: ai, b: bi },
          backend,
          attrs: { transposeA: false, transposeB: false },
        });
        try {
          backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(part), i * M * N);
        } finally {
          backend.disposeData(part.dataId);
        }
      } finally {
        if (ai !== a3) backend.disposeData(ai.dataId);
        if (bi !== b3) backend.disposeData(bi.dataId);
      }
    }
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    for (const t of temps) backend.disposeData(t.dataId);
  }
  return out;
}

/**
 * The per-item `BatchMatMul` for tfjs-wasm, in place of tfjs's (`install` is false when tfjs-wasm has none to
 * replace).
 */
export const wasmBatchMatMulKernels = new ReplacedKernels(BACKEND, [[tf.BatchMatMul, perItemBatchMatMul]]);
