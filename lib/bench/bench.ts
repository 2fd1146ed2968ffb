/**
 * The benchmark's core (`deno task bench`): the figures recorded so far and how one is recorded, the
 * models measured, and the tfjs figures of one model on one backend (forward latency and throughput, the
 * stock-kernel comparison, the per-kernel profile, the training step, peak memory). The anchors, conversion
 * and cold-start figures build on it in lib/bench/bench_run.ts.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { type BackendInfo, type BackendName, type EngineName, initBackend } from "../backend/backend.ts";
import { installProjectKernels, uninstallProjectKernels } from "../backend/kernels.ts";
import { webgpuMatMulKernels } from "../backend/webgpu_matmul.ts";
import { loadAverage, machineInfo, peakRssBytes, resetPeakRss } from "./machine.ts";
import { onnxSessionNote } from "./onnx_engine.ts";
import type { BenchReport, Figure } from "./report.ts";
import { kernelTimes } from "./train_profile.ts";
import { measure, type Timing } from "./stats.ts";
import { archConfig, MICRO_ARCH } from "../vit/archs.ts";
import type { ViTConfig } from "../vit/config.ts";
import { createViT, type ViTModel } from "../vit/model.ts";
import type { StateDict } from "../vit/params.ts";
import { formulaStateDict } from "../weights/formula.ts";

/** The repository root: children run scripts from there, and output paths default below it. */
export const ROOT = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
/** The shared fixtures and anchors (`VIT_SHARED`, default `../shared` beside the repository). */
export const SHARED = Deno.env.get("VIT_SHARED") ?? `${ROOT}/../shared`;

/** How README and the report name each model. */
export const MODEL_LABEL: Record<string, string> = {
  micro: "micro",
  tiny: "ViT-Ti/16",
  base: "ViT-B/16",
  shipped: "shipped model",
};

/** The shipped model's architecture (weights/model.json), timed with formula weights like the others. */
function shippedConfig(): ViTConfig | undefined {
  try {
    return (JSON.parse(Deno.readTextFileSync(`${ROOT}/weights/model.json`)) as { vit: ViTConfig }).vit;
  } catch {
    return undefined;
  }
}

const shipped = shippedConfig();

/** The models `--models` names (`shipped` when weights/ is there). */
export const MODELS: Record<string, ViTConfig> = {
  micro: archConfig(MICRO_ARCH)!,
  tiny: archConfig("vit_tiny_patch16_224")!,
  base: archConfig("vit_base_patch16_224")!,
  ...(shipped ? { shipped } : {}),
};

/** What `deno task bench` was asked to measure (resolved from its options). */
export interface BenchOptions {
  models: string[];
  backends: EngineName[];
  batches: number[];
  trainBatch: number;
  runs: number;
  warmup: number;
  budgetS: number;
  anchor: boolean;
  torch: boolean;
  noTorch: boolean;
  coldStart: boolean;
  convert: boolean;
  profile: boolean;
  wasmVariants: boolean;
  onnxSweep: boolean;
  threads: boolean;
  finetuneHttp: boolean;
  fastKernels: boolean;
  forceWgsl: boolean;
  ortThreads: number;
  cache: string;
  json: string;
  md: string;
  write: boolean;
}

/** A deterministic, already-preprocessed batch (the same formula the PyTorch anchor uses). */
export function benchInput(n: number, c: ViTConfig): Float32Array {
  const size = n * (c.in_chans ?? 3) * c.img_size * c.img_size;
  return new Float32Array(size).map((_, i) => Math.sin(i * 0.001));
}

function fmtMin(seconds: number): string {
  return seconds >= 90 ? `~${(seconds / 60).toFixed(0)} min` : `~${Math.ceil(seconds)} s`;
}

/** What identifies a figure's row: model, engine, backend, adapter. */
export type FigureBase = Omit<Figure, "date" | "machine" | "loadavg" | "metric" | "unit">;

/** The figures of one bench run and the tfjs figure groups; see the module doc. */
export class Bench {
  readonly figures: Figure[] = [];
  readonly ratios: string[] = [];
  readonly notes: string[] = [];
  readonly kernels: BenchReport["kernels"] = {};
  readonly machine = machineInfo();
  /** b1 latency (ms) by `model/backend`, used for estimates and ratios. */
  readonly latency = new Map<string, number>();
  /** throughput (img/s) by `model/backend/batch`. */
  readonly throughput = new Map<string, number>();
  readonly states = new Map<string, StateDict>();

  constructor(readonly o: BenchOptions) {}

  add(f: Omit<Figure, "date" | "machine" | "loadavg">): Figure {
    const full: Figure = {
      ...f,
      date: new Date().toISOString(),
      machine: this.machine.summary,
      loadavg: loadAverage(),
    };
    this.figures.push(full);
    const shown = full.skipped ? `skipped: ${full.skipped}` : `${full.value?.toFixed(2)} ${full.unit}`;
    console.log(
      `${full.model.padEnd(5)} ${full.backend.padEnd(8)} ${full.metric.padEnd(17)} ` +
        `${full.batch !== undefined ? `b${full.batch}`.padEnd(4) : "    "} ${shown}  (load ${
          full.loadavg.join("/")
        })`,
    );
    return full;
  }

  state(model: string): StateDict {
    let s = this.states.get(model);
    if (!s) {
      s = formulaStateDict(MODELS[model]);
      this.states.set(model, s);
    }
    return s;
  }

  /** Skips (returning the reason) when `perCallS × (warmup + runs)` exceeds the budget. */
  tooLong(perCallS: number, calls = this.o.warmup + this.o.runs): string | undefined {
    const total = perCallS * calls;
    return total > this.o.budgetS
      ? `would take ${fmtMin(total)} (${calls} calls × ~${
        perCallS.toFixed(1)
      } s estimated from batch 1; --budget ${this.o.budgetS} s)`
      : undefined;
  }

  /**
   * Records the timing of forward passes over `batch` images: latency (ms) at batch 1, else img/s; with
   * `key`, also kept for estimates and ratio lines.
   */
  addTiming(
    base: FigureBase,
    batch: number,
    t: Timing,
    { key, note }: { key?: string; note?: string } = {},
  ): Figure {
    const latency = batch === 1, ips = (batch * 1000) / t.medianMs;
    if (key !== undefined && latency) this.latency.set(key, t.medianMs);
    else if (key !== undefined) this.throughput.set(`${key}/${batch}`, ips);
    return this.add({
      ...base,
      metric: latency ? "latency" : "throughput",
      batch,
      value: latency ? t.medianMs : ips,
      unit: latency ? "ms" : "img/s",
      runs: t.runs,
      cpuMs: t.cpuMs,
      warmup: t.warmup,
      ...(note ? { note } : {}),
    });
  }

  async timed(fn: () => Promise<unknown>): Promise<Timing> {
    return await measure(fn, this.o.warmup, this.o.runs);
  }

  async backendGroup(model: string, backendName: EngineName): Promise<void> {
    let info: BackendInfo;
    try {
      info = await initBackend(backendName);
    } catch (e) {
      this.add({
        model,
        engine: "vit-deno",
        backend: backendName,
        adapter: "-",
        metric: "latency",
        batch: 1,
        unit: "ms",
        skipped: `backend unavailable (${(e as Error).message})`,
      });
      return;
    }
    if (backendName === "webgpu" && this.o.fastKernels && this.o.forceWgsl) {
      installProjectKernels("webgpu", info.adapter?.isFallbackAdapter ?? false, true);
    }
    const adapter = info.adapter
      ? `${info.adapter.description}${info.adapter.isFallbackAdapter ? " (fallback)" : ""}`
      : "-";
    const base = { model, engine: "vit-deno", backend: backendName, adapter };
    const config = MODELS[model];
    const key = `${model}/${backendName}`;
    // ViT-B/16 on the pure-JS backend: ~20 s per image; estimate before building anything.
    resetPeakRss();
    // On onnx the model serves as the server loads it (ONNX Runtime alone); training there is tfjs's,
    // measured on its own backend.
    const onnx = backendName === "onnx";
    const vit = await createViT(config, this.state(model), { trainable: !onnx });
    const tensorsBefore = tf.memory().numTensors;
    try {
      await this.forwardFigures(vit, base, key);
      const overridden = backendName === "wasm" ||
        (backendName === "webgpu" && webgpuMatMulKernels.installed);
      if (overridden && this.o.fastKernels && this.latency.has(key)) {
        await this.stockKernelFigure(vit, base, key, backendName as BackendName);
      }
      if (onnx) this.notes.push(onnxSessionNote(info));
      else if (this.o.profile && this.latency.has(key)) await this.profileFigure(vit, base, key);
      if (!onnx && this.o.trainBatch > 0 && this.latency.has(key)) await this.trainFigure(vit, base, key);
    } finally {
      vit.dispose();
    }
    const leaked = tf.memory().numTensors - tensorsBefore;
    if (leaked > 0) this.notes.push(`${key}: ${leaked} tensors left after the group (a leak to look at)`);
    const rss = peakRssBytes();
    this.add({
      ...base,
      metric: "peak_rss",
      value: rss !== undefined ? rss / 2 ** 20 : undefined,
      unit: "MiB",
      ...(rss === undefined ? { skipped: "no /proc on this OS" } : {}),
      note: "whole process, from model build through training",
    });
    if (backendName === "webgpu") {
      const mem = tf.memory() as tf.MemoryInfo & { numBytesAllocatedInGPU?: number };
      if (mem.numBytesAllocatedInGPU !== undefined) {
        this.add({
          ...base,
          metric: "gpu_buffers",
          value: mem.numBytesAllocatedInGPU / 2 ** 20,
          unit: "MiB",
          note: "tfjs-webgpu buffer pool after the group (pooled, so ≈ its high-water mark)",
        });
      }
    }
  }

  async forwardFigures(
    vit: ViTModel,
    base: FigureBase,
    key: string,
  ) {
    const c = vit.config;
    for (const batch of this.o.batches) {
      const shape = [batch, c.in_chans, c.img_size, c.img_size];
      const known = this.latency.get(key);
      let skipped: string | undefined;
      if (known !== undefined) skipped = this.tooLong((known * batch) / 1000);
      else if (batch > 1) skipped = "no batch-1 latency to estimate from";
      if (skipped) {
        this.add({
          ...base,
          metric: batch === 1 ? "latency" : "throughput",
          batch,
          unit: batch === 1 ? "ms" : "img/s",
          skipped,
        });
        continue;
      }
      const input = benchInput(batch, c);
      if (batch === 1) {
        // One untimed call tells whether the full measurement fits the budget (ViT-B/16 on cpu: ~20 s).
        const t0 = performance.now();
        await vit.logits(input, shape);
        const firstMs = performance.now() - t0;
        const t1 = performance.now();
        await vit.logits(input, shape);
        const secondMs = performance.now() - t1;
        const over = this.tooLong(secondMs / 1000, Math.max(0, this.o.warmup - 2) + this.o.runs);
        if (over) {
          this.latency.set(key, secondMs);
          this.add({
            ...base,
            metric: "latency",
            batch,
            value: secondMs,
            unit: "ms",
            runs: [Math.round(secondMs)],
            warmup: 1,
            note: `single run (first call ${firstMs.toFixed(0)} ms); full measurement ${over}`,
          });
          continue;
        }
      }
      const t = await this.timed(() => vit.logits(input, shape));
      const note = batch === 1
        ? undefined
        : `median ${t.medianMs.toFixed(0)} ms per batch${
          batch > vit.maxChunk ? `, split in passes of ${vit.maxChunk}` : ""
        }`;
      this.addTiming(base, batch, t, { key, note });
    }
  }

  /** Batch-1 latency with tfjs's own kernels, beside the default figure: the optimisation's before/after. */
  async stockKernelFigure(
    vit: ViTModel,
    base: FigureBase,
    key: string,
    backendName: BackendName,
  ) {
    const fast = this.figures.findLast((f) =>
      f.model === base.model && f.backend === backendName && f.metric === "latency"
    );
    const over = this.tooLong(this.latency.get(key)! * 1.5 / 1000);
    if (over || !fast?.cpuMs) {
      this.notes.push(`${key}: stock-kernel comparison skipped (${over ?? "single-run latency"})`);
      return;
    }
    const c = vit.config;
    const shape = [1, c.in_chans, c.img_size, c.img_size];
    const input = benchInput(1, c);
    const wasm = backendName === "wasm";
    const restore = uninstallProjectKernels(backendName);
    let t: Timing;
    try {
      t = await this.timed(() => vit.logits(input, shape));
    } finally {
      restore();
    }
    const what = wasm ? "wasm BatchMatMul + Slice/SplitV" : "WGSL matmul, softmax, LayerNorm, GELU";
    const file = "kernels.ts";
    this.addTiming({ ...base, engine: "vit-deno, stock tfjs kernels" }, 1, t, {
      note: `before the ${what} (lib/backend/${file})`,
    });
    this.ratios.push(
      `${MODEL_LABEL[base.model]} b1 on ${backendName}, ${what} vs tfjs's own: wall ${
        t.medianMs.toFixed(0)
      } → ` +
        `${fast.value!.toFixed(0)} ms, CPU ${t.cpuMs.toFixed(0)} → ${fast.cpuMs.toFixed(0)} ms per image ` +
        `(${(t.cpuMs / fast.cpuMs).toFixed(2)}× faster by CPU time)`,
    );
  }

  async profileFigure(
    vit: ViTModel,
    base: FigureBase,
    key: string,
  ) {
    const c = vit.config;
    const over = this.tooLong(this.latency.get(key)! / 1000 * 1.5, 1);
    if (over) {
      this.notes.push(`${key}: per-kernel profile skipped (${over})`);
      return;
    }
    const x = tf.tensor4d(benchInput(1, c), [1, c.in_chans, c.img_size, c.img_size]);
    try {
      const info = await tf.profile(async () => {
        const y = vit.forward(x);
        await y.data();
        return y;
      });
      // The profiled closure returns the logits: dispose them (profile keeps no reference).
      tf.dispose(info.result as tf.Tensor);
      const times = kernelTimes(info);
      const total = times.reduce((s, k) => s + k.ms, 0);
      if (total > 0) this.kernels[key] = times.map((k) => ({ ...k, share: k.ms / total }));
      this.add({
        ...base,
        metric: "peak_tensor_bytes",
        batch: 1,
        value: info.peakBytes / 2 ** 20,
        unit: "MiB",
        note: "tfjs tensors incl. weights (tf.profile peakBytes)",
      });
    } finally {
      x.dispose();
    }
  }

  async trainFigure(
    vit: ViTModel,
    base: FigureBase,
    key: string,
  ) {
    const c = vit.config;
    const batch = this.o.trainBatch;
    // Forward + backward + update ≈ 3 forwards.
    const skipped = this.tooLong((3 * batch * this.latency.get(key)!) / 1000);
    if (skipped) {
      this.add({ ...base, metric: "train_throughput", batch, unit: "img/s", skipped });
      return;
    }
    const shape = [batch, c.in_chans, c.img_size, c.img_size];
    const input = benchInput(batch, c);
    const labels = new Int32Array(batch).map((_, i) => i % c.num_classes);
    const lr = 1e-6;
    const step = async () => {
      const { grads } = await vit.lossAndDeviceGrads(input, shape, labels);
      try {
        tf.tidy(() => {
          for (const [name, g] of grads) {
            const v = vit.variables.get(name)!;
            v.assign(tf.sub(v, tf.mul(g, lr)));
          }
        });
      } finally {
        for (const g of grads.values()) g.dispose();
      }
      // Reading one updated value waits for the device queue to finish the step.
      await vit.variables.get("head.bias")!.data();
    };
    const t = await this.timed(step);
    this.add({
      ...base,
      metric: "train_throughput",
      batch,
      value: (batch * 1000) / t.medianMs,
      unit: "img/s",
      runs: t.runs,
      cpuMs: t.cpuMs,
      warmup: t.warmup,
      note: `loss + grads + plain SGD update; median ${t.medianMs.toFixed(0)} ms per step${
        vit.trainChunk < batch ? `, passes of ${vit.trainChunk}` : ""
      }`,
    });
  }

  ratioLines(anchorName: string, anchorKey: string): void {
    const ref = this.latency.get(`base/${anchorKey}`);
    if (ref === undefined) return;
    for (const b of this.o.backends) {
      const ours = this.latency.get(`base/${b}`);
      if (ours === undefined) continue;
      const speed = ref / ours;
      this.ratios.push(
        `ViT-B/16 b1 latency, ${b}: ${ours.toFixed(0)} ms vs ${anchorName} ${ref.toFixed(0)} ms → ` +
          `${speed.toFixed(2)}× ${anchorName}'s speed (${(ours / ref).toFixed(1)}× its latency)`,
      );
      for (const batch of this.o.batches.filter((x) => x > 1)) {
        const a = this.throughput.get(`base/${anchorKey}/${batch}`),
          o = this.throughput.get(`base/${b}/${batch}`);
        if (a === undefined || o === undefined) continue;
        this.ratios.push(
          `ViT-B/16 b${batch} throughput, ${b}: ${o.toFixed(2)} vs ${anchorName} ${a.toFixed(2)} img/s → ${
            (o / a).toFixed(2)
          }×`,
        );
      }
    }
    for (const line of this.ratios) console.log(`ratio: ${line}`);
  }
}
