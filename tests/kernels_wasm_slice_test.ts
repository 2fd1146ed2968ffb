/**
 * The heap-view Slice/SplitV for tfjs-wasm (lib/backend/wasm_slice.ts): bit-identical to tfjs's own kernels
 * on contiguous and strided slices of every rank the model uses, no leaked device data, and the per-item
 * BatchMatMul (which slices through it) unchanged.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { wasmSliceKernels } from "../lib/backend/wasm_slice.ts";
import { wasmBatchMatMulKernels } from "../lib/backend/wasm_batch_matmul.ts";

function ramp(shape: number[], dtype: "float32" | "int32" = "float32"): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Array.from({ length: n }, (_, i) => (dtype === "int32" ? i : i * 0.5 - 3)), shape, dtype);
}

async function both<T>(f: () => T, read: (r: T) => Promise<unknown>): Promise<[unknown, unknown]> {
  wasmSliceKernels.uninstall();
  const r0 = f();
  const ref = await read(r0);
  wasmSliceKernels.install();
  assert.ok(wasmSliceKernels.installed);
  const before = tf.engine().backend.numDataIds();
  const r1 = f();
  const got = await read(r1);
  const outs = Array.isArray(r1) ? r1.length : 1;
  assert.equal(tf.engine().backend.numDataIds(), before + outs, "leaves only its outputs");
  tf.dispose(r0 as tf.Tensor | tf.Tensor[]);
  tf.dispose(r1 as tf.Tensor | tf.Tensor[]);
  return [got, ref];
}

Deno.test("wasm Slice override: same values and shapes as tfjs's kernel", async () => {
  await initBackend("wasm");
  const cases: Array<[number[], number[], number[], ("float32" | "int32")?]> = [
    [[5, 3, 4], [2, 0, 0], [1, 3, 4]], // one batch item: contiguous
    [[5, 3, 4], [1, 1, 0], [3, 2, 4]], // strided rows
    [[5, 3, 4], [0, 0, 1], [5, 3, 2]], // inner columns
    [[2, 7, 6], [0, 0, 0], [2, 1, 6]], // the class token (vision_transformer.ts)
    [[7, 9], [2, 3], [4, -1]], // -1: to the end
    [[3, 2, 4, 5], [1, 0, 2, 1], [2, 2, 1, 3], "int32"],
    [[6], [1], [4]],
    [[4, 4], [1, 1], [0, 2]], // empty
  ];
  try {
    for (const [shape, begin, size, dtype] of cases) {
      const x = ramp(shape, dtype);
      const [got, ref] = await both(() => tf.slice(x, begin, size), async (t) => [t.shape, await t.data()]);
      assert.deepEqual(got, ref, `slice [${shape}] begin [${begin}] size [${size}]`);
      x.dispose();
    }
  } finally {
    wasmSliceKernels.install();
  }
});

Deno.test("wasm SplitV override: same parts as tfjs's kernel (attention's qkv split, sizes with -1)", async () => {
  await initBackend("wasm");
  const cases: Array<[number[], number | number[], number]> = [
    [[10, 12], 3, 1], // qkv: [b*T, 3D] → 3 × [b*T, D]
    [[6, 4, 5], [1, -1, 2], 0],
    [[2, 6, 3], [2, 4], -2],
  ];
  try {
    for (const [shape, splits, axis] of cases) {
      const x = ramp(shape);
      const [got, ref] = await both(
        () => tf.split(x, splits, axis),
        (ts) => Promise.all(ts.map(async (t) => [t.shape, await t.data()])),
      );
      assert.deepEqual(got, ref, `split [${shape}] ${JSON.stringify(splits)} axis ${axis}`);
      x.dispose();
    }
  } finally {
    wasmSliceKernels.install();
  }
});

Deno.test("wasm Slice override: the per-item BatchMatMul equals one stock product per item, bit for bit", async () => {
  await initBackend("wasm");
  const a = tf.randomNormal([6, 70, 64], 0, 1, "float32", 3),
    b = tf.randomNormal([6, 70, 64], 0, 1, "float32", 4);
  try {
    // Reference: tfjs's own kernel, one plain 2-D product per item (its XNNPACK path, as the per-item
    // kernel).
    wasmBatchMatMulKernels.uninstall();
    const ref = tf.tidy(() =>
      tf.stack(tf.unstack(a).map((ai, i) => tf.matMul(ai, tf.transpose(tf.unstack(b)[i]))))
    );
    wasmBatchMatMulKernels.install();
    const before = tf.engine().backend.numDataIds();
    const got = tf.matMul(a, b, false, true);
    assert.equal(tf.engine().backend.numDataIds(), before + 1, "leaves only its output");
    assert.deepEqual(got.shape, ref.shape);
    assert.deepEqual(await got.data(), await ref.data());
    tf.dispose([ref, got]);
  } finally {
    tf.dispose([a, b]);
    wasmBatchMatMulKernels.install();
  }
});
