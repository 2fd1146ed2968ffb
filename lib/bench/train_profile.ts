/**
 * Where a training step's time goes, per kernel: one `tf.profile` of a loss-and-gradients step of the shipped
 * model's architecture (weights/train_config.yml) on tfjs-wasm, in this isolate (no data-parallel workers),
 * after one warm-up step. Run it with `VIT_WASM_THREADS=1` to see what one worker isolate of the pool does,
 * and with `VIT_KERNELS=stock` for tfjs's own kernels.
 *
 * `deno run -A lib/bench/train_profile.ts [batch=64] [top=30]` prints a table and a JSON line.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { fileURLToPath } from "node:url";
import { initBackend } from "../backend/backend.ts";
import { createViT } from "../vit/model.ts";
import { formulaStateDict } from "../weights/formula.ts";
import { shippedArch } from "./threads.ts";

/** One kernel's total in a profiled step. */
export interface KernelTime {
  kernel: string;
  ms: number;
  calls: number;
}

/**
 * Totals per registered kernel of `info` (wrapper entries of custom ops, which include their inner kernels,
 * left out).
 */
export function kernelTimes(info: Awaited<ReturnType<typeof tf.profile>>): KernelTime[] {
  const by = new Map<string, KernelTime>();
  const backend = tf.getBackend();
  for (const k of info.kernels) {
    if (!tf.getKernel(k.name, backend)) continue;
    const e = by.get(k.name) ?? { kernel: k.name, ms: 0, calls: 0 };
    e.ms += typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    e.calls++;
    by.set(k.name, e);
  }
  return [...by.values()].sort((a, b) => b.ms - a.ms);
}

if (import.meta.main) {
  const batch = Number(Deno.args[0] ?? "64"), top = Number(Deno.args[1] ?? "30");
  const root = fileURLToPath(new URL("../..", import.meta.url));
  Deno.env.set("VIT_TRAIN_WORKERS", "1");
  const backend = await initBackend("wasm");
  const { config } = await shippedArch(root);
  const vit = await createViT(config, formulaStateDict(config));
  const c = vit.config;
  const shape = [batch, c.in_chans, c.img_size, c.img_size];
  const input = new Float32Array(batch * c.in_chans * c.img_size * c.img_size).map((_, i) =>
    Math.sin(i * 1e-3)
  );
  const labels = Int32Array.from({ length: batch }, (_, i) => i % c.num_classes);
  const step = async () => {
    const { grads } = await vit.lossAndDeviceGrads(input, shape, labels, { labelSmoothing: 0.1 });
    for (const g of grads.values()) g.dispose();
  };
  await step();
  const t0 = performance.now();
  await step();
  const wall = performance.now() - t0;
  const info = await tf.profile(step);
  const times = kernelTimes(info);
  const total = times.reduce((s, k) => s + k.ms, 0);
  console.log(
    `step b${batch}, wasm ${backend.threads ?? 1} thread(s), kernels: ${
      backend.kernels.join(", ") || "stock"
    }; ` +
      `unprofiled step ${wall.toFixed(0)} ms, kernels total ${total.toFixed(0)} ms`,
  );
  for (const k of times.slice(0, top)) {
    console.log(
      `${k.kernel.padEnd(24)} ${k.ms.toFixed(1).padStart(8)} ms ${String(k.calls).padStart(5)} calls`,
    );
  }
  console.log(
    JSON.stringify({ batch, threads: backend.threads ?? 1, kernels: backend.kernels, wall, total, times }),
  );
  vit.dispose();
  Deno.exit(0);
}
