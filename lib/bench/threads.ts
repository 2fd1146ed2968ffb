/**
 * wasm threads against one thread, measured side by side: every probe runs in its own process (the wasm build
 * is fixed once per process) with `VIT_WASM_THREADS` set; in each of several rounds one process per side is
 * started and their timed runs are interleaved one by one, so that both see the same load, and the fastest
 * run of each side over all its processes is compared (see {@linkcode Spread}: on a shared machine noise only
 * ever adds time, and it adds more to the side that needs every core). The spread of each side is printed
 * with the ratio.
 *
 * Probes: a micro training step, ViT-B/16's batch-1 forward, and training steps of the shipped model's
 * architecture (weights/train_config.yml's `model`, at its batch size, AdamW + clipping as it trains) with
 * the project's kernels, threads and data-parallel workers against `VIT_KERNELS=stock VIT_WASM_THREADS=1
 * VIT_TRAIN_WORKERS=1`. The N side of a training probe runs N threads and N data-parallel training workers
 * (lib/vit/grad_pool.ts); the 1 side one thread and no worker.
 *
 * The ratios need the other cores free: run it on a quiet machine (docs/benchmarks.md says how).
 *
 * Child: `deno run -A lib/bench/threads.ts <train|forward> <config JSON> <batch> <runs>` prints one JSON
 * line; with `serve` for `<runs>` it times one run per line read on stdin (what the bench uses).
 *
 * @module
 */
import { parse as parseYaml } from "yaml";
import { initBackend } from "../backend/backend.ts";
import { clipGradNorm, Optimizer } from "../train/optimizer.ts";
import type { ViTConfig } from "../vit/config.ts";
import { GradPool } from "../vit/grad_pool.ts";
import { createViT } from "../vit/model.ts";
import { formulaStateDict } from "../weights/formula.ts";
import { CHILD_TIMEOUT_MS, denoRunArgs, killChild } from "./child.ts";
import { measure, median } from "./stats.ts";

/** One probe's result in one process. */
export interface ProbeResult {
  threads: number;
  /** Data-parallel training workers a step used (1: none); absent for a forward probe. */
  workers?: number;
  kernels: string[];
  medianMs: number;
  runs: number[];
}

/** The lines of a byte stream (the probe's stdin, a probe process's stdout). */
function lines(bytes: ReadableStream<Uint8Array>): ReadableStream<string> {
  let rest = "";
  return bytes.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TransformStream<string, string>({
      transform(chunk, out) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        for (const line of parts) out.enqueue(line);
      },
      flush(out) {
        if (rest) out.enqueue(rest);
      },
    }),
  );
}

/** A probe set up in this process: one run of it, what it ran on, and its clean-up. */
interface Probe {
  run: () => Promise<unknown>;
  info: Omit<ProbeResult, "medianMs" | "runs">;
  dispose: () => void;
}

async function setUp(kind: string, config: ViTConfig, batch: number): Promise<Probe> {
  const backend = await initBackend("wasm");
  const vit = await createViT(config, formulaStateDict(config));
  const c = vit.config;
  const shape = [batch, c.in_chans, c.img_size, c.img_size];
  const input = new Float32Array(batch * c.in_chans * c.img_size * c.img_size).map((_, i) =>
    Math.sin(i * 0.001)
  );
  let fn: () => Promise<unknown>;
  let workers: number | undefined;
  if (kind === "forward") fn = () => vit.logits(input, shape);
  else if (kind === "train") {
    workers = GradPool.workersFor(vit.config, batch);
    const labels = Int32Array.from({ length: batch }, (_, i) => i % c.num_classes);
    const opt = new Optimizer(vit.variables, new Map(vit.specs.map((s) => [s.name, s.shape])), {
      opt: "adamw",
      momentum: 0.9,
      weightDecay: 0.05,
    });
    fn = async () => {
      const { grads } = await vit.lossAndDeviceGrads(input, shape, labels, { labelSmoothing: 0.1 });
      try {
        await clipGradNorm(grads, 1.0);
        opt.apply(grads, 1e-4);
      } finally {
        for (const g of grads.values()) g.dispose();
      }
      // The update is queued work on wasm; reading one value waits for it.
      await vit.variables.get("head.bias")!.data();
    };
  } else throw new Error(`probe must be train or forward, got "${kind}"`);
  return {
    run: fn,
    info: {
      threads: backend.threads ?? 1,
      ...(workers !== undefined ? { workers } : {}),
      kernels: backend.kernels,
    },
    dispose: () => vit.dispose(),
  };
}

async function probe(kind: string, config: ViTConfig, batch: number, runs: number): Promise<ProbeResult> {
  const p = await setUp(kind, config, batch);
  const t = await measure(p.run, 1, runs);
  p.dispose();
  return { ...p.info, medianMs: t.medianMs, runs: t.runs };
}

/**
 * Serves timed runs of a probe on request (`serve` mode): after one untimed run it prints its `info` as a
 * JSON line, then answers each line on stdin with `{"ms": …}` for one timed run, until stdin closes.
 */
async function serve(kind: string, config: ViTConfig, batch: number): Promise<void> {
  const p = await setUp(kind, config, batch);
  await p.run();
  const out = (o: unknown) => console.log(JSON.stringify(o));
  out(p.info);
  for await (const _ of lines(Deno.stdin.readable)) {
    const t = performance.now();
    await p.run();
    out({ ms: Math.round((performance.now() - t) * 100) / 100 });
  }
  p.dispose();
}

/** The shipped model's architecture and batch size, read from the training config it ships with. */
export async function shippedArch(root: string): Promise<{ config: ViTConfig; batch: number }> {
  const y = parseYaml(await Deno.readTextFile(`${root}/weights/train_config.yml`)) as {
    model: Partial<ViTConfig>;
    img_size: number;
    num_classes: number;
    batch_size: number;
  };
  return {
    config: { ...y.model, img_size: y.img_size, num_classes: y.num_classes } as ViTConfig,
    batch: y.batch_size,
  };
}

/** One side of a comparison: the environment its processes run with. */
export interface Side {
  label: string;
  env: Record<string, string>;
}

/**
 * One side's timed runs over all its processes. The ratios compare `minMs`: a probe repeats the same
 * deterministic work, and on a shared machine other processes, page faults or a descheduled pthread only ever
 * add time to a run, never remove it, so the fastest run is the estimate least moved by noise; a median still
 * moves with how busy the machine was (a 2-thread run needs both cores free at once, a 1-thread run one, so
 * medians bias the ratio towards 1 under load). `medianMs` and `maxMs` show the spread.
 */
export interface Spread {
  minMs: number;
  medianMs: number;
  maxMs: number;
  /** Timed runs behind these figures (all processes of the side together). */
  runs: number;
  /** Processes they came from. */
  processes: number;
}

/** The {@linkcode Spread} of `runs` from `processes` processes. */
export function spreadOf(runs: readonly number[], processes: number): Spread {
  return {
    minMs: Math.min(...runs),
    medianMs: median(runs),
    maxMs: Math.max(...runs),
    runs: runs.length,
    processes,
  };
}

/** `min / median / max ms over R runs in P processes`, for the notes. */
export function describeSpread(s: Spread): string {
  return `${s.minMs.toFixed(0)} / ${s.medianMs.toFixed(0)} / ${
    s.maxMs.toFixed(0)
  } ms (min / median / max of ` +
    `${s.runs} runs in ${s.processes} processes)`;
}

/**
 * A long-lived probe process (the bench runs `lib/bench/threads.ts` in `serve` mode): ask it for one timed
 * run, or end it. Exported for its test.
 */
export class ProbeProcess {
  readonly #child: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #stderr: Promise<string>;
  readonly #timeoutMs: number;

  /** Starts `deno <args>` in `cwd`; an answer not printed within `timeoutMs` kills it. */
  constructor(args: string[], cwd: string, env: Record<string, string>, timeoutMs = CHILD_TIMEOUT_MS) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      env: { VIT_QUIET: "1", ...env },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#lines = lines(this.#child.stdout).getReader();
    this.#stdin = this.#child.stdin.getWriter();
    this.#stderr = new Response(this.#child.stderr).text();
    this.#timeoutMs = timeoutMs;
  }

  /**
   * The next JSON line the process prints (other output skipped); a process that prints none within its
   * timeout is killed and this throws.
   */
  async next<T>(): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        killChild(this.#child);
        reject(new Error(`no answer in ${this.#timeoutMs / 1000} s; the probe process was killed`));
      }, this.#timeoutMs);
    });
    try {
      return await Promise.race([this.#nextLine<T>(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #nextLine<T>(): Promise<T> {
    for (;;) {
      const { value, done } = await this.#lines.read();
      if (done) {
        const err = (await this.#stderr).trim().split("\n").slice(-3).join(" ");
        throw new Error(`exited (${(await this.#child.status).code}): ${err}`);
      }
      if (value.startsWith("{")) return JSON.parse(value) as T;
    }
  }

  /** One timed run, in ms. */
  async run(): Promise<number> {
    await this.#stdin.write(new TextEncoder().encode("run\n"));
    return (await this.next<{ ms: number }>()).ms;
  }

  async close(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    await this.#lines.cancel().catch(() => {});
    await this.#stderr.catch(() => "");
    await this.#child.status;
  }
}

/**
 * Runs `kind` on `config` at `batch` for each side, in `rounds` rounds: each round starts one process per
 * side (one after the other, each warmed up) and then interleaves their timed runs one by one (side order
 * rotating), `runs` each, so that a burst of load from elsewhere falls on every side alike. Returns each
 * side's runs ({@linkcode Spread}), or the error of the first failing process.
 */
export async function compareSides(
  root: string,
  kind: string,
  config: ViTConfig,
  batch: number,
  runs: number,
  rounds: number,
  sides: Side[],
): Promise<{ spreads: Spread[]; results: ProbeResult[] } | { error: string }> {
  const all: number[][] = sides.map(() => []);
  const results: ProbeResult[] = [];
  for (let r = 0; r < rounds; r++) {
    const procs: ProbeProcess[] = [];
    let side = sides[0];
    try {
      for (const [i, s] of sides.entries()) {
        side = s;
        const args = denoRunArgs(root, "lib/bench/threads.ts", [
          kind,
          JSON.stringify(config),
          String(batch),
          "serve",
        ]);
        const p = new ProbeProcess(args, root, s.env);
        procs.push(p);
        const info = await p.next<Omit<ProbeResult, "medianMs" | "runs">>();
        results[i] = { ...info, medianMs: NaN, runs: [] };
      }
      for (let k = 0; k < runs; k++) {
        for (let j = 0; j < sides.length; j++) {
          const i = (j + k) % sides.length;
          side = sides[i];
          const ms = await procs[i].run();
          all[i].push(ms);
          results[i].runs.push(ms);
        }
      }
    } catch (e) {
      return { error: `${side.label}: ${e instanceof Error ? e.message : String(e)}` };
    } finally {
      for (const p of procs) await p.close();
    }
  }
  for (const [i, res] of results.entries()) res.medianMs = median(all[i]);
  return { spreads: all.map((r) => spreadOf(r, rounds)), results };
}

/** What {@linkcode threadFigures} found: `ratio:` lines and notes for the report. */
export interface ThreadFigures {
  ratios: string[];
  notes: string[];
}

/**
 * The thread ratios of issue 13: micro training step and ViT-B/16 b1 forward (N vs 1 thread, project kernels
 * on both), and the shipped architecture's training throughput against stock kernels on one thread.
 */
export async function threadFigures(
  root: string,
  micro: ViTConfig,
  base: ViTConfig,
  o: { runs: number; rounds?: number; microBatch?: number },
): Promise<ThreadFigures> {
  const n = Math.min(8, navigator.hardwareConcurrency);
  // Three rounds of fresh processes: one process that runs slow throughout (its memory placement, a noisy
  // neighbour) still leaves two per side.
  const rounds = o.rounds ?? 3;
  const one: Side = { label: "1 thread", env: { VIT_WASM_THREADS: "1", VIT_TRAIN_WORKERS: "1" } };
  const many: Side = {
    label: `${n} threads`,
    env: { VIT_WASM_THREADS: String(n), VIT_TRAIN_WORKERS: String(n) },
  };
  const out: ThreadFigures = { ratios: [], notes: [] };
  const microBatch = o.microBatch ?? 32;
  const probes: Array<[string, string, ViTConfig, number, number]> = [
    ["micro train step", "train", micro, microBatch, Math.max(o.runs, 5)],
    // At least 5 runs a process: 15 samples of each side for the minimum (a run takes ~1–2 s).
    ["ViT-B/16 b1 forward", "forward", base, 1, Math.max(o.runs, 5)],
  ];
  for (const [label, kind, config, batch, runs] of probes) {
    const r = await compareSides(root, kind, config, batch, runs, rounds, [one, many]);
    if ("error" in r) {
      out.notes.push(`wasm threads, ${label}: failed (${r.error})`);
      continue;
    }
    const [s1, sn] = r.spreads;
    const nSide = r.results[1];
    out.ratios.push(`wasm threads ${nSide.threads} vs 1, ${label}: ${(s1.minMs / sn.minMs).toFixed(2)}×`);
    const workers = nSide.workers && nSide.workers > 1 ? ` + ${nSide.workers} data-parallel workers` : "";
    out.notes.push(
      `wasm threads, ${label}${kind === "train" ? ` (batch ${batch})` : ""}: 1 thread ${
        describeSpread(s1)
      }; ` +
        `${nSide.threads} threads${workers} ${describeSpread(sn)}; ratio of the minima, runs interleaved ` +
        `(median ratio ${(s1.medianMs / sn.medianMs).toFixed(2)}×)`,
    );
  }
  const shipped = await shippedArch(root);
  const stock: Side = {
    label: "stock, 1 thread",
    env: { VIT_WASM_THREADS: "1", VIT_KERNELS: "stock", VIT_TRAIN_WORKERS: "1" },
  };
  const project: Side = { ...many, label: `project kernels, ${n} threads + workers` };
  const r = await compareSides(root, "train", shipped.config, shipped.batch, Math.max(3, o.runs), rounds, [
    stock,
    { ...one, label: "project kernels, 1 thread" },
    project,
  ]);
  if ("error" in r) out.notes.push(`shipped architecture training: failed (${r.error})`);
  else {
    const [ts, t1, tp] = r.spreads.map((x) => (shipped.batch * 1000) / x.minMs);
    const p = r.results[2];
    const arch = `shipped architecture training b${shipped.batch}`;
    out.ratios.push(
      `${arch}, wasm ${p.threads} threads + ${p.workers ?? 1} workers + project kernels vs ` +
        `VIT_KERNELS=stock VIT_WASM_THREADS=1 VIT_TRAIN_WORKERS=1: ${(tp / ts).toFixed(2)}× (${
          tp.toFixed(0)
        } vs ${ts.toFixed(0)} img/s)`,
      `${arch}, 1 thread: project kernels vs VIT_KERNELS=stock: ${(t1 / ts).toFixed(2)}× (${
        t1.toFixed(0)
      } vs ${ts.toFixed(0)} img/s)`,
    );
    const [ss, s1, sp] = r.spreads;
    out.notes.push(
      `shipped architecture (weights/train_config.yml) training steps at batch ${shipped.batch} ` +
        `(loss + grads + clip + AdamW, synthetic images; ratios of the fastest steps, runs interleaved): ` +
        `${p.threads} threads, ${p.workers ?? 1} data-parallel workers and the project's kernels ` +
        `${describeSpread(sp)}; the project's kernels on 1 thread ${describeSpread(s1)}; VIT_KERNELS=stock ` +
        `VIT_WASM_THREADS=1 VIT_TRAIN_WORKERS=1 ${describeSpread(ss)}`,
    );
  }
  return out;
}

if (import.meta.main) {
  const [kind, configJson, batch, runs] = Deno.args;
  if (runs === "serve") await serve(kind, JSON.parse(configJson), Number(batch));
  else {
    console.log(
      JSON.stringify(await probe(kind, JSON.parse(configJson), Number(batch), Number(runs ?? "3"))),
    );
  }
  Deno.exit(0);
}
