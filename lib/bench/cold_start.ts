/**
 * The cold-start probe, run as its own process by the bench: `deno run -A lib/bench/cold_start.ts
 * <model-folder> <backend> [fast]` loads sharded weights from local disk, classifies one preprocessed image,
 * prints one JSON line with its milestones (ms since process start, `performance.now()`), and exits. The
 * bench times it from spawn to exit.
 *
 * @module
 */
import { type EngineName, initBackend } from "../backend/backend.ts";
import { loadModel } from "../weights/load.ts";

/** Milestones of one cold start, in ms since the process started. */
export interface ColdStartMarks {
  imported: number;
  backendReady: number;
  weightsLoaded: number;
  firstClassification: number;
  top1: number;
  /** onnx: whether the engine cache was opened, written, or not used. */
  engineCache?: "opened" | "written" | "none";
}

async function main(): Promise<void> {
  const imported = performance.now();
  const [dir, backend, kernels] = Deno.args;
  if (!dir || !backend) throw new Error("usage: cold_start.ts <model-folder> <webgpu|onnx|wasm|cpu> [fast]");
  // initBackend registers the project's kernels; without "fast" the probe measures tfjs's own.
  if (kernels !== "fast") Deno.env.set("VIT_KERNELS", "stock");
  await initBackend(backend as EngineName);
  const backendReady = performance.now();
  const { model, engineCache } = await loadModel(dir, { trainable: false });
  const weightsLoaded = performance.now();
  const c = model.config;
  // A fixed, already-preprocessed image: what is timed is the engine, not image decoding.
  const input = new Float32Array(c.in_chans * c.img_size * c.img_size).map((_, i) => Math.sin(i * 0.001));
  const logits = await model.logits(input, [1, c.in_chans, c.img_size, c.img_size]);
  let top1 = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[top1]) top1 = i;
  const marks: ColdStartMarks = {
    imported,
    backendReady,
    weightsLoaded,
    firstClassification: performance.now(),
    top1,
    engineCache: engineCache ? (engineCache.opened ? "opened" : "written") : "none",
  };
  console.log(JSON.stringify(marks));
  model.dispose();
}

if (import.meta.main) {
  Deno.env.set("VIT_QUIET", "1");
  await main();
  // WebGPU keeps the event loop alive; the probe is done once it has printed.
  Deno.exit(0);
}
