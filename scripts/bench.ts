/**
 * `deno task bench [flags]`: forward latency and throughput, training-step throughput, peak memory, cold start
 * and checkpoint conversion for micro / ViT-Ti/16 / ViT-B/16 on every available backend, side by side with
 * ONNX Runtime (and timm/PyTorch where importable), written to docs/benchmarks.json and docs/benchmarks.md.
 * Run `deno task bench --help` for the flags.
 */
import * as tf from "@tensorflow/tfjs";
import {
  type BackendInfo,
  type BackendName,
  type EngineName,
  initBackend,
  parseEngine,
} from "../lib/backend/backend.ts";
import { installProjectKernels, uninstallProjectKernels } from "../lib/backend/kernels.ts";
import { webgpuMatMulInstalled } from "../lib/backend/webgpu_matmul.ts";
import { denoRunArgs, runTimed } from "../lib/bench/child.ts";
import type { ColdStartMarks } from "../lib/bench/cold_start.ts";
import { loadAverage, machineInfo, peakRssBytes, resetPeakRss } from "../lib/bench/machine.ts";
import { embedWeights, openOrtAnchor } from "../lib/bench/onnx_anchor.ts";
import {
  interleavedComparison,
  onnxSessionNote,
  sessionVariants,
  timeVariants,
} from "../lib/bench/onnx_engine.ts";
import type { OrtSession } from "../lib/onnx/ort.ts";
import { type BenchReport, type Figure, type Metric, writeReport } from "../lib/bench/report.ts";
import { measure, median, type Timing } from "../lib/bench/stats.ts";
import { runTorchAnchor, torchAvailable } from "../lib/bench/torch_anchor.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";
import { resolveConfig, type ViTConfig } from "../lib/vit/config.ts";
import { createViT, type ViTModel } from "../lib/vit/model.ts";
import type { StateDict } from "../lib/vit/params.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { threadFigures } from "../lib/bench/threads.ts";
import { finetuneHttpFigures } from "../lib/bench/finetune_http.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { encodeSafetensors } from "../lib/weights/safetensors.ts";
import { saveModel } from "../lib/weights/shards.ts";
import { defaultPreprocessing } from "../lib/weights/manifest.ts";
import { writeFileAtomic } from "../lib/util/fs.ts";
import type { Schema } from "../lib/util/options.ts";
import { commandLine } from "./_cli.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const SHARED = Deno.env.get("VIT_SHARED") ?? `${ROOT}/../shared`;

const USAGE = `Usage: deno task bench [options]

Every figure is the median of --runs timed runs after --warmup untimed ones. Slow combinations are skipped
with an explicit "skipped: would take ~N min" note when the estimate exceeds --budget.`;

/** The options of `deno task bench`. */
export const BENCH_OPTIONS = {
  models: { type: "string", default: "micro,tiny,base", metavar: "list", help: "micro,tiny,base" },
  backends: {
    type: "string",
    default: "webgpu,wasm,cpu",
    metavar: "list",
    help: "webgpu,onnx,wasm,cpu (unavailable ones are noted)",
  },
  batches: {
    type: "string",
    metavar: "list",
    defaultText: "1,8,32,64",
    help: "forward batch sizes (1 = latency)",
  },
  "train-batch": {
    type: "integer",
    default: 8,
    range: [0, Infinity],
    help: "batch of the training-step figure (0 = none)",
  },
  runs: { type: "integer", range: [1, Infinity], defaultText: "5", help: "timed runs per figure" },
  warmup: { type: "integer", default: 1, range: [0, Infinity], help: "untimed runs first" },
  budget: {
    type: "integer",
    range: [1, Infinity],
    defaultText: "120",
    help: "skip a figure whose estimate exceeds this many seconds",
  },
  quick: {
    type: "boolean",
    default: false,
    help: "--runs 3 --batches 1,8 --budget 30, no cold start/conversion/wasm variants/onnx option sweep",
  },
  anchor: { type: "boolean", default: true, help: "skip onnxruntime-node" },
  torch: {
    type: "boolean",
    help:
      "require the timm/PyTorch anchor; --no-torch skips it (default: used when python3 imports torch+timm)",
  },
  "cold-start": { type: "boolean", default: true, help: "skip the cold-start figure" },
  convert: { type: "boolean", default: true, help: "skip the conversion figure" },
  profile: { type: "boolean", default: true, help: "skip the per-kernel tf.profile pass" },
  "wasm-variants": {
    type: "boolean",
    default: true,
    help: "skip the tfjs-wasm SIMD / no-SIMD / threads comparison",
  },
  threads: {
    type: "boolean",
    default: true,
    help: "skip the wasm threads N vs 1 ratios (lib/bench/threads.ts)",
  },
  "finetune-http": {
    type: "boolean",
    default: false,
    help: "ViT-B/16 fine-tuning over HTTP (200 images, 5 epochs; head-only, blocks:10) against classifying " +
      "each image once at b1 on the same server (lib/bench/finetune_http.ts; ~30 min here)",
  },
  "stock-kernels": {
    type: "boolean",
    default: false,
    help: "tfjs's own kernels only (default: the project's kernels of lib/backend/kernels.ts, with a " +
      "stock-kernel batch-1 figure beside each for before/after)",
  },
  "force-wgsl-matmul": {
    type: "boolean",
    default: false,
    help: "install every WGSL kernel (matmul, softmax, LayerNorm, GELU) on a hardware WebGPU adapter too",
  },
  "ort-threads": {
    type: "integer",
    default: 2,
    range: [1, Infinity],
    help: "onnxruntime-node intraOpNumThreads",
  },
  cache: {
    type: "string",
    metavar: "dir",
    defaultText: ".cache/bench",
    help: "scratch folder for the .safetensors and shards",
  },
  json: { type: "string", metavar: "file", defaultText: "docs/benchmarks.json", help: "JSON output" },
  md: {
    type: "string",
    metavar: "file",
    defaultText: "docs/benchmarks.md",
    help: "Markdown output (generated block replaced)",
  },
  write: { type: "boolean", default: true, help: "print only" },
} satisfies Schema;

const MODEL_LABEL: Record<string, string> = { micro: "micro", tiny: "ViT-Ti/16", base: "ViT-B/16" };

const MODELS: Record<string, ViTConfig> = {
  micro: archConfig(MICRO_ARCH)!,
  tiny: archConfig("vit_tiny_patch16_224")!,
  base: archConfig("vit_base_patch16_224")!,
};

interface Options {
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

function list(value: string, flag: string): string[] {
  const items = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!items.length) throw new Error(`--${flag}: empty list`);
  return items;
}

function parseOptions(args: readonly string[]): Options {
  const { values: v } = commandLine("bench", USAGE, BENCH_OPTIONS, args);
  const quick = v.quick as boolean;
  const models = list(v.models as string, "models");
  for (const m of models) {
    if (!MODELS[m]) {
      throw new Error(`--models: unknown model "${m}", expected ${Object.keys(MODELS).join(", ")}`);
    }
  }
  const backends = list(v.backends as string, "backends");
  for (const b of backends) {
    parseEngine(b, "--backends");
  }
  const batches = list((v.batches as string | undefined) ?? (quick ? "1,8" : "1,8,32,64"), "batches").map(
    (b) => {
      const n = Number(b);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--batches: "${b}" is not a positive integer`);
      return n;
    },
  );
  return {
    models,
    backends: backends as EngineName[],
    batches: [...new Set(batches)].sort((a, b) => a - b),
    trainBatch: v["train-batch"] as number,
    runs: (v.runs as number | undefined) ?? (quick ? 3 : 5),
    warmup: v.warmup as number,
    budgetS: (v.budget as number | undefined) ?? (quick ? 30 : 120),
    anchor: v.anchor as boolean,
    torch: v.torch === true,
    noTorch: v.torch === false,
    coldStart: v["cold-start"] as boolean && !quick,
    convert: v.convert as boolean && !quick,
    profile: v.profile as boolean,
    wasmVariants: v["wasm-variants"] as boolean && !quick,
    onnxSweep: !quick,
    threads: v.threads as boolean,
    finetuneHttp: v["finetune-http"] as boolean,
    fastKernels: !v["stock-kernels"],
    forceWgsl: v["force-wgsl-matmul"] as boolean,
    ortThreads: v["ort-threads"] as number,
    cache: (v.cache as string | undefined) ?? `${ROOT}/.cache/bench`,
    json: (v.json as string | undefined) ?? `${ROOT}/docs/benchmarks.json`,
    md: (v.md as string | undefined) ?? `${ROOT}/docs/benchmarks.md`,
    write: v.write as boolean,
  };
}

/** A deterministic, already-preprocessed batch (the same formula the PyTorch anchor uses). */
function benchInput(n: number, c: ViTConfig): Float32Array {
  const size = n * (c.in_chans ?? 3) * c.img_size * c.img_size;
  return new Float32Array(size).map((_, i) => Math.sin(i * 0.001));
}

function fmtMin(seconds: number): string {
  return seconds >= 90 ? `~${(seconds / 60).toFixed(0)} min` : `~${Math.ceil(seconds)} s`;
}

class Bench {
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

  constructor(readonly o: Options) {}

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
    // On onnx the model serves as the server loads it (ONNX Runtime alone); training there is tfjs's, measured
    // on its own backend.
    const onnx = backendName === "onnx";
    const vit = await createViT(config, this.state(model), { trainable: !onnx });
    const tensorsBefore = tf.memory().numTensors;
    try {
      await this.forwardFigures(vit, base, key);
      const overridden = backendName === "wasm" || (backendName === "webgpu" && webgpuMatMulInstalled());
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
    base: Omit<Figure, "date" | "machine" | "loadavg" | "metric" | "unit">,
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
      if (batch === 1) {
        this.latency.set(key, t.medianMs);
        this.add({
          ...base,
          metric: "latency",
          batch,
          value: t.medianMs,
          unit: "ms",
          runs: t.runs,
          cpuMs: t.cpuMs,
          warmup: t.warmup,
        });
      } else {
        const ips = (batch * 1000) / t.medianMs;
        this.throughput.set(`${key}/${batch}`, ips);
        this.add({
          ...base,
          metric: "throughput",
          batch,
          value: ips,
          unit: "img/s",
          runs: t.runs,
          cpuMs: t.cpuMs,
          warmup: t.warmup,
          note: `median ${t.medianMs.toFixed(0)} ms per batch${
            batch > vit.maxChunk ? `, split in passes of ${vit.maxChunk}` : ""
          }`,
        });
      }
    }
  }

  /** Batch-1 latency with tfjs's own kernels, beside the default figure: the optimisation's before/after. */
  async stockKernelFigure(
    vit: ViTModel,
    base: Omit<Figure, "date" | "machine" | "loadavg" | "metric" | "unit">,
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
    this.add({
      ...base,
      engine: "vit-deno, stock tfjs kernels",
      metric: "latency",
      batch: 1,
      value: t.medianMs,
      unit: "ms",
      runs: t.runs,
      cpuMs: t.cpuMs,
      warmup: t.warmup,
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
    base: Omit<Figure, "date" | "machine" | "loadavg" | "metric" | "unit">,
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
      const byKernel = new Map<string, { ms: number; calls: number }>();
      // Ops with custom gradients appear as wrapper entries ("fusedMatMul__op", "unnamed scope") whose time
      // includes their inner kernels: count registered kernels only.
      const backendName = tf.getBackend();
      for (const k of info.kernels) {
        if (!tf.getKernel(k.name, backendName)) continue;
        const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
        const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
        e.ms += ms;
        e.calls++;
        byKernel.set(k.name, e);
      }
      const total = [...byKernel.values()].reduce((s, e) => s + e.ms, 0);
      if (total > 0) {
        this.kernels[key] = [...byKernel].map(([kernel, e]) => ({
          kernel,
          ms: e.ms,
          calls: e.calls,
          share: e.ms / total,
        }))
          .sort((a, b) => b.ms - a.ms);
      }
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
    base: Omit<Figure, "date" | "machine" | "loadavg" | "metric" | "unit">,
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

  async onnxAnchor(): Promise<void> {
    const onnxPath = `${SHARED}/anchors/vit_base_patch16_224.noparams.onnx`;
    const common = { model: "base", engine: "onnxruntime-node", backend: "ort-cpu", adapter: "-" };
    try {
      await Deno.stat(onnxPath);
    } catch {
      this.notes.push(`onnxruntime-node anchor skipped: ${onnxPath} is absent`);
      return;
    }
    const t0 = performance.now();
    const embedded = embedWeights(await Deno.readFile(onnxPath), this.state("base"), onnxPath);
    const embedMs = performance.now() - t0;
    let anchor;
    try {
      anchor = await openOrtAnchor(embedded.model, this.o.ortThreads);
    } catch (e) {
      this.notes.push(`onnxruntime-node anchor skipped: ${(e as Error).message}`);
      return;
    }
    const engine = `onnxruntime-node ${anchor.version}`;
    this.notes.push(
      `ONNX anchor: ${embedded.fromInputs} parameter inputs and ${embedded.untied} tied aliases (Identity nodes the ` +
        `exporter made for equal-at-init weights) rewritten as float32 initializers in ${
          (embedMs / 1000).toFixed(1)
        } s; ` +
        `intraOpNumThreads ${this.o.ortThreads}.`,
    );
    try {
      const goldenPath = `${SHARED}/fixtures/vit/base/golden.safetensors`;
      try {
        const g = await readSafetensors(goldenPath);
        const inp = g.get("input")!, ref = g.get("logits")!.data as Float32Array;
        const out = await anchor.run(inp.data as Float32Array, inp.shape);
        let err = 0, mag = 0;
        for (let i = 0; i < ref.length; i++) {
          err = Math.max(err, Math.abs(out[i] - ref[i]));
          mag = Math.max(mag, Math.abs(ref[i]));
        }
        const rel = err / mag;
        this.notes.push(
          `ONNX anchor honesty check: its logits on the fixtures' base golden input are within ${
            rel.toExponential(2)
          } ` +
            `(relative to max |logit|) of timm's golden logits (${
              rel <= 1e-4 ? "PASS" : "FAIL"
            }, tolerance 1e-4).`,
        );
        if (!(rel <= 1e-4)) throw new Error(`the ONNX anchor does not reproduce timm's logits (${rel})`);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) {
          this.notes.push(`ONNX anchor not checked: ${goldenPath} absent`);
        } else throw e;
      }
      let lat1: number | undefined;
      for (const batch of this.o.batches) {
        const skipped = lat1 !== undefined ? this.tooLong((lat1 * batch) / 1000) : undefined;
        if (skipped) {
          this.add({
            ...common,
            engine,
            metric: batch === 1 ? "latency" : "throughput",
            batch,
            unit: batch === 1 ? "ms" : "img/s",
            skipped,
          });
          continue;
        }
        const input = benchInput(batch, MODELS.base);
        const shape = [batch, 3, 224, 224];
        const t = await this.timed(() => anchor.run(input, shape));
        if (batch === 1) {
          lat1 = t.medianMs;
          this.add({
            ...common,
            engine,
            metric: "latency",
            batch,
            value: t.medianMs,
            unit: "ms",
            runs: t.runs,
            cpuMs: t.cpuMs,
            warmup: t.warmup,
          });
        } else {
          const ips = (batch * 1000) / t.medianMs;
          this.throughput.set(`base/ort/${batch}`, ips);
          this.add({
            ...common,
            engine,
            metric: "throughput",
            batch,
            value: ips,
            unit: "img/s",
            runs: t.runs,
            cpuMs: t.cpuMs,
            warmup: t.warmup,
          });
        }
      }
      if (lat1 !== undefined) this.latency.set("base/ort", lat1);
      if (this.o.backends.includes("onnx") && this.latency.has("base/onnx")) {
        await this.pairedOnnx(anchor, engine);
      }
    } finally {
      await anchor.release();
    }
    this.ratioLines("onnxruntime-node", "ort");
  }

  /** The onnx engine and the anchor timed in turn (lib/bench/onnx_engine.ts); the ratio lines use these. */
  async pairedOnnx(anchor: OrtSession, engine: string): Promise<void> {
    const paired = await interleavedComparison(
      resolveConfig(MODELS.base),
      this.state("base"),
      anchor,
      this.o.batches.filter((b) => b <= 8),
      (b) => benchInput(b, MODELS.base),
      this.o.warmup,
      this.o.runs,
    );
    const note = "timed in turn with the other side, run by run (the ratio lines use these)";
    for (const { batch, ours, anchor: a } of paired) {
      for (const [t, who] of [[ours, "onnx"], [a, "ort"]] as const) {
        const common = who === "onnx"
          ? { model: "base", engine: "vit-deno, paired", backend: "onnx", adapter: "-" }
          : { model: "base", engine: `${engine}, paired`, backend: "ort-cpu", adapter: "-" };
        const timing = { runs: t.runs, cpuMs: t.cpuMs, warmup: t.warmup, note };
        if (batch === 1) {
          this.latency.set(`base/${who}`, t.medianMs);
          this.add({ ...common, metric: "latency", batch, value: t.medianMs, unit: "ms", ...timing });
        } else {
          const ips = (batch * 1000) / t.medianMs;
          this.throughput.set(`base/${who}/${batch}`, ips);
          this.add({ ...common, metric: "throughput", batch, value: ips, unit: "img/s", ...timing });
        }
      }
    }
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

  async safetensorsFile(): Promise<string> {
    const path = `${this.o.cache}/vit_base_patch16_224.safetensors`;
    const state = this.state("base");
    const bytes = encodeSafetensors(state);
    try {
      if ((await Deno.stat(path)).size === bytes.length) return path;
    } catch { /* written below */ }
    await Deno.mkdir(this.o.cache, { recursive: true });
    await writeFileAtomic(path, bytes);
    return path;
  }

  async torchAnchor(): Promise<void> {
    const why = await torchAvailable();
    if (why) {
      const msg = `timm/PyTorch anchor skipped: python3 cannot import torch and timm here (${why})`;
      if (this.o.torch) throw new Error(msg);
      this.notes.push(msg);
      return;
    }
    const report = await runTorchAnchor({
      weights: await this.safetensorsFile(),
      golden: `${SHARED}/fixtures/vit/base/golden.safetensors`,
      batches: this.o.batches,
      trainBatch: this.o.trainBatch || 8,
      warmup: Math.max(3, this.o.warmup),
      runs: Math.max(10, this.o.runs),
    });
    const engine = `timm ${report.timm} / torch ${report.torch}`;
    for (const f of report.figures) {
      const backend = `${report.device === "cpu" ? "cpu" : "cuda"}-${f.dtype}`;
      const common = { model: "base", engine, backend, adapter: report.device };
      if (f.kind === "forward" && f.batch === 1) {
        this.latency.set(`base/torch-${f.dtype}`, f.medianMs);
        this.add({ ...common, metric: "latency", batch: 1, value: f.medianMs, unit: "ms", runs: f.runs });
      } else {
        const metric: Metric = f.kind === "train" ? "train_throughput" : "throughput";
        this.throughput.set(`base/torch-${f.dtype}/${f.batch}`, (f.batch * 1000) / f.medianMs);
        this.add({
          ...common,
          metric,
          batch: f.batch,
          value: (f.batch * 1000) / f.medianMs,
          unit: "img/s",
          runs: f.runs,
        });
      }
    }
    for (const e of report.errors) this.notes.push(`timm/PyTorch anchor: ${e}`);
    if (report.goldenLogits) {
      const g = await readSafetensors(`${SHARED}/fixtures/vit/base/golden.safetensors`);
      const ref = g.get("logits")!.data as Float32Array;
      let err = 0, mag = 0;
      for (let i = 0; i < ref.length; i++) {
        err = Math.max(err, Math.abs(report.goldenLogits[i] - ref[i]));
        mag = Math.max(mag, Math.abs(ref[i]));
      }
      this.notes.push(
        `timm/PyTorch anchor honesty check (fp32 on ${report.device}): logits within ${
          (err / mag).toExponential(2)
        } of the golden ones.`,
      );
    }
    for (const d of ["fp32", "bf16", "fp16"]) this.ratioLines(`timm/PyTorch ${d}`, `torch-${d}`);
  }

  /** The fp16 shards cold start loads (as a server would ship them), written once into the cache. */
  async shardsFolder(): Promise<string> {
    const dir = `${this.o.cache}/vit_base_patch16_224.f16.shards`;
    try {
      await Deno.stat(`${dir}/model.json`);
      return dir;
    } catch { /* written below */ }
    const config = MODELS.base;
    await saveModel(dir, {
      config,
      state: this.state("base"),
      dtype: "float16",
      labels: Array.from({ length: 1000 }, (_, i) => `class_${i}`),
      preprocessing: defaultPreprocessing(224),
      source: { file: "formula weights (fixtures README)", sha256: "-", format: "formula" },
    });
    return dir;
  }

  async convertFigure(): Promise<string | undefined> {
    const common = { model: "base", engine: "vit-deno", backend: "-", adapter: "-" };
    try {
      await Deno.stat(`${ROOT}/scripts/convert.ts`);
    } catch {
      this.add({ ...common, metric: "convert", unit: "s", skipped: "scripts/convert.ts is absent" });
      return undefined;
    }
    const file = await this.safetensorsFile();
    const out = `${this.o.cache}/vit_base_patch16_224.converted`;
    const args = denoRunArgs(ROOT, "scripts/convert.ts", [
      file,
      "--out",
      out,
      "--arch",
      "vit_base_patch16_224",
    ]);
    const runs = Math.min(this.o.runs, 3);
    const walls: number[] = [], peaks: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await runTimed(Deno.execPath(), args, { cwd: ROOT });
      if (r.code !== 0) {
        this.add({
          ...common,
          metric: "convert",
          unit: "s",
          skipped: `convert failed: ${r.stderr.slice(-300)}`,
        });
        return undefined;
      }
      walls.push(r.wallMs / 1000);
      if (r.peakRssBytes) peaks.push(r.peakRssBytes / 2 ** 20);
    }
    const size = (await Deno.stat(file)).size / 2 ** 20;
    this.add({
      ...common,
      metric: "convert",
      value: median(walls),
      unit: "s",
      runs: walls.map((x) => Math.round(x * 100) / 100),
      warmup: 0,
      note: `deno task convert of a ${
        size.toFixed(0)
      } MiB F32 .safetensors (process start to exit, incl. sha256 of input and shards)`,
    });
    if (peaks.length) {
      this.add({
        ...common,
        metric: "convert_peak_rss",
        value: median(peaks),
        unit: "MiB",
        runs: peaks.map(Math.round),
        note: "child VmHWM sampled every 20 ms",
      });
    }
    return out;
  }

  async coldStartFigures(dir: string): Promise<void> {
    for (const b of this.o.backends) {
      const est = (this.latency.get(`base/${b}`) ?? 0) / 1000 + 10;
      const runs = Math.min(this.o.runs, 3);
      const common = { model: "base", engine: "vit-deno", backend: b, adapter: "-" };
      const skipped = this.latency.has(`base/${b}`)
        ? this.tooLong(est, runs)
        : "no ViT-B/16 latency on this backend";
      if (skipped) {
        this.add({ ...common, metric: "cold_start", batch: 1, unit: "ms", skipped });
        continue;
      }
      const walls: number[] = [];
      let marks: ColdStartMarks | undefined;
      for (let i = 0; i < runs; i++) {
        const r = await runTimed(
          Deno.execPath(),
          denoRunArgs(ROOT, "lib/bench/cold_start.ts", [dir, b, ...(this.o.fastKernels ? ["fast"] : [])]),
          {
            cwd: ROOT,
          },
        );
        if (r.code !== 0) {
          this.add({
            ...common,
            metric: "cold_start",
            batch: 1,
            unit: "ms",
            skipped: `probe failed: ${r.stderr.slice(-300)}`,
          });
          return;
        }
        walls.push(r.wallMs);
        marks = JSON.parse(r.stdout.trim().split("\n").pop()!);
      }
      const m = marks!;
      this.add({
        ...common,
        metric: "cold_start",
        batch: 1,
        value: median(walls),
        unit: "ms",
        runs: walls.map(Math.round),
        warmup: 0,
        note:
          `spawn → exit after top-1 from fp16 shards; last run in-process: imports ${
            (m.imported / 1000).toFixed(1)
          } s, backend ` +
          `${((m.backendReady - m.imported) / 1000).toFixed(1)} s, load+verify shards ${
            ((m.weightsLoaded - m.backendReady) / 1000).toFixed(1)
          } s, first forward ${((m.firstClassification - m.weightsLoaded) / 1000).toFixed(1)} s`,
      });
    }
  }

  /** ViT-B/16 b1 on onnx under each session-option variant (lib/bench/onnx_engine.ts): how they were chosen. */
  async onnxSweep(): Promise<void> {
    const results = await timeVariants(
      resolveConfig(MODELS.base),
      this.state("base"),
      sessionVariants(navigator.hardwareConcurrency || 1),
      benchInput(1, MODELS.base),
      this.o.warmup,
      this.o.runs,
    );
    for (const { variant: v, timing: t, openMs } of results) {
      this.add({
        model: "base",
        engine: `vit-deno onnx: ${v.label}`,
        backend: "onnx-opt",
        adapter: "-",
        metric: "latency",
        batch: 1,
        value: t.medianMs,
        unit: "ms",
        runs: t.runs,
        cpuMs: t.cpuMs,
        warmup: t.warmup,
        note: `${v.label}; timed in turn with the other variants; session opened in ${openMs.toFixed(0)} ms`,
      });
    }
  }

  async wasmVariantFigures(): Promise<void> {
    const rows: string[] = [];
    for (const variant of ["simd", "nosimd", "threads"]) {
      const r = await runTimed(
        Deno.execPath(),
        denoRunArgs(ROOT, "lib/bench/wasm_variant.ts", [variant, String(Math.min(this.o.runs, 3))]),
        { cwd: ROOT },
      );
      const last = r.stdout.trim().split("\n").pop() ?? "";
      if (r.code !== 0 || !last.startsWith("{")) {
        const why = (r.stderr.match(/(TypeError|Error)[^\n]*/)?.[0] ?? r.stderr.slice(-200)).trim();
        this.add({
          model: "tiny",
          engine: "vit-deno",
          backend: `wasm-${variant}`,
          adapter: "-",
          metric: "latency",
          batch: 1,
          unit: "ms",
          skipped: `does not start in Deno: ${why}`,
        });
        rows.push(`${variant}: does not start (${why})`);
        continue;
      }
      const res = JSON.parse(last) as { threads: number; gflops: number; tinyMs: number; tinyRuns: number[] };
      this.add({
        model: "tiny",
        engine: "vit-deno",
        backend: `wasm-${variant}`,
        adapter: "-",
        metric: "latency",
        batch: 1,
        value: res.tinyMs,
        unit: "ms",
        runs: res.tinyRuns,
        warmup: 1,
        note: `${res.threads} thread(s); matmul 197×768·768×3072: ${res.gflops.toFixed(1)} GFLOP/s`,
      });
      rows.push(
        `${variant}: ${res.threads} thread(s), tiny b1 ${res.tinyMs.toFixed(0)} ms, matmul ${
          res.gflops.toFixed(1)
        } GFLOP/s`,
      );
    }
    this.notes.push(`tfjs-wasm variants (separate processes): ${rows.join("; ")}.`);
  }
}

async function main(): Promise<number> {
  const o = parseOptions(Deno.args);
  Deno.env.set("VIT_QUIET", "1");
  // initBackend registers the project's kernels unless told not to; the stock rows swap them out themselves.
  if (!o.fastKernels) Deno.env.set("VIT_KERNELS", "stock");
  const bench = new Bench(o);
  bench.notes.push(
    o.fastKernels
      ? "Kernels: the project's (lib/backend/kernels.ts: wasm BatchMatMul and Slice/SplitV; on a software WebGPU " +
        "adapter the WGSL matmul, softmax, LayerNorm and GELU) were installed for every figure except the rows " +
        'marked "stock tfjs kernels" and the tfjs-wasm variant rows.'
      : "Kernels: tfjs's own only (--stock-kernels).",
  );
  const date = new Date().toISOString();
  const command = `deno task bench ${Deno.args.join(" ")}`.trim();
  console.log(`bench: ${bench.machine.summary}; ${command}; load ${loadAverage().join("/")}`);
  for (const model of o.models) {
    for (const backend of o.backends) await bench.backendGroup(model, backend);
  }
  if (o.models.includes("base")) {
    if (o.onnxSweep && o.backends.includes("onnx")) await bench.onnxSweep();
    if (o.anchor) await bench.onnxAnchor();
    if (!o.noTorch) await bench.torchAnchor();
    if (o.convert) await bench.convertFigure();
    if (o.coldStart) await bench.coldStartFigures(await bench.shardsFolder());
  } else {
    bench.notes.push("anchors, conversion and cold start are ViT-B/16 figures: add base to --models");
  }
  if (o.wasmVariants) await bench.wasmVariantFigures();
  if (o.threads) {
    const t = await threadFigures(ROOT, MODELS.micro, MODELS.base, { runs: o.runs });
    bench.ratios.push(...t.ratios);
    bench.notes.push(...t.notes);
    for (const line of t.ratios) console.log(`ratio: ${line}`);
  }
  if (o.finetuneHttp) {
    const f = await finetuneHttpFigures(ROOT, { cache: o.cache });
    bench.ratios.push(...f.ratios);
    bench.notes.push(...f.notes);
    for (const line of f.ratios) console.log(`ratio: ${line}`);
  }
  const report: BenchReport = {
    date,
    command,
    machine: bench.machine,
    figures: bench.figures,
    ratios: bench.ratios,
    notes: bench.notes,
    kernels: bench.kernels,
  };
  if (o.write) {
    await writeReport(report, o.json, o.md);
    console.log(`wrote ${o.json} and ${o.md}`);
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`bench: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
