/**
 * The training-step kernels for tfjs-wasm (lib/backend/wasm_layer_norm.ts, wasm_gelu.ts, wasm_heads.ts,
 * wasm_sum.ts, wasm_identity.ts): each against the tfjs composition it replaces (values and gradients), no
 * leaked device data, and timm's micro gradients, tiny logits and a training step's memory with all of them
 * installed.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { installProjectKernels, uninstallProjectKernels } from "../lib/backend/kernels.ts";
import { geluTables, tableAt, wasmGeluKernels } from "../lib/backend/wasm_gelu.ts";
import { wasmHeadsKernels, wasmSplitHeads } from "../lib/backend/wasm_heads.ts";
import { wasmIdentityKernels } from "../lib/backend/wasm_identity.ts";
import { wasmLayerNormKernels } from "../lib/backend/wasm_layer_norm.ts";
import { wasmSumKernels } from "../lib/backend/wasm_sum.ts";
import { gelu } from "../lib/vit/gelu.ts";
import { LayerNorm } from "../lib/vit/layer_norm.ts";
import { weightGrad } from "../lib/vit/matmul.ts";
import { createViT } from "../lib/vit/model.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { assertClose, haveFixtures, relError } from "./_fixtures.ts";
import { checkMicro, checkTiny } from "./_timm_oracle.ts";

/** Values and gradients of `f` with respect to `xs` for the upstream gradient `dy`. */
async function valueAndGrads(
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  xs: tf.Tensor[],
  dy: tf.Tensor,
): Promise<Float32Array[]> {
  const { value, grads } = tf.tidy(() => {
    const g = tf.grads((...a: tf.Tensor[]) => f(...a));
    return { value: f(...xs), grads: g(xs, dy) };
  });
  const out = [await value.data() as Float32Array];
  for (const g of grads) out.push(await g.data() as Float32Array);
  tf.dispose([value, ...grads]);
  return out;
}

Deno.test("wasm LayerNorm: value and gradients match tfjs's composite", async () => {
  await initBackend("wasm");
  const x = tf.randomNormal([300, 128], 0.3, 2, "float32", 1);
  const w = tf.randomNormal([128], 1, 0.1, "float32", 2), b = tf.randomNormal([128], 0, 0.1, "float32", 3);
  const dy = tf.randomNormal([300, 128], 0, 1, "float32", 4);
  const wv = tf.variable(w), bv = tf.variable(b);
  const ln = new LayerNorm(wv, bv);
  const f = (xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) =>
    new LayerNorm(wi as tf.Variable, bi as tf.Variable).apply(xi);
  try {
    wasmLayerNormKernels.uninstall();
    const ref = await valueAndGrads(f, [x, w, b], dy);
    wasmLayerNormKernels.install();
    const got = await valueAndGrads(f, [x, w, b], dy);
    // Sums in float64 instead of tfjs's float32: an ulp or so of the values, a few of the 300-row sums.
    const tol = [1e-6, 1e-6, 2e-6, 1e-6];
    for (const [i, what] of ["y", "dx", "dγ", "dβ"].entries()) {
      assertClose(got[i], ref[i], tol[i], `LayerNorm ${what}`);
    }
    const before = tf.engine().backend.numDataIds();
    tf.dispose(ln.apply(x));
    assert.equal(tf.engine().backend.numDataIds(), before, "no device data left behind");
  } finally {
    wasmLayerNormKernels.uninstall();
    tf.dispose([x, w, b, dy, wv, bv]);
  }
});

Deno.test("wasm GELU: value and gradient match tfjs's composite (exact erf); the tables are accurate", async () => {
  await initBackend("wasm");
  // Φ and Φ + xφ against a Taylor series of erf in float64 (accurate to ~1e-15 for |x/√2| ≤ 3).
  const erf = (u: number) => {
    let s = 0, term = u;
    for (let n = 0; n < 200 && Math.abs(term) > 1e-30; n++) {
      s += term / (2 * n + 1);
      term *= -u * u / (n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * s;
  };
  const { cdf, grad } = geluTables();
  let worst = 0;
  for (let x = -4.2; x <= 4.2; x += 0.00731) {
    const phi = 0.5 * (1 + erf(x * Math.SQRT1_2)), pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
    worst = Math.max(worst, Math.abs(tableAt(cdf, x) - phi), Math.abs(tableAt(grad, x) - (phi + x * pdf)));
  }
  assert.ok(worst < 1e-9, `table error ${worst}`);
  assert.equal(Math.fround(tableAt(cdf, 40)), 1);
  assert.ok(Math.abs(tableAt(cdf, -40)) < 1e-14);

  const x = tf.randomNormal([257, 96], 0, 2.5, "float32", 5);
  const dy = tf.randomNormal([257, 96], 0, 1, "float32", 6);
  try {
    wasmGeluKernels.uninstall();
    const ref = await valueAndGrads((a) => gelu(a), [x], dy);
    wasmGeluKernels.install();
    const got = await valueAndGrads((a) => gelu(a), [x], dy);
    // tfjs rounds each of its ops to float32; the kernel rounds once: within an ulp or two of the values.
    assertClose(got[0], ref[0], 1e-6, "GELU value");
    assertClose(got[1], ref[1], 1e-6, "GELU gradient");
    const inference = gelu(x);
    assertClose(await inference.data(), ref[0], 1e-6, "GELU value outside a gradient");
    const before = tf.engine().backend.numDataIds();
    tf.dispose(gelu(x));
    assert.equal(tf.engine().backend.numDataIds(), before, "no device data left behind");
    inference.dispose();
  } finally {
    wasmGeluKernels.uninstall();
    tf.dispose([x, dy]);
  }
});

Deno.test("wasm head split: q·scale, k, v and the qkv gradient bit-identical to tfjs's split + transpose", async () => {
  await initBackend("wasm");
  const [b, T, H, hd] = [3, 17, 4, 8];
  const D = H * hd, scale = 1 / Math.sqrt(hd);
  const qkv = tf.randomNormal([b * T, 3 * D], 0, 1, "float32", 7);
  const dys = [8, 9, 10].map((s) => tf.randomNormal([b, H, T, hd], 0, 1, "float32", s));
  const composite = (x: tf.Tensor) => {
    const [q, k, v] = tf.split(x, 3, 1).map((t) => tf.transpose(tf.reshape(t, [b, T, H, hd]), [0, 2, 1, 3]));
    return [tf.mul(q, scale), k, v];
  };
  const run = async (split: (x: tf.Tensor) => tf.Tensor[]) => {
    const { parts, grad } = tf.tidy(() => {
      // One scalar from all three parts, so that the gradient reaches each with its own dy.
      const g = tf.grad((x: tf.Tensor) => tf.addN(split(x).map((p, i) => tf.sum(tf.mul(p, dys[i])))));
      return { parts: split(qkv), grad: g(qkv) };
    });
    const out = [...await Promise.all(parts.map((p) => p.data())), await grad.data()];
    tf.dispose([...parts, grad]);
    return out;
  };
  try {
    wasmHeadsKernels.uninstall();
    const ref = await run(composite);
    wasmHeadsKernels.install();
    const got = await run((x) => wasmSplitHeads(x as tf.Tensor2D, b, T, H, scale)!);
    for (const [i, what] of ["q·scale", "k", "v", "dqkv"].entries()) {
      assert.deepEqual(got[i], ref[i], `${what} bit-identical`);
    }
    const before = tf.engine().backend.numDataIds();
    tf.dispose(wasmSplitHeads(qkv as tf.Tensor2D, b, T, H, scale)!);
    assert.equal(tf.engine().backend.numDataIds(), before, "no device data left behind");
  } finally {
    wasmHeadsKernels.uninstall();
    tf.dispose([qkv, ...dys]);
  }
});

Deno.test("wasm Sum over rows: bit-identical to tfjs's kernel; other reductions passed through", async () => {
  await initBackend("wasm");
  const cases: Array<[number[], number | number[], boolean]> = [
    [[4160, 64], 0, false], // a bias gradient
    [[6, 65, 32], [0, 1], false],
    [[6, 65, 32], [0, 1], true],
    [[6, 65, 32], [1, 0], false], // axes out of order: tfjs's kernel
    [[6, 65, 32], -1, true], // innermost: tfjs's kernel
    [[6, 65, 32], [0, 1, 2], false], // everything: tfjs's kernel
  ];
  try {
    for (const [shape, axis, keep] of cases) {
      const x = tf.randomNormal(shape, 0, 1, "float32", 11);
      wasmSumKernels.uninstall();
      const ref = tf.sum(x, axis, keep);
      wasmSumKernels.install();
      const before = tf.engine().backend.numDataIds();
      const got = tf.sum(x, axis, keep);
      assert.equal(tf.engine().backend.numDataIds(), before + 1, "leaves only its output");
      assert.deepEqual(got.shape, ref.shape);
      assert.deepEqual(await got.data(), await ref.data(), `sum [${shape}] over ${axis} bit-identical`);
      tf.dispose([x, ref, got]);
    }
  } finally {
    wasmSumKernels.uninstall();
  }
});

Deno.test("wasm Identity/Cast: share the input's data, no copy, no leak", async () => {
  await initBackend("wasm");
  wasmIdentityKernels.install();
  try {
    const x = tf.tensor([1.5, -2, 3], [3]);
    const before = tf.engine().backend.numDataIds();
    const y = tf.clone(x), z = tf.cast(x, "float32"), i = tf.cast(x, "int32");
    assert.equal(y.dataId, x.dataId, "clone shares");
    assert.equal(z.dataId, x.dataId, "same-type cast shares");
    assert.notEqual(i.dataId, x.dataId, "a cast that changes the type converts");
    assert.deepEqual(Array.from(await i.data()), [1, -2, 3]);
    tf.dispose([y, z]);
    assert.deepEqual(Array.from(await x.data()), [1.5, -2, 3], "the input outlives its clones");
    x.dispose();
    i.dispose();
    assert.equal(tf.engine().backend.numDataIds(), before - 1, "every reference released");
  } finally {
    wasmIdentityKernels.uninstall();
  }
});

Deno.test("weight gradients on wasm as (dyᵀ·x)ᵀ when out > in: bit-identical to xᵀ·dy", async () => {
  await initBackend("wasm");
  for (const [rows, inF, outF] of [[4160, 128, 512], [300, 64, 192], [300, 192, 64]]) {
    const x = tf.randomNormal([rows, inF], 0, 1, "float32", 12) as tf.Tensor2D;
    const dy = tf.randomNormal([rows, outF], 0, 1, "float32", 13) as tf.Tensor2D;
    const ref = tf.tidy(() => tf.matMul(tf.transpose(x), dy));
    const before = tf.engine().backend.numDataIds();
    const got = weightGrad(x, dy);
    assert.equal(tf.engine().backend.numDataIds(), before + 1, "leaves only its output");
    assert.deepEqual(got.shape, [inF, outF]);
    assert.deepEqual(await got.data(), await ref.data(), `[${rows},${inF}]ᵀ·[${rows},${outF}]`);
    tf.dispose([x, dy, ref, got]);
  }
});

Deno.test("wasm training kernels: a step of the shipped architecture leaves no tensor and matches stock kernels", async () => {
  await initBackend("wasm");
  const config = {
    img_size: 32,
    patch_size: 8,
    embed_dim: 64,
    depth: 2,
    num_heads: 4,
    mlp_ratio: 4,
    num_classes: 10,
  };
  const vit = await createViT(config, formulaStateDict(config));
  const n = 6, input = new Float32Array(n * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.01));
  const labels = Int32Array.from({ length: n }, (_, i) => i % 10);
  try {
    const restore = uninstallProjectKernels("wasm");
    const ref = await vit.lossAndGrads(input, [n, 3, 32, 32], labels, { labelSmoothing: 0.1 });
    restore();
    const tensors = tf.memory().numTensors;
    const got = await vit.lossAndGrads(input, [n, 3, 32, 32], labels, { labelSmoothing: 0.1 });
    assert.equal(tf.memory().numTensors, tensors, "no tensor left behind");
    assertClose([got.loss], [ref.loss], 1e-6, "loss");
    for (const [name, g] of ref.grads) {
      // Through kernels that round differently from tfjs's composites, each by an ulp or so: 1.2e-6 at most
      // here (norm1's bias).
      const err = relError(got.grads.get(name)!, g);
      assert.ok(err < 1e-5, `${name}: relative error ${err}`);
    }
  } finally {
    vit.dispose();
    installProjectKernels("wasm");
  }
});

Deno.test({
  name: "wasm training kernels: micro gradients and tiny logits still match timm",
  ignore: !haveFixtures,
  async fn() {
    const info = await initBackend("wasm");
    for (const k of ["wasm LayerNorm", "wasm GELU", "wasm attention head split", "wasm Sum over rows"]) {
      assert.ok(info.kernels.includes(k), `${k} installed`);
    }
    await checkMicro({ logits: true, grads: true });
    await checkTiny({ loss: false });
  },
});
