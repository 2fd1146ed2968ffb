/**
 * The timm oracle checks shared by the parity and kernel tests: build a fixture model, run it on the golden
 * input, and compare logits, loss and gradients with what timm computed, within the fixtures' tolerances.
 * Each check runs on whatever backend and kernels are current.
 */
import assert from "node:assert/strict";
import { archConfig } from "../lib/vit/archs.ts";
import { createViT, type ViTModel } from "../lib/vit/model.ts";
import type { StateDict } from "../lib/vit/params.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { readSafetensors, type SafeTensor } from "../lib/weights/safetensors.ts";
import { assertClose, FIXTURES, golden, TOL } from "./_fixtures.ts";

/** A safetensors map (already widened to float32 by the reader) as a state dict. */
export function floats(t: Map<string, SafeTensor>): StateDict {
  return new Map([...t].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }]));
}

/** What to compare beyond the logits. */
export interface OracleCheck {
  /** Compare the logits (default true). */
  logits?: boolean;
  /** Compare the loss (default true). */
  loss?: boolean;
  /** Compare the gradients the golden file lists (default false). */
  grads?: boolean;
}

/** Whether a check needs a trainable model (on the onnx engine, an untrainable one has no tfjs Variables). */
function needsGrads(o: OracleCheck): boolean {
  return Boolean((o.loss ?? true) || o.grads);
}

async function check(model: ViTModel, goldenFile: string, what: string, o: OracleCheck): Promise<void> {
  try {
    const g = await golden(goldenFile);
    const input = g.get("input")!, labels = g.get("labels")!.data as Int32Array;
    const x = input.data as Float32Array;
    if (o.logits ?? true) {
      assertClose(await model.logits(x, input.shape), g.get("logits")!.data, TOL.logits, `${what} logits`);
    }
    if (!(o.loss ?? true) && !o.grads) return;
    const { loss, grads } = await model.lossAndGrads(x, input.shape, labels);
    if (o.loss ?? true) assertClose([loss], g.get("loss")!.data, TOL.loss, `${what} loss`);
    if (!o.grads) return;
    const listed = [...g.keys()].filter((k) => k.startsWith("grad.")).map((k) => k.slice(5));
    assert.ok(listed.length > 0, `${goldenFile} lists no gradients`);
    for (const name of listed) {
      assert.ok(grads.has(name), `${what}: no gradient for ${name}`);
      assertClose(grads.get(name)!, g.get(`grad.${name}`)!.data, TOL.grads, `${what} grad ${name}`);
    }
  } finally {
    model.dispose();
  }
}

/** The fixtures' micro ViT (F32 weights); its golden file has a gradient for every parameter. */
export async function checkMicro(o: OracleCheck = {}): Promise<void> {
  const config = JSON.parse(await Deno.readTextFile(`${FIXTURES}/micro/config.json`));
  const model = await createViT(
    config,
    floats(await readSafetensors(`${FIXTURES}/micro/micro.safetensors`)),
    {
      trainable: needsGrads(o),
    },
  );
  if (o.grads) {
    const g = await golden("micro/golden.safetensors");
    const listed = [...g.keys()].filter((k) => k.startsWith("grad.")).length;
    assert.equal(listed, model.specs.length, "the golden file has a gradient for every parameter");
  }
  await check(model, "micro/golden.safetensors", "micro", o);
}

/** ViT-Ti/16 224 from the fixtures' F16 safetensors (widened to float32 by the reader). */
export async function checkTiny(o: OracleCheck = {}): Promise<void> {
  const weights = await readSafetensors(`${FIXTURES}/tiny/vit_tiny_patch16_224.f16.safetensors`);
  assert.ok([...weights.values()].every((t) => t.dtype === "F16"), "the tiny fixture is F16");
  const model = await createViT(archConfig("vit_tiny_patch16_224")!, floats(weights), {
    trainable: needsGrads(o),
  });
  await check(model, "tiny/golden.safetensors", "tiny", o);
}

/** ViT-B/16 224 with the fixtures' formula weights; its golden file lists the README's 9 gradients. */
export async function checkBase(o: OracleCheck = {}): Promise<void> {
  const config = archConfig("vit_base_patch16_224")!;
  if (o.grads) {
    const g = await golden("base/golden.safetensors");
    const listed = [...g.keys()].filter((k) => k.startsWith("grad.")).length;
    assert.ok(listed >= 9, `expected the README's 9 gradients, found ${listed}`);
  }
  const model = await createViT(config, formulaStateDict(config), { trainable: needsGrads(o) });
  await check(model, "base/golden.safetensors", "ViT-B/16", o);
}
