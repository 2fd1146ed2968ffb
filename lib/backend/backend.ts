/**
 * Backend selection, in one place: WebGPU when an adapter exists, else tfjs-wasm, else the pure-JS cpu
 * backend. `VIT_BACKEND=webgpu|wasm|cpu` (or the `prefer` argument) forces one.
 *
 * The project's own kernels are registered here too, where they were measured faster than tfjs's (figures in
 * docs/benchmarks.md): the per-item `BatchMatMul` and the heap-view `Slice`/`SplitV` on wasm, and the WGSL
 * matmul, softmax, LayerNorm and GELU on a software WebGPU adapter (on a hardware GPU tfjs's tiled kernels and
 * the model's composite LayerNorm and GELU stay until a GPU bench says otherwise).
 * `VIT_KERNELS=stock` keeps tfjs's own everywhere, to rule the project's kernels out when chasing a
 * numerical difference.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-webgpu";
import "@tensorflow/tfjs-backend-wasm";
import { installProjectKernels } from "./kernels.ts";
import { startWasm, wasmThreadsWanted } from "./wasm_threads.ts";

/** The tfjs backends this project runs on. */
export type BackendName = "webgpu" | "wasm" | "cpu";

/** What was chosen, and the limits the model must respect on it. */
export interface BackendInfo {
  name: BackendName;
  /** The WebGPU adapter, when the backend is webgpu. */
  adapter?: { description: string; vendor: string; isFallbackAdapter: boolean };
  /**
   * The largest buffer one kernel may bind, in bytes (WebGPU's `maxStorageBufferBindingSize`); the model
   * splits batches so that no activation exceeds it. `Infinity` on backends without such a limit.
   */
  maxBindingBytes: number;
  /**
   * Bytes the backend can hold at once for weights and activations. tfjs-wasm's heap stops at 4 GiB and
   * failed here past ~2 GiB ("memory access out of bounds"), so training passes are split to stay under it.
   * `Infinity` where nothing smaller than the machine applies.
   */
  memoryBudgetBytes: number;
  /**
   * The project's kernels registered in place of tfjs's on this backend (e.g. `["wasm BatchMatMul"]`); empty
   * with `VIT_KERNELS=stock` or where none is faster.
   */
  kernels: string[];
  /** tfjs-wasm's threads (`VIT_WASM_THREADS`, see wasm_threads.ts); absent on other backends. */
  threads?: number;
}

const WASM_BUDGET_BYTES = 1.75 * 2 ** 30;

const ORDER: BackendName[] = ["webgpu", "wasm", "cpu"];
let current: Promise<BackendInfo> | undefined;
let currentPrefer: BackendName | undefined;

function parseName(value: string | undefined, source: string): BackendName | undefined {
  if (value === undefined || value === "") return undefined;
  if ((ORDER as string[]).includes(value)) return value as BackendName;
  throw new Error(`${source}: unknown backend "${value}", expected one of ${ORDER.join(", ")}`);
}

async function webgpuAdapter(): Promise<GPUAdapter | null> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) return null;
  try {
    return await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch {
    return null;
  }
}

async function tryBackend(name: BackendName): Promise<BackendInfo | undefined> {
  if (name === "webgpu") {
    const adapter = await webgpuAdapter();
    if (!adapter) return undefined;
    if (!(await tf.setBackend("webgpu"))) return undefined;
    await tf.ready();
    const info = adapter.info;
    const limits = adapter.limits;
    return {
      name,
      adapter: {
        description: info.description || info.device || "unknown",
        vendor: info.vendor || "unknown",
        isFallbackAdapter: Boolean(
          (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
            (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
        ),
      },
      maxBindingBytes: Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize),
      memoryBudgetBytes: Infinity,
      kernels: [],
    };
  }
  let threads: number | undefined;
  // Outside the try: a malformed VIT_WASM_THREADS is the user's error to see, not a backend that failed.
  const wanted = name === "wasm" ? wasmThreadsWanted() : 1;
  try {
    if (name === "wasm") {
      threads = (await startWasm({ threads: wanted }))?.threads;
      if (threads === undefined) return undefined;
    } else {
      if (!(await tf.setBackend(name))) return undefined;
      await tf.ready();
    }
  } catch {
    return undefined;
  }
  return {
    name,
    maxBindingBytes: Infinity,
    memoryBudgetBytes: name === "wasm" ? WASM_BUDGET_BYTES : Infinity,
    kernels: [],
    ...(threads !== undefined ? { threads } : {}),
  };
}

function parseKernels(value: string | undefined): "project" | "stock" {
  if (value === undefined || value === "" || value === "project") return "project";
  if (value === "stock") return "stock";
  throw new Error(`VIT_KERNELS: unknown value "${value}", expected "project" (the default) or "stock"`);
}

/** Registers the project's kernels that apply to `info`'s backend and records them in `info.kernels`. */
function installKernels(info: BackendInfo): void {
  if (parseKernels(Deno.env.get("VIT_KERNELS")) === "stock") return;
  info.kernels.push(...installProjectKernels(info.name, info.adapter?.isFallbackAdapter ?? false));
}

async function select(prefer: BackendName | undefined): Promise<BackendInfo> {
  const forced = prefer ?? parseName(Deno.env.get("VIT_BACKEND"), "VIT_BACKEND");
  const candidates = forced ? [forced] : ORDER;
  for (const name of candidates) {
    const info = await tryBackend(name);
    if (info) {
      installKernels(info);
      if (Deno.env.get("VIT_QUIET") !== "1") console.error(`vit-deno: backend ${describeBackend(info)}`);
      return info;
    }
  }
  throw new Error(
    forced ? `backend "${forced}" was requested but could not be initialised` : "no tfjs backend could start",
  );
}

/**
 * A one-line description, e.g.
 * `webgpu (llvmpipe (LLVM 15.0.6, 256 bits), fallback adapter; kernels: WGSL matmul, WGSL softmax, …)`.
 */
export function describeBackend(info: BackendInfo): string {
  const parts: string[] = [];
  if (info.adapter) {
    parts.push(info.adapter.description + (info.adapter.isFallbackAdapter ? ", fallback adapter" : ""));
  }
  if (info.threads !== undefined) parts.push(`${info.threads} thread${info.threads > 1 ? "s" : ""}`);
  if (info.kernels.length) parts.push(`kernels: ${info.kernels.join(", ")}`);
  return parts.length ? `${info.name} (${parts.join("; ")})` : info.name;
}

/**
 * Selects and initialises the backend once per process (later calls return the same choice; asking for a
 * different backend switches to it). The choice is logged once to stderr (`VIT_QUIET=1` silences it).
 */
export function initBackend(prefer?: BackendName): Promise<BackendInfo> {
  if (!current || (prefer && prefer !== currentPrefer)) {
    currentPrefer = prefer;
    const attempt: Promise<BackendInfo> = select(prefer).catch((e) => {
      // A failed start is not remembered: the next call (e.g. after fixing VIT_BACKEND) tries again.
      if (current === attempt) current = undefined;
      throw e;
    });
    current = attempt;
  }
  return current;
}

/** The backend chosen by {@linkcode initBackend}, which must have been awaited. */
export async function backendInfo(): Promise<BackendInfo> {
  return await initBackend();
}
