/**
 * Data-parallel training steps on tfjs-wasm: a training batch is cut into chunks, each worker of the pool (a
 * `node:worker_threads` isolate with its own single-threaded tfjs-wasm and a copy of the model) runs the
 * forward and backward of its chunks, and the model sums the chunks' gradients in chunk order.
 *
 * Why: tfjs-wasm threads only its dense products (XNNPACK); a ViT training step also spends much of its time
 * in small single-threaded kernels (attention's per-head products, LayerNorm, GELU, softmax and their
 * gradients, sums, transposes). Two isolates run all of them side by side.
 *
 * Exact: each chunk is the same arithmetic as that chunk on one isolate (the same kernels, weights and
 * inputs), and the sum is taken in chunk order on the calling isolate, so a step equals, bit for bit, the
 * serial step cut into the same chunks (tests/grad_pool_test.ts). The chunks follow from the batch and the
 * number of workers only, so a run (and its resume) is deterministic for a given `VIT_TRAIN_WORKERS`.
 * Before each step the pool sends the variables whose values changed since the last one (tfjs gives a
 * variable a new data id on every `assign`), and which of them train.
 *
 * The workers never keep the process alive while idle (unreferenced between steps) and end with the model
 * (`ViTModel.dispose`).
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs";
import { Worker } from "node:worker_threads";
import type { ResolvedViTConfig } from "./config.ts";
import { type ParamSpec, toTimmLayout } from "./params.ts";

/** The most workers: each holds a copy of the model and a tfjs-wasm heap. */
export const MAX_TRAIN_WORKERS = 8;

/** Each worker's chunk holds at least this many images (fewer make the messages cost more than they save). */
const MIN_IMAGES_PER_WORKER = 4;

/**
 * A step must take at least this many multiply-adds (forward and backward) for the pool to run it: below,
 * the messages and the copies of the weights cost about what a second core saves. The fixtures' micro model
 * (img 32, patch 4, dim 64, depth 2) at batch 32 is ~6·10⁸.
 */
const MIN_STEP_MACS = 2 ** 28;

/**
 * A batch's stochastic-depth scales per block (host side: per sample 0 or `1/keep_prob`), nothing for a block
 * at rate 0, drawn once per batch so that chunks of it can run anywhere.
 */
export type DropPathDraws = Array<{ attn?: Float32Array; mlp?: Float32Array }>;

/** One chunk of a training step, self-contained: what a worker receives. */
export interface GradChunk {
  /** The chunk's `m` images, NCHW. */
  input: Float32Array;
  /** `[m, C, H, W]`. */
  shape: number[];
  /** The chunk's `m` labels, or `m × num_classes` soft targets. */
  labels: Int32Array | Float32Array;
  /** `m / n` of the whole batch: the chunk's loss and gradients come out scaled by it. */
  weight: number;
  labelSmoothing: number;
  /** The chunk's `m` draws per block. */
  drops?: DropPathDraws;
}

/** A chunk's result: loss·weight and the gradients of loss·weight by timm name (device layouts). */
export interface ChunkResult {
  loss: number;
  grads: Map<string, Float32Array>;
}

/** Messages to a worker (grad_worker.ts). */
export type ToWorker =
  | { type: "init"; config: ResolvedViTConfig; state: Array<[string, number[], Float32Array]> }
  | {
    type: "step";
    /** Changed variables: timm name and device-layout values. */
    updates: Array<[string, Float32Array]>;
    trainable: string[];
    chunks: GradChunk[];
  };

/** Messages from a worker. */
export type FromWorker =
  | { type: "ready" }
  | { type: "done"; results: Array<{ loss: number; grads: Array<[string, Float32Array]> }> }
  | { type: "error"; message: string };

/**
 * Workers wanted: `VIT_TRAIN_WORKERS` (a positive integer; 1 trains on the calling isolate only), else the
 * machine's cores, at most {@linkcode MAX_TRAIN_WORKERS}.
 */
export function trainWorkersWanted(value = Deno.env.get("VIT_TRAIN_WORKERS")): number {
  if (value === undefined || value === "") {
    return Math.max(1, Math.min(MAX_TRAIN_WORKERS, navigator.hardwareConcurrency || 1));
  }
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`VIT_TRAIN_WORKERS: expected a positive integer, got "${value}"`);
  }
  return Math.min(MAX_TRAIN_WORKERS, n);
}

/** Multiply-adds of one image's forward pass (the dense products and attention's two per-head products). */
function forwardMacs(c: ResolvedViTConfig): number {
  const T = c.tokens, D = c.embed_dim;
  const perBlock = T * (4 * D * D + 2 * D * c.mlp_hidden) + 2 * T * T * D;
  return c.depth * perBlock + (T - 1) * c.in_chans * c.patch_size ** 2 * D;
}

type Variables = ReadonlyMap<string, tf.Variable>;

/** The object identifying a variable's current values (replaced on every `assign`). */
function dataId(v: tf.Variable): object {
  return (v as unknown as { dataId: object }).dataId;
}

/** One worker and its pending request. */
class PoolWorker {
  readonly worker: Worker;
  #pending: { resolve: (m: FromWorker) => void; reject: (e: Error) => void } | undefined;
  #failure: Error | undefined;

  constructor(url: URL) {
    this.worker = new Worker(url);
    this.worker.unref();
    this.worker.on("message", (m: FromWorker) => this.#settle(m));
    this.worker.on("error", (e: Error) => this.#fail(e));
    this.worker.on("exit", (code: number) => this.#fail(new Error(`it exited (code ${code})`)));
  }

  #settle(m: FromWorker): void {
    const p = this.#pending;
    this.#pending = undefined;
    this.worker.unref();
    if (!p) return;
    if (m.type === "error") p.reject(new Error(m.message));
    else p.resolve(m);
  }

  #fail(e: Error): void {
    this.#failure ??= e;
    const p = this.#pending;
    this.#pending = undefined;
    p?.reject(e);
  }

  /** Sends `m` and resolves with the answer; the process stays alive while it is awaited. */
  request(m: ToWorker, transfer: ArrayBuffer[] = []): Promise<FromWorker> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.worker.ref();
      this.worker.postMessage(m, transfer);
    });
  }
}

/** A pool of data-parallel training workers over one model's variables. */
export class GradPool {
  readonly size: number;
  readonly #workers: PoolWorker[];
  readonly #specs: readonly ParamSpec[];
  /** Each variable's data id as the workers last received it. */
  readonly #synced = new Map<string, object>();
  #ready: Promise<void>;
  /** Steps run one at a time. */
  #queue: Promise<unknown> = Promise.resolve();
  #terminated = false;

  /**
   * Workers for a step of `n` images of `config`: `VIT_TRAIN_WORKERS` when it is set (at most one per image);
   * by default the cores, but 1 (none) when the step is too small for the messages to pay off, and no more
   * than give {@linkcode MIN_IMAGES_PER_WORKER} images each.
   */
  static workersFor(config: ResolvedViTConfig, n: number, value = Deno.env.get("VIT_TRAIN_WORKERS")): number {
    const wanted = trainWorkersWanted(value);
    if (value !== undefined && value !== "") return Math.min(wanted, n);
    if (3 * forwardMacs(config) * n < MIN_STEP_MACS) return 1;
    return Math.max(1, Math.min(wanted, Math.floor(n / MIN_IMAGES_PER_WORKER)));
  }

  /**
   * Starts `size` workers, each with a copy of the model of `config` at the variables' current values; they
   * load in the background (the first {@linkcode run} waits for them).
   */
  constructor(config: ResolvedViTConfig, specs: readonly ParamSpec[], variables: Variables, size: number) {
    this.size = size;
    this.#specs = specs;
    const url = new URL("./grad_worker.ts", import.meta.url);
    const workers = Array.from({ length: size }, () => new PoolWorker(url));
    this.#workers = workers;
    this.#ready = (async () => {
      const state: Array<[string, number[], Float32Array]> = [];
      for (const spec of specs) {
        const v = variables.get(spec.name)!;
        this.#synced.set(spec.name, dataId(v));
        const data = await v.data() as Float32Array;
        state.push([spec.name, [...spec.shape], toTimmLayout(spec, data.slice())]);
      }
      await Promise.all(
        workers.map((w) => this.#expect(w.request({ type: "init", config, state }), "ready")),
      );
    })();
    this.#ready.catch(() => {});
  }

  async #expect(answer: Promise<FromWorker>, type: FromWorker["type"]): Promise<FromWorker> {
    let m: FromWorker;
    try {
      m = await answer;
    } catch (e) {
      throw new Error(`a data-parallel training worker failed: ${(e as Error).message}`);
    }
    if (m.type !== type) throw new Error(`internal: a training worker answered "${m.type}", not "${type}"`);
    return m;
  }

  /**
   * Loss and gradients of each chunk, in the order given: chunk i runs on worker i mod size, after the
   * workers received every variable that changed since the last step.
   */
  run(chunks: GradChunk[], variables: Variables): Promise<ChunkResult[]> {
    const step = this.#queue.then(() => this.#run(chunks, variables));
    this.#queue = step.catch(() => {});
    return step;
  }

  async #run(chunks: GradChunk[], variables: Variables): Promise<ChunkResult[]> {
    if (this.#terminated) throw new Error("the data-parallel training workers were ended");
    await this.#ready;
    const updates: Array<[string, Float32Array]> = [];
    const seen = new Map<string, object>();
    for (const spec of this.#specs) {
      const v = variables.get(spec.name)!;
      const id = dataId(v);
      seen.set(spec.name, id);
      if (this.#synced.get(spec.name) !== id) {
        updates.push([spec.name, (await v.data() as Float32Array).slice()]);
      }
    }
    const trainable = this.#specs.filter((s) => variables.get(s.name)!.trainable).map((s) => s.name);
    const answers = this.#workers.map((w, i) => {
      const mine = chunks.filter((_, j) => j % this.size === i);
      // The chunks' arrays are the pool's own copies: moved, not copied, to the worker.
      const transfer = mine.flatMap((c) => [
        c.input.buffer,
        c.labels.buffer,
        ...(c.drops ?? []).flatMap((d) => [d.attn?.buffer, d.mlp?.buffer].filter((b) => b !== undefined)),
      ]) as ArrayBuffer[];
      return mine.length
        ? this.#expect(w.request({ type: "step", updates, trainable, chunks: mine }, transfer), "done")
        : undefined;
    });
    // Every worker has now received the updates, whatever becomes of the step.
    for (const [name, id] of seen) this.#synced.set(name, id);
    const done = await Promise.all(answers);
    return chunks.map((_, j) => {
      const m = done[j % this.size] as Extract<FromWorker, { type: "done" }>;
      const r = m.results[Math.floor(j / this.size)];
      return { loss: r.loss, grads: new Map(r.grads) };
    });
  }

  /** Ends the workers; a later {@linkcode run} throws. */
  terminate(): void {
    this.#terminated = true;
    for (const w of this.#workers) void w.worker.terminate();
  }
}
