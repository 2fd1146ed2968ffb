/**
 * The per-item BatchMatMul for tfjs-wasm (lib/backend/wasm_batch_matmul.ts): same results as tfjs's own
 * kernel on every shape class it handles or passes through, no leaked device data, and timm's micro gradients
 * and tiny logits still within the fixtures' tolerances with it installed.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { wasmBatchMatMulKernels } from "../lib/backend/wasm_batch_matmul.ts";
import { assertClose, haveFixtures } from "./_fixtures.ts";
import { checkMicro, checkTiny } from "./_timm_oracle.ts";

Deno.test("wasm BatchMatMul override: equals tfjs's kernel on batched, broadcast, transposed and 2-D products", async () => {
  await initBackend("wasm");
  // Each item has at least 2^18 multiply-adds (the kernel's threshold) unless marked as passed through.
  const cases: Array<[number[], number[], boolean, boolean]> = [
    [[2, 3, 64, 64], [2, 3, 64, 72], false, false],
    [[1, 4, 80, 64], [1, 4, 80, 64], false, true], // attention q·kᵀ
    [[4, 80, 80], [4, 80, 64], false, false], // attention p·v
    [[2, 4, 65, 32], [2, 4, 65, 32], false, true], // q·kᵀ of the patch-4 shipped network (65 tokens × 32)
    [[2, 4, 65, 65], [2, 4, 65, 32], false, false], // its p·v
    [[1, 64, 64], [3, 64, 72], false, false], // broadcast a
    [[3, 64, 64], [1, 64, 72], false, false], // broadcast b
    [[70, 64], [80, 64], false, true], // one product with transposeB
    [[70, 64], [64, 80], false, false], // one plain product: tfjs's fast path, passed through
    [[3, 64, 70], [3, 64, 72], true, false], // transposeA (batched)
    [[300, 64], [300, 72], true, false], // transposeA: a weight gradient xᵀ·dy
    [[64, 300], [72, 64], true, true], // both transposed
    [[2, 5, 4], [2, 4, 6], false, false], // small: passed through
  ];
  try {
    for (const [sa, sb, ta, tb] of cases) {
      const a = tf.randomNormal(sa, 0, 1, "float32", 1), b = tf.randomNormal(sb, 0, 1, "float32", 2);
      wasmBatchMatMulKernels.uninstall();
      const ref = tf.matMul(a, b, ta, tb);
      wasmBatchMatMulKernels.install();
      assert.ok(wasmBatchMatMulKernels.installed);
      const before = tf.engine().backend.numDataIds();
      const out = tf.matMul(a, b, ta, tb);
      assert.equal(tf.engine().backend.numDataIds(), before + 1, `[${sa}]·[${sb}] leaves only its output`);
      assert.deepEqual(out.shape, ref.shape, `[${sa}]·[${sb}] shape`);
      assertClose(await out.data(), await ref.data(), 1e-6, `[${sa}]·[${sb}] tA=${ta} tB=${tb}`);
      tf.dispose([a, b, ref, out]);
    }
  } finally {
    wasmBatchMatMulKernels.uninstall();
  }
});

Deno.test("wasm BatchMatMul override: a many-item batch matches tfjs's kernel without tfjs's Slice or Concat", async () => {
  await initBackend("wasm");
  // tfjs-wasm's Slice copies its whole input per call: slicing each of B items cost B² item copies, which
  // made ViT forward time per image grow with the batch. The kernel must take items and write results itself.
  const counted = [tf.Slice, tf.Concat].map((name) => tf.getKernel(name, "wasm")!);
  const calls = new Map<string, number>();
  for (const k of counted) {
    tf.unregisterKernel(k.kernelName, "wasm");
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        calls.set(k.kernelName, (calls.get(k.kernelName) ?? 0) + 1);
        return k.kernelFunc(args);
      },
    });
  }
  const a = tf.randomNormal([4, 6, 70, 64], 0, 1, "float32", 3),
    b = tf.randomNormal([4, 6, 70, 64], 0, 1, "float32", 4);
  const p = tf.randomNormal([4, 6, 70, 70], 0, 1, "float32", 5);
  try {
    for (const [x, y, tb] of [[a, b, true], [p, b, false]] as const) {
      wasmBatchMatMulKernels.uninstall();
      const ref = tf.matMul(x, y, false, tb);
      wasmBatchMatMulKernels.install();
      calls.clear();
      const before = tf.engine().backend.numDataIds();
      const out = tf.matMul(x, y, false, tb);
      assert.equal(
        tf.engine().backend.numDataIds(),
        before + 1,
        `[${x.shape}]·[${y.shape}] leaves only its output`,
      );
      assert.deepEqual([...calls], [], "no Slice or Concat kernel call");
      assert.deepEqual(out.shape, ref.shape);
      assertClose(await out.data(), await ref.data(), 1e-6, `[${x.shape}]·[${y.shape}] tB=${tb}`);
      tf.dispose([ref, out]);
    }
  } finally {
    tf.dispose([a, b, p]);
    for (const k of counted) {
      tf.unregisterKernel(k.kernelName, "wasm");
      tf.registerKernel(k);
    }
    wasmBatchMatMulKernels.uninstall();
  }
});

Deno.test("wasm BatchMatMul override: each item is bit for bit tfjs's single XNNPACK product of that item", async () => {
  await initBackend("wasm");
  // ViT-B/16 attention at batch 1: 12 heads × 197 tokens × 64, each head one XNNPACK product; the result must
  // be exactly the product of that head alone, whatever the thread count (XNNPACK splits rows, not sums).
  const q = tf.randomNormal([1, 12, 197, 64], 0, 1, "float32", 7);
  const k = tf.randomNormal([1, 12, 197, 64], 0, 1, "float32", 8);
  wasmBatchMatMulKernels.install();
  try {
    const before = tf.engine().backend.numDataIds();
    const scores = tf.matMul(q, k, false, true);
    assert.equal(tf.engine().backend.numDataIds(), before + 1, "only the output is left");
    const got = await scores.data();
    for (const h of [0, 5, 11]) {
      const want = tf.tidy(() => {
        const qh = tf.reshape(tf.slice(q, [0, h, 0, 0], [1, 1, 197, 64]), [197, 64]);
        const kh = tf.reshape(tf.slice(k, [0, h, 0, 0], [1, 1, 197, 64]), [197, 64]);
        return tf.matMul(qh, tf.transpose(kh)); // one 2-D product: tfjs-wasm's XNNPACK path
      });
      assert.deepEqual(got.subarray(h * 197 * 197, (h + 1) * 197 * 197), await want.data(), `head ${h}`);
      want.dispose();
    }
    tf.dispose([q, k, scores]);
  } finally {
    wasmBatchMatMulKernels.uninstall();
  }
});

Deno.test({
  name: "wasm BatchMatMul override: micro gradients and tiny logits still match timm",
  ignore: !haveFixtures,
  async fn() {
    await initBackend("wasm");
    wasmBatchMatMulKernels.install();
    try {
      await checkMicro({ logits: false, grads: true });
      await checkTiny({ loss: false });
    } finally {
      wasmBatchMatMulKernels.uninstall();
    }
  },
});
