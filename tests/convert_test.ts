/**
 * Conversion to sharded weights and loading back: every fixture format reproduces timm's logits, full-size
 * ViT-B/16 converts from .safetensors and .pth in fp32 and fp16, and corrupt shards are named.
 */
import assert from "node:assert/strict";
import { initBackend } from "../lib/backend/backend.ts";
import { archConfig } from "../lib/vit/archs.ts";
import { convertCheckpoint } from "../lib/weights/convert.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { loadModel, loadWeights, readModelFiles, writeModelFiles } from "../lib/weights/load.ts";
import { encodeSafetensors } from "../lib/weights/safetensors.ts";
import { adaptForFineTuning } from "../lib/weights/adapt.ts";
import { resamplePatchEmbed, resamplePosEmbed, resizeMatrix } from "../lib/weights/resample.ts";
import { assertClose, fastTempDir, FIXTURES, golden, haveFixtures, relError, TOL } from "./_fixtures.ts";
import { encodePth } from "./_pth_writer.ts";

const MICRO = `${FIXTURES}/micro`;
// These loads check conversion, not the onnx engine cache (tests/onnx_cache_test.ts): ViT-B/16 entries of
// temporary folders would only fill the user's cache.
Deno.env.set("VIT_ONNX_CACHE", "off");

async function logitsOf(dir: string, input: { data: Float32Array | Int32Array; shape: number[] }) {
  // Untrainable, as every inference caller loads it: on the onnx engine that is ONNX Runtime alone.
  const { model } = await loadModel(dir, { trainable: false });
  try {
    return await model.logits(input.data as Float32Array, input.shape);
  } finally {
    model.dispose();
  }
}

for (const engine of ["wasm", "onnx"] as const) {
  Deno.test({
    name: `[${engine}] every micro checkpoint format converts, loads and reproduces timm's logits`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(engine);
      const tmp = await Deno.makeTempDir();
      try {
        const g = await golden("micro/golden.safetensors");
        const results: Float32Array[] = [];
        for (const file of ["micro.safetensors", "micro.pth", "micro.npz"]) {
          const out = `${tmp}/${file}`;
          const m = await convertCheckpoint(`${MICRO}/${file}`, out, { config: { num_heads: 4 } });
          assert.equal(m.vit.num_heads, 4);
          assert.equal(m.vit.img_size, 32);
          assert.equal(m.vit.depth, 2);
          const logits = await logitsOf(out, g.get("input")!);
          assertClose(logits, g.get("logits")!.data, TOL.logits, `${file} logits`);
          results.push(logits);
        }
        for (const r of results.slice(1)) {
          assert.ok(relError(r, results[0]) < 1e-6, "formats give identical logits");
        }

        const t = await golden("micro/golden_train_checkpoint.safetensors");
        const out = `${tmp}/train_ckpt`;
        const m = await convertCheckpoint(`${MICRO}/micro_train_checkpoint.pth.tar`, out, {
          config: { num_heads: 4 },
        });
        assert.equal(m.source.format, "pth");
        assertClose(
          await logitsOf(out, t.get("input")!),
          t.get("logits")!.data,
          TOL.logits,
          "train.py checkpoint logits",
        );
      } finally {
        await Deno.remove(tmp, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `[${engine}] tiny F16 safetensors converts (arch from the file name) and reproduces timm's logits`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(engine);
      const tmp = await Deno.makeTempDir();
      try {
        const m = await convertCheckpoint(`${FIXTURES}/tiny/vit_tiny_patch16_224.f16.safetensors`, tmp, {
          dtype: "float16",
        });
        assert.equal(m.source.arch, "vit_tiny_patch16_224");
        assert.equal(m.vit.num_heads, 3);
        const g = await golden("tiny/golden.safetensors");
        // F16 → F16 shards is lossless, so the fp32 tolerance applies.
        assertClose(await logitsOf(tmp, g.get("input")!), g.get("logits")!.data, TOL.logits, "tiny logits");
      } finally {
        await Deno.remove(tmp, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "full-size ViT-B/16 from .safetensors and .pth, fp32 and fp16, reproduces timm's logits",
  ignore: !haveFixtures,
  async fn() {
    await initBackend("wasm");
    const tmp = await fastTempDir();
    try {
      const config = archConfig("vit_base_patch16_224")!;
      const state = formulaStateDict(config);
      await Deno.writeFile(`${tmp}/vit_base_patch16_224.safetensors`, encodeSafetensors(state));
      await Deno.writeFile(`${tmp}/vit_base_patch16_224.pth`, encodePth(state));
      state.clear();
      const g = await golden("base/golden.safetensors");
      for (const file of ["vit_base_patch16_224.safetensors", "vit_base_patch16_224.pth"]) {
        for (const dtype of ["float32", "float16"] as const) {
          const out = `${tmp}/out-${file}-${dtype}`;
          const m = await convertCheckpoint(`${tmp}/${file}`, out, { dtype });
          assert.equal(m.source.arch, "vit_base_patch16_224");
          const tol = dtype === "float32" ? TOL.logits : 1e-2;
          assertClose(await logitsOf(out, g.get("input")!), g.get("logits")!.data, tol, `${file} ${dtype}`);
          await Deno.remove(out, { recursive: true });
        }
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "loading over HTTP verifies shards (a corrupt or missing one fails naming it); fetched files are kept",
  ignore: !haveFixtures,
  async fn() {
    await initBackend("wasm");
    const tmp = await Deno.makeTempDir();
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const path = new URL(req.url).pathname;
      try {
        return new Response(await Deno.readFile(`${tmp}${path}`));
      } catch {
        return new Response("not found", { status: 404 });
      }
    });
    try {
      const dir = `${tmp}/m`;
      await convertCheckpoint(`${MICRO}/micro.safetensors`, dir, { config: { num_heads: 4 }, shardMB: 0.1 });
      const manifest = JSON.parse(await Deno.readTextFile(`${dir}/model.json`));
      const shards: string[] = manifest.weightsManifest[0].paths;
      assert.ok(shards.length >= 4, `small shards give several files (${shards.length})`);
      const url = `http://127.0.0.1:${server.addr.port}/m/`;
      const g = await golden("micro/golden.safetensors");
      const { model } = await loadModel(url);
      try {
        const input = g.get("input")!;
        assertClose(
          await model.logits(input.data as Float32Array, input.shape),
          g.get("logits")!.data,
          TOL.logits,
          "HTTP",
        );
      } finally {
        model.dispose();
      }
      // The files as fetched: kept in a folder, or loaded from memory without fetching again.
      const { files } = await readModelFiles(url);
      assert.deepEqual([...files.keys()].sort(), ["model.json", ...shards].sort());
      await writeModelFiles(`${tmp}/copy`, files);
      for (const name of ["model.json", ...shards]) {
        assert.deepEqual(
          await Deno.readFile(`${tmp}/copy/${name}`),
          await Deno.readFile(`${dir}/${name}`),
          name,
        );
      }
      // No path of a manifest, nor of the files written, leaves the model folder (or names an engine entry).
      for (
        const bad of ["../x.bin", "http://10.0.0.1/x.bin", "%2e%2e/x.bin", "onnx-engine/float32/model.onnx"]
      ) {
        const evil = structuredClone(manifest);
        evil.weightsManifest[0].paths[0] = bad;
        evil.shards[bad] = manifest.shards[shards[0]];
        await Deno.writeTextFile(`${tmp}/evil.json`, JSON.stringify(evil));
        await assert.rejects(
          () =>
            readModelFiles(url, {
              fetch: (u) => fetch(String(u).endsWith("/model.json") ? `${url}../evil.json` : u),
            }),
          /field "weightsManifest\[0\]\.paths" must be a relative path inside the model folder/,
          bad,
        );
        await assert.rejects(
          () => writeModelFiles(`${tmp}/evil`, new Map([[bad, new Uint8Array(1)]])),
          /model file .*: expected a relative path inside the model folder/,
        );
      }
      assert.ok(!(await Deno.stat(`${tmp}/evil`).then(() => true, () => false)), "nothing written");
      const offline: typeof fetch = () => Promise.reject(new Error("no network"));
      const fromMemory = (await loadWeights(url, { files, fetch: offline })).state;
      assert.deepEqual(fromMemory, (await loadWeights(dir)).state);
      const victim = shards[2];
      const bytes = await Deno.readFile(`${dir}/${victim}`);
      bytes[100] ^= 0xff;
      await Deno.writeFile(`${dir}/${victim}`, bytes);
      for (const read of [loadWeights, readModelFiles]) {
        await assert.rejects(
          () => read(url),
          new RegExp(`shard ${victim}: sha256 .* corrupt or truncated`),
        );
      }
      await Deno.writeFile(`${dir}/${victim}`, bytes.subarray(0, 1000));
      await assert.rejects(() => loadWeights(dir), new RegExp(`shard ${victim}: sha256`));
      await Deno.remove(`${dir}/${victim}`);
      await assert.rejects(() => loadWeights(url), new RegExp(`shard ${victim}: .* HTTP 404`));
      await assert.rejects(() => loadWeights(dir), new RegExp(`shard ${victim}: .* does not exist`));
    } finally {
      await server.shutdown();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "--num-classes replaces the head, --img-size resamples pos_embed, bad input is named",
  ignore: !haveFixtures,
  async fn() {
    await initBackend("wasm");
    const tmp = await Deno.makeTempDir();
    try {
      const m = await convertCheckpoint(`${MICRO}/micro.safetensors`, `${tmp}/a`, {
        config: { num_heads: 4 },
        numClasses: 3,
        imgSize: 48,
        labels: ["cat", "dog", "bird"],
      });
      assert.deepEqual(m.source.head_reinitialized, { num_classes: 3, init: "zeros" });
      assert.deepEqual(m.source.pos_embed_resampled, { from: 32, to: 48 });
      assert.equal(m.vit.img_size, 48);
      const { state } = await loadWeights(`${tmp}/a`);
      assert.deepEqual(state.get("pos_embed")!.shape, [1, 1 + 12 * 12, 64]);
      assert.ok(state.get("head.weight")!.data.every((v) => v === 0));
      await assert.rejects(
        () => convertCheckpoint(`${MICRO}/micro.safetensors`, `${tmp}/b`),
        /num_heads cannot be read off/,
      );
      await assert.rejects(() => convertCheckpoint(`${tmp}/nope.safetensors`, `${tmp}/c`), /no such file/);
      await assert.rejects(
        () => Deno.stat(`${tmp}/b`),
        Deno.errors.NotFound,
        "a failed conversion leaves nothing",
      );
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test("pos_embed resampling keeps the class token and a constant grid", () => {
  const D = 2, g = 4;
  const data = new Float32Array((1 + g * g) * D).fill(0.25);
  data[0] = 7;
  data[1] = -7;
  const out = resamplePosEmbed({ shape: [1, 1 + g * g, D], data }, 6);
  assert.deepEqual(out.shape, [1, 37, 2]);
  assert.equal(out.data[0], 7);
  assert.equal(out.data[1], -7);
  for (let i = 2; i < out.data.length; i++) assert.ok(Math.abs(out.data[i] - 0.25) < 1e-6);
});

/** `R K Rᵀ` (or `Rᵀ K R` with `t`) for a 1-D resize matrix `R` and a square kernel `K` (row-major). */
function sandwich(r: ArrayLike<number>[], k: ArrayLike<number>, t: boolean): number[] {
  const rows = t ? r[0].length : r.length, inner = t ? r.length : r[0].length;
  const at = (i: number, j: number) => t ? r[j][i] : r[i][j];
  const out: number[] = [];
  for (let a = 0; a < rows; a++) {
    for (let b = 0; b < rows; b++) {
      let acc = 0;
      for (let i = 0; i < inner; i++) {
        for (let j = 0; j < inner; j++) acc += at(a, i) * k[i * inner + j] * at(b, j);
      }
      out.push(acc);
    }
  }
  return out;
}

Deno.test("patch embedding resampling is timm's pseudo-inverse resize, both ways", () => {
  const rand = (n: number, seed: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(seed + i * 1.7));
  // Shrinking 8 → 4: a kernel in the range of Rᵀ (K = Rᵀ V R) comes back as exactly V.
  const r84 = resizeMatrix(8, 4);
  const v = rand(16, 1);
  const k8 = Float32Array.from(sandwich(r84, v, true));
  const w4 = resamplePatchEmbed({ shape: [1, 1, 8, 8], data: k8 }, 4);
  assert.deepEqual(w4.shape, [1, 1, 4, 4]);
  for (let i = 0; i < 16; i++) assert.ok(Math.abs(w4.data[i] - v[i]) < 1e-5, `8→4 element ${i}`);
  // Growing 4 → 8: the new kernel sees the resized patch exactly as the old one saw the patch,
  // ⟨W', R X Rᵀ⟩ = ⟨K, X⟩ for any X, i.e. Rᵀ W' R = K.
  const r48 = resizeMatrix(4, 8);
  const k4 = rand(2 * 3 * 16, 2);
  const w8 = resamplePatchEmbed({ shape: [2, 3, 4, 4], data: k4 }, 8);
  assert.deepEqual(w8.shape, [2, 3, 8, 8]);
  for (let c = 0; c < 6; c++) {
    const back = sandwich(r48, w8.data.subarray(c * 64, (c + 1) * 64), true);
    for (let i = 0; i < 16; i++) assert.ok(Math.abs(back[i] - k4[c * 16 + i]) < 1e-5, `4→8 ${c}/${i}`);
  }
  assert.throws(() => resamplePatchEmbed({ shape: [1, 1, 4, 4], data: k4.subarray(0, 16) }, 0), /positive/);
});

Deno.test("adapting a patch-8 checkpoint to patch 4 resamples the kernels and the grid, and says so", () => {
  const D = 4, k8 = Float32Array.from({ length: D * 3 * 64 }, (_, i) => Math.cos(i));
  const state = new Map([
    ["patch_embed.proj.weight", { shape: [D, 3, 8, 8], data: k8 }],
    ["pos_embed", { shape: [1, 17, D], data: new Float32Array(17 * D).fill(0.5) }],
    ["head.weight", { shape: [10, D], data: new Float32Array(10 * D) }],
  ]);
  const { state: out, changes } = adaptForFineTuning(state, {
    img_size: 32,
    patch_size: 4,
    embed_dim: D,
    num_classes: 10,
  });
  assert.deepEqual(out.get("patch_embed.proj.weight")!.shape, [D, 3, 4, 4]);
  assert.deepEqual(out.get("pos_embed")!.shape, [1, 65, D]);
  assert.deepEqual(changes.patch_embed_resampled, { from: 8, to: 4 });
  assert.equal(changes.head_reinitialized, undefined);
  assert.equal(state.get("patch_embed.proj.weight")!.shape[2], 8, "the input is not modified");
});
