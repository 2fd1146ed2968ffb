/**
 * The bench's onnx-engine pieces: the note naming the session options the figures were taken with, and the
 * sweep over session options (intra-op threads, graph optimisation level, GELU form) that chose them: each
 * variant is a fresh session over the graph `lib/vit/onnx_graph.ts` writes for ViT-B/16, timed at batch 1.
 *
 * @module
 */
import type { BackendInfo } from "../backend/backend.ts";
import { openSession, type OrtSession, type OrtSessionOptions } from "../onnx/ort.ts";
import type { ResolvedViTConfig } from "../vit/config.ts";
import { type GeluForm, vitOnnxModel } from "../vit/onnx_graph.ts";
import type { StateDict } from "../vit/params.ts";
import { measure, measureInterleaved, type Timing } from "./stats.ts";

/** One line for the report: what the onnx figures ran with. */
export function onnxSessionNote(info: BackendInfo): string {
  return `onnx engine: onnxruntime-node ${info.ort?.version}, CPU execution provider, intraOpNumThreads ` +
    `${info.ort?.threads}, interOpNumThreads 1, sequential, graphOptimizationLevel all, no spinning; the ViT ` +
    `graph is written in memory by lib/vit/onnx_graph.ts (opset 17, weights as initializers), not exported.`;
}

/** One variant of the sweep. */
export interface SessionVariant {
  label: string;
  session: OrtSessionOptions;
  gelu: GeluForm;
}

/** The variants the bench compares: threads 1 vs every core, spinning, optimisation levels, GELU form. */
export function sessionVariants(cores: number): SessionVariant[] {
  const out: SessionVariant[] = [];
  for (const threads of [...new Set([1, cores])]) {
    out.push({
      label: `${threads} thread(s), all, erf GELU`,
      session: { threads, optimization: "all" },
      gelu: "erf",
    });
  }
  out.push({
    label: `${cores} thread(s), all, erf GELU, spinning threads`,
    session: { threads: cores, optimization: "all", spinning: true },
    gelu: "erf",
  });
  for (const optimization of ["basic", "extended"] as const) {
    out.push({
      label: `${cores} thread(s), ${optimization}, erf GELU`,
      session: { threads: cores, optimization },
      gelu: "erf",
    });
  }
  out.push({
    label: `${cores} thread(s), all, com.microsoft Gelu`,
    session: { threads: cores, optimization: "all" },
    gelu: "contrib",
  });
  return out;
}

/** Times ViT-B/16 batch-1 latency for one variant (session build time included in the result). */
export async function timeVariant(
  config: ResolvedViTConfig,
  state: StateDict,
  variant: SessionVariant,
  input: Float32Array,
  warmup: number,
  runs: number,
): Promise<{ timing: Timing; openMs: number }> {
  const t0 = performance.now();
  const session = await openSession(vitOnnxModel(config, state, { gelu: variant.gelu }), variant.session);
  const openMs = performance.now() - t0;
  try {
    const shape = [1, config.in_chans, config.img_size, config.img_size];
    return { timing: await measure(() => session.run(input, shape), warmup, runs), openMs };
  } finally {
    await session.release();
  }
}

/** One batch size of {@linkcode interleavedComparison}. */
export interface PairedFigure {
  batch: number;
  ours: Timing;
  anchor: Timing;
}

/**
 * The onnx engine (a session as `createViT` opens it) and the anchor session timed in turn, run by run, at
 * each batch size: the ratio the bench prints comes from these, so that other jobs on a shared machine slow
 * both sides alike.
 */
export async function interleavedComparison(
  config: ResolvedViTConfig,
  state: StateDict,
  anchor: OrtSession,
  batches: readonly number[],
  input: (batch: number) => Float32Array,
  warmup: number,
  runs: number,
): Promise<PairedFigure[]> {
  const ours = await openSession(vitOnnxModel(config, state));
  try {
    const out: PairedFigure[] = [];
    for (const batch of batches) {
      const x = input(batch), shape = [batch, config.in_chans, config.img_size, config.img_size];
      const [a, b] = await measureInterleaved(
        [() => ours.run(x, shape), () => anchor.run(x, shape)],
        warmup,
        runs,
      );
      out.push({ batch, ours: a, anchor: b });
    }
    return out;
  } finally {
    await ours.release();
  }
}
