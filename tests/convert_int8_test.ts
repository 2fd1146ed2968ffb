/**
 * `deno task convert --dtype int8`: the blocks' linear weights stored as int8 with their scales
 * (lib/vit/int8.ts, the one quantiser), read back unwidened into the onnx engine's int8 graph with the same
 * logits as the load option (`onnxWeights: "int8"` on float32 shards), widened with a log line where float32
 * is needed (training, tfjs engines), refused with a named field when the manifest is malformed, and the
 * CLI's `--onnx-engine` entry for int8 shards.
 */
import assert from "node:assert/strict";
import { initBackend } from "../lib/backend/backend.ts";
import { loadOrt } from "../lib/onnx/ort.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { dequantizeLinear, int8WeightNames, quantizeLinear } from "../lib/vit/int8.ts";
import { initStateDict } from "../lib/train/init.ts";
import { defaultPreprocessing } from "../lib/weights/manifest.ts";
import { loadModel, loadWeights, readManifest } from "../lib/weights/load.ts";
import { encodeSafetensors } from "../lib/weights/safetensors.ts";
import { saveModel } from "../lib/weights/shards.ts";
import { withTempEnv } from "./_fixtures.ts";

const ort = await loadOrt();
const noOrt = "error" in ort;
if (noOrt) console.warn(`SKIP onnx int8 tests: ${ort.error}`);

const MICRO = archConfig(MICRO_ARCH)!;
const C = resolveConfig(MICRO);
const STATE = initStateDict(C, 7);
const INPUT = new Float32Array(3 * C.in_chans * C.img_size * C.img_size).map((_, i) => Math.cos(i * 0.013));
const SHAPE = [3, C.in_chans, C.img_size, C.img_size];

async function save(dir: string, dtype: "float32" | "int8"): Promise<void> {
  await saveModel(dir, {
    config: MICRO,
    state: STATE,
    preprocessing: defaultPreprocessing(C.img_size),
    labels: Array.from({ length: C.num_classes }, (_, i) => `c${i}`),
    source: { file: "init", sha256: "-", format: "init" },
    dtype,
    shardMB: 0.02,
  });
}

function withTemp(fn: (tmp: string) => Promise<void>): Promise<void> {
  return withTempEnv({ VIT_ONNX_CACHE: "off" }, fn);
}

Deno.test("int8 shards round-trip: int8 values and scales as quantised, every other weight float32", async () => {
  await withTemp(async (tmp) => {
    await save(`${tmp}/i8`, "int8");
    const manifest = await readManifest(`${tmp}/i8`);
    assert.equal(manifest.dtype, "int8");
    const { state } = await loadWeights(`${tmp}/i8`);
    const int8 = int8WeightNames(C.depth);
    assert.equal(int8.size, 4 * C.depth);
    for (const [name, t] of STATE) {
      const back = state.get(name)!;
      assert.deepEqual(back.shape, t.shape, name);
      if (int8.has(name)) {
        const expected = quantizeLinear(t.data, t.shape[0], t.shape[1]);
        assert.deepEqual(back.int8, expected, name);
        assert.deepEqual(back.data, dequantizeLinear(expected), `${name} widened`);
        // Quantisation error: at most half a step of the row's scale.
        for (let o = 0; o < t.shape[0]; o++) {
          for (let i = 0; i < t.shape[1]; i++) {
            const k = o * t.shape[1] + i;
            assert.ok(Math.abs(back.data[k] - t.data[k]) <= expected.scale[o] / 2 + 1e-7, `${name}[${k}]`);
          }
        }
      } else {
        assert.equal(back.int8, undefined, name);
        assert.deepEqual(back.data, t.data, name);
      }
    }
    // int8 shards are about a quarter of float32 ones.
    const size = async (dir: string) => {
      let n = 0;
      for await (const e of Deno.readDir(dir)) {
        if (e.name.endsWith(".bin")) n += (await Deno.stat(`${dir}/${e.name}`)).size;
      }
      return n;
    };
    await save(`${tmp}/f32`, "float32");
    const [i8, f32] = [await size(`${tmp}/i8`), await size(`${tmp}/f32`)];
    assert.ok(i8 < 0.5 * f32, `int8 ${i8} bytes vs float32 ${f32}`);
  });
});

Deno.test({
  name: "[onnx] int8 shards give the load option's logits (the same int8 graph), and widen for training",
  ignore: noOrt,
  async fn() {
    await initBackend("onnx");
    await withTemp(async (tmp) => {
      await save(`${tmp}/f32`, "float32");
      await save(`${tmp}/i8`, "int8");
      const option = await loadModel(`${tmp}/f32`, { trainable: false, onnxWeights: "int8" });
      const shards = await loadModel(`${tmp}/i8`, { trainable: false });
      const float = await loadModel(`${tmp}/f32`, { trainable: false, onnxWeights: "float32" });
      try {
        assert.equal(shards.model.onnxWeights, "int8");
        const a = await option.model.logits(INPUT, SHAPE), b = await shards.model.logits(INPUT, SHAPE);
        assert.deepEqual(b, a, "bit-identical to the load option");
        const f = await float.model.logits(INPUT, SHAPE);
        assert.notDeepEqual(b, f, "int8 is not float32");
      } finally {
        for (const m of [option, shards, float]) m.model.dispose();
      }
      // A trainable model (tfjs Variables) widens the int8 weights, and says so.
      const lines: string[] = [];
      const error = console.error;
      const quiet = Deno.env.get("VIT_QUIET");
      Deno.env.delete("VIT_QUIET");
      console.error = (...args: unknown[]) => lines.push(args.join(" "));
      let trainable;
      try {
        trainable = await loadModel(`${tmp}/i8`, { trainable: true });
      } finally {
        console.error = error;
        if (quiet !== undefined) Deno.env.set("VIT_QUIET", quiet);
      }
      try {
        const line = lines.find((l) => l.includes("int8"));
        assert.ok(line, `a log line about int8: ${lines.join(" | ")}`);
        assert.match(
          line,
          new RegExp(`${tmp}/i8/model.json holds int8 weights: widened to float32 for training`),
        );
        const state = await trainable.model.stateDict();
        const name = [...int8WeightNames(C.depth)][0];
        const t = STATE.get(name)!;
        assert.deepEqual(
          state.get(name)!.data,
          dequantizeLinear(quantizeLinear(t.data, t.shape[0], t.shape[1])),
        );
      } finally {
        trainable.model.dispose();
      }
    });
  },
});

Deno.test("int8 manifest entries with another scheme or shape are refused, naming the weight", async () => {
  await withTemp(async (tmp) => {
    await save(`${tmp}/i8`, "int8");
    const json = JSON.parse(await Deno.readTextFile(`${tmp}/i8/model.json`));
    const entry = json.weightsManifest[0].weights.find((w: { quantization?: unknown }) => w.quantization);
    entry.quantization.scheme = "affine_per_tensor";
    await Deno.writeTextFile(`${tmp}/i8/model.json`, JSON.stringify(json));
    await assert.rejects(
      () => readManifest(`${tmp}/i8`),
      new RegExp(`weights\\["${entry.name.replaceAll(".", "\\.")}"\\]\\.quantization`),
    );
  });
});

Deno.test({
  name: "[onnx] deno task convert --dtype int8 --onnx-engine writes int8 shards and their engine entry",
  ignore: noOrt,
  async fn() {
    await initBackend("onnx");
    await withTemp(async (tmp) => {
      await Deno.writeFile(`${tmp}/micro.safetensors`, encodeSafetensors(STATE));
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../scripts/convert.ts", import.meta.url).pathname,
          `${tmp}/micro.safetensors`,
          "--arch",
          MICRO_ARCH,
          "--dtype",
          "int8",
          "--onnx-engine",
          "--out",
          `${tmp}/m`,
        ],
        env: { VIT_QUIET: "1" },
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, text);
      assert.match(text, /int8/);
      assert.match(text, new RegExp(`onnx engine cache → ${tmp}/m/onnx-engine/int8`));
      const { model, engineCache } = await loadModel(`${tmp}/m`, { trainable: false });
      try {
        assert.deepEqual(engineCache, { entry: `${tmp}/m/onnx-engine/int8`, opened: true });
        await save(`${tmp}/f32`, "float32");
        const option = await loadModel(`${tmp}/f32`, { trainable: false, onnxWeights: "int8" });
        try {
          assert.deepEqual(await model.logits(INPUT, SHAPE), await option.model.logits(INPUT, SHAPE));
        } finally {
          option.model.dispose();
        }
      } finally {
        model.dispose();
      }
    });
  },
});
