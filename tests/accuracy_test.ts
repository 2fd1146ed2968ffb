/**
 * Accuracy regression of the shipped model (`weights/`): on a fixed, class-balanced 1,000-image subset of the
 * CIFAR-10 test split (JPEG copy; the first 100 images of each class by file name) it must get exactly the
 * number of images right that `weights/accuracy.json` records for the backend (inference is deterministic),
 * on wasm, on WebGPU and on the onnx engine (float32, and its opt-in int8 weights as `onnx-int8`, both from
 * the load option and from int8 shards written by `convert --dtype int8`'s writer), and stay at or above the
 * recorded floor.
 *
 * Refresh the record after shipping new weights with
 * `deno task eval --model weights --data <dir> --subset 1000 --backend <b> --record weights/accuracy.json`.
 */
import assert from "node:assert/strict";
import { initBackend } from "../lib/backend/backend.ts";
import { loadOrt } from "../lib/onnx/ort.ts";
import { openImageFolder } from "../lib/data/image_folder.ts";
import { evaluate } from "../lib/train/evaluate.ts";
import { classBalancedSubset } from "../lib/data/dataset.ts";
import { datasetImageSet } from "../lib/data/image_set.ts";
import { loadModel, loadWeights } from "../lib/weights/load.ts";
import { saveModel } from "../lib/weights/shards.ts";
import { CIFAR_JPEG, present } from "./_fixtures.ts";

const WEIGHTS = Deno.env.get("VIT_ACCURACY_WEIGHTS") ?? new URL("../weights", import.meta.url).pathname;
const haveData = present(`${CIFAR_JPEG}/test.tar.gz`, "accuracy regression");
const haveWeights = present(`${WEIGHTS}/accuracy.json`, "accuracy regression (no shipped model record)");

interface AccuracyRecord {
  subset: string;
  n: number;
  correct: Record<string, number>;
  floor: number;
}

let subsetDir: string | undefined;
async function subset(): Promise<string> {
  if (subsetDir) return subsetDir;
  const dir = await Deno.makeTempDir({ prefix: "vit-acc-" });
  const r = await new Deno.Command("tar", {
    args: ["xzf", `${CIFAR_JPEG}/test.tar.gz`, "-C", dir, "--wildcards", "test/*/00[0-9][0-9].jpg"],
  }).output();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  subsetDir = `${dir}/test`;
  return subsetDir;
}

async function webgpuAvailable(): Promise<boolean> {
  if (!("gpu" in navigator)) return false;
  try {
    return (await navigator.gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

// An engine this machine lacks is skipped (ignored, with the reason), never counted as passed.
const missing: Record<string, string | undefined> = {
  webgpu: (await webgpuAvailable()) ? undefined : "no WebGPU adapter on this machine",
  onnx: await loadOrt().then((o) => ("error" in o ? o.error : undefined)),
};

function engineHere(backend: string): boolean {
  backend = backend.replace(/-int8.*/, "");
  if (missing[backend]) console.warn(`SKIP ${backend} accuracy: ${missing[backend]}`);
  return !missing[backend];
}

/**
 * The shipped model rewritten as int8 shards (what `deno task convert --dtype int8` writes), in a temp
 * folder.
 */
async function int8Shards(): Promise<string> {
  const { manifest, state } = await loadWeights(WEIGHTS);
  const dir = await Deno.makeTempDir({ prefix: "vit-acc-int8-" });
  await saveModel(`${dir}/m`, {
    config: manifest.vit,
    state,
    preprocessing: manifest.preprocessing,
    labels: manifest.labels,
    source: manifest.source,
    dtype: "int8",
  });
  return `${dir}/m`;
}

for (const backend of ["wasm", "webgpu", "onnx", "onnx-int8", "onnx-int8-shards"] as const) {
  Deno.test({
    name: `shipped model: recorded accuracy on the fixed 1,000-image CIFAR-10 subset, ${backend}`,
    ignore: !haveData || !haveWeights || !engineHere(backend),
    async fn(t) {
      const onnx = backend.startsWith("onnx");
      const record: AccuracyRecord = JSON.parse(await Deno.readTextFile(`${WEIGHTS}/accuracy.json`));
      await initBackend(onnx ? "onnx" : backend as "wasm" | "webgpu");
      const folder = await openImageFolder(await subset());
      assert.equal(folder.length, 1000);
      const shards = backend === "onnx-int8-shards" ? await int8Shards() : undefined;
      const loaded = await loadModel(shards ?? WEIGHTS, {
        trainable: false,
        onnxWeights: backend === "onnx-int8" ? "int8" : "float32",
      }).finally(() => shards && Deno.remove(shards.replace(/\/m$/, ""), { recursive: true }));
      const { model, manifest } = loaded;
      try {
        assert.deepEqual([...folder.classes], manifest.labels);
        const set = datasetImageSet(folder, manifest.preprocessing);
        const r = await evaluate(model, set, {
          indices: classBalancedSubset(folder.labels, 1000),
          batchSize: 250,
        });
        const correct = Math.round(r.top1 * r.n);
        await t.step(
          `top-1 ${(100 * r.top1).toFixed(1)}% ≥ floor ${(100 * record.floor).toFixed(1)}%`,
          () => {
            assert.ok(r.top1 >= record.floor, `top-1 ${r.top1} fell below the floor ${record.floor}`);
          },
        );
        // int8 shards hold what the load option quantises: the same graph, the same record.
        const key = backend === "onnx-int8-shards" ? "onnx-int8" : backend;
        const want = record.correct[key];
        if (want === undefined) {
          console.warn(`no ${backend} figure recorded in weights/accuracy.json (measured ${correct}/1000)`);
        } else {
          assert.equal(correct, want, `${backend}: ${correct}/1000 right, the record says ${want}/1000`);
        }
      } finally {
        model.dispose();
      }
    },
  });
}

globalThis.addEventListener("unload", () => {
  if (subsetDir) Deno.removeSync(subsetDir.replace(/\/test$/, ""), { recursive: true });
});
