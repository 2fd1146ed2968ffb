/**
 * The bench's onnx-engine pieces: the note naming the session options the figures were taken with, and the
 * sweep over session options (intra-op threads, spinning, graph optimisation level, GELU form) that chose
 * them: each variant is a fresh session over the graph `lib/vit/onnx_graph.ts` writes for ViT-B/16, timed at
 * batch 1 in turn with the others.
 *
 * @module
 */
import type { BackendInfo } from "../backend/backend.ts";
import { openSession, type OrtSession, type OrtSessionOptions } from "../onnx/ort.ts";
import type { ResolvedViTConfig } from "../vit/config.ts";
import { type GeluForm, vitOnnxModel } from "../vit/onnx_graph.ts";
import type { StateDict } from "../vit/params.ts";
import { measureInterleaved, type Timing } from "./stats.ts";

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

/**
 * Times ViT-B/16 batch-1 latency for every variant, all sessions open at once and run in turn (a, b, c, …),
 * so that the machine's load falls on each alike; returns each variant's timing and session build time.
 */
export async function timeVariants(
  config: ResolvedViTConfig,
  state: StateDict,
  variants: readonly SessionVariant[],
  input: Float32Array,
  warmup: number,
  runs: number,
): Promise<Array<{ variant: SessionVariant; timing: Timing; openMs: number }>> {
  const sessions: OrtSession[] = [], opens: number[] = [];
  try {
    for (const v of variants) {
      const t0 = performance.now();
      sessions.push(await openSession(vitOnnxModel(config, state, { gelu: v.gelu }), v.session));
      opens.push(performance.now() - t0);
    }
    const shape = [1, config.in_chans, config.img_size, config.img_size];
    const timings = await measureInterleaved(sessions.map((s) => () => s.run(input, shape)), warmup, runs);
    return variants.map((variant, k) => ({ variant, timing: timings[k], openMs: opens[k] }));
  } finally {
    for (const s of sessions) await s.release();
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
