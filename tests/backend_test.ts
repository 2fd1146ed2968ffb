/**
 * Backend selection (lib/backend/backend.ts): the project's kernels are registered by `initBackend` where
 * they apply, `VIT_KERNELS=stock` keeps tfjs's own, and a bad value is refused with the variable's name.
 * The onnx engine's selection is tested in onnx_engine_test.ts.
 */
import assert from "node:assert/strict";
import { describeBackend, initBackend } from "../lib/backend/backend.ts";
import { uninstallProjectKernels } from "../lib/backend/kernels.ts";
import { wasmBatchMatMulKernels } from "../lib/backend/wasm_batch_matmul.ts";
import { wasmSliceKernels } from "../lib/backend/wasm_slice.ts";
import { wasmThreadsWanted } from "../lib/backend/threads.ts";
import { webgpuGeluKernels } from "../lib/backend/webgpu_gelu.ts";
import { webgpuLayerNormKernels } from "../lib/backend/webgpu_layer_norm.ts";
import { webgpuMatMulKernels } from "../lib/backend/webgpu_matmul.ts";

async function withKernelsEnv<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = Deno.env.get("VIT_KERNELS");
  if (value === undefined) Deno.env.delete("VIT_KERNELS");
  else Deno.env.set("VIT_KERNELS", value);
  try {
    return await fn();
  } finally {
    if (before === undefined) Deno.env.delete("VIT_KERNELS");
    else Deno.env.set("VIT_KERNELS", before);
  }
}

Deno.test("initBackend: wasm gets the per-item BatchMatMul and the training-step kernels, and says so", async () => {
  const info = await withKernelsEnv(undefined, () => initBackend("wasm"));
  assert.equal(info.name, "wasm");
  const kernels = [
    "wasm BatchMatMul",
    "wasm Slice/SplitV",
    "wasm LayerNorm",
    "wasm GELU",
    "wasm attention head split",
    "wasm Sum over rows",
    "wasm Identity/Cast",
  ];
  assert.deepEqual(info.kernels, kernels);
  assert.ok(wasmBatchMatMulKernels.installed);
  const threads = wasmThreadsWanted();
  assert.equal(info.threads, threads);
  assert.equal(
    describeBackend(info),
    `wasm (${threads} thread${threads > 1 ? "s" : ""}; kernels: ${kernels.join(", ")}; requested)`,
  );
});

Deno.test("initBackend: webgpu on a software adapter gets the WGSL matmul, softmax, LayerNorm and GELU", async () => {
  const info = await withKernelsEnv(undefined, () => initBackend("webgpu"));
  assert.equal(info.name, "webgpu");
  if (info.adapter?.isFallbackAdapter) {
    assert.deepEqual(info.kernels, ["WGSL matmul", "WGSL softmax", "WGSL LayerNorm", "WGSL GELU"]);
    assert.ok(webgpuMatMulKernels.installed && webgpuLayerNormKernels.active() && webgpuGeluKernels.active());
    assert.match(
      describeBackend(info),
      /fallback adapter; kernels: WGSL matmul, WGSL softmax, WGSL LayerNorm, WGSL GELU; requested\)$/,
    );
  } else {
    // A hardware GPU keeps tfjs's tiled kernels until a GPU bench shows the WGSL ones faster.
    assert.deepEqual(info.kernels, []);
  }
});

Deno.test("initBackend: VIT_KERNELS=stock registers nothing; a bad value names the variable", async () => {
  const info = await withKernelsEnv("stock", () => initBackend("cpu"));
  assert.deepEqual(info.kernels, []);
  assert.equal(describeBackend(info), "cpu (requested)");
  await assert.rejects(
    withKernelsEnv("fast", () => initBackend("wasm")),
    /VIT_KERNELS: unknown value "fast", expected "project" \(the default\) or "stock"/,
  );
});

Deno.test("uninstallProjectKernels puts tfjs's kernels back and restores exactly the project's", async () => {
  await withKernelsEnv(undefined, () => initBackend("wasm"));
  assert.ok(wasmBatchMatMulKernels.installed && wasmSliceKernels.installed);
  const restore = uninstallProjectKernels("wasm");
  assert.ok(!wasmBatchMatMulKernels.installed && !wasmSliceKernels.installed);
  restore();
  assert.ok(wasmBatchMatMulKernels.installed && wasmSliceKernels.installed);
});
