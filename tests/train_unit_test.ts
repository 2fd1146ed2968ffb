/**
 * Optimizers against PyTorch's update rules, the lr schedules, config parsing (RandomResizedCrop's keys
 * included), subsets, per-sample augmentation of training sets, the shared training loop (hooks,
 * stop/resume, abort, freeze), and a one-update run with RandomResizedCrop.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import {
  DEFAULTS,
  mergeConfig,
  modelConfig,
  parseArgs,
  readConfigFile,
  trainAugment,
  type TrainConfig,
} from "../lib/train/config.ts";
import { applyFreeze } from "../lib/train/freeze.ts";
import { classBalancedSubset } from "../lib/data/dataset.ts";
import { initStateDict } from "../lib/train/init.ts";
import { readMetrics } from "../lib/train/metrics.ts";
import { type StepReport, trainLoop, updatesPerEpoch } from "../lib/train/loop.ts";
import { clipGradNorm, decays, Optimizer, type OptimizerName } from "../lib/train/optimizer.ts";
import { learningRate } from "../lib/train/scheduler.ts";
import { syntheticImageSet, syntheticPreprocessing } from "../lib/train/synthetic.ts";
import { train } from "../lib/train/trainer.ts";
import { createViT } from "../lib/vit/model.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { adaptForFineTuning, stateDepth } from "../lib/weights/adapt.ts";

await initBackend("cpu");

/** PyTorch's SGD (nesterov or not) and AdamW on plain arrays, step by step. */
function reference(opt: OptimizerName, p: number[], grads: number[][], lrs: number[], wd: number, mom = 0.9) {
  p = [...p];
  let buf: number[] | undefined, m = p.map(() => 0), v = p.map(() => 0);
  grads.forEach((g0, s) => {
    const lr = lrs[s], t = s + 1;
    if (opt === "adamw") {
      p = p.map((x) => x * (1 - lr * wd));
      m = m.map((x, i) => 0.9 * x + 0.1 * g0[i]);
      v = v.map((x, i) => 0.999 * x + 0.001 * g0[i] * g0[i]);
      p = p.map((x, i) =>
        x - (lr / (1 - 0.9 ** t)) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(1 - 0.999 ** t) + 1e-8)
      );
    } else {
      const g = g0.map((x, i) => x + wd * p[i]);
      buf = buf ? buf.map((b, i) => mom * b + g[i]) : [...g];
      const d = opt === "sgd" ? g.map((x, i) => x + mom * buf![i]) : buf;
      p = p.map((x, i) => x - lr * d[i]);
    }
  });
  return p;
}

for (const opt of ["sgd", "momentum", "adamw"] as const) {
  Deno.test(`${opt} matches PyTorch's update rule, with weight decay only where timm applies it`, async () => {
    const start = [0.5, -1.25, 2, 0.125];
    const grads = [[0.1, -0.2, 0.3, 0.05], [-0.4, 0.1, 0.2, 0.3], [0.25, 0.25, -0.5, 0.1]];
    const lrs = [0.1, 0.05, 0.02];
    const w = tf.variable(tf.tensor2d(start, [2, 2]));
    const b = tf.variable(tf.tensor1d(start));
    const before = tf.memory().numTensors;
    const o = new Optimizer(
      new Map<string, tf.Variable>([["blocks.0.mlp.fc1.weight", w], ["blocks.0.mlp.fc1.bias", b]]),
      new Map([["blocks.0.mlp.fc1.weight", [2, 2]], ["blocks.0.mlp.fc1.bias", [4]]]),
      { opt, momentum: 0.9, weightDecay: 0.1 },
    );
    for (const [s, g] of grads.entries()) {
      const gw = tf.tensor2d(g, [2, 2]), gb = tf.tensor1d(g);
      o.apply(
        new Map<string, tf.Tensor>([["blocks.0.mlp.fc1.weight", gw], ["blocks.0.mlp.fc1.bias", gb]]),
        lrs[s],
      );
      gw.dispose();
      gb.dispose();
    }
    const gotW = Array.from(await w.data()), gotB = Array.from(await b.data());
    const wantW = reference(opt, start, grads, lrs, 0.1), wantB = reference(opt, start, grads, lrs, 0);
    for (let i = 0; i < 4; i++) {
      assert.ok(Math.abs(gotW[i] - wantW[i]) < 1e-5, `weight[${i}] ${gotW[i]} vs ${wantW[i]}`);
      assert.ok(Math.abs(gotB[i] - wantB[i]) < 1e-5, `bias[${i}] ${gotB[i]} vs ${wantB[i]}`);
    }
    const saved = await o.state();
    assert.equal(saved.step, 3);
    o.dispose();
    assert.equal(tf.memory().numTensors, before - 0, "the optimizer left tensors behind");
    w.dispose();
    b.dispose();
  });
}

Deno.test("weight decay follows timm: none on biases, norms, pos_embed and cls_token", () => {
  assert.equal(decays("blocks.0.attn.qkv.weight", [384, 128]), true);
  assert.equal(decays("patch_embed.proj.weight", [128, 3, 8, 8]), true);
  assert.equal(decays("blocks.0.attn.qkv.bias", [384]), false);
  assert.equal(decays("norm.weight", [128]), false);
  assert.equal(decays("pos_embed", [1, 17, 128]), false);
  assert.equal(decays("cls_token", [1, 1, 128]), false);
});

Deno.test("clip_grad scales the global norm down to the limit and leaves small gradients alone", async () => {
  const grads = new Map<string, tf.Tensor>([["a", tf.tensor1d([3, 0])], ["b", tf.tensor1d([0, 4])]]);
  const norm = await clipGradNorm(grads, 1);
  assert.ok(Math.abs(norm - 5) < 1e-6);
  assert.deepEqual(Array.from(await grads.get("a")!.data()).map((x) => +x.toFixed(5)), [0.6, 0]);
  const again = await clipGradNorm(grads, 10);
  assert.ok(Math.abs(again - 1) < 1e-5, `norm after clipping ${again}`);
  assert.deepEqual(Array.from(await grads.get("b")!.data()).map((x) => +x.toFixed(5)), [0, 0.8]);
  for (const g of grads.values()) g.dispose();
});

Deno.test("lr schedules: linear warmup, then cosine / step / constant", () => {
  const o = {
    sched: "cosine" as const,
    lr: 0.1,
    totalUpdates: 110,
    warmupUpdates: 10,
    warmupLr: 0,
    minLr: 0,
    decayUpdates: 50,
    decayRate: 0.1,
  };
  assert.equal(learningRate(o, 0), 0);
  assert.ok(Math.abs(learningRate(o, 5) - 0.05) < 1e-12);
  assert.ok(Math.abs(learningRate(o, 10) - 0.1) < 1e-12);
  assert.ok(Math.abs(learningRate(o, 60) - 0.05) < 1e-12);
  assert.ok(learningRate(o, 110) < 1e-12);
  assert.ok(Math.abs(learningRate({ ...o, sched: "step" }, 65) - 0.01) < 1e-12);
  assert.equal(learningRate({ ...o, sched: "constant" }, 100), 0.1);
});

Deno.test("config: YAML with timm names, CLI overrides, clear errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/c.yml`,
      "model: vit_base_patch16_224\nbatch-size: 32\ngrad_accum_steps: 16\nopt: sgd\nlr: 0.03\nfreeze: head-only\n",
    );
    const c = await readConfigFile(`${dir}/c.yml`);
    assert.equal(c.batch_size, 32);
    assert.equal(c.grad_accum_steps, 16);
    assert.equal(c.freeze, "head-only");
    const { config, options } = parseArgs([
      "--config",
      `${dir}/c.yml`,
      "--lr=0.01",
      "--freeze",
      "blocks:4",
      "--resume",
    ]);
    assert.equal(config, `${dir}/c.yml`);
    const merged = mergeConfig(c, options, "command line");
    assert.equal(merged.lr, 0.01);
    assert.deepEqual(merged.freeze, { blocks: 4 });
    assert.equal(merged.resume, true);
    assert.equal(modelConfig(merged).embed_dim, 768);
    assert.throws(() => mergeConfig(DEFAULTS, { lr: "fast" }, "cli"), /cli: "lr" must be a number/);
    assert.throws(
      () => mergeConfig(DEFAULTS, { opt: "lamb" }, "cli"),
      /"opt" must be sgd, momentum or adamw/,
    );
    assert.throws(() => mergeConfig(DEFAULTS, { batch_sise: 3 }, "cli"), /unknown option "batch_sise"/);
    assert.throws(() => mergeConfig(DEFAULTS, { crop_pad: -2 }, "cli"), /cli: "crop_pad" must be ≥ 0/);
    assert.throws(
      () => modelConfig(mergeConfig(DEFAULTS, { model: "resnet50" }, "cli")),
      /unknown timm arch/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const RRC_KEYS = ["train_crop_mode", "scale", "ratio"] as const;

Deno.test("config: RandomResizedCrop is off by default and in every existing config", async () => {
  for (const k of RRC_KEYS) assert.equal(k in DEFAULTS, false, `DEFAULTS has ${k}`);
  assert.deepEqual(mergeConfig(DEFAULTS, {}, "none"), DEFAULTS);
  // The same augmentation object (same fields) as before RRC was configurable, so the same draws.
  assert.deepEqual(trainAugment(DEFAULTS), { crop_padding: 0, hflip: 0.5 });
  const dir = new URL("../configs/", import.meta.url).pathname;
  let seen = 0;
  for await (const f of Deno.readDir(dir)) {
    if (!f.name.endsWith(".yml")) continue;
    const c = await readConfigFile(`${dir}${f.name}`);
    for (const k of RRC_KEYS) assert.equal(k in c, false, `${f.name}: ${k} appeared`);
    // A config that turns on timm's aa/reprob adds only those fields (tests/train_regularization_test.ts).
    const { rand_augment: _ra, random_erasing: _re, ...crop } = trainAugment(c);
    assert.deepEqual(crop, { crop_padding: c.crop_pad, hflip: c.hflip }, f.name);
    seen++;
  }
  assert.ok(seen > 0, `no configs in ${dir}`);
});

Deno.test("config: RandomResizedCrop keys (timm's train_crop_mode, scale, ratio) from YAML and CLI", async () => {
  const dir = await Deno.makeTempDir();
  const merge = (raw: Record<string, unknown>, base: TrainConfig = DEFAULTS) => mergeConfig(base, raw, "cli");
  const rrcOf = (c: TrainConfig) => trainAugment(c).random_resized_crop;
  try {
    // scale alone turns RRC on, with timm's default ratio; the run's config records all three.
    await Deno.writeTextFile(`${dir}/s.yml`, "img_size: 32\nscale: [0.5, 1.0]\n");
    const s = await readConfigFile(`${dir}/s.yml`);
    assert.equal(s.train_crop_mode, "rrc");
    assert.deepEqual(s.scale, [0.5, 1]);
    assert.deepEqual(s.ratio, [3 / 4, 4 / 3]);
    assert.deepEqual(trainAugment(s), {
      crop_padding: 0,
      hflip: 0.5,
      random_resized_crop: { scale: [0.5, 1], ratio: [3 / 4, 4 / 3] },
    });
    // train_crop_mode alone: timm's defaults for both.
    await Deno.writeTextFile(`${dir}/m.yml`, "train-crop-mode: rrc\n");
    assert.deepEqual(rrcOf(await readConfigFile(`${dir}/m.yml`)), {
      scale: [0.08, 1],
      ratio: [3 / 4, 4 / 3],
    });

    // Command line over the file: timm's nargs form, comma lists, fractions, `--key=value`.
    const { options } = parseArgs(["--ratio", "3/4", "1", "--scale=0.25,0.75", "--lr", "0.01"]);
    assert.deepEqual(options, { ratio: "3/4 1", scale: "0.25,0.75", lr: "0.01" });
    const o = mergeConfig(s, options, "command line");
    assert.deepEqual(rrcOf(o), { scale: [0.25, 0.75], ratio: [0.75, 1] });
    assert.equal(o.lr, 0.01);
    // Only ratio on the command line keeps the file's scale.
    assert.deepEqual(rrcOf(merge({ ratio: "1 2" }, s)), { scale: [0.5, 1], ratio: [1, 2] });
    // A later source's none turns it off and removes the keys; so does --no-train-crop-mode.
    for (const args of [["--train-crop-mode", "none"], ["--no-train-crop-mode"]]) {
      const off = mergeConfig(s, parseArgs(args).options, "command line");
      for (const k of RRC_KEYS) assert.equal(k in off, false, `${args}: ${k} left`);
      assert.equal(rrcOf(off), undefined);
    }
    // Bare --train-crop-mode is rrc; a base with rrc stays on through unrelated overrides.
    assert.equal(merge(parseArgs(["--train-crop-mode"]).options).train_crop_mode, "rrc");
    assert.deepEqual(merge({ hflip: 0 }, s).scale, [0.5, 1]);
    // Off again and back on: the defaults, not the old values.
    assert.deepEqual(rrcOf(merge({ train_crop_mode: "rrc" }, merge({ train_crop_mode: "none" }, s))), {
      scale: [0.08, 1],
      ratio: [3 / 4, 4 / 3],
    });

    // Bad values name the key, the source and what was expected.
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ scale: [0, 1] }, /cli: "scale" must be two numbers \[lo, hi\] with 0 < lo ≤ hi ≤ 1 .*got \[0,1\]/],
      [{ scale: "0.5 1.2" }, /"scale" must be two numbers .*≤ 1.*got "0.5 1.2"/],
      [{ scale: [1, 0.5] }, /"scale" must be two numbers/],
      [{ scale: 0.5 }, /"scale" must be two numbers/],
      [{ scale: "0.1 0.5 1" }, /"scale" must be two numbers/],
      [
        { ratio: "a,b" },
        /cli: "ratio" must be two numbers \[lo, hi\] with 0 < lo ≤ hi \(timm's default \[3\/4, 4\/3\]\)/,
      ],
      [{ ratio: [2, 1] }, /"ratio" must be two numbers/],
      [{ ratio: [-1, 1] }, /"ratio" must be two numbers/],
      [{ ratio: "1/0 2" }, /"ratio" must be two numbers/],
      [
        { train_crop_mode: "rkrc" },
        /"train_crop_mode" must be rrc \(RandomResizedCrop\) or none \(timm's rkrc/,
      ],
      [{ train_crop_mode: "random" }, /"train_crop_mode" must be rrc .* got "random"/],
      [{ train_crop_mode: "none", ratio: [1, 1] }, /cli: "ratio" is a RandomResizedCrop option, but .* none/],
      [{ crop_pad: 2, scale: [0.5, 1] }, /cli: "crop_pad" \(2\) and RandomResizedCrop .* alternative/],
    ];
    for (const [raw, re] of bad) assert.throws(() => merge(raw), re, JSON.stringify(raw));
    // RRC and crop_pad: across sources too (a CIFAR config with crop_pad, RRC asked on the command line).
    const padded = merge({ crop_pad: 2 });
    assert.throws(() => merge({ scale: "0.5 1" }, padded), /"crop_pad" \(2\) and RandomResizedCrop/);
    assert.equal(merge({ scale: "0.5 1", crop_pad: 0 }, padded).train_crop_mode, "rrc");
    await Deno.writeTextFile(`${dir}/bad.yml`, "scale: [0.5, 2]\n");
    await assert.rejects(readConfigFile(`${dir}/bad.yml`), /config .*bad\.yml: "scale" must be two numbers/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A one-block model on 16 px images, for runs of a few updates on the cpu backend. */
const TINY_RUN = {
  model: { patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2 },
  img_size: 16,
  num_classes: 4,
  batch_size: 8,
  opt: "adamw",
  lr: 0.001,
  seed: 5,
  hflip: 0,
  backend: "cpu",
};

Deno.test("a one-update run with RandomResizedCrop: RRC reaches the images, the run records it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-rrc-" });
  try {
    const config = mergeConfig(DEFAULTS, {
      ...TINY_RUN,
      epochs: 1,
      scale: [0.2, 0.6],
      output: `${dir}/run`,
      max_updates: 1,
    }, "test");
    const data = syntheticImageSet(32, 24, 4, 5, syntheticPreprocessing(16));
    // The crop reaches lib/data: deterministic per (seed, epoch, id), and not the plain resize.
    const aug = { augment: trainAugment(config), seed: 5, epoch: 0 };
    const crops = await data.images([0, 1], aug);
    assert.deepEqual(crops, await data.images([0, 1], aug));
    assert.notDeepEqual(crops, await data.images([0, 1]), "RRC changed nothing");

    const tensors = tf.memory().numTensors;
    const result = await train({
      config,
      train: data,
      labels: ["a", "b", "c", "d"],
      preprocessing: syntheticPreprocessing(16),
      verbose: false,
    });
    assert.equal(tf.memory().numTensors, tensors, "training left tensors behind");
    assert.equal(result.finished, false);
    assert.equal(result.state.update, 1);
    const records = await readMetrics(`${dir}/run/metrics.jsonl`);
    const recorded = records.find((m) => m.type === "info")?.config as Partial<TrainConfig>;
    assert.deepEqual(
      [recorded.train_crop_mode, recorded.scale, recorded.ratio],
      ["rrc", [0.2, 0.6], [3 / 4, 4 / 3]],
    );
    const loss = records.find((m) => m.type === "train")?.loss as number;
    assert.ok(Number.isFinite(loss) && loss > 0, `train loss ${loss}`);
    // A resume without RRC is a different run.
    const off = mergeConfig(config, { train_crop_mode: "none", resume: true }, "test");
    await assert.rejects(
      train({
        config: off,
        train: data,
        labels: ["a", "b", "c", "d"],
        preprocessing: syntheticPreprocessing(16),
        verbose: false,
      }),
      /resume: .*different options \(train_crop_mode, scale, ratio\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("start_epoch: a fresh run picks up the schedule and the data order at that epoch", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-start-epoch-" });
  try {
    const base = {
      ...TINY_RUN,
      sched: "cosine",
      warmup_epochs: 1,
      epochs: 3,
    };
    const data = syntheticImageSet(32, 24, 4, 5, syntheticPreprocessing(16));
    const run = (extra: Record<string, unknown>) =>
      train({
        config: mergeConfig(DEFAULTS, { ...base, ...extra }, "test"),
        train: data,
        labels: ["a", "b", "c", "d"],
        preprocessing: syntheticPreprocessing(16),
        verbose: false,
      });
    const full = await run({ output: `${dir}/full` });
    const late = await run({ output: `${dir}/late`, start_epoch: 2 });
    assert.ok(full.finished && late.finished);
    const trainLines = async (d: string) =>
      (await readMetrics(`${d}/metrics.jsonl`)).filter((m) => m.type === "train");
    const [fullLines, lateLines] = [await trainLines(`${dir}/full`), await trainLines(`${dir}/late`)];
    // 32 images, batch 8: 4 updates an epoch; the late run makes only the last epoch's, at its learning
    // rates.
    assert.deepEqual(lateLines.map((m) => m.update), [9, 10, 11, 12]);
    assert.deepEqual(lateLines.map((m) => m.lr), fullLines.slice(-4).map((m) => m.lr));
    // The epoch (which seeds the data order and the augmentation) is the third.
    assert.deepEqual(lateLines.map((m) => m.epoch), fullLines.slice(-4).map((m) => m.epoch));
    assert.equal(lateLines[0].epoch, 2.25);
    assert.ok((lateLines[0].lr as number) < 0.001, "past the warm-up, into the cosine");
    const info = (await readMetrics(`${dir}/late/metrics.jsonl`)).find((m) => m.type === "info");
    assert.equal((info?.config as Partial<TrainConfig>).start_epoch, 2, "the run records it");
    const plain = (await readMetrics(`${dir}/full/metrics.jsonl`)).find((m) => m.type === "info");
    assert.equal("start_epoch" in (plain?.config as object), false, "absent unless set");
    assert.throws(
      () => mergeConfig(DEFAULTS, { ...base, start_epoch: 3 }, "test"),
      /"start_epoch" \(3\) must be below "epochs" \(3\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("subsets are class-balanced and deterministic", () => {
  const labels = Int32Array.from({ length: 1000 }, (_, i) => Math.floor(i / 100));
  const first = classBalancedSubset(labels, 100);
  assert.equal(first.length, 100);
  assert.deepEqual(Array.from(first.slice(0, 3)), [0, 1, 2]);
  const a = classBalancedSubset(labels, 50, { seed: 3 }), b = classBalancedSubset(labels, 50, { seed: 3 });
  assert.deepEqual(a, b);
  const counts = new Map<number, number>();
  for (const i of a) counts.set(labels[i], (counts.get(labels[i]) ?? 0) + 1);
  assert.deepEqual([...counts.values()], Array(10).fill(5));
});

Deno.test("training sets augment each sample by (seed, epoch, id), whatever batch it is in", async () => {
  const set = syntheticImageSet(40, 16);
  const per = 3 * 16 * 16;
  const aug = { augment: { crop_padding: 2, hflip: 0.5 }, seed: 3, epoch: 1 };
  const batch = await set.images([9, 4, 17], aug);
  for (const [row, id] of [9, 4, 17].entries()) {
    assert.deepEqual(batch.subarray(row * per, (row + 1) * per), await set.images([id], aug));
  }
  assert.notDeepEqual(batch, await set.images([9, 4, 17], { ...aug, epoch: 2 }));
  assert.notDeepEqual(batch, await set.images([9, 4, 17]), "augmentation changed nothing");
  assert.deepEqual(await set.images([9, 4, 17], { ...aug, augment: {} }), await set.images([9, 4, 17]));
});

Deno.test("trainLoop: hooks per update and epoch, stop and resume from the position, abort, freeze", async () => {
  const vit = { img_size: 8, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2, num_classes: 4 };
  const data = syntheticImageSet(20, 8, 4, 5);
  const schedule = {
    sched: "cosine" as const,
    lr: 0.05,
    totalUpdates: 12,
    warmupUpdates: 2,
    warmupLr: 0,
    minLr: 0,
    decayUpdates: 1,
    decayRate: 1,
  };
  const tensors = tf.memory().numTensors;
  const run = async (freeze: "none" | "head-only", stopAt?: number) => {
    const model = await createViT(vit, initStateDict(vit, 2));
    const trainable = applyFreeze(model, freeze);
    const vars = new Map([...model.variables].filter(([, v]) => v.trainable));
    assert.equal(vars.size, trainable);
    const optimizer = new Optimizer(vars, new Map(model.specs.map((s) => [s.name, s.shape])), {
      opt: "adamw",
      momentum: 0.9,
      weightDecay: 0.05,
    });
    const position = { epoch: 0, updateInEpoch: 0, update: 0 };
    const steps: StepReport[] = [], epochs: number[] = [];
    const options = {
      model,
      optimizer,
      data,
      pool: Array.from({ length: 18 }, (_, i) => i + 2),
      batchSize: 4,
      gradAccumSteps: 2,
      seed: 9,
      augment: { crop_padding: 1, hflip: 0.5 },
      smoothing: 0.1,
      clipGrad: 1,
      schedule,
      totalUpdates: 12,
      position,
      onStep: (s: StepReport) => {
        steps.push(s);
        return s.update === stopAt;
      },
      onEpochEnd: (e: number) => {
        epochs.push(e);
      },
    };
    const first = await trainLoop(options);
    if (stopAt !== undefined) {
      assert.deepEqual(first.stopped, true);
      assert.deepEqual(position, { epoch: 2, updateInEpoch: 1, update: stopAt });
      // Continuing from the position (the optimizer kept its state) is the uninterrupted run.
      assert.equal((await trainLoop(options)).stopped, false);
    }
    const state = await model.stateDict();
    optimizer.dispose();
    model.dispose();
    return { state, steps, epochs, position };
  };

  const straight = await run("none");
  // 18 samples, 8 per update: 2 updates an epoch, the last 2 samples dropped.
  assert.deepEqual(straight.steps.map((s) => s.update), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.deepEqual(straight.steps.map((s) => s.updateInEpoch), [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2]);
  assert.deepEqual(straight.epochs, [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(straight.position, { epoch: 6, updateInEpoch: 0, update: 12 });
  assert.ok(straight.steps.every((s) => s.images === 8 && s.gradNorm! > 0 && Number.isFinite(s.loss)));
  assert.equal(straight.steps[0].lr, 0);
  assert.equal(straight.steps[2].lr, schedule.lr);

  const resumed = await run("none", 5);
  assert.deepEqual(resumed.steps.map((s) => s.loss), straight.steps.map((s) => s.loss));
  assert.deepEqual(resumed.state, straight.state);
  assert.equal(tf.memory().numTensors, tensors, "the loop left tensors behind");

  const head = await run("head-only");
  assert.deepEqual(
    head.state.get("blocks.0.attn.qkv.weight"),
    initStateDict(vit, 2).get("blocks.0.attn.qkv.weight"),
  );
  assert.notDeepEqual(head.state.get("head.weight"), initStateDict(vit, 2).get("head.weight"));

  // An aborted signal stops the loop before the next update with its AbortError.
  const model = await createViT(vit, initStateDict(vit, 2));
  const optimizer = new Optimizer(model.variables, new Map(model.specs.map((s) => [s.name, s.shape])), {
    opt: "sgd",
    momentum: 0.9,
    weightDecay: 0,
  });
  const abort = new AbortController();
  let updates = 0;
  await assert.rejects(
    trainLoop({
      model,
      optimizer,
      data,
      batchSize: 4,
      seed: 1,
      schedule,
      totalUpdates: 12,
      position: { epoch: 0, updateInEpoch: 0, update: 0 },
      signal: abort.signal,
      onStep: () => {
        if (++updates === 2) abort.abort();
      },
    }),
    (e: Error) => e.name === "AbortError",
  );
  assert.equal(updates, 2);
  optimizer.dispose();
  model.dispose();
  assert.equal(tf.memory().numTensors, tensors, "an aborted loop left tensors behind");
});

Deno.test("updatesPerEpoch drops the last partial batch and refuses a set smaller than one batch", () => {
  assert.equal(updatesPerEpoch(50000, 128), 390);
  assert.equal(updatesPerEpoch(1024, 64, 8), 2);
  assert.throws(
    () => updatesPerEpoch(300, 64, 8),
    /the training set has 300 images, fewer than one effective batch \(512\)/,
  );
});

Deno.test("trainLoop: a non-finite loss stops it before the update touches the weights", async () => {
  const vit = { img_size: 8, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2, num_classes: 4 };
  const good = syntheticImageSet(8, 8, 4, 5);
  // The second batch's pixels are NaN, as a corrupt image or a diverged run would make them.
  let batches = 0;
  const data = {
    ...good,
    images: async (ids: ArrayLike<number>, augment?: Parameters<typeof good.images>[1]) => {
      const x = await good.images(ids, augment);
      return ++batches === 2 ? x.fill(NaN) : x;
    },
  };
  const tensors = tf.memory().numTensors;
  const model = await createViT(vit, initStateDict(vit, 2));
  const optimizer = new Optimizer(model.variables, new Map(model.specs.map((s) => [s.name, s.shape])), {
    opt: "sgd",
    momentum: 0.9,
    weightDecay: 0,
  });
  let afterFirst: Awaited<ReturnType<typeof model.stateDict>> | undefined;
  await assert.rejects(
    trainLoop({
      model,
      optimizer,
      data,
      pool: [0, 1, 2, 3, 4, 5, 6, 7],
      batchSize: 4,
      seed: 1,
      schedule: {
        sched: "constant",
        lr: 0.1,
        totalUpdates: 2,
        warmupUpdates: 0,
        warmupLr: 0,
        minLr: 0,
        decayUpdates: 1,
        decayRate: 1,
      },
      totalUpdates: 2,
      position: { epoch: 0, updateInEpoch: 0, update: 0 },
      onStep: async () => {
        afterFirst = await model.stateDict();
      },
    }),
    /the loss became NaN at update 2/,
  );
  assert.ok(afterFirst, "the first, finite update ran");
  assert.deepEqual(await model.stateDict(), afterFirst, "the NaN update changed the weights");
  optimizer.dispose();
  model.dispose();
  assert.equal(tf.memory().numTensors, tensors, "the failed loop left tensors behind");
});

Deno.test("init follows timm: unit norms, zero biases, small truncated-normal weights", () => {
  const s = initStateDict({
    img_size: 32,
    patch_size: 8,
    embed_dim: 32,
    depth: 1,
    num_heads: 2,
    num_classes: 10,
  }, 1);
  assert.ok(s.get("blocks.0.norm1.weight")!.data.every((v) => v === 1));
  assert.ok(s.get("blocks.0.mlp.fc1.bias")!.data.every((v) => v === 0));
  const w = s.get("blocks.0.attn.qkv.weight")!.data;
  assert.ok(w.every((v) => Math.abs(v) <= 0.04));
  const std = Math.sqrt(w.reduce((a, v) => a + v * v, 0) / w.length);
  assert.ok(std > 0.015 && std < 0.02, `std ${std}`);
  assert.deepEqual(
    initStateDict({ img_size: 32, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2, num_classes: 10 }, 1),
    s,
  );
});

Deno.test("trainLoop: each batch is prepared once, at most one ahead, and its timing never changes the result", async () => {
  const vit = { img_size: 8, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2, num_classes: 4 };
  const base = syntheticImageSet(24, 8, 4, 3);
  /** Trains 2 epochs × 3 updates × 2 accumulated batches; `delay(call)` ms before each batch is returned. */
  const run = async (delay: (call: number) => number, totalUpdates = 6) => {
    const calls: number[][] = [];
    const data = {
      ...base,
      images: async (ids: ArrayLike<number>, augment?: Parameters<typeof base.images>[1]) => {
        const call = calls.push(Array.from(ids));
        await new Promise((r) => setTimeout(r, delay(call)));
        return await base.images(ids, augment);
      },
    };
    const model = await createViT(vit, initStateDict(vit, 4));
    const optimizer = new Optimizer(model.variables, new Map(model.specs.map((s) => [s.name, s.shape])), {
      opt: "adamw",
      momentum: 0.9,
      weightDecay: 0.05,
    });
    const callsAtStep: number[] = [];
    await trainLoop({
      model,
      optimizer,
      data,
      batchSize: 4,
      gradAccumSteps: 2,
      seed: 11,
      augment: { hflip: 0.5, crop_padding: 1 },
      clipGrad: 1,
      schedule: {
        sched: "constant",
        lr: 0.01,
        totalUpdates,
        warmupUpdates: 0,
        warmupLr: 0,
        minLr: 0,
        decayUpdates: 1,
        decayRate: 1,
      },
      totalUpdates,
      position: { epoch: 0, updateInEpoch: 0, update: 0 },
      onStep: () => {
        callsAtStep.push(calls.length);
      },
    });
    const weights = await model.stateDict();
    optimizer.dispose();
    model.dispose();
    return { calls, callsAtStep, weights };
  };
  const quick = await run(() => 0);
  // Slow batches, unevenly: the prefetched one is often still being prepared when the step ends.
  const slow = await run((call) => (call % 3) * 15);
  for (const r of [quick, slow]) {
    // 6 batches an epoch, each asked for once; an epoch's batches cover its 24 samples once each.
    assert.equal(r.calls.length, 12);
    for (const epoch of [0, 1]) {
      const ids = r.calls.slice(6 * epoch, 6 * epoch + 6).flat().sort((a, b) => a - b);
      assert.deepEqual(ids, Array.from({ length: 24 }, (_, i) => i));
    }
    // By each update's end at most the epoch's next batch has been asked for (the prefetch runs no further).
    assert.ok(r.callsAtStep.every((c, u) => c <= [3, 5, 6, 9, 11, 12][u]), `${r.callsAtStep}`);
  }
  assert.deepEqual(slow.calls, quick.calls);
  for (const [name, t] of quick.weights) {
    assert.deepEqual(slow.weights.get(name)!.data, t.data, `${name} differs with slower batches`);
  }
  // Stopping within an epoch (update 4 = the second epoch's first): its 2 batches, none prepared past them.
  const short = await run((call) => (call % 3) * 15, 4);
  await new Promise((r) => setTimeout(r, 50)); // a prefetch starts a macrotask later: let one show
  assert.deepEqual(short.calls, quick.calls.slice(0, 8));
});

Deno.test("a deeper model grown from a checkpoint: added blocks are identities, so the logits are unchanged", async () => {
  const shallow = { img_size: 8, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2, num_classes: 4 };
  const deep = { ...shallow, depth: 3 };
  const state = initStateDict(shallow, 2), fresh = initStateDict(deep, 5);
  // A trained head, so that the logits depend on every block.
  const head = state.get("head.weight")!;
  head.data.forEach((_, i) => head.data[i] = Math.sin(i));
  const { state: grown, changes } = adaptForFineTuning(state, resolveConfig(deep), { fresh });
  assert.deepEqual(changes.blocks_added, { from: 1, to: 3, init: "identity" });
  assert.equal(grown.get("blocks.0.attn.qkv.weight"), state.get("blocks.0.attn.qkv.weight"));
  assert.equal(grown.get("blocks.2.mlp.fc1.weight"), fresh.get("blocks.2.mlp.fc1.weight"));
  for (const name of ["blocks.1.attn.proj.weight", "blocks.2.mlp.fc2.bias"]) {
    assert.ok(grown.get(name)!.data.every((v) => v === 0), `${name} is zero`);
    assert.ok(fresh.get(name)!.data.some((v) => v !== 0) || name.endsWith("bias"), "the fresh one was not");
  }
  assert.equal(stateDepth(state), 1, "the input is not modified");

  const tensors = tf.memory().numTensors;
  const x = Float32Array.from({ length: 2 * 3 * 8 * 8 }, (_, i) => Math.cos(i * 0.37));
  const [a, b] = [await createViT(shallow, state), await createViT(deep, grown)];
  const [la, lb] = [await a.logits(x, [2, 3, 8, 8]), await b.logits(x, [2, 3, 8, 8])];
  a.dispose();
  b.dispose();
  assert.ok(la.some((v) => v !== 0));
  assert.deepEqual(Array.from(lb), Array.from(la));
  assert.equal(tf.memory().numTensors, tensors);

  assert.throws(
    () => adaptForFineTuning(grown, resolveConfig(shallow)),
    /3 blocks, the model 1: blocks are never dropped/,
  );
  assert.throws(
    () => adaptForFineTuning(state, resolveConfig(deep)),
    /1 blocks, the model 3: no weights for the others/,
  );
});
