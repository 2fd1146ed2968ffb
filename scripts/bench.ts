/**
 * `deno task bench [flags]`: forward latency and throughput, training-step throughput, peak memory, cold
 * start and checkpoint conversion for micro / ViT-Ti/16 / ViT-B/16 on every available backend, side by side
 * with ONNX Runtime (and timm/PyTorch where importable), written to docs/benchmarks.json and
 * docs/benchmarks.md. Run `deno task bench --help` for the flags.
 */
import { type EngineName, parseEngine } from "../lib/backend/backend.ts";
import { loadAverage } from "../lib/bench/machine.ts";
import { type BenchReport, writeReport } from "../lib/bench/report.ts";
import { threadFigures } from "../lib/bench/threads.ts";
import { finetuneHttpFigures } from "../lib/bench/finetune_http.ts";
import type { Schema } from "../lib/util/options.ts";
import { commandLine, runTask } from "./_cli.ts";

import { type BenchOptions, MODELS, ROOT } from "../lib/bench/bench.ts";
import { BenchRun } from "../lib/bench/bench_run.ts";

const USAGE = `Usage: deno task bench [options]

Every figure is the median of --runs timed runs after --warmup untimed ones (the wasm thread ratios: the
fastest run of each side, runs interleaved over 3 rounds of processes, lib/bench/threads.ts). Slow
combinations are skipped with an explicit "skipped: would take ~N min" note when the estimate exceeds --budget.`;

/** The options of `deno task bench`. */
export const BENCH_OPTIONS = {
  models: {
    type: "string",
    default: "micro,tiny,base",
    metavar: "list",
    help: "micro,tiny,base,shipped (weights/'s architecture)",
  },
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

function list(value: string, flag: string): string[] {
  const items = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!items.length) throw new Error(`--${flag}: empty list`);
  return items;
}

function parseOptions(args: readonly string[]): BenchOptions {
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

async function main(): Promise<number> {
  const o = parseOptions(Deno.args);
  Deno.env.set("VIT_QUIET", "1");
  // initBackend registers the project's kernels unless told not to; the stock rows swap them out themselves.
  if (!o.fastKernels) Deno.env.set("VIT_KERNELS", "stock");
  const bench = new BenchRun(o);
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
    if (o.coldStart) {
      await bench.coldStartFigures(await bench.shardsFolder(), () => bench.shardsFolder("int8"));
    }
  } else {
    bench.notes.push("anchors, conversion and cold start are ViT-B/16 figures: add base to --models");
  }
  if (o.wasmVariants) await bench.wasmVariantFigures();
  if (o.threads) {
    const t = await threadFigures(ROOT, MODELS.micro, MODELS.base, { runs: o.runs });
    bench.ratios.push(...t.ratios);
    bench.notes.push(...t.notes);
    for (const line of t.ratios) console.log(`ratio: ${line}`);
    for (const line of t.notes) console.log(`  ${line}`);
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

if (import.meta.main) await runTask("bench", main);
