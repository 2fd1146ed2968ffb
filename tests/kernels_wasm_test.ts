/**
 * The per-item BatchMatMul for tfjs-wasm (lib/backend/wasm_batch_matmul.ts): same results as tfjs's own kernel
 * on every shape class it handles or passes through, no leaked device data, and timm's micro gradients and tiny
 * logits still within the fixtures' tolerances with it installed.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import {
  installWasmBatchMatMul,
  uninstallWasmBatchMatMul,
  wasmBatchMatMulInstalled,
} from "../lib/backend/wasm_batch_matmul.ts";
import { archConfig } from "../lib/vit/archs.ts";
import { createViT } from "../lib/vit/model.ts";
import type { StateDict } from "../lib/vit/params.ts";
import { readSafetensors, type SafeTensor } from "../lib/weights/safetensors.ts";
import { assertClose, FIXTURES, golden, haveFixtures, TOL } from "./_fixtures.ts";

function floats(t: Map<string, SafeTensor>): StateDict {
  return new Map([...t].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }]));
}

Deno.test("wasm BatchMatMul override: equals tfjs's kernel on batched, broadcast, transposed and 2-D products", async () => {
  await initBackend("wasm");
  // Each item has at least 2^18 multiply-adds (the kernel's threshold) unless marked as passed through.
  const cases: Array<[number[], number[], boolean, boolean]> = [
    [[2, 3, 64, 64], [2, 3, 64, 72], false, false],
    [[1, 4, 80, 64], [1, 4, 80, 64], false, true], // attention q·kᵀ
    [[4, 80, 80], [4, 80, 64], false, false], // attention p·v
    [[1, 64, 64], [3, 64, 72], false, false], // broadcast a
    [[3, 64, 64], [1, 64, 72], false, false], // broadcast b
    [[70, 64], [80, 64], false, true], // one product with transposeB
    [[70, 64], [64, 80], false, false], // one plain product: tfjs's fast path, passed through
    [[3, 64, 70], [3, 64, 72], true, false], // transposeA: passed through
    [[2, 5, 4], [2, 4, 6], false, false], // small: passed through
  ];
  try {
    for (const [sa, sb, ta, tb] of cases) {
      const a = tf.randomNormal(sa, 0, 1, "float32", 1), b = tf.randomNormal(sb, 0, 1, "float32", 2);
      uninstallWasmBatchMatMul();
      const ref = tf.matMul(a, b, ta, tb);
      installWasmBatchMatMul();
      assert.ok(wasmBatchMatMulInstalled());
      const before = tf.engine().backend.numDataIds();
      const out = tf.matMul(a, b, ta, tb);
      assert.equal(tf.engine().backend.numDataIds(), before + 1, `[${sa}]·[${sb}] leaves only its output`);
      assert.deepEqual(out.shape, ref.shape, `[${sa}]·[${sb}] shape`);
      assertClose(await out.data(), await ref.data(), 1e-6, `[${sa}]·[${sb}] tA=${ta} tB=${tb}`);
      tf.dispose([a, b, ref, out]);
    }
  } finally {
    uninstallWasmBatchMatMul();
  }
});

Deno.test({
  name: "wasm BatchMatMul override: micro gradients and tiny logits still match timm",
  ignore: !haveFixtures,
  async fn() {
    await initBackend("wasm");
    installWasmBatchMatMul();
    try {
      const g = await golden("micro/golden.safetensors");
      const config = JSON.parse(await Deno.readTextFile(`${FIXTURES}/micro/config.json`));
      const micro = await createViT(
        config,
        floats(await readSafetensors(`${FIXTURES}/micro/micro.safetensors`)),
      );
      try {
        const input = g.get("input")!, labels = g.get("labels")!.data as Int32Array;
        const { loss, grads } = await micro.lossAndGrads(input.data as Float32Array, input.shape, labels);
        assertClose([loss], g.get("loss")!.data, TOL.loss, "micro loss");
        for (const [name, grad] of grads) {
          assertClose(grad, g.get(`grad.${name}`)!.data, TOL.grads, `micro grad ${name}`);
        }
      } finally {
        micro.dispose();
      }
      const t = await golden("tiny/golden.safetensors");
      const weights = await readSafetensors(`${FIXTURES}/tiny/vit_tiny_patch16_224.f16.safetensors`);
      const tiny = await createViT(archConfig("vit_tiny_patch16_224")!, floats(weights), {
        trainable: false,
      });
      try {
        const input = t.get("input")!;
        assertClose(
          await tiny.logits(input.data as Float32Array, input.shape),
          t.get("logits")!.data,
          TOL.logits,
          "tiny logits",
        );
      } finally {
        tiny.dispose();
      }
    } finally {
      uninstallWasmBatchMatMul();
    }
  },
});
