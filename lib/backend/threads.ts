/**
 * Thread and worker counts from the environment, in one place, for every engine: tfjs-wasm's threads
 * (`VIT_WASM_THREADS`), ONNX Runtime's (`VIT_ORT_THREADS`) and the data-parallel training workers
 * (`VIT_TRAIN_WORKERS`). It imports no engine, so reading a setting never loads tfjs or ONNX Runtime.
 *
 * @example
 * ```ts
 * import { coresSetting } from "./threads.ts";
 * coresSetting("VIT_ORT_THREADS", "4", Infinity); // 4
 * ```
 *
 * @module
 */

/**
 * The most tfjs-wasm threads: Emscripten's pool is 8 workers, created up front; more would need workers
 * later.
 */
export const MAX_WASM_THREADS = 8;

/**
 * A count of parallel workers from the environment variable `name` (its `value`): a positive integer, or the
 * machine's cores when unset or empty; at most `max`.
 */
export function coresSetting(name: string, value: string | undefined, max: number): number {
  if (value === undefined || value === "") {
    return Math.max(1, Math.min(max, navigator.hardwareConcurrency || 1));
  }
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`${name}: expected a positive integer, got "${value}"`);
  }
  return Math.min(max, n);
}

/**
 * tfjs-wasm threads wanted: `VIT_WASM_THREADS` (a positive integer), else the machine's cores, capped at
 * {@linkcode MAX_WASM_THREADS}.
 */
export function wasmThreadsWanted(value = Deno.env.get("VIT_WASM_THREADS")): number {
  return coresSetting("VIT_WASM_THREADS", value, MAX_WASM_THREADS);
}

/** ONNX Runtime's intra-op threads: `VIT_ORT_THREADS` (a positive integer), else the machine's cores. */
export function ortThreadsWanted(value = Deno.env.get("VIT_ORT_THREADS")): number {
  return coresSetting("VIT_ORT_THREADS", value, Infinity);
}
