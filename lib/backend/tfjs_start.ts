/**
 * The tfjs side of backend selection: tfjs with its WebGPU and wasm backends, the project's kernels, and
 * starting one backend. backend.ts imports it only when a tfjs backend is wanted (to train, or to answer
 * `logits` on a tfjs engine), so that a process that only classifies on ONNX Runtime never loads tfjs (a
 * few hundred ms of its cold start, docs/benchmarks.md).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-webgpu";
import "@tensorflow/tfjs-backend-wasm";
import { startWasm } from "./wasm_threads.ts";

export { installProjectKernels } from "./kernels.ts";

/**
 * Starts tfjs backend `name` (wasm on `wasmThreads` threads); what it started with, or undefined when it
 * could not start.
 */
export async function startTfjsBackend(
  name: "webgpu" | "wasm" | "cpu",
  wasmThreads: number,
): Promise<{ threads?: number } | undefined> {
  try {
    if (name === "wasm") {
      const threads = (await startWasm({ threads: wasmThreads }))?.threads;
      return threads === undefined ? undefined : { threads };
    }
    if (!(await tf.setBackend(name))) return undefined;
    await tf.ready();
    return {};
  } catch {
    return undefined;
  }
}

/**
 * Puts tfjs on its pure-JS backend (instant to start) until a training backend starts, so that tfjs calls
 * such as `tf.memory()` work and never wake the highest-priority backend (WebGPU, on a software adapter) by
 * themselves.
 */
export async function parkOnCpu(): Promise<void> {
  await tf.setBackend("cpu");
}
