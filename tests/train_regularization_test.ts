/**
 * timm's regularisation keys in the training config and the trainer: parsing from YAML and the command
 * line, errors naming the key, defaults that record nothing (old configs resume as before), the model EMA,
 * and runs with every key on that are deterministic per seed and export the EMA.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import {
  DEFAULTS,
  mergeConfig,
  parseArgs,
  REGULARIZATION_DEFAULTS,
  sessionConfig,
  trainAugment,
  trainEmaDecay,
  trainMixup,
  trainRecipe,
} from "../lib/train/config.ts";
import { ModelEma } from "../lib/train/ema.ts";
import { loadLatestCheckpoint } from "../lib/train/checkpoint.ts";
import { readMetrics } from "../lib/train/metrics.ts";
import { syntheticImageSet, syntheticPreprocessing } from "../lib/train/synthetic.ts";
import { train } from "../lib/train/trainer.ts";
import { createViT } from "../lib/vit/model.ts";
import { loadWeights } from "../lib/weights/load.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";

await initBackend("cpu");

const KEYS = Object.keys(REGULARIZATION_DEFAULTS);

Deno.test("config: the regularisation keys are off by default and record nothing at timm's defaults", () => {
  for (const k of KEYS) assert.equal(k in DEFAULTS, false, `DEFAULTS has ${k}`);
  const c = mergeConfig(DEFAULTS, {
    mixup: 0,
    cutmix: 0,
    mixup_prob: 1,
    mixup_switch_prob: 0.5,
    mixup_mode: "batch",
    aa: "none",
    reprob: 0,
    remode: "pixel",
    recount: 1,
    drop_path: 0,
    model_ema: false,
    model_ema_decay: 0.9998,
  }, "test");
  assert.deepEqual(c, DEFAULTS, "keys at their defaults changed the recorded config");
  assert.equal(trainMixup(c), undefined);
  assert.equal(trainEmaDecay(c), undefined);
  assert.deepEqual(trainAugment(c), trainAugment(DEFAULTS));
  assert.deepEqual(Object.keys(trainAugment(c)).sort(), ["crop_padding", "hflip"]);
});

Deno.test("config: every key from the command line (timm's flags) and YAML, mapped to lib/data and lib/train", () => {
  const { options } = parseArgs([
    "--mixup",
    "0.8",
    "--cutmix=1",
    "--mixup-prob",
    "0.9",
    "--mixup-switch-prob",
    "0.3",
    "--mixup-mode",
    "pair",
    "--aa",
    "rand-m9-mstd0.5-inc1",
    "--reprob",
    "0.25",
    "--remode",
    "const",
    "--recount",
    "2",
    "--drop-path",
    "0.1",
    "--model-ema",
    "--model-ema-decay",
    "0.99",
    "--smoothing",
    "0.1",
  ]);
  const c = mergeConfig(DEFAULTS, options, "command line");
  assert.deepEqual(
    [c.mixup, c.cutmix, c.mixup_prob, c.mixup_switch_prob, c.mixup_mode, c.aa, c.reprob, c.remode, c.recount],
    [0.8, 1, 0.9, 0.3, "pair", "rand-m9-mstd0.5-inc1", 0.25, "const", 2],
  );
  assert.deepEqual([c.drop_path, c.model_ema, c.model_ema_decay], [0.1, true, 0.99]);
  assert.deepEqual(trainMixup(c), {
    mixupAlpha: 0.8,
    cutmixAlpha: 1,
    prob: 0.9,
    switchProb: 0.3,
    mode: "pair",
    labelSmoothing: 0.1,
    numClasses: 10,
  });
  assert.equal(trainEmaDecay(c), 0.99);
  const aug = trainAugment(c);
  assert.equal(aug.rand_augment?.magnitude, 9);
  assert.equal(aug.rand_augment?.increasing, true);
  assert.deepEqual(aug.random_erasing, { prob: 0.25, mode: "const", count: 2 });
  // YAML spellings; a later source turns EMA off again (and records nothing).
  const y = mergeConfig(DEFAULTS, { "model-ema": true, "drop-path": 0.2, reprob: 0.5 }, "config x.yml");
  assert.deepEqual([y.model_ema, y.drop_path, y.reprob, y.remode], [true, 0.2, 0.5, undefined]);
  assert.deepEqual(trainAugment(y).random_erasing, { prob: 0.5, mode: "pixel", count: 1 });
  assert.equal(trainEmaDecay(y), 0.9998);
  const off = mergeConfig(y, parseArgs(["--no-model-ema"]).options, "command line");
  assert.equal("model_ema" in off, false);
});

Deno.test("config: bad regularisation values are errors naming the key and what it takes", () => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ mixup: -1 }, /cli: "mixup" must be ≥ 0/],
    [{ cutmix: "lots" }, /cli: "cutmix" must be a number/],
    [{ mixup_prob: 1.5 }, /cli: "mixup_prob" must be in \[0, 1\]/],
    [{ mixup_switch_prob: -0.1 }, /"mixup_switch_prob" must be in \[0, 1\]/],
    [{ mixup_mode: "row" }, /cli: "mixup_mode" must be batch, pair or elem, got "row"/],
    [{ aa: "original-mstd0.5" }, /cli: "aa" must be a RandAugment string that is not a RandAugment string/],
    [{ aa: "rand-m9-q2" }, /cli: "aa" must be .*unknown section "q2"/],
    [{ reprob: 2 }, /cli: "reprob" must be in \[0, 1\]/],
    [{ remode: "zeros" }, /cli: "remode" must be const, rand or pixel/],
    [{ recount: 0 }, /cli: "recount" must be positive/],
    [{ drop_path: 1 }, /cli: "drop_path" must be a number in \[0, 1\)/],
    [{ model_ema: "maybe" }, /cli: "model_ema" must be true or false/],
    [{ model_ema_decay: 1 }, /cli: "model_ema_decay" must be a number in \[0, 1\)/],
    [{ mixup: 0.8, batch_size: 7 }, /cli: mixup\/cutmix .* "batch_size" must be even \(got 7\)/],
  ];
  for (const [raw, re] of bad) {
    assert.throws(() => mergeConfig(DEFAULTS, raw, "cli"), re, JSON.stringify(raw));
  }
});

Deno.test("model EMA: ema ← ema + (1 − decay)·(weights − ema) per update, as timm's ModelEmaV3 (lerp)", async () => {
  const micro = { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3 };
  const model = await createViT(micro, formulaStateDict(micro, 1));
  const ema = await ModelEma.create(model, 0.9);
  try {
    const before = await model.stateDict();
    const w = model.variables.get("head.bias")!;
    w.assign(tf.tidy(() => tf.add(w, 1)));
    ema.update(model);
    const after = (await ema.stateDict()).get("head.bias")!.data;
    const b0 = before.get("head.bias")!.data;
    for (let i = 0; i < after.length; i++) {
      assert.ok(Math.abs(after[i] - (0.9 * b0[i] + 0.1 * (b0[i] + 1))) < 1e-6);
    }
    // Untouched tensors stay equal to the model's.
    assert.deepEqual((await ema.stateDict()).get("cls_token"), before.get("cls_token"));
    await assert.rejects(ModelEma.create(model, 1), /model_ema_decay: expected a number in \[0, 1\)/);
  } finally {
    ema.dispose();
    model.dispose();
  }
});

const RUN = {
  model: { patch_size: 4, embed_dim: 16, depth: 3, num_heads: 2 },
  img_size: 16,
  num_classes: 4,
  batch_size: 8,
  opt: "adamw",
  lr: 0.002,
  epochs: 2,
  seed: 5,
  smoothing: 0.1,
  hflip: 0.5,
  crop_pad: 2,
  mixup: 0.8,
  cutmix: 1,
  mixup_mode: "elem",
  aa: "rand-m9-mstd0.5-inc1",
  reprob: 0.25,
  drop_path: 0.2,
  model_ema: true,
  model_ema_decay: 0.9,
  backend: "cpu",
};

async function runOnce(dir: string, extra: Record<string, unknown> = {}) {
  const config = mergeConfig(DEFAULTS, { ...RUN, output: dir, ...extra }, "test");
  const data = syntheticImageSet(48, 16, 4, 5, syntheticPreprocessing(16));
  const val = syntheticImageSet(16, 16, 4, 6, syntheticPreprocessing(16));
  const tensors = tf.memory().numTensors;
  const result = await train({
    config,
    train: data,
    val,
    labels: ["a", "b", "c", "d"],
    preprocessing: syntheticPreprocessing(16),
    verbose: false,
  });
  assert.equal(tf.memory().numTensors, tensors, "training left tensors behind");
  return result;
}

Deno.test("a run with every key on: deterministic per seed, EMA evaluated each epoch, checkpointed and exported", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-reg-" });
  try {
    const a = await runOnce(`${dir}/a`);
    await runOnce(`${dir}/b`);
    await runOnce(`${dir}/c`, { seed: 6 });
    assert.equal(a.finished, true);
    const weights = async (o: string) => (await loadWeights(`${o}/final`)).state;
    const wa = await weights(`${dir}/a`), wb = await weights(`${dir}/b`), wc = await weights(`${dir}/c`);
    for (const [name, t] of wa) {
      assert.deepEqual(wb.get(name)!.data, t.data, `${name} differs between two runs`);
    }
    assert.notDeepEqual(wc.get("head.weight")!.data, wa.get("head.weight")!.data, "the seed changed nothing");
    // The export is the EMA: the last checkpoint's ema.safetensors, not its raw weights.
    const ck = (await loadLatestCheckpoint(`${dir}/a`))!;
    assert.equal(
      ck.trainer.trainWorkers,
      1,
      "the checkpoint records the isolates the steps ran on (cpu: one)",
    );
    assert.ok(ck.ema, "the checkpoint has no EMA");
    assert.deepEqual(wa.get("head.weight")!.data, ck.ema.get("head.weight")!.data);
    assert.notDeepEqual(wa.get("head.weight")!.data, ck.state.get("head.weight")!.data);
    const records = await readMetrics(`${dir}/a/metrics.jsonl`);
    assert.equal(records.filter((r) => r.type === "eval").length, 2);
    assert.equal(records.filter((r) => r.type === "eval_ema").length, 2);
    const info = records.find((r) => r.type === "info")!;
    assert.equal((info.config as Record<string, unknown>).aa, "rand-m9-mstd0.5-inc1");
    assert.match(String(info.exported_weights), /EMA of the weights \(model_ema, decay 0\.9\)/);
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/a/final/model.json`));
    assert.match(JSON.stringify(manifest), /EMA of the weights \(decay 0\.9\)/);
    // A resume with a key changed is a different run.
    await assert.rejects(
      runOnce(`${dir}/a`, { resume: true, drop_path: 0.1, epochs: 3 }),
      /resume: .*different options \(drop_path\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("model EMA on the onnx engine: the average keeps tfjs Variables and answers logits there", async () => {
  await initBackend("onnx");
  const micro = { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3 };
  const model = await createViT(micro, formulaStateDict(micro, 1));
  const ema = await ModelEma.create(model, 0.5);
  try {
    assert.equal(ema.model.onOnnx, true);
    const w = model.variables.get("head.bias")!;
    w.assign(tf.tidy(() => tf.add(w, 2)));
    ema.update(model);
    const x = new Float32Array(2 * 3 * 64).fill(0.1);
    const raw = await model.logits(x, [2, 3, 8, 8]), avg = await ema.model.logits(x, [2, 3, 8, 8]);
    // Only the head bias moved: the EMA's logits sit halfway (decay 0.5) between the old and new ones.
    for (let i = 0; i < raw.length; i++) {
      assert.ok(Math.abs(raw[i] - avg[i] - 1) < 1e-5, `${raw[i]} vs ${avg[i]}`);
    }
  } finally {
    ema.dispose();
    model.dispose();
    await initBackend("cpu");
  }
});

Deno.test("a fine-tuning session's recipe: timm's keys over the session's base, others refused", () => {
  const base = { batch_size: 8, num_classes: 3, hflip: 0.5 };
  const plain = trainRecipe(sessionConfig({}, base, "request"));
  assert.deepEqual(plain.augment, { crop_padding: 0, hflip: 0.5 });
  assert.equal(plain.smoothing, 0);
  assert.equal(plain.mixup, undefined);
  assert.equal(plain.varies, undefined);
  const r = trainRecipe(sessionConfig(
    {
      smoothing: 0.1,
      hflip: 0,
      crop_pad: 2,
      mixup: 0.8,
      cutmix: 1,
      mixup_mode: "pair",
      aa: "rand-m9-mstd0.5",
      reprob: 0.25,
      drop_path: 0.1,
    },
    base,
    "request",
  ));
  assert.equal(r.smoothing, 0.1);
  assert.equal(r.dropPath, 0.1);
  assert.equal(r.augment.hflip, 0);
  assert.equal(r.augment.crop_padding, 2);
  assert.ok(r.augment.rand_augment);
  assert.equal(r.augment.random_erasing?.prob, 0.25);
  assert.deepEqual(
    [r.mixup?.mixupAlpha, r.mixup?.cutmixAlpha, r.mixup?.mode, r.mixup?.numClasses, r.mixup?.labelSmoothing],
    [0.8, 1, "pair", 3, 0.1],
  );
  assert.ok(r.varies);
  assert.throws(
    () => sessionConfig({ lr: 0.1 }, base, "request"),
    /request: "lr" is not a fine-tuning session option/,
  );
  assert.throws(() => sessionConfig({ model_ema: true }, base, "request"), /"model_ema"/);
  assert.throws(() => sessionConfig({ reprob: 2 }, base, "request"), /reprob/);
});
