/**
 * One tfjs-wasm build, measured in its own process (the build is fixed when the backend first starts):
 * `deno run -A lib/bench/wasm_variant.ts <simd|nosimd|threads> [runs]` prints one JSON line with the
 * thread count, a ViT-B/16-sized matmul's GFLOP/s and ViT-Ti/16's batch-1 latency. The bench uses it to
 * decide the CPU fallback with numbers.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { getThreadsCount } from "@tensorflow/tfjs-backend-wasm";
import { initBackend } from "../backend/backend.ts";
import { archConfig } from "../vit/archs.ts";
import { createViT } from "../vit/model.ts";
import { formulaStateDict } from "../weights/formula.ts";
import { measure } from "./stats.ts";

async function main(): Promise<void> {
  const [variant, runsArg] = Deno.args;
  const runs = Number(runsArg ?? "3");
  if (!["simd", "nosimd", "threads"].includes(variant)) {
    throw new Error(`variant must be simd, nosimd or threads, got "${variant}"`);
  }
  if (variant === "nosimd") tf.env().set("WASM_HAS_SIMD_SUPPORT", false);
  // initBackend starts the threaded build (lib/backend/wasm_threads.ts) unless told to use one thread.
  if (variant !== "threads") Deno.env.set("VIT_WASM_THREADS", "1");
  else if (!Deno.env.get("VIT_WASM_THREADS")) {
    Deno.env.set("VIT_WASM_THREADS", String(navigator.hardwareConcurrency));
  }
  // Through initBackend, so that createViT below stays on wasm instead of choosing the default backend.
  await initBackend("wasm");
  const a = tf.randomNormal([197, 768]), b = tf.randomNormal([768, 3072]);
  const mm = await measure(
    async () => {
      const c = tf.matMul(a, b);
      await c.data();
      c.dispose();
    },
    1,
    Math.max(3, runs),
  );
  const config = archConfig("vit_tiny_patch16_224")!;
  const vit = await createViT(config, formulaStateDict(config), { trainable: false });
  const input = new Float32Array(3 * 224 * 224).map((_, i) => Math.sin(i * 0.001));
  const t = await measure(() => vit.logits(input, [1, 3, 224, 224]), 1, runs);
  console.log(JSON.stringify({
    variant,
    threads: getThreadsCount(),
    gflops: (2 * 197 * 768 * 3072) / mm.medianMs / 1e6,
    tinyMs: t.medianMs,
    tinyRuns: t.runs,
  }));
}

if (import.meta.main) {
  Deno.env.set("VIT_QUIET", "1");
  await main();
  Deno.exit(0);
}
