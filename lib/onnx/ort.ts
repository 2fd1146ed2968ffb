/**
 * ONNX Runtime (`onnxruntime-node`, CPU execution provider): loading the package once per process, and
 * sessions over in-memory models with the session options this project measured best (figures in
 * docs/benchmarks.md): one intra-op thread per core, sequential execution, every graph optimisation, intra-op
 * threads that sleep rather than spin when idle.
 *
 * The package is imported lazily, so that a machine where its native library cannot load still runs on
 * tfjs; {@linkcode loadOrt} then says why.
 *
 * @module
 */
import type * as Ort from "onnxruntime-node";
import { ortThreadsWanted } from "../backend/threads.ts";

/** The loaded package, or why it could not be loaded. */
export type OrtLoad = { ort: typeof Ort; version: string } | { error: string };

let loading: Promise<OrtLoad> | undefined;

/** Imports `onnxruntime-node` once; never throws. */
export function loadOrt(): Promise<OrtLoad> {
  loading ??= (async () => {
    try {
      const ort = await import("onnxruntime-node");
      // The import succeeds even when the native binding is absent; creating a tensor touches it.
      const version = ort.env.versions?.node ?? ort.env.versions?.common ?? "unknown";
      return { ort: ort as unknown as typeof Ort, version };
    } catch (e) {
      return { error: `onnxruntime-node could not be loaded: ${(e as Error).message.split("\n")[0]}` };
    }
  })();
  return loading;
}

/** Session options; every field has the measured default. */
export interface OrtSessionOptions {
  /** Intra-op threads; the number of cores by default (`VIT_ORT_THREADS` overrides). */
  threads?: number;
  /** ONNX Runtime's graph optimisation level; `"all"` by default. */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /**
   * Whether idle intra-op threads spin waiting for work (ONNX Runtime's default) instead of sleeping; off by
   * default here: on a machine shared with training or other jobs, spinning threads wait on descheduled ones.
   */
  spinning?: boolean;
}

/** A session over one model with one float32 input and one float32 output. */
export interface OrtSession {
  /** The output for `input` of `shape`, as a new array. */
  run(input: Float32Array, shape: readonly number[]): Promise<Float32Array>;
  release(): Promise<void>;
}

/** The ONNX Runtime session options of {@linkcode openSession}, as onnxruntime-node takes them. */
function sessionOptions(
  options: OrtSessionOptions,
  level: NonNullable<OrtSessionOptions["optimization"]>,
  session: Record<string, string>,
): Ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ["cpu"],
    intraOpNumThreads: options.threads ?? ortThreadsWanted(),
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: level,
    extra: { session: { intra_op: { allow_spinning: options.spinning ? "1" : "0" }, ...session } },
  };
}

/** Where {@linkcode openSession} writes the optimised model (see {@linkcode OpenOptions.saveTo}). */
export function externalDataName(modelPath: string): string {
  return `${modelPath.slice(modelPath.lastIndexOf("/") + 1)}.data`;
}

/** Options of {@linkcode openSession} beyond the measured session options. */
export interface OpenOptions extends OrtSessionOptions {
  /**
   * Also write the model as ONNX Runtime optimised it to this `.onnx` path, its initializers and their
   * forms packed for the matrix kernels (`session.save_external_prepacked_constant_initializers`) in
   * `<name>.data` beside it, so that {@linkcode openSession} on that path later skips writing and optimising
   * the graph and packing the weights, and memory-maps them. The file is specific to this ONNX Runtime
   * version, optimisation level and CPU (ONNX Runtime warns so at level `all`): lib/onnx/engine_cache.ts
   * keys it by all three.
   */
  saveTo?: string;
}

/**
 * Opens a session on an ONNX model: in-memory bytes (ONNX Runtime copies the initializers, so the caller may
 * drop them once this resolves), or the path of a model {@linkcode OpenOptions.saveTo} wrote, which is
 * opened as it is (no optimisation pass: it is already optimised) with its weights memory-mapped. Throws when
 * the package cannot load or the model is rejected.
 */
export async function openSession(
  model: Uint8Array | string,
  options: OpenOptions = {},
): Promise<OrtSession> {
  const loaded = await loadOrt();
  if ("error" in loaded) throw new Error(loaded.error);
  const { ort } = loaded;
  const level = options.optimization ?? "all";
  const save: Record<string, string> = options.saveTo
    ? {
      optimized_model_external_initializers_file_name: externalDataName(options.saveTo),
      optimized_model_external_initializers_min_size_in_bytes: "1024",
      save_external_prepacked_constant_initializers: "1",
    }
    : {};
  const session = typeof model === "string"
    ? await ort.InferenceSession.create(model, sessionOptions(options, "disabled", {}))
    : await ort.InferenceSession.create(model, {
      ...sessionOptions(options, level, save),
      // At level all ONNX Runtime warns that the saved file is specific to this machine; the engine cache
      // keys it by CPU, so the warning asks nothing of the user.
      ...(options.saveTo ? { optimizedModelFilePath: options.saveTo, logSeverityLevel: 3 as const } : {}),
    });
  const inputName = session.inputNames[0], outputName = session.outputNames[0];
  return {
    async run(input, shape) {
      const tensor = new ort.Tensor("float32", input, [...shape]);
      try {
        const out = await session.run({ [inputName]: tensor });
        const result = out[outputName];
        const data = (result.data as Float32Array).slice();
        result.dispose();
        return data;
      } finally {
        tensor.dispose();
      }
    },
    release: () => session.release(),
  };
}
