/**
 * Frozen work done once (lib/train/frozen_cache.ts), on wasm with its default threads: a cached session
 * (head-only, blocks:1) ends with the weights of an uncached one for the same seed, computes each view's
 * prefix once, leaves no tensor behind; a changed base model or changed input never meets a stale entry,
 * in memory or on disk; augmentation beyond a flip turns caching off.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import type { Freeze } from "../lib/train/config.ts";
import { setUpTraining } from "../lib/train/freeze.ts";
import { cacheableAugment, FrozenPrefixCache } from "../lib/train/frozen_cache.ts";
import { initStateDict } from "../lib/train/init.ts";
import { trainLoop } from "../lib/train/loop.ts";
import { syntheticImageSet } from "../lib/train/synthetic.ts";
import type { ViTConfig } from "../lib/vit/config.ts";
import { createViT, type ViTModel } from "../lib/vit/model.ts";
import type { StateDict } from "../lib/vit/params.ts";

await initBackend("wasm");

const CONFIG: ViTConfig = {
  img_size: 16,
  patch_size: 4,
  embed_dim: 32,
  depth: 2,
  num_heads: 2,
  num_classes: 4,
  qkv_bias: true,
};
const data = syntheticImageSet(48, 16, 4, 3);

/** Trains 3 epochs from the same weights and seed; returns the final weights and the cache, if any. */
async function session(freeze: Freeze, cached: boolean, state: StateDict) {
  const model = await createViT(CONFIG, state);
  const augment = { hflip: 0.5 };
  const setup = await setUpTraining(model, {
    freeze,
    optimizer: { opt: "sgd", momentum: 0.9, weightDecay: 0 },
    augment,
    cache: cached ? {} : false,
  });
  try {
    assert.equal(setup.prefixCache !== undefined, cached);
    await trainLoop({
      model,
      optimizer: setup.optimizer,
      ...(setup.prefixCache ? { prefixCache: setup.prefixCache } : {}),
      data,
      batchSize: 8,
      seed: 11,
      augment,
      smoothing: 0.1,
      schedule: {
        sched: "cosine",
        lr: 0.05,
        totalUpdates: 18,
        warmupUpdates: 0,
        warmupLr: 0,
        minLr: 0,
        decayUpdates: 1,
        decayRate: 1,
      },
      totalUpdates: 18,
      position: { epoch: 0, updateInEpoch: 0, update: 0 },
    });
    return { weights: await model.stateDict(), stats: setup.prefixCache?.stats, note: setup.note };
  } finally {
    setup.optimizer.dispose();
    model.dispose();
  }
}

for (const freeze of ["head-only", { blocks: 1 }] as Freeze[]) {
  const label = typeof freeze === "string" ? freeze : `blocks:${freeze.blocks}`;
  Deno.test(`freeze ${label}: a cached session ends with the uncached session's weights (1e-6)`, async () => {
    const state = initStateDict(CONFIG, 5);
    const before = tf.memory().numTensors;
    const plain = await session(freeze, false, state);
    const cached = await session(freeze, true, state);
    assert.equal(tf.memory().numTensors, before, "tensors left behind");
    assert.match(cached.note, /computed once per view and cached/);
    // 48 images, each seen 3 times with or without its flip: at most 2 × 48 prefixes computed.
    const s = cached.stats!;
    assert.equal(s.hits + s.misses, 48 * 3);
    assert.ok(s.misses <= 96 && s.hits >= 48, `hits ${s.hits}, misses ${s.misses}`);
    let worst = 0;
    for (const [name, t] of plain.weights) {
      const u = cached.weights.get(name)!;
      for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - u.data[i]));
    }
    assert.ok(worst <= 1e-6, `largest weight difference ${worst}`);
    // The frozen part did not move, and the head did.
    const init = state.get("blocks.0.attn.qkv.weight")!.data;
    assert.deepEqual(cached.weights.get("blocks.0.attn.qkv.weight")!.data, init);
    assert.notDeepEqual(cached.weights.get("head.weight")!.data, state.get("head.weight")!.data);
  });
}

Deno.test("a changed base model or input never meets a stale entry, in memory or on disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-frozen-cache-" });
  try {
    const a = initStateDict(CONFIG, 5);
    const b: StateDict = new Map(a);
    const qkv = a.get("blocks.0.attn.qkv.weight")!;
    const changed = qkv.data.slice();
    changed[7] += 1e-3;
    b.set("blocks.0.attn.qkv.weight", { shape: qkv.shape, data: changed });
    const ids = [0, 1, 2, 3];
    const x = await data.images(ids);
    const shape = [4, ...data.shape];

    const open = async (state: StateDict, memoryBytes: number) => {
      const model = await createViT(CONFIG, state);
      await setUpTraining(model, {
        freeze: "head-only",
        optimizer: { opt: "sgd", momentum: 0, weightDecay: 0 },
        cache: false,
      });
      return { model, cache: (await FrozenPrefixCache.create(model, { dir, memoryBytes }))! };
    };
    // Model A with no memory budget: everything goes to disk.
    const A = await open(a, 0);
    const fromA = await A.cache.prefixes(ids, x, shape);
    assert.equal(A.cache.stats.diskEntries, 4);
    // A again in a fresh cache: read back from disk, identical.
    const A2 = await open(a, 0);
    assert.deepEqual(await A2.cache.prefixes(ids, x, shape), fromA);
    assert.equal(A2.cache.stats.hits, 4);
    // Model B (one prefix weight changed), same folder: no hit, and B's own outputs.
    const B = await open(b, 0);
    assert.notEqual(B.cache.modelKey, A.cache.modelKey);
    const fromB = await B.cache.prefixes(ids, x, shape);
    assert.equal(B.cache.stats.hits, 0);
    assert.deepEqual(fromB, await B.model.prefixOutputs(x, shape, B.cache.split));
    assert.notDeepEqual(fromB, fromA);
    // A changed input (another preprocessing would change the bytes so): a miss, not A's entry.
    const y = x.slice();
    y[0] += 0.01;
    await A2.cache.prefixes([0], y.subarray(0, x.length / 4), [1, ...data.shape]);
    assert.equal(A2.cache.stats.misses, 1);
    for (const m of [A, A2, B]) m.model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("caching is off when augmentation makes nearly every view new; nothing frozen, no cache", async () => {
  assert.ok(cacheableAugment(undefined));
  assert.ok(cacheableAugment({ hflip: 0.5 }));
  assert.ok(cacheableAugment({ hflip: 0.5, crop_padding: 0 }));
  assert.ok(!cacheableAugment({ crop_padding: 4 }));
  assert.ok(!cacheableAugment({ random_resized_crop: true }));
  const model = await createViT(CONFIG, initStateDict(CONFIG, 5));
  try {
    const off = await setUpTraining(model, {
      freeze: "head-only",
      optimizer: { opt: "sgd", momentum: 0, weightDecay: 0 },
      augment: { crop_padding: 2 },
    });
    assert.equal(off.prefixCache, undefined);
    assert.match(off.note, /cache off: the augmentation makes nearly every view new/);
    off.optimizer.dispose();
    const none = await setUpTraining(model, {
      freeze: "none",
      optimizer: { opt: "sgd", momentum: 0, weightDecay: 0 },
    });
    assert.equal(none.prefixCache, undefined);
    assert.equal(none.note, "");
    assert.equal(model.frozenSplit(), -1);
    none.optimizer.dispose();
  } finally {
    model.dispose();
  }
});

Deno.test("on the onnx engine the frozen prefix runs on ONNX Runtime, matches tfjs's, and is keyed apart", async () => {
  const state = initStateDict(CONFIG, 5);
  const ids = [0, 1, 2];
  const x = await data.images(ids);
  const shape = [3, ...data.shape];
  const headOnly = async (model: ViTModel) => {
    const setup = await setUpTraining(model, {
      freeze: "head-only",
      optimizer: { opt: "sgd", momentum: 0, weightDecay: 0 },
    });
    setup.optimizer.dispose();
    return setup.prefixCache!;
  };
  const tfjs = await createViT(CONFIG, state);
  const want = [await tfjs.prefixOutputs(x, shape, 1), await tfjs.prefixOutputs(x, shape, 3)];
  const tfjsKey = (await headOnly(tfjs)).modelKey;
  tfjs.dispose();
  const info = await initBackend("onnx");
  try {
    const model = await createViT(CONFIG, state);
    try {
      assert.ok(model.onOnnx, `engine ${info.engine}`);
      for (const [i, split] of [1, 3].entries()) {
        const got = await model.prefixOutputs(x, shape, split);
        assert.equal(got.length, want[i].length);
        let worst = 0;
        for (let j = 0; j < got.length; j++) worst = Math.max(worst, Math.abs(got[j] - want[i][j]));
        assert.ok(worst < 1e-4, `split ${split}: largest difference ${worst}`);
      }
      // Same weights, other engine: another key, so a tfjs-computed entry never stands in for ONNX Runtime's.
      assert.notEqual((await headOnly(model)).modelKey, tfjsKey);
    } finally {
      model.dispose();
    }
  } finally {
    await initBackend("wasm");
  }
});
