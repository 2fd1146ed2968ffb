/**
 * Numerics against timm (../shared/fixtures/vit): logits, loss and gradients on WebGPU and on wasm, within the
 * fixtures' README tolerances.
 */
import assert from "node:assert/strict";
import { type BackendName, initBackend } from "../lib/backend/backend.ts";
import { archConfig } from "../lib/vit/archs.ts";
import { createViT } from "../lib/vit/model.ts";
import type { StateDict } from "../lib/vit/params.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { readSafetensors, type SafeTensor } from "../lib/weights/safetensors.ts";
import { assertClose, FIXTURES, golden, haveFixtures, TOL } from "./_fixtures.ts";

function floats(t: Map<string, SafeTensor>): StateDict {
  return new Map([...t].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }]));
}

async function webgpuAvailable(): Promise<boolean> {
  return typeof navigator !== "undefined" && "gpu" in navigator &&
    (await navigator.gpu.requestAdapter()) !== null;
}

const backends: BackendName[] = (await webgpuAvailable()) ? ["webgpu", "wasm"] : ["wasm"];
if (!backends.includes("webgpu")) console.warn("SKIP webgpu parity: no WebGPU adapter on this machine");

for (const backend of backends) {
  Deno.test({
    name: `[${backend}] micro: logits, loss and every gradient match timm`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(backend);
      const g = await golden("micro/golden.safetensors");
      const config = JSON.parse(await Deno.readTextFile(`${FIXTURES}/micro/config.json`));
      const model = await createViT(
        config,
        floats(await readSafetensors(`${FIXTURES}/micro/micro.safetensors`)),
      );
      try {
        const input = g.get("input")!, labels = g.get("labels")!.data as Int32Array;
        assertClose(
          await model.logits(input.data as Float32Array, input.shape),
          g.get("logits")!.data,
          TOL.logits,
          "logits",
        );
        const { loss, grads } = await model.lossAndGrads(input.data as Float32Array, input.shape, labels);
        assertClose([loss], g.get("loss")!.data, TOL.loss, "loss");
        const expected = [...g.keys()].filter((k) => k.startsWith("grad.")).map((k) => k.slice(5));
        assert.equal(
          expected.length,
          model.specs.length,
          "the golden file has a gradient for every parameter",
        );
        assert.deepEqual([...grads.keys()].sort(), expected.sort());
        for (const name of expected) {
          assertClose(grads.get(name)!, g.get(`grad.${name}`)!.data, TOL.grads, `grad ${name}`);
        }
      } finally {
        model.dispose();
      }
    },
  });

  Deno.test({
    name: `[${backend}] tiny (F16 weights widened): logits and loss match timm`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(backend);
      const g = await golden("tiny/golden.safetensors");
      const weights = await readSafetensors(`${FIXTURES}/tiny/vit_tiny_patch16_224.f16.safetensors`);
      assert.ok([...weights.values()].every((t) => t.dtype === "F16"));
      const model = await createViT(archConfig("vit_tiny_patch16_224")!, floats(weights));
      try {
        const input = g.get("input")!, labels = g.get("labels")!.data as Int32Array;
        assertClose(
          await model.logits(input.data as Float32Array, input.shape),
          g.get("logits")!.data,
          TOL.logits,
          "logits",
        );
        const { loss } = await model.lossAndGrads(input.data as Float32Array, input.shape, labels);
        assertClose([loss], g.get("loss")!.data, TOL.loss, "loss");
      } finally {
        model.dispose();
      }
    },
  });

  Deno.test({
    name: `[${backend}] ViT-B/16 (formula weights): logits, loss and the listed gradients match timm`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(backend);
      const g = await golden("base/golden.safetensors");
      const config = archConfig("vit_base_patch16_224")!;
      const model = await createViT(config, formulaStateDict(config));
      try {
        const input = g.get("input")!, labels = g.get("labels")!.data as Int32Array;
        assertClose(
          await model.logits(input.data as Float32Array, input.shape),
          g.get("logits")!.data,
          TOL.logits,
          "logits",
        );
        const { loss, grads } = await model.lossAndGrads(input.data as Float32Array, input.shape, labels);
        assertClose([loss], g.get("loss")!.data, TOL.loss, "loss");
        const listed = [...g.keys()].filter((k) => k.startsWith("grad."));
        assert.ok(listed.length >= 9, `expected the README's 9 gradients, found ${listed.length}`);
        for (const key of listed) assertClose(grads.get(key.slice(5))!, g.get(key)!.data, TOL.grads, key);
      } finally {
        model.dispose();
      }
    },
  });
}
