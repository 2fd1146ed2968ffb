/**
 * The figures of `deno task bench` beyond the tfjs groups of lib/bench/bench.ts: the onnxruntime-node and
 * timm/PyTorch anchors with their ratio lines, the onnx engine's session sweep, checkpoint conversion, cold
 * start and the tfjs-wasm build variants.
 *
 * @module
 */
import { denoRunArgs, runTimed } from "./child.ts";
import type { ColdStartMarks } from "./cold_start.ts";
import { embedWeights, openOrtAnchor } from "./onnx_anchor.ts";
import { interleavedComparison, sessionVariants, timeVariants } from "./onnx_engine.ts";
import type { OrtSession } from "../onnx/ort.ts";
import type { Metric } from "./report.ts";
import { median } from "./stats.ts";
import { runTorchAnchor, torchAvailable } from "./torch_anchor.ts";
import { resolveConfig } from "../vit/config.ts";
import { encodeSafetensors, readSafetensors } from "../weights/safetensors.ts";
import { saveModel } from "../weights/shards.ts";
import { defaultPreprocessing } from "../weights/manifest.ts";
import { writeFileAtomic } from "../util/fs.ts";

import { Bench, benchInput, MODELS, ROOT, SHARED } from "./bench.ts";

/** A whole bench run: {@linkcode Bench}'s figures and the anchors, conversion and cold start. */
export class BenchRun extends Bench {
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
        if (batch === 1) lat1 = t.medianMs;
        this.addTiming({ ...common, engine }, batch, t, { key: "base/ort" });
      }
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
        this.addTiming(common, batch, t, { key: `base/${who}`, note });
      }
    }
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

  /**
   * The shards cold start loads (as a server would ship them: fp16, or int8 for the onnx engine's int8
   * figure), written once into the cache.
   */
  async shardsFolder(dtype: "float16" | "int8" = "float16"): Promise<string> {
    const dir = `${this.o.cache}/vit_base_patch16_224.${dtype === "int8" ? "int8" : "f16"}.shards`;
    try {
      await Deno.stat(`${dir}/model.json`);
      return dir;
    } catch { /* written below */ }
    const config = MODELS.base;
    await saveModel(dir, {
      config,
      state: this.state("base"),
      dtype,
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

  /**
   * Cold start per backend, spawn → exit of lib/bench/cold_start.ts. On onnx the probe uses an engine cache
   * of the bench's own (`<cache>/onnx-engines`), emptied first: one first start (which writes the entry:
   * `cold_start_first`), then the runs that open it (`cold_start`); then the same from int8 shards
   * (`convert --dtype int8`), as backend `onnx-int8`.
   */
  async coldStartFigures(dir: string, int8Dir?: () => Promise<string>): Promise<void> {
    const plan: Array<[string, string, string]> = this.o.backends.map((b) => [b, b, dir]);
    if (this.o.backends.includes("onnx") && int8Dir) plan.push(["onnx-int8", "onnx", await int8Dir()]);
    for (const [label, b, from] of plan) {
      const est = (this.latency.get(`base/${b}`) ?? 0) / 1000 + 10;
      const runs = Math.min(this.o.runs, 3);
      const common = { model: "base", engine: "vit-deno", backend: label, adapter: "-" };
      const skipped = this.latency.has(`base/${b}`)
        ? this.tooLong(est, runs)
        : "no ViT-B/16 latency on this backend";
      if (skipped) {
        this.add({ ...common, metric: "cold_start", batch: 1, unit: "ms", skipped });
        continue;
      }
      let env: Record<string, string> | undefined;
      if (b === "onnx") {
        const engines = `${this.o.cache}/onnx-engines`;
        await Deno.remove(engines, { recursive: true }).catch(() => {});
        env = { VIT_ONNX_CACHE: engines };
      }
      const probe = async () => {
        const args = [from, b, ...(this.o.fastKernels ? ["fast"] : [])];
        const r = await runTimed(Deno.execPath(), denoRunArgs(ROOT, "lib/bench/cold_start.ts", args), {
          cwd: ROOT,
          ...(env ? { env } : {}),
        });
        if (r.code !== 0) {
          this.add({
            ...common,
            metric: "cold_start",
            batch: 1,
            unit: "ms",
            skipped: `probe failed: ${r.stderr.slice(-300)}`,
          });
          return undefined;
        }
        return { wallMs: r.wallMs, marks: JSON.parse(r.stdout.trim().split("\n").pop()!) as ColdStartMarks };
      };
      const describe = (m: ColdStartMarks) =>
        `last run in-process: imports ${(m.imported / 1000).toFixed(1)} s, backend ` +
        `${((m.backendReady - m.imported) / 1000).toFixed(1)} s, ${
          m.engineCache === "opened" ? "open engine cache" : "load+verify shards"
        } ${((m.weightsLoaded - m.backendReady) / 1000).toFixed(1)} s, first forward ${
          ((m.firstClassification - m.weightsLoaded) / 1000).toFixed(1)
        } s`;
      if (env) {
        const first = await probe();
        if (!first) return;
        this.add({
          ...common,
          metric: "cold_start_first",
          batch: 1,
          value: first.wallMs,
          unit: "ms",
          runs: [Math.round(first.wallMs)],
          warmup: 0,
          note: `spawn → exit after top-1 from ${
            label === "onnx-int8" ? "int8" : "fp16"
          } shards, engine cache empty (engine cache ${first.marks.engineCache ?? "?"}); ${
            describe(first.marks)
          }`,
        });
      }
      const walls: number[] = [];
      let marks: ColdStartMarks | undefined;
      for (let i = 0; i < runs; i++) {
        const r = await probe();
        if (!r) return;
        walls.push(r.wallMs);
        marks = r.marks;
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
        note: `spawn → exit after top-1 from ${label === "onnx-int8" ? "int8" : "fp16"} shards${
          env ? `, engine cache ${m.engineCache ?? "?"}` : ""
        }; ${describe(m)}`,
      });
    }
  }

  /**
   * ViT-B/16 b1 on onnx under each session-option variant (lib/bench/onnx_engine.ts): how they were chosen.
   */
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
      const base = { model: "base", engine: `vit-deno onnx: ${v.label}`, backend: "onnx-opt", adapter: "-" };
      this.addTiming(base, 1, t, {
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
      const row = {
        model: "tiny",
        engine: "vit-deno",
        backend: `wasm-${variant}`,
        adapter: "-",
        metric: "latency" as const,
        batch: 1,
        unit: "ms",
      };
      if (r.code !== 0 || !last.startsWith("{")) {
        if (r.timedOut) {
          const why = r.stderr.trim().split("\n").pop()!;
          this.add({ ...row, skipped: why });
          rows.push(`${variant}: ${why}`);
          continue;
        }
        const why = (r.stderr.match(/(TypeError|Error)[^\n]*/)?.[0] ?? r.stderr.slice(-200)).trim();
        this.add({ ...row, skipped: `does not start in Deno: ${why}` });
        rows.push(`${variant}: does not start (${why})`);
        continue;
      }
      const res = JSON.parse(last) as { threads: number; gflops: number; tinyMs: number; tinyRuns: number[] };
      this.add({
        ...row,
        value: res.tinyMs,
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
