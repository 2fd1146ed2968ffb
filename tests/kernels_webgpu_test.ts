/**
 * The WGSL matrix product for tfjs-webgpu (lib/backend/webgpu_matmul.ts): same results as tfjs's kernels on the
 * products it takes over and on those it passes through, nothing leaked, and timm's micro gradients and tiny
 * logits still within the fixtures' tolerances with it installed. Skipped without a WebGPU adapter.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import {
  installWebGPUMatMul,
  uninstallWebGPUMatMul,
  webgpuMatMulInstalled,
} from "../lib/backend/webgpu_matmul.ts";
import { installWebGPUSoftmax, uninstallWebGPUSoftmax } from "../lib/backend/webgpu_softmax.ts";
import { assertClose, haveFixtures } from "./_fixtures.ts";
import { checkMicro, checkTiny } from "./_timm_oracle.ts";

const haveWebGPU = typeof navigator !== "undefined" && "gpu" in navigator &&
  (await navigator.gpu.requestAdapter()) !== null;
if (!haveWebGPU) console.warn("SKIP WGSL matmul tests: no WebGPU adapter on this machine");

/**
 * `a·b` (`a·bᵀ`) plus bias computed on the host, batch items broadcast when one side has one: the reference
 * that cannot be fooled by a kernel that writes nothing into a recycled buffer.
 */
function hostMatMul(
  a: Float32Array,
  sa: number[],
  b: Float32Array,
  sb: number[],
  transposeB: boolean,
  bias?: Float32Array,
): Float32Array {
  const m = sa[sa.length - 2], k = sa[sa.length - 1];
  const n = transposeB ? sb[sb.length - 2] : sb[sb.length - 1];
  const batchA = a.length / (m * k), batchB = b.length / (k * n), batch = Math.max(batchA, batchB);
  const out = new Float32Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    const ao = (batchA === 1 ? 0 : z) * m * k, bo = (batchB === 1 ? 0 : z) * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = bias ? bias[j] : 0;
        for (let p = 0; p < k; p++) {
          sum += a[ao + i * k + p] * (transposeB ? b[bo + j * k + p] : b[bo + p * n + j]);
        }
        out[(z * m + i) * n + j] = sum;
      }
    }
  }
  return out;
}

Deno.test({
  name:
    "WGSL matmul: equals tfjs's kernels on linear, batched and attention-shaped products and pass-throughs",
  ignore: !haveWebGPU,
  async fn() {
    await initBackend("webgpu");
    // [a shape, b shape, bias?, transposeB?]
    const cases: Array<[number[], number[], boolean, boolean]> = [
      [[13, 16], [16, 24], true, false], // linear with bias
      [[21, 8], [8, 4], false, false], // rows not a multiple of the 8 per invocation
      [[1, 9, 12], [1, 12, 20], true, false],
      [[2, 9, 12], [2, 12, 20], false, false], // batched
      [[1, 3, 9, 8], [1, 3, 9, 8], false, true], // attention q·kᵀ: batched, transposeB, width 9
      [[3, 9, 9], [3, 9, 8], false, false], // attention p·v: inner width 9
      [[5, 6], [6, 12], true, false], // inner 6 with bias: tfjs's fused kernel
      [[5, 7], [7, 6], false, false], // widths not multiples of 4: batched kernel, batch 1
      [[1, 5, 4], [3, 4, 6], false, false], // broadcast: tfjs's kernel
    ];
    try {
      for (const [sa, sb, withBias, tb] of cases) {
        const a = tf.randomNormal(sa, 0, 1, "float32", 3), b = tf.randomNormal(sb, 0, 1, "float32", 4);
        const n = tb ? sb[sb.length - 2] : sb[sb.length - 1];
        const bias = tf.randomNormal([n], 0, 1, "float32", 5);
        const run = () =>
          withBias
            ? tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeB: tb })
            : tf.matMul(a, b, false, tb);
        const what = `[${sa}]·[${sb}] bias=${withBias} tB=${tb}`;
        const host = hostMatMul(
          await a.data() as Float32Array,
          sa,
          await b.data() as Float32Array,
          sb,
          tb,
          withBias ? await bias.data() as Float32Array : undefined,
        );
        assert.ok(installWebGPUMatMul(true, true) && webgpuMatMulInstalled());
        const before = tf.memory().numTensors;
        const out = run();
        assert.equal(tf.memory().numTensors, before + 1);
        assertClose(await out.data(), host, 1e-5, `${what} vs host`);
        uninstallWebGPUMatMul();
        const ref = run();
        assert.deepEqual(out.shape, ref.shape, `${what} shape`);
        assertClose(await out.data(), await ref.data(), 1e-5, `${what} vs tfjs`);
        tf.dispose([a, b, bias, ref, out]);
      }
    } finally {
      uninstallWebGPUMatMul();
      uninstallWebGPUSoftmax();
    }
  },
});

Deno.test({
  name: "WGSL softmax: equals a host softmax over the last axis, and its gradient equals tfjs's",
  ignore: !haveWebGPU,
  async fn() {
    await initBackend("webgpu");
    const x = tf.mul(tf.randomNormal([2, 3, 7, 9], 0, 1, "float32", 6), 5);
    const xs = await x.data() as Float32Array;
    const host = new Float32Array(xs.length);
    for (let r = 0; r < xs.length / 9; r++) {
      const row = xs.subarray(r * 9, r * 9 + 9);
      const m = Math.max(...row);
      const sum = row.reduce((s, v) => s + Math.exp(v - m), 0);
      row.forEach((v, i) => host[r * 9 + i] = Math.exp(v - m) / sum);
    }
    assert.ok(installWebGPUSoftmax(true, true));
    try {
      const before = tf.memory().numTensors;
      const y = tf.softmax(x);
      assert.equal(tf.memory().numTensors, before + 1);
      assert.deepEqual(y.shape, x.shape);
      assertClose(await y.data(), host, 1e-6, "softmax vs host");
      // Its gradient is tfjs's own, from the output: check it against the stock kernel's.
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.softmax(t), tf.range(0, 9))))(x);
      uninstallWebGPUSoftmax();
      const gRef = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.softmax(t), tf.range(0, 9))))(x);
      assertClose(await g.data(), await gRef.data(), 1e-5, "softmax gradient");
      tf.dispose([y, g, gRef]);
    } finally {
      uninstallWebGPUSoftmax();
      x.dispose();
    }
  },
});

Deno.test({
  name: "WGSL matmul and softmax: micro gradients and tiny logits still match timm",
  ignore: !haveWebGPU || !haveFixtures,
  async fn() {
    await initBackend("webgpu");
    installWebGPUMatMul(true, true);
    installWebGPUSoftmax(true, true);
    try {
      await checkMicro({ logits: false, grads: true });
      await checkTiny({ loss: false });
    } finally {
      uninstallWebGPUMatMul();
      uninstallWebGPUSoftmax();
    }
  },
});
