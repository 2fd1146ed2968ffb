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

/** The intra-op thread count used when none is given: `VIT_ORT_THREADS`, else the number of cores. */
export function defaultThreads(): number {
  const env = Deno.env.get("VIT_ORT_THREADS");
  if (env) {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`VIT_ORT_THREADS: expected a positive integer, got "${env}"`);
    }
    return n;
  }
  return navigator.hardwareConcurrency || 1;
}

/** A session over one model with one float32 input and one float32 output. */
export interface OrtSession {
  /** The output for `input` of `shape`, as a new array. */
  run(input: Float32Array, shape: readonly number[]): Promise<Float32Array>;
  release(): Promise<void>;
}

/**
 * Opens a session on an in-memory ONNX model. ONNX Runtime copies the model's initializers, so the caller
 * may drop `model` once this resolves. Throws when the package cannot load or the model is rejected.
 */
export async function openSession(model: Uint8Array, options: OrtSessionOptions = {}): Promise<OrtSession> {
  const loaded = await loadOrt();
  if ("error" in loaded) throw new Error(loaded.error);
  const { ort } = loaded;
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ["cpu"],
    intraOpNumThreads: options.threads ?? defaultThreads(),
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: options.optimization ?? "all",
    extra: { session: { intra_op: { allow_spinning: options.spinning ? "1" : "0" } } },
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
