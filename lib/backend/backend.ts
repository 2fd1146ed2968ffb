/**
 * Engine and backend selection, in one place. The engine answers `logits`; the tfjs backend trains (and
 * answers `logits` too unless the engine is onnx). The automatic choice: a hardware WebGPU adapter → webgpu;
 * else ONNX Runtime (`onnx`, with training on tfjs-wasm, else cpu) when onnxruntime-node loads; else
 * tfjs-wasm; else the pure-JS cpu backend. A software WebGPU adapter (llvmpipe, lavapipe, SwiftShader:
 * WebGPU's "fallback adapter") is never chosen automatically, for inference or training, since every CPU
 * engine beats it; it still runs when forced. `VIT_BACKEND=webgpu|onnx|wasm|cpu` (or the `prefer` argument)
 * forces one.
 *
 * The project's own kernels are registered here too, where they were measured faster than tfjs's (figures in
 * docs/benchmarks.md): the per-item `BatchMatMul` and the heap-view `Slice`/`SplitV` on wasm, and the WGSL
 * matmul, softmax, LayerNorm and GELU on a software WebGPU adapter (on a hardware GPU tfjs's tiled kernels
 * and the model's composite LayerNorm and GELU stay until a GPU bench says otherwise). `VIT_KERNELS=stock`
 * keeps tfjs's own everywhere, to rule the project's kernels out when chasing a numerical difference.
 *
 * @module
 */
import { loadOrt } from "../onnx/ort.ts";
import { ortThreadsWanted, wasmThreadsWanted } from "./threads.ts";
import { notice, warn } from "../util/log.ts";

/** tfjs and its backends (tfjs_start.ts), loaded on first need: the onnx engine classifies without them. */
function tfjs(): Promise<typeof import("./tfjs_start.ts")> {
  return import("./tfjs_start.ts");
}

/** Whether this process has loaded tfjs (by this module or by an import of its own). */
function tfjsLoaded(): boolean {
  return "_tfengine" in globalThis;
}

/** The tfjs backends this project runs on. */
export type BackendName = "webgpu" | "wasm" | "cpu";

/** What answers `logits`: a tfjs backend, or ONNX Runtime. */
export type EngineName = BackendName | "onnx";

/** What was chosen, and the limits the model must respect on it. */
export interface BackendInfo {
  /** The tfjs backend: it trains, and it answers `logits` unless {@linkcode engine} is onnx. */
  name: BackendName;
  /** The engine that answers `logits`. */
  engine: EngineName;
  /** Why this engine was chosen, e.g. "no hardware GPU adapter" or "VIT_BACKEND=onnx". */
  reason: string;
  /** ONNX Runtime's version and intra-op threads, when the engine is onnx. */
  ort?: { version: string; threads: number };
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

const ENGINES: EngineName[] = ["webgpu", "onnx", "wasm", "cpu"];
let current: Promise<BackendInfo> | undefined;
let currentPrefer: EngineName | undefined;
/**
 * Set in a data-parallel training worker ({@linkcode initWorkerBackend}): its wasm threads, and no log line.
 */
let workerThreads: number | undefined;

/** Parses a backend name as `VIT_BACKEND` or a `--backend` flag gives it; `source` names it in errors. */
export function parseEngine(value: string | undefined, source: string): EngineName | undefined {
  if (value === undefined || value === "") return undefined;
  if ((ENGINES as string[]).includes(value)) return value as EngineName;
  throw new Error(`${source}: unknown backend "${value}", expected one of ${ENGINES.join(", ")}`);
}

/**
 * Mesa's Vulkan drivers print `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` when probed
 * without a desktop session. Probing with a private runtime folder of our own keeps that line, which asks
 * nothing of the user, off their terminal.
 */
function quietRuntimeDir(): void {
  const dir = Deno.env.get("XDG_RUNTIME_DIR");
  try {
    if (dir && Deno.statSync(dir).isDirectory) return;
  } catch {
    // not a folder: replaced below
  }
  try {
    const own = `${Deno.env.get("TMPDIR") || "/tmp"}/vit-deno-runtime-${Deno.uid() ?? "user"}`;
    Deno.mkdirSync(own, { recursive: true, mode: 0o700 });
    Deno.env.set("XDG_RUNTIME_DIR", own);
  } catch {
    // Nothing more to do: the line is cosmetic.
  }
}

let adapterProbe: Promise<GPUAdapter | null> | undefined;

function webgpuAdapter(): Promise<GPUAdapter | null> {
  adapterProbe ??= (async () => {
    if (typeof navigator === "undefined" || !("gpu" in navigator)) return null;
    if (Deno.build.os === "linux") quietRuntimeDir();
    try {
      return await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    } catch {
      return null;
    }
  })();
  return adapterProbe;
}

function isFallback(adapter: GPUAdapter): boolean {
  return Boolean(
    (adapter.info as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
      (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
  );
}

type Chosen = Omit<BackendInfo, "engine" | "reason">;

async function tryBackend(name: BackendName): Promise<Chosen | undefined> {
  if (name === "webgpu") {
    const adapter = await webgpuAdapter();
    if (!adapter || !(await (await tfjs()).startTfjsBackend("webgpu", 1))) return undefined;
    const info = adapter.info;
    const limits = adapter.limits;
    return {
      name,
      adapter: {
        description: info.description || info.device || "unknown",
        vendor: info.vendor || "unknown",
        isFallbackAdapter: isFallback(adapter),
      },
      maxBindingBytes: Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize),
      memoryBudgetBytes: Infinity,
      kernels: [],
    };
  }
  // Read before starting: a malformed VIT_WASM_THREADS is the user's error to see, not a backend that failed.
  const wanted = name === "wasm" ? (workerThreads ?? wasmThreadsWanted()) : 1;
  const started = await (await tfjs()).startTfjsBackend(name, wanted);
  if (!started) return undefined;
  return {
    name,
    maxBindingBytes: Infinity,
    memoryBudgetBytes: name === "wasm" ? WASM_BUDGET_BYTES : Infinity,
    kernels: [],
    ...(started.threads !== undefined ? { threads: started.threads } : {}),
  };
}

function parseKernels(value: string | undefined): "project" | "stock" {
  if (value === undefined || value === "" || value === "project") return "project";
  if (value === "stock") return "stock";
  throw new Error(`VIT_KERNELS: unknown value "${value}", expected "project" (the default) or "stock"`);
}

/** Registers the project's kernels that apply to `info`'s backend and records them in `info.kernels`. */
async function installKernels(info: Chosen): Promise<void> {
  if (parseKernels(Deno.env.get("VIT_KERNELS")) === "stock") return;
  const { installProjectKernels } = await tfjs();
  info.kernels.push(...installProjectKernels(info.name, info.adapter?.isFallbackAdapter ?? false));
}

/** The first tfjs backend of `names` that starts, with its kernels installed. */
async function firstTfjs(names: BackendName[]): Promise<Chosen | undefined> {
  for (const name of names) {
    const info = await tryBackend(name);
    if (info) {
      await installKernels(info);
      return info;
    }
  }
  return undefined;
}

/** The automatic training backend: a hardware GPU, else wasm, else cpu (never a software adapter). */
async function trainingBackend(hardwareGpu: boolean): Promise<Chosen> {
  const info = await firstTfjs(hardwareGpu ? ["webgpu", "wasm", "cpu"] : ["wasm", "cpu"]);
  if (!info) throw new Error("no tfjs backend could start (tried wasm and cpu)");
  return info;
}

/** Starts the tfjs training backend of an onnx-engine choice, once, when something first needs tfjs. */
const trainingStarts = new WeakMap<BackendInfo, () => Promise<void>>();

/**
 * The onnx engine, with its planned training backend. `hardwareGpu` may be a probe still to run: when onnx
 * is forced, the WebGPU probe (a few hundred ms) waits until something first trains, so a process that only
 * classifies never pays for it; until then wasm is the planned training backend.
 */
async function onnxEngine(
  reason: string,
  hardwareGpu: boolean | (() => Promise<boolean>),
): Promise<BackendInfo | string> {
  const ort = await loadOrt();
  if ("error" in ort) return ort.error;
  // Inference needs no tfjs at all: tfjs and the training backend load on first use (ensureTrainingBackend),
  // so a server that only classifies never pays for them. Until then `name` is the planned one; a process
  // that imported tfjs itself keeps it on the cpu backend (see parkOnCpu).
  if (tfjsLoaded()) await (await tfjs()).parkOnCpu();
  const planned: BackendName = hardwareGpu === true ? "webgpu" : "wasm";
  const info: BackendInfo = {
    name: planned,
    engine: "onnx",
    reason,
    ort: { version: ort.version, threads: ortThreadsWanted() },
    maxBindingBytes: Infinity,
    memoryBudgetBytes: planned === "wasm" ? WASM_BUDGET_BYTES : Infinity,
    kernels: [],
  };
  let started: Promise<void> | undefined;
  trainingStarts.set(info, () => {
    started ??= (async () =>
      trainingBackend(typeof hardwareGpu === "boolean" ? hardwareGpu : await hardwareGpu()))()
      .then((chosen) => {
        Object.assign(info, chosen);
      }).catch((e) => {
        started = undefined;
        throw e;
      });
    return started;
  });
  return info;
}

/**
 * Makes sure the tfjs backend that trains (and holds Variables) is running: on the onnx engine it starts on
 * first use; on the tfjs engines it already is. `info` is updated in place with what started.
 */
export async function ensureTrainingBackend(info: BackendInfo): Promise<void> {
  await trainingStarts.get(info)?.();
}

async function select(prefer: EngineName | undefined): Promise<BackendInfo> {
  const envValue = Deno.env.get("VIT_BACKEND");
  const forced = prefer ?? parseEngine(envValue, "VIT_BACKEND");
  if (forced) {
    const reason = prefer ? "requested" : `VIT_BACKEND=${envValue}`;
    if (forced === "onnx") {
      const info = await onnxEngine(reason, async () => {
        const adapter = await webgpuAdapter();
        return adapter !== null && !isFallback(adapter);
      });
      if (typeof info === "string") throw new Error(`backend "onnx" was requested but ${info}`);
      return info;
    }
    const info = await firstTfjs([forced]);
    if (!info) throw new Error(`backend "${forced}" was requested but could not be initialised`);
    return { ...info, engine: forced, reason };
  }
  const adapter = await webgpuAdapter();
  const noGpu = adapter
    ? `software GPU adapter (${adapter.info.description || "unknown"})`
    : "no GPU adapter";
  if (adapter && !isFallback(adapter)) {
    const info = await firstTfjs(["webgpu"]);
    if (info) return { ...info, engine: "webgpu", reason: "hardware GPU adapter" };
  }
  const onnx = await onnxEngine(noGpu, false);
  if (typeof onnx !== "string") return onnx;
  // The one line that says why the CPU engine is not ONNX Runtime.
  warn(`${onnx}; serving on tfjs instead`);
  const info = await trainingBackend(false);
  return { ...info, engine: info.name, reason: `${noGpu}; onnxruntime-node unavailable` };
}

/**
 * A one-line description: the engine, what it runs with, why it was chosen and, for onnx, where training
 * runs, e.g. `onnx (onnxruntime-node 1.30.0, 2 threads; no GPU adapter; training on wasm)` or
 * `webgpu (llvmpipe (LLVM 15.0.6, 256 bits), fallback adapter; kernels: WGSL matmul, …; VIT_BACKEND=webgpu)`.
 */
export function describeBackend(info: BackendInfo): string {
  const parts: string[] = [];
  if (info.engine === "onnx") {
    parts.push(
      `onnxruntime-node ${info.ort?.version ?? "?"}, ${info.ort?.threads ?? "?"} threads`,
      info.reason,
    );
    parts.push(`training on ${info.name}`);
    return `onnx (${parts.join("; ")})`;
  }
  if (info.adapter) {
    parts.push(info.adapter.description + (info.adapter.isFallbackAdapter ? ", fallback adapter" : ""));
  }
  if (info.threads !== undefined) parts.push(`${info.threads} thread${info.threads > 1 ? "s" : ""}`);
  if (info.kernels.length) parts.push(`kernels: ${info.kernels.join(", ")}`);
  parts.push(info.reason);
  return `${info.name} (${parts.join("; ")})`;
}

/**
 * Selects and initialises the engine and tfjs backend once per process (later calls return the same choice;
 * asking for a different one switches to it). The choice is logged once to stderr (`VIT_QUIET=1` silences
 * it).
 */
export function initBackend(prefer?: EngineName): Promise<BackendInfo> {
  if (!current || (prefer && prefer !== currentPrefer)) {
    currentPrefer = prefer;
    const attempt: Promise<BackendInfo> = select(prefer).then((info) => {
      if (workerThreads === undefined) notice(`backend ${describeBackend(info)}`);
      return info;
    }).catch((e) => {
      // A failed start is not remembered: the next call (e.g. after fixing VIT_BACKEND) tries again.
      if (current === attempt) current = undefined;
      throw e;
    });
    current = attempt;
  }
  return current;
}

/**
 * The backend of a data-parallel training worker (lib/vit/grad_pool.ts): tfjs-wasm on `threads` threads
 * whatever `VIT_WASM_THREADS` says (the workers already use every core between them), the same kernels as
 * the isolate that started it (`VIT_KERNELS` is process-wide), and no log line.
 */
export function initWorkerBackend(threads: number): Promise<BackendInfo> {
  workerThreads = threads;
  return initBackend("wasm");
}
