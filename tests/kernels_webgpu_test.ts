/**
 * The WGSL kernels for tfjs-webgpu (lib/backend/webgpu_*.ts): the matrix product gives the same results as
 * tfjs's kernels on the products it takes over and on those it passes through; softmax, LayerNorm and GELU
 * (and the latter two's gradients) equal host-computed values and the model's tfjs composites; nothing
 * leaked; and timm's micro gradients and tiny logits still within the fixtures' tolerances with all of them
 * installed. Skipped without a WebGPU adapter.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { installProjectKernels, uninstallProjectKernels } from "../lib/backend/kernels.ts";
import { webgpuMatMulKernels } from "../lib/backend/webgpu_matmul.ts";
import { webgpuSoftmaxKernels } from "../lib/backend/webgpu_softmax.ts";
import {
  LAYER_NORM_KERNEL,
  webgpuLayerNorm,
  webgpuLayerNormKernels,
} from "../lib/backend/webgpu_layer_norm.ts";
import { GELU_KERNEL, webgpuGelu, webgpuGeluKernels } from "../lib/backend/webgpu_gelu.ts";
import { LayerNorm } from "../lib/vit/layer_norm.ts";
import { gelu } from "../lib/vit/gelu.ts";
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
        assert.ok(webgpuMatMulKernels.install() && webgpuMatMulKernels.installed);
        const before = tf.memory().numTensors;
        const out = run();
        assert.equal(tf.memory().numTensors, before + 1);
        assertClose(await out.data(), host, 1e-5, `${what} vs host`);
        webgpuMatMulKernels.uninstall();
        const ref = run();
        assert.deepEqual(out.shape, ref.shape, `${what} shape`);
        assertClose(await out.data(), await ref.data(), 1e-5, `${what} vs tfjs`);
        tf.dispose([a, b, bias, ref, out]);
      }
    } finally {
      webgpuMatMulKernels.uninstall();
      webgpuSoftmaxKernels.uninstall();
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
    assert.ok(webgpuSoftmaxKernels.install());
    try {
      const before = tf.memory().numTensors;
      const y = tf.softmax(x);
      assert.equal(tf.memory().numTensors, before + 1);
      assert.deepEqual(y.shape, x.shape);
      assertClose(await y.data(), host, 1e-6, "softmax vs host");
      // Its gradient is tfjs's own, from the output: check it against the stock kernel's.
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.softmax(t), tf.range(0, 9))))(x);
      webgpuSoftmaxKernels.uninstall();
      const gRef = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.softmax(t), tf.range(0, 9))))(x);
      assertClose(await g.data(), await gRef.data(), 1e-5, "softmax gradient");
      tf.dispose([y, g, gRef]);
    } finally {
      webgpuSoftmaxKernels.uninstall();
      x.dispose();
    }
  },
});

/** Deterministic values in [-scale, scale] plus `shift`, different per `seed`. */
function values(n: number, seed: number, scale = 3, shift = 0): Float32Array {
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 31 - 1) * scale + shift;
  }
  return out;
}

/**
 * LayerNorm over rows of width `d` and its gradients for the upstream gradient `dy`, in float64 on the host.
 */
function hostLayerNorm(
  x: Float32Array,
  d: number,
  gamma: Float32Array,
  beta: Float32Array,
  dy: Float32Array,
) {
  const eps = 1e-6, rows = x.length / d;
  const y = new Float64Array(x.length), dx = new Float64Array(x.length);
  const dGamma = new Float64Array(d), dBeta = new Float64Array(d);
  for (let r = 0; r < rows; r++) {
    const row = Array.from(x.subarray(r * d, r * d + d));
    const mean = row.reduce((a, b) => a + b, 0) / d;
    const rstd = 1 / Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / d + eps);
    const xhat = row.map((v) => (v - mean) * rstd);
    const g = xhat.map((_, j) => dy[r * d + j] * gamma[j]);
    const mg = g.reduce((a, b) => a + b, 0) / d;
    const mgx = g.reduce((a, b, j) => a + b * xhat[j], 0) / d;
    for (let j = 0; j < d; j++) {
      y[r * d + j] = xhat[j] * gamma[j] + beta[j];
      dx[r * d + j] = (g[j] - mg - xhat[j] * mgx) * rstd;
      dGamma[j] += dy[r * d + j] * xhat[j];
      dBeta[j] += dy[r * d + j];
    }
  }
  return { y, dx, dGamma, dBeta };
}

Deno.test({
  name: "WGSL LayerNorm: forward and gradients equal a host LayerNorm and the composite, odd widths included",
  ignore: !haveWebGPU,
  async fn() {
    await initBackend("webgpu");
    // x shapes: odd widths (scalar loads), multiples of 4 (vec4 loads), rank 3, one column, ViT-Ti's rows.
    const shapes = [[5, 7], [9, 20], [2, 3, 12], [4, 1], [3, 13], [197, 192]];
    try {
      for (const shape of shapes) {
        const d = shape[shape.length - 1], size = shape.reduce((a, b) => a * b, 1);
        const xs = values(size, 1 + d, 3, 2), gs = values(d, 2 + d, 1, 1), bs = values(d, 3 + d);
        const dys = values(size, 4 + d);
        const x = tf.tensor(xs, shape), dy = tf.tensor(dys, shape);
        const ln = new LayerNorm(tf.variable(tf.tensor1d(gs)), tf.variable(tf.tensor1d(bs)));
        const what = `LayerNorm [${shape}]`;
        const host = hostLayerNorm(xs, d, gs, bs, dys);
        // The model's LayerNorm, differentiated: returns [y, dx, dγ, dβ].
        const run = () =>
          tf.tidy(() => {
            const f = (t: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
              tf.sum(tf.mul(new LayerNorm(w as tf.Variable, b as tf.Variable).apply(t), dy));
            return [ln.apply(x), ...tf.grads(f)([x, ln.weight, ln.bias])];
          });
        assert.ok(webgpuLayerNormKernels.install() && webgpuLayerNormKernels.active());
        const before = tf.memory().numTensors;
        const direct = webgpuLayerNorm(x, ln.weight, ln.bias, 1e-6)!;
        assert.equal(tf.memory().numTensors, before + 1, `${what}: one tensor out`);
        assertClose(await direct.data(), host.y, 1e-6, `${what} kernel vs host`);
        const profile = await tf.profile(() => ln.apply(x));
        assert.ok(profile.kernelNames.includes(LAYER_NORM_KERNEL), `${what}: the model runs the kernel`);
        tf.dispose(profile.result as tf.Tensor);
        const fused = run();
        assert.equal(tf.memory().numTensors, before + 1 + 4, `${what}: nothing leaked`);
        const names = ["y", "dx", "dγ", "dβ"], refs = [host.y, host.dx, host.dGamma, host.dBeta];
        for (let i = 0; i < 4; i++) {
          assertClose(await fused[i].data(), refs[i], 1e-5, `${what} ${names[i]} vs host`);
        }
        webgpuLayerNormKernels.uninstall();
        assert.equal(webgpuLayerNorm(x, ln.weight, ln.bias, 1e-6), undefined, "undefined when not installed");
        const composite = run();
        for (let i = 0; i < 4; i++) {
          assert.deepEqual(fused[i].shape, composite[i].shape, `${what} ${names[i]} shape`);
          assertClose(
            await fused[i].data(),
            await composite[i].data(),
            1e-5,
            `${what} ${names[i]} vs composite`,
          );
        }
        // The model's tfjs-op gradient, for a kernel forward whose gradient kernels went away meanwhile.
        webgpuLayerNormKernels.install();
        const opsGrads = tf.grads((t: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => {
          const y = new LayerNorm(w as tf.Variable, b as tf.Variable).apply(t);
          webgpuLayerNormKernels.uninstall();
          return tf.sum(tf.mul(y, dy));
        })([x, ln.weight, ln.bias]);
        for (let i = 0; i < 3; i++) {
          assertClose(
            await opsGrads[i].data(),
            refs[i + 1],
            1e-5,
            `${what} ${names[i + 1]} by tfjs ops vs host`,
          );
        }
        tf.dispose([x, dy, ln.weight, ln.bias, direct, ...fused, ...composite, ...opsGrads]);
      }
      webgpuLayerNormKernels.install();
      const x = tf.zeros([2, 8]), bad = tf.zeros([6]);
      assert.throws(() => webgpuLayerNorm(x, bad, bad, 1e-6), /VitLayerNorm: gamma must be float32 \[8\]/);
      tf.dispose([x, bad]);
    } finally {
      webgpuLayerNormKernels.uninstall();
    }
  },
});

/** erf on the host to ~1e-10: its Taylor series below 4, ±1 beyond (erfc(4) ≈ 1.5e-8). */
function hostErf(x: number): number {
  if (Math.abs(x) >= 4) return Math.sign(x);
  let term = x, sum = x;
  for (let n = 1; n < 120; n++) {
    term *= -x * x / n;
    sum += term / (2 * n + 1);
  }
  return 2 / Math.sqrt(Math.PI) * sum;
}

Deno.test({
  name: "WGSL GELU: value and gradient equal the exact (erf) GELU on the host and the composite",
  ignore: !haveWebGPU,
  async fn() {
    await initBackend("webgpu");
    try {
      // Sizes: a multiple of 4 (vec4) and odd ones; values up to ±8, where erf saturates.
      for (const shape of [[6, 32], [3, 7], [1, 5, 9], [197, 768]]) {
        const size = shape.reduce((a, b) => a * b, 1);
        const xs = values(size, 11 + size, 8), dys = values(size, 12 + size);
        xs[0] = 0;
        const x = tf.tensor(xs, shape), dy = tf.tensor(dys, shape);
        const what = `GELU [${shape}]`;
        const hostY = Array.from(xs, (v) => 0.5 * v * (1 + hostErf(v * Math.SQRT1_2)));
        const hostDx = Array.from(
          xs,
          (v, i) =>
            dys[i] *
            (0.5 * (1 + hostErf(v * Math.SQRT1_2)) + v * Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI)),
        );
        const run = () => tf.tidy(() => [gelu(x), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(gelu(t), dy)))(x)]);
        assert.ok(webgpuGeluKernels.install() && webgpuGeluKernels.active());
        const before = tf.memory().numTensors;
        const direct = webgpuGelu(x)!;
        assert.equal(tf.memory().numTensors, before + 1, `${what}: one tensor out`);
        assertClose(await direct.data(), hostY, 1e-6, `${what} kernel vs host`);
        const profile = await tf.profile(() => gelu(x));
        assert.ok(profile.kernelNames.includes(GELU_KERNEL), `${what}: the model runs the kernel`);
        tf.dispose(profile.result as tf.Tensor);
        const fused = run();
        assert.equal(tf.memory().numTensors, before + 1 + 2, `${what}: nothing leaked`);
        assertClose(await fused[0].data(), hostY, 1e-6, `${what} y vs host`);
        assertClose(await fused[1].data(), hostDx, 1e-6, `${what} dx vs host`);
        webgpuGeluKernels.uninstall();
        assert.equal(webgpuGelu(x), undefined, "undefined when not installed");
        const composite = run();
        for (let i = 0; i < 2; i++) {
          assert.deepEqual(fused[i].shape, composite[i].shape, `${what} shape`);
          assertClose(
            await fused[i].data(),
            await composite[i].data(),
            1e-6,
            `${what} ${i ? "dx" : "y"} vs composite`,
          );
        }
        tf.dispose([x, dy, direct, ...fused, ...composite]);
      }
    } finally {
      webgpuGeluKernels.uninstall();
    }
  },
});

Deno.test({
  name:
    "WGSL kernels: installed on a hardware adapter only when forced; micro gradients and tiny logits match timm",
  ignore: !haveWebGPU || !haveFixtures,
  async fn() {
    await initBackend("webgpu");
    uninstallProjectKernels("webgpu");
    assert.deepEqual(installProjectKernels("webgpu", false), [], "not on a hardware adapter");
    assert.deepEqual(installProjectKernels("webgpu", false, true), [
      "WGSL matmul",
      "WGSL softmax",
      "WGSL LayerNorm",
      "WGSL GELU",
    ]);
    try {
      await checkMicro({ logits: false, grads: true });
      await checkTiny({ loss: false });
    } finally {
      uninstallProjectKernels("webgpu");
    }
    assert.ok(!webgpuMatMulKernels.installed && !webgpuGeluKernels.active());
  },
});
