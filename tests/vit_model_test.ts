/** Model behaviour that does not need timm's numbers: label smoothing, batch splitting, leaks, bad input. */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { bytesPerImage, chunkSize, createViT } from "../lib/vit/model.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { relError } from "./_fixtures.ts";

const micro = archConfig(MICRO_ARCH)!;

function randomInput(n: number, size = 32, seed = 1): Float32Array {
  const out = new Float32Array(n * 3 * size * size);
  let s = seed;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

Deno.test("label smoothing equals (1 − s)·nll + s·mean(−log p), computed on the host", async () => {
  await initBackend();
  const model = await createViT(micro, formulaStateDict(micro, 7));
  try {
    const n = 3, x = randomInput(n), labels = Int32Array.from([1, 4, 9]);
    const logits = await model.logits(x, [n, 3, 32, 32]);
    let expected = 0;
    for (let i = 0; i < n; i++) {
      const row = Array.from(logits.subarray(i * 10, i * 10 + 10));
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
      const logp = row.map((v) => v - lse);
      expected += (0.9 * -logp[labels[i]] + 0.1 * -logp.reduce((a, b) => a + b, 0) / 10) / n;
    }
    const { loss } = await model.lossAndGrads(x, [n, 3, 32, 32], labels, { labelSmoothing: 0.1 });
    assert.ok(Math.abs(loss - expected) < 1e-5 * Math.abs(expected), `loss ${loss} vs ${expected}`);
  } finally {
    model.dispose();
  }
});

Deno.test("batches split into chunks give the same logits, loss and gradients as one pass", async () => {
  await initBackend();
  const state = formulaStateDict(micro, 3);
  const whole = await createViT(micro, state);
  const split = await createViT(micro, state, { maxChunk: 2 });
  try {
    assert.equal(split.maxChunk, 2);
    const n = 5, x = randomInput(n, 32, 5), labels = Int32Array.from([0, 1, 2, 3, 4]);
    assert.ok(relError(await split.logits(x, [n, 3, 32, 32]), await whole.logits(x, [n, 3, 32, 32])) < 1e-6);
    const a = await whole.lossAndGrads(x, [n, 3, 32, 32], labels, { labelSmoothing: 0.1 });
    const b = await split.lossAndGrads(x, [n, 3, 32, 32], labels, { labelSmoothing: 0.1 });
    assert.ok(Math.abs(a.loss - b.loss) < 1e-6 * a.loss);
    for (const [name, g] of a.grads) assert.ok(relError(b.grads.get(name)!, g) < 1e-5, name);
  } finally {
    whole.dispose();
    split.dispose();
  }
});

Deno.test("the chunk size follows the binding limit: ViT-B/16 on lavapipe's 128 MiB binding", () => {
  const vitB = resolveConfig(archConfig("vit_base_patch16_224")!);
  // The MLP hidden activation, 197 tokens × 3072 × 4 bytes, is the largest per image.
  assert.equal(bytesPerImage(vitB), 197 * 3072 * 4);
  assert.equal(chunkSize(vitB, 128 * 2 ** 20), 55);
  assert.equal(chunkSize(vitB, 128 * 2 ** 20, 16), 16);
  assert.equal(chunkSize(vitB, 1000), 1, "never below one image");
  assert.equal(chunkSize(resolveConfig(micro), Infinity), 1024);
});

Deno.test("20 forward+backward steps leave tf.memory().numTensors unchanged", async () => {
  await initBackend();
  const model = await createViT(micro, formulaStateDict(micro, 11), { maxChunk: 3 });
  try {
    const n = 4, x = randomInput(n, 32, 9), labels = Int32Array.from([1, 2, 3, 4]);
    await model.lossAndGrads(x, [n, 3, 32, 32], labels); // first call may create lazily-cached tensors
    await model.logits(x, [n, 3, 32, 32]);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 20; i++) {
      await model.lossAndGrads(x, [n, 3, 32, 32], labels, { labelSmoothing: 0.1 });
      await model.logits(x, [n, 3, 32, 32]);
    }
    assert.equal(tf.memory().numTensors, before);
  } finally {
    model.dispose();
  }
});

Deno.test("dispose frees every parameter tensor", async () => {
  await initBackend();
  const before = tf.memory().numTensors;
  const model = await createViT(micro, formulaStateDict(micro));
  assert.ok(tf.memory().numTensors > before);
  model.dispose();
  assert.equal(tf.memory().numTensors, before);
  await assert.rejects(() => model.logits(randomInput(1), [1, 3, 32, 32]), /disposed/);
});

Deno.test("bad input and bad weights give errors naming what is wrong", async () => {
  await initBackend();
  const state = formulaStateDict(micro);
  state.delete("blocks.1.mlp.fc1.bias");
  state.set("blocks.0.attn.qkv.weight", { shape: [64, 64], data: new Float32Array(64 * 64) });
  state.set("extra.weight", { shape: [1], data: new Float32Array(1) });
  await assert.rejects(
    () => createViT(micro, state),
    (e: Error) =>
      /missing tensor "blocks.1.mlp.fc1.bias"/.test(e.message) &&
      /"blocks.0.attn.qkv.weight" has shape \[64,64\], expected \[192,64\]/.test(e.message) &&
      /unexpected tensor "extra.weight"/.test(e.message),
  );
  await assert.rejects(
    () => createViT({ ...micro, embed_dim: 66 }, formulaStateDict(micro)),
    /not divisible/,
  );
  await assert.rejects(
    () => createViT({ ...micro, depth: 0 }, formulaStateDict(micro)),
    /"depth" must be a positive integer/,
  );
  const model = await createViT(micro, formulaStateDict(micro));
  try {
    await assert.rejects(() => model.logits(randomInput(1, 16), [1, 3, 16, 16]), /expected \[n, 3, 32, 32\]/);
    await assert.rejects(() => model.logits(randomInput(1), [2, 3, 32, 32]), /holds 3072 values/);
    await assert.rejects(
      () => model.lossAndGrads(randomInput(1), [1, 3, 32, 32], Int32Array.from([10])),
      /label 0 is 10, expected an integer in \[0, 10\)/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("a ViT-B/16-shaped forward at batch 32 fits the binding limits and matches batch 1", async () => {
  await initBackend();
  // ViT-B/16's per-layer activations with one block instead of twelve: the binding limits depend only on
  // the per-layer shapes, and one block keeps this test to seconds on a software adapter.
  const config = { ...archConfig("vit_base_patch16_224")!, depth: 1 };
  const model = await createViT(config, formulaStateDict(config));
  try {
    const n = 32, per = 3 * 224 * 224;
    const x = randomInput(n, 224, 3);
    const batch = await model.logits(x, [n, 3, 224, 224]);
    assert.equal(batch.length, n * 1000);
    assert.ok(batch.every(Number.isFinite));
    for (const i of [0, 17, 31]) {
      const one = await model.logits(x.subarray(i * per, (i + 1) * per), [1, 3, 224, 224]);
      assert.ok(relError(batch.subarray(i * 1000, (i + 1) * 1000), one) < 1e-5, `image ${i}`);
    }
  } finally {
    model.dispose();
  }
});
