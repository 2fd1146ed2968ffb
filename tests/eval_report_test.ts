/** Evaluation metrics (top-1/top-5, confusion, per-class), the Markdown report and the SVG charts. */
import assert from "node:assert/strict";
import { initBackend } from "../lib/backend/backend.ts";
import { evaluate } from "../lib/train/evaluate.ts";
import { classBalancedSubset } from "../lib/data/dataset.ts";
import type { ImageSet } from "../lib/data/image_set.ts";
import { initStateDict } from "../lib/train/init.ts";
import { confusionSvg, curvesSvg } from "../lib/train/plot.ts";
import { confusionText, evalReport } from "../lib/train/report.ts";
import { syntheticImageSet } from "../lib/train/synthetic.ts";
import { createViT } from "../lib/vit/model.ts";
import type { ModelManifest } from "../lib/weights/manifest.ts";

await initBackend("cpu");

const VIT = { img_size: 16, patch_size: 8, embed_dim: 16, depth: 1, num_heads: 2, num_classes: 10 };

Deno.test("evaluate: metrics agree with each other and with the logits", async () => {
  const model = await createViT(VIT, initStateDict(VIT, 5));
  const set: ImageSet = syntheticImageSet(60, 16);
  const r = await evaluate(model, set, { batchSize: 25 });
  const x = await set.images(Array.from({ length: 60 }, (_, i) => i));
  const logits = await model.logits(x, [60, 3, 16, 16]);
  model.dispose();
  let correct = 0;
  for (let i = 0; i < 60; i++) {
    const row = Array.from(logits.subarray(i * 10, i * 10 + 10));
    if (row.indexOf(Math.max(...row)) === set.labels[i]) correct++;
  }
  assert.equal(r.n, 60);
  assert.equal(r.top1, correct / 60);
  assert.ok(r.top5 >= r.top1);
  assert.equal(r.confusion.reduce((a, b) => a + b, 0), 60);
  let diag = 0;
  for (let k = 0; k < 10; k++) diag += r.confusion[k * 10 + k];
  assert.equal(diag, correct);
  assert.ok(
    Math.abs(r.perClass.reduce((a, b) => a + b, 0) / 10 - r.top1) < 1e-9,
    "balanced set: mean per-class = top-1",
  );
  assert.ok(r.loss > 0 && Number.isFinite(r.loss));
  // A subset of 20 takes the first 2 of each class.
  assert.deepEqual(Array.from(classBalancedSubset(set.labels, 20)), Array.from({ length: 20 }, (_, i) => i));
});

Deno.test("report: results beside the paper's 98.13% and the re-run's 96.9%, data and backend named", () => {
  const labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
  const confusion = new Int32Array(100);
  for (let k = 0; k < 10; k++) {
    confusion[k * 10 + k] = 8;
    confusion[k * 10 + ((k + 1) % 10)] = 2;
  }
  const manifest = {
    vit: { ...VIT, img_size: 32 },
    labels,
    dtype: "float16",
    source: { file: "trained from scratch by deno task train" },
    preprocessing: {
      img_size: 32,
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
      interpolation: "bicubic",
      crop_pct: 1,
    },
    weightsManifest: [{ paths: [], weights: [{ name: "w", shape: [10, 10], dtype: "float32" }] }],
    extra: { training: { epochs: 3, updates: 1170, seconds: 3600, config: { lr: 0.001 } } },
  } as unknown as ModelManifest;
  const result = {
    n: 100,
    top1: 0.8,
    top5: 1,
    loss: 0.7,
    confusion,
    perClass: Array(10).fill(0.8),
    imgPerSec: 100,
  };
  const context = {
    model: "weights",
    manifest,
    dataName: "CIFAR-10 (JPEG copy)",
    split: "test",
    backend: "wasm",
    command: "deno task eval --model weights --data data",
    confusionSvg: "x_confusion.svg",
    seconds: 12,
    date: "2026-01-01 00:00 UTC",
  };
  const md = evalReport(result, context);
  assert.match(md, /\*\*80\.00%\*\*/);
  assert.match(md, /98\.13%/);
  assert.match(md, /96\.90%/);
  assert.match(md, /CIFAR-10 \(JPEG copy\)/);
  assert.match(md, /\| backend \| wasm \|/);
  assert.match(md, /lossy/);
  assert.match(md, /3 epochs, 1170 optimizer updates, 60\.0 min/);
  // The export of a run that max_updates stopped, and a finished run placed by start_epoch.
  const trainedAs = (training: unknown) =>
    evalReport(result, { ...context, manifest: { ...manifest, extra: { training } } as ModelManifest });
  assert.match(
    trainedAs({
      stopped_at: { epoch: 6, update: 2106, seconds: 7200 },
      config: { epochs: 20, start_epoch: 3 },
    }),
    /stopped by `max_updates` at optimizer update 2106, 6 of 20 epochs done \(this run from epoch 4, start_epoch\): 120\.0 min/,
  );
  assert.match(
    trainedAs({ epochs: 20, updates: 7020, seconds: 60, config: { epochs: 20, start_epoch: 6 } }),
    /20 epochs, 7020 optimizer updates \(this run from epoch 7, start_epoch\), 1\.0 min/,
  );
  assert.match(md, /\| airplane \| \*\*8\*\* \| 2 \| 0 /);
  assert.match(md, /!\[confusion matrix\]\(x_confusion\.svg\)/);
  const svg = confusionSvg(confusion, labels);
  assert.match(svg, /^<svg[^>]*xmlns/);
  assert.equal((svg.match(/<rect /g) ?? []).length, 101);
  assert.match(confusionText(confusion, labels).split("\n")[1], /^airplane\s+8\s+2\s+0/);
});

Deno.test("curves: an SVG with the train loss and eval accuracy series", () => {
  const svg = curvesSvg([
    { type: "train", epoch: 0.5, loss: 2.1 },
    { type: "train", epoch: 1, loss: 1.8 },
    { type: "eval", epoch: 1, loss: 1.7, top1: 0.4, top5: 0.9 },
  ]);
  assert.match(svg, /^<svg/);
  assert.equal((svg.match(/<path /g) ?? []).length, 4);
  assert.match(svg, /top-1/);
});
