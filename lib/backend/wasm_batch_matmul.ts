/**
 * A faster `BatchMatMul` for tfjs-wasm, registered in place of tfjs's own.
 *
 * tfjs-wasm 4.22 sends a matrix product to XNNPACK only when it is a single product without transposes; a
 * batched product (attention's per-head `q·kᵀ` and `p·v`) or one with `transposeB` goes to a naive loop that
 * runs at well under 1 GFLOP/s. Measured on this 2-core machine for ViT-B/16 attention (12 heads, 197 tokens):
 * `p·v` 154 ms → 18 ms and `q·kᵀ` 68 ms → 35 ms when each head is one XNNPACK product. This kernel does
 * exactly that: one `transposeB` transpose when asked, then one product per batch item through tfjs's own
 * kernel (which takes its fast path for a single product), then a concat. Anything else (`transposeA`, general
 * broadcasting, non-float32, small products) goes to tfjs's kernel unchanged.
 *
 * The result is the same arithmetic as tfjs's single-product path, checked against the stock kernel in
 * tests/kernels_wasm_test.ts and, with the kernel installed, by the timm parity tests.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";

type Info = tf.TensorInfo;
type Backend = tf.KernelBackend & { disposeData(id: object, force?: boolean): boolean };

const BACKEND = "wasm";
/**
 * Products smaller than this many multiply-adds per batch item stay on tfjs's kernel: there the slicing and the
 * per-call XNNPACK set-up cost more than the naive loop (the fixtures' micro model, 4 heads × 65 tokens × 16,
 * ran ~3× slower per item).
 */
const MIN_MACS_PER_ITEM = 1 << 18;
let stock: tf.KernelConfig | undefined;

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

function perItemBatchMatMul(
  args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap },
): Info {
  const original = stock!.kernelFunc as (a: typeof args) => Info;
  const { a, b } = args.inputs as { a: Info; b: Info };
  const { transposeA, transposeB } = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
  const backend = args.backend as Backend;
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = size(outerA), batchB = size(outerB);
  const batch = Math.max(batchA, batchB);
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (
    transposeA || a.dtype !== "float32" || b.dtype !== "float32" || (batch === 1 && !transposeB) ||
    !(sameOuter || batchA === 1 || batchB === 1)
  ) {
    return original(args);
  }
  const M = a.shape[a.shape.length - 2], K = a.shape[a.shape.length - 1];
  const N = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  if (M * K * N < MIN_MACS_PER_ITEM) return original(args);
  const temps: Info[] = [];
  const a3 = run("Reshape", { x: a }, backend, { shape: [batchA, M, K] });
  temps.push(a3);
  let b3 = run("Reshape", { x: b }, backend, { shape: transposeB ? [batchB, N, K] : [batchB, K, N] });
  temps.push(b3);
  if (transposeB) {
    b3 = run("Transpose", { x: b3 }, backend, { perm: [0, 2, 1] });
    temps.push(b3);
  }
  const parts: Info[] = [];
  try {
    for (let i = 0; i < batch; i++) {
      const ai = batchA === 1 ? a3 : run("Slice", { x: a3 }, backend, { begin: [i, 0, 0], size: [1, M, K] });
      const bi = batchB === 1 ? b3 : run("Slice", { x: b3 }, backend, { begin: [i, 0, 0], size: [1, K, N] });
      try {
        parts.push(
          original({ inputs: { a: ai, b: bi }, backend, attrs: { transposeA: false, transposeB: false } }),
        );
      } finally {
        if (ai !== a3) backend.disposeData(ai.dataId);
        if (bi !== b3) backend.disposeData(bi.dataId);
      }
    }
    const out = parts.length === 1
      ? run("Reshape", { x: parts[0] }, backend, { shape: [1, M, N] })
      : run("Concat", parts, backend, { axis: 0 });
    const outer = sameOuter ? outerA : (batchA === 1 ? outerB : outerA);
    out.shape = [...outer, M, N];
    return out;
  } finally {
    for (const p of parts) backend.disposeData(p.dataId);
    for (const t of temps) backend.disposeData(t.dataId);
  }
}

/**
 * Registers the per-item `BatchMatMul` for tfjs-wasm in place of tfjs's (idempotent). Returns false when
 * tfjs-wasm has no BatchMatMul kernel to replace.
 */
export function installWasmBatchMatMul(): boolean {
  if (stock) return true;
  const current = tf.getKernel(tf.BatchMatMul, BACKEND);
  if (!current) return false;
  stock = current;
  tf.unregisterKernel(tf.BatchMatMul, BACKEND);
  tf.registerKernel({ ...current, kernelFunc: perItemBatchMatMul as tf.KernelFunc });
  return true;
}

/** Puts tfjs's own `BatchMatMul` back (for before/after measurements and tests). */
export function uninstallWasmBatchMatMul(): void {
  if (!stock) return;
  tf.unregisterKernel(tf.BatchMatMul, BACKEND);
  tf.registerKernel(stock);
  stock = undefined;
}

/** Whether the per-item kernel is the one registered now. */
export function wasmBatchMatMulInstalled(): boolean {
  return stock !== undefined;
}
