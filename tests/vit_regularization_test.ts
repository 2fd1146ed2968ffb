/**
 * lib/vit's training-time pieces of timm's regularisation: soft-target cross-entropy (mixup/CutMix
 * targets) and stochastic depth (`drop_path`) against timm's definitions, computed independently here.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { dropPathRates } from "../lib/vit/block.ts";
import { crossEntropy, softTargetCrossEntropy } from "../lib/vit/loss.ts";
import { createViT } from "../lib/vit/model.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { relError } from "./_fixtures.ts";

await initBackend("cpu");

const micro = {
  img_size: 16,
  patch_size: 4,
  embed_dim: 32,
  depth: 3,
  num_heads: 2,
  num_classes: 5,
  qkv_bias: true,
};

function input(n: number, seed = 1): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n * 3 * 16 * 16 }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

Deno.test("soft-target cross-entropy: timm's SoftTargetCrossEntropy; smoothed one-hot rows equal label smoothing", () => {
  const logits = tf.tensor2d([[1, 2, 0.5, -1], [0.3, -0.2, 2, 1]]);
  const labels = tf.tensor1d([1, 2], "int32");
  const s = 0.2, off = s / 4, on = 1 - s + off;
  const soft = tf.tensor2d([[off, on, off, off], [off, off, on, off]]);
  const a = softTargetCrossEntropy(logits, soft).dataSync()[0];
  const b = crossEntropy(logits, labels, s).dataSync()[0];
  assert.ok(Math.abs(a - b) < 1e-6, `${a} vs ${b}`);
  // A 0.3/0.7 mix is the same mix of the two hard losses.
  const mix = tf.tensor2d([[0.3, 0.7, 0, 0], [0, 0, 0.3, 0.7]]);
  const lp = tf.logSoftmax(logits).arraySync() as number[][];
  const want = (-(0.3 * lp[0][0] + 0.7 * lp[0][1]) - (0.3 * lp[1][2] + 0.7 * lp[1][3])) / 2;
  assert.ok(Math.abs(softTargetCrossEntropy(logits, mix).dataSync()[0] - want) < 1e-6);
  assert.throws(() => softTargetCrossEntropy(logits, tf.zeros([2, 3])), /soft targets \[2,3\] do not match/);
  tf.dispose([logits, labels, soft, mix]);
});

Deno.test("the model takes soft targets: one-hot rows give the hard-label loss and gradients; bad rows are refused", async () => {
  const model = await createViT(micro, formulaStateDict(micro, 4));
  try {
    const n = 4, x = input(n), labels = Int32Array.from([0, 3, 1, 4]);
    const onehot = new Float32Array(n * 5);
    labels.forEach((y, i) => onehot[i * 5 + y] = 1);
    const hard = await model.lossAndGrads(x, [n, 3, 16, 16], labels);
    const soft = await model.lossAndGrads(x, [n, 3, 16, 16], onehot);
    assert.ok(Math.abs(hard.loss - soft.loss) < 1e-6 * hard.loss);
    for (const [name, g] of hard.grads) assert.ok(relError(soft.grads.get(name)!, g) < 1e-5, name);
    const bad = onehot.slice();
    bad[0] = 0.5;
    await assert.rejects(
      model.lossAndGrads(x, [n, 3, 16, 16], bad),
      /soft target row 0 is not a distribution/,
    );
    await assert.rejects(
      model.lossAndGrads(x, [n, 3, 16, 16], new Float32Array(7)),
      /soft targets hold 7 values/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("drop_path rates are timm's dpr = linspace(0, rate, depth)", () => {
  const r = dropPathRates(12, 0.1);
  assert.equal(r.length, 12);
  assert.equal(r[0], 0);
  assert.equal(r[11], Math.fround(0.1));
  for (let i = 0; i < 12; i++) assert.ok(Math.abs(r[i] - (0.1 * i) / 11) < 1e-7);
  assert.deepEqual(dropPathRates(1, 0.3), [0]);
  assert.throws(() => dropPathRates(4, 1), /drop_path: expected a rate in \[0, 1\)/);
});

Deno.test("drop_path parity with timm's definition: per sample, x·mask/keep_prob, only with draws given", async () => {
  const model = await createViT(micro, formulaStateDict(micro, 9));
  try {
    const n = 4, x = input(n, 3);
    const net = model.net, T = micro.img_size ** 2 / micro.patch_size ** 2 + 1, D = micro.embed_dim;
    // Hand-made draws: per block and branch, per sample 0 (dropped) or 1/keep.
    const rates = dropPathRates(micro.depth, 0.4);
    const masks = rates.map((rate, b) => ({
      attn: [1, 0, 1, (b + 1) % 2].map((k) => k / (1 - rate)),
      mlp: [0, 1, 1, b % 2].map((k) => k / (1 - rate)),
    }));
    const batched = tf.tidy(() => {
      const dp = masks.map((m) => ({
        attn: tf.tensor3d(m.attn, [n, 1, 1]),
        mlp: tf.tensor3d(m.mlp, [n, 1, 1]),
      }));
      return net.apply(tf.tensor4d(x, [n, 3, 16, 16]), dp).arraySync() as number[][];
    });
    // The reference: each sample alone, x + m·branch(x) with the branch's scalar factor, as timm's
    // drop_path (`x * random_tensor / keep_prob`) composes into the block.
    for (let i = 0; i < n; i++) {
      const logits = tf.tidy(() => {
        const xi = tf.tensor4d(x.subarray(i * 768, (i + 1) * 768), [1, 3, 16, 16]);
        const patches = net.patchEmbed.apply(xi);
        const tokens = tf.add(tf.concat([tf.reshape(net.clsToken, [1, 1, D]), patches], 1), net.posEmbed);
        let h = tf.reshape(tokens, [T, D]) as tf.Tensor2D;
        net.blocks.forEach((blk, b) => {
          h = tf.add(h, tf.mul(blk.attn.apply(blk.norm1.apply(h), 1, T), masks[b].attn[i])) as tf.Tensor2D;
          h = tf.add(h, tf.mul(blk.mlp.apply(blk.norm2.apply(h)), masks[b].mlp[i])) as tf.Tensor2D;
        });
        const cls = tf.slice(h, [0, 0], [1, D]) as tf.Tensor2D;
        return net.head.apply(net.norm.apply(cls)).arraySync()[0] as number[];
      });
      assert.ok(relError(Float32Array.from(batched[i]), Float32Array.from(logits)) < 1e-5, `sample ${i}`);
    }
    // The training entry point: draws that drop every branch of every block with a rate > 0 leave only
    // block 0 (rate 0, never dropped), i.e. the loss of a model with the later blocks removed.
    const y = Int32Array.from([0, 1, 2, 3]);
    const dropped = await model.lossAndGrads(x, [n, 3, 16, 16], y, {
      dropPath: { rate: 0.4, uniform: () => 0.99999 },
    });
    const blk0 = tf.tidy(() => {
      const xt = tf.tensor4d(x, [n, 3, 16, 16]);
      const patches = net.patchEmbed.apply(xt);
      const cls = tf.broadcastTo(net.clsToken, [n, 1, D]);
      let h = tf.reshape(tf.add(tf.concat([cls, patches], 1), net.posEmbed), [n * T, D]) as tf.Tensor2D;
      h = net.blocks[0].apply(h, n, T);
      const rows = tf.reshape(tf.slice(tf.reshape(h, [n, T, D]), [0, 0, 0], [n, 1, D]), [
        n,
        D,
      ]) as tf.Tensor2D;
      return crossEntropy(net.head.apply(net.norm.apply(rows)), tf.tensor1d(y, "int32")).dataSync()[0];
    });
    assert.ok(Math.abs(dropped.loss - blk0) < 1e-5 * blk0, `${dropped.loss} vs ${blk0}`);
    // Draws that keep everything scale every branch by 1/keep (not the eval forward); rate 0 is the eval
    // forward.
    const kept = await model.lossAndGrads(x, [n, 3, 16, 16], y, {
      dropPath: { rate: 0.4, uniform: () => 0 },
    });
    const plain = await model.lossAndGrads(x, [n, 3, 16, 16], y);
    const zero = await model.lossAndGrads(x, [n, 3, 16, 16], y, {
      dropPath: { rate: 0, uniform: () => 0.5 },
    });
    assert.notEqual(kept.loss, plain.loss);
    assert.equal(zero.loss, plain.loss);
    // Draw order: block, branch, sample; blocks at rate 0 draw nothing (timm's identity DropPath).
    let draws = 0;
    await model.lossAndGrads(x, [n, 3, 16, 16], y, {
      dropPath: { rate: 0.4, uniform: () => (draws++, 0.5) },
    });
    assert.equal(draws, (micro.depth - 1) * 2 * n);
  } finally {
    model.dispose();
  }
});
