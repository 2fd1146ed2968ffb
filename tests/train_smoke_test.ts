/**
 * One epoch of training on a small real subset of CIFAR-10 (JPEG copy) lowers the loss, leaves no tensor
 * behind, and writes metrics, curves, checkpoints and a loadable final model.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { DEFAULTS, mergeConfig } from "../lib/train/config.ts";
import { evaluate } from "../lib/train/evaluate.ts";
import { openImageFolder } from "../lib/data/image_folder.ts";
import { datasetImageSet } from "../lib/data/image_set.ts";
import { initStateDict } from "../lib/train/init.ts";
import { readMetrics } from "../lib/train/metrics.ts";
import { train } from "../lib/train/trainer.ts";
import { createViT } from "../lib/vit/model.ts";
import { loadModel } from "../lib/weights/load.ts";
import type { Preprocessing } from "../lib/weights/manifest.ts";
import { CIFAR_JPEG, present } from "./_fixtures.ts";

const have = present(`${CIFAR_JPEG}/test.tar.gz`, "training smoke test");

Deno.test({
  name: "one epoch on 200 CIFAR-10 images lowers the loss, with flat tensor memory",
  ignore: !have,
  async fn() {
    await initBackend("wasm");
    const dir = await Deno.makeTempDir({ prefix: "vit-smoke-" });
    try {
      const tar = new Deno.Command("tar", {
        args: ["xzf", `${CIFAR_JPEG}/test.tar.gz`, "-C", dir, "--wildcards", "test/*/00[01]?.jpg"],
      });
      const r = await tar.output();
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      const pre: Preprocessing = {
        img_size: 32,
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.247, 0.2435, 0.2616],
        interpolation: "bicubic",
        crop_pct: 1,
      };
      const folder = await openImageFolder(`${dir}/test`);
      const data = { set: datasetImageSet(folder, pre), classes: [...folder.classes] };
      assert.equal(data.set.size, 200);
      const config = mergeConfig(DEFAULTS, {
        model: { patch_size: 8, embed_dim: 48, depth: 2, num_heads: 3 },
        img_size: 32,
        num_classes: 10,
        batch_size: 20,
        opt: "adamw",
        lr: 0.002,
        weight_decay: 0.05,
        epochs: 1,
        smoothing: 0,
        clip_grad: 1,
        hflip: 0,
        seed: 3,
        output: `${dir}/run`,
        checkpoint_every: 5,
        backend: "wasm",
      }, "smoke");
      const vit = { img_size: 32, patch_size: 8, embed_dim: 48, depth: 2, num_heads: 3, num_classes: 10 };
      const before = await createViT(vit, initStateDict(vit, 3));
      const lossBefore = (await evaluate(before, data.set)).loss;
      before.dispose();

      const tensors = tf.memory().numTensors;
      const result = await train({
        config,
        train: data.set,
        val: data.set,
        labels: data.classes,
        preprocessing: pre,
        verbose: false,
      });
      assert.equal(tf.memory().numTensors, tensors, "training left tensors behind");
      assert.ok(result.finished);
      const lossAfter = result.lastEval!.loss;
      assert.ok(lossAfter < lossBefore - 0.02, `loss ${lossBefore.toFixed(4)} → ${lossAfter.toFixed(4)}`);

      const records = await readMetrics(`${dir}/run/metrics.jsonl`);
      assert.ok(records.some((m) => m.type === "train") && records.some((m) => m.type === "eval"));
      assert.match(await Deno.readTextFile(`${dir}/run/curves.svg`), /^<svg/);
      const { model, manifest } = await loadModel(`${dir}/run/final`);
      assert.deepEqual(manifest.labels, data.classes);
      const again = await evaluate(model, data.set);
      model.dispose();
      assert.ok(Math.abs(again.loss - lossAfter) < 1e-5, "the saved model does not reproduce the final eval");
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
