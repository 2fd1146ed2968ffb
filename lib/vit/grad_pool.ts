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
 * Before each step the pool writes the variables whose values changed since the last one (tfjs gives a
 * variable a new data id on every `assign`) into memory shared with every worker, and tells them which train.
 *
 * Data goes through `SharedArrayBuffer`s (the weights, one for all workers; each worker's chunk data and
 * gradients), the messages carry only names and offsets: Deno's `node:worker_threads` takes ~0.1 s per MB to
 * post a typed array (measured: 4 MB in 0.3–0.46 s, against ~1 ms for a message that refers to shared
 * memory).
 *
 * The workers never keep the process alive while idle (unreferenced between steps) and end with the model
 * (`ViTModel.dispose`).
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs";
import { Worker } from "node:worker_threads";
import { coresSetting } from "../backend/threads.ts";
import type { ResolvedViTConfig } from "./config.ts";
import type { ParamSpec } from "./params.ts";

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
  /** The chunk's `m` images, NCHW; with `split`, their frozen prefix's outputs (`ViTModel.prefixOutputs`). */
  input: Float32Array;
  /** `[m, C, H, W]`; with `split`, `[m]`. */
  shape: number[];
  /** The frozen prefix's split point when `input` holds its outputs: the chunk runs the trainable suffix. */
  split?: number;
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

/** Where a chunk's arrays lie in its worker's shared `data` buffer (offsets and lengths in floats). */
export interface ChunkLayout {
  input: [number, number];
  shape: number[];
  split?: number;
  /** Class indices (stored as floats, exact) or soft targets. */
  labels: [number, number];
  soft: boolean;
  weight: number;
  labelSmoothing: number;
  drops?: Array<{ attn?: [number, number]; mlp?: [number, number] }>;
}

/** Messages to a worker (grad_worker.ts). */
export type ToWorker =
  | {
    type: "init";
    config: ResolvedViTConfig;
    /** Every variable's values (device layout) at `offsets` (floats), in spec order. */
    weights: SharedArrayBuffer;
  }
  | {
    type: "step";
    /** Names of the variables to read again from the shared weights. */
    updates: string[];
    trainable: string[];
    /**
     * The chunks' data, and where the gradients go: chunk i's at `i × total`, laid out by
     * {@linkcode paramOffsets} over the trainable parameters only; sent when replaced.
     */
    data?: SharedArrayBuffer;
    grads?: SharedArrayBuffer;
    chunks: ChunkLayout[];
  };

/** Messages from a worker. */
export type FromWorker =
  | { type: "ready" }
  /** Each chunk's loss·weight; its gradients are in the shared `grads` buffer, trainable variables only. */
  | { type: "done"; losses: number[] }
  | { type: "error"; message: string };

/** Offsets (floats) of each parameter in the shared buffers, in spec order, and the total. */
export function paramOffsets(specs: readonly ParamSpec[]): { offsets: Map<string, number>; total: number } {
  const offsets = new Map<string, number>();
  let total = 0;
  for (const spec of specs) {
    offsets.set(spec.name, total);
    total += spec.shape.reduce((a, b) => a * b, 1);
  }
  return { offsets, total };
}

/**
 * Workers wanted: `VIT_TRAIN_WORKERS` (a positive integer; 1 trains on the calling isolate only), else the
 * machine's cores, at most {@linkcode MAX_TRAIN_WORKERS}.
 */
export function trainWorkersWanted(value = Deno.env.get("VIT_TRAIN_WORKERS")): number {
  return coresSetting("VIT_TRAIN_WORKERS", value, MAX_TRAIN_WORKERS);
}

/**
 * Bytes one cgroup level lets its processes still take, from its limit, usage and `memory.stat` files' text
 * (v2: `memory.max`, `memory.current`; v1: `memory.limit_in_bytes`, `memory.usage_in_bytes`): the limit less
 * the usage, not counting inactive page cache (the kernel reclaims it before it refuses memory). Undefined
 * when there is no limit (`max`) or the text is not understood.
 */
export function cgroupAvailableBytes(max: string, current: string, stat = ""): number | undefined {
  // Number("") is 0: an empty file would read as a zero limit.
  if (!max.trim() || !current.trim()) return undefined;
  const limit = Number(max), used = Number(current);
  if (!Number.isFinite(limit) || !Number.isFinite(used)) return undefined;
  const field = (key: string) => new RegExp(`^${key} (\\d+)$`, "m").exec(stat)?.[1];
  const inactive = Number(field("total_inactive_file") ?? field("inactive_file") ?? 0);
  return Math.max(0, limit - Math.max(0, used - inactive));
}

/**
 * Bytes this process's memory cgroups let it still take: the least over its own cgroup and every ancestor
 * visible under `root` (a limit set on a parent binds its children too), for the unified (v2) hierarchy (its
 * `memory.high` where lower than `memory.max`) and the v1 `memory` controller alike. `procSelfCgroup` is
 * `/proc/self/cgroup`'s text; `read` returns a file's text, or undefined where it cannot. Undefined when no
 * level sets a limit.
 *
 * @example
 * ```ts
 * const files: Record<string, string> = {
 *   "/sys/fs/cgroup/cgroup.controllers": "memory",
 *   "/sys/fs/cgroup/app/memory.max": "max", "/sys/fs/cgroup/app/memory.current": "100",
 *   "/sys/fs/cgroup/memory.max": "1000", "/sys/fs/cgroup/memory.current": "400",
 * };
 * cgroupLimitBytes("0::/app\n", (f) => files[f]); // 600: the parent's limit binds
 * ```
 */
export function cgroupLimitBytes(
  procSelfCgroup: string,
  read: (file: string) => string | undefined,
  root = "/sys/fs/cgroup",
): number | undefined {
  let least: number | undefined;
  // v2 is mounted at root itself, or at root/unified beside v1's controllers (a hybrid setup).
  const v2Base = read(`${root}/cgroup.controllers`) !== undefined ? root : `${root}/unified`;
  for (const line of procSelfCgroup.split("\n")) {
    // hierarchy-id:controllers:path (the path may itself hold colons).
    const [, id, controllers, path] = /^(\d+):([^:]*):(.*)$/.exec(line) ?? [];
    if (path === undefined) continue;
    const v2 = id === "0" && controllers === "";
    if (!v2 && !controllers.split(",").includes("memory")) continue;
    const base = v2 ? v2Base : `${root}/memory`;
    const [maxFile, usedFile] = v2
      ? ["memory.max", "memory.current"]
      : ["memory.limit_in_bytes", "memory.usage_in_bytes"];
    const parts = path.split("/").filter(Boolean);
    for (let depth = parts.length; depth >= 0; depth--) {
      const dir = [base, ...parts.slice(0, depth)].join("/");
      let max = read(`${dir}/${maxFile}`);
      const used = read(`${dir}/${usedFile}`);
      if (max === undefined || used === undefined) continue;
      // v2's memory.high, where set below memory.max, is where the kernel starts throttling and reclaiming.
      const high = v2 ? Number(read(`${dir}/memory.high`)?.trim() || NaN) : NaN;
      if (high < Number(max) || (high >= 0 && max.trim() === "max")) max = String(high);
      const level = cgroupAvailableBytes(max, used, read(`${dir}/memory.stat`) ?? "");
      if (level !== undefined) least = Math.min(least ?? Infinity, level);
    }
  }
  return least;
}

/**
 * Bytes of memory available now: the system's (`Deno.systemMemoryInfo`), or less where this process's memory
 * cgroups say so ({@linkcode cgroupLimitBytes}: its own and the ancestors visible to it, v2 or v1); undefined
 * without the permission to read the system's. Never prompts: cgroup files it may not read are not counted.
 */
export function availableMemoryBytes(): number | undefined {
  const granted = (d: Deno.PermissionDescriptor) => Deno.permissions.querySync(d).state === "granted";
  if (!granted({ name: "sys", kind: "systemMemoryInfo" })) return undefined;
  const available = Deno.systemMemoryInfo().available;
  const read = (file: string) => {
    if (!granted({ name: "read", path: file })) return undefined;
    try {
      return Deno.readTextFileSync(file);
    } catch {
      return undefined;
    }
  };
  // Without /proc/self/cgroup, the cgroups at the root of the mounts (a container's own).
  const limited = cgroupLimitBytes(read("/proc/self/cgroup") ?? "0::/\n1:memory:/\n", read);
  return limited === undefined ? available : Math.min(available, limited);
}

/**
 * The most workers (at least 1, at most {@linkcode MAX_TRAIN_WORKERS}) whose memory, `perWorker(s)` bytes
 * each in a pool of `s`, fits in half of `available` bytes; unbounded when the memory is unknown. Half: the
 * calling isolate, the data and everything else on the machine need the rest.
 */
export function workersThatFit(
  perWorker: (workers: number) => number,
  available: number | undefined,
): number {
  if (available === undefined) return Infinity;
  let fit = 1;
  for (let s = 2; s <= MAX_TRAIN_WORKERS; s++) if (s * perWorker(s) <= available / 2) fit = s;
  return fit;
}

/**
 * Multiply-adds of one image's forward pass (the dense products and attention's two per-head products), or of
 * the part after a frozen prefix's `split` (blocks `split…`; past the blocks, the head only).
 */
function forwardMacs(c: ResolvedViTConfig, split?: number): number {
  const T = c.tokens, D = c.embed_dim;
  const perBlock = T * (4 * D * D + 2 * D * c.mlp_hidden) + 2 * T * T * D;
  if (split !== undefined) return Math.max(0, c.depth - split) * perBlock + D * c.num_classes;
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
  request(m: ToWorker): Promise<FromWorker> {
    if (this.#failure) return Promise.reject(this.#failure);
    // After another worker failed a step, this one may still be on it: its late answer must not settle this.
    if (this.#pending) return Promise.reject(new Error("it is still busy with an earlier step"));
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.worker.ref();
      this.worker.postMessage(m);
    });
  }

  /** Shared buffers this worker has, grown as chunks need. */
  data: Float32Array | undefined;
  grads: Float32Array | undefined;
}

/** A pool of data-parallel training workers over one model's variables. */
export class GradPool {
  readonly size: number;
  readonly #workers: PoolWorker[];
  readonly #specs: readonly ParamSpec[];
  readonly #offsets: Map<string, number>;
  /** Every variable's values as the workers see them (device layouts). */
  readonly #weights: Float32Array;
  /** Each variable's data id as last written to {@linkcode #weights}. */
  readonly #synced = new Map<string, object>();
  /** Per worker, the variables written since it last received a step (a worker with no chunk gets none). */
  readonly #unsent: Set<string>[];
  #ready: Promise<void>;
  /** Steps run one at a time. */
  #queue: Promise<unknown> = Promise.resolve();
  #terminated = false;

  /**
   * Workers for a step of `n` images of `config` (from a frozen prefix's outputs at `split` when given):
   * `VIT_TRAIN_WORKERS` when it is set (at most one per image);
   * by default the cores, but 1 (none) when the step is too small for the messages to pay off, no more
   * than give {@linkcode MIN_IMAGES_PER_WORKER} images each, and no more than `fit` (those that fit in
   * memory: {@linkcode workersThatFit}).
   */
  static workersFor(
    config: ResolvedViTConfig,
    n: number,
    value = Deno.env.get("VIT_TRAIN_WORKERS"),
    split?: number,
    fit = Infinity,
  ): number {
    const wanted = trainWorkersWanted(value);
    if (value !== undefined && value !== "") return Math.min(wanted, n);
    if (3 * forwardMacs(config, split) * n < MIN_STEP_MACS) return 1;
    return Math.max(1, Math.min(wanted, fit, Math.floor(n / MIN_IMAGES_PER_WORKER)));
  }

  /**
   * Starts `size` workers, each with a copy of the model of `config` at the variables' current values; they
   * load in the background (the first {@linkcode run} waits for them).
   */
  constructor(config: ResolvedViTConfig, specs: readonly ParamSpec[], variables: Variables, size: number) {
    this.size = size;
    this.#specs = specs;
    const { offsets, total } = paramOffsets(specs);
    this.#offsets = offsets;
    const weights = new SharedArrayBuffer(4 * total);
    this.#weights = new Float32Array(weights);
    const url = new URL("./grad_worker.ts", import.meta.url);
    const workers = Array.from({ length: size }, () => new PoolWorker(url));
    this.#workers = workers;
    this.#unsent = workers.map(() => new Set());
    this.#ready = (async () => {
      await this.#writeChanged(variables);
      await Promise.all(
        workers.map((w) => this.#expect(w.request({ type: "init", config, weights }), "ready")),
      );
    })();
    this.#ready.catch(() => {});
  }

  /** Writes the variables whose values changed into the shared weights; returns their names. */
  async #writeChanged(variables: Variables): Promise<string[]> {
    const changed: string[] = [];
    for (const spec of this.#specs) {
      const v = variables.get(spec.name)!;
      const id = dataId(v);
      if (this.#synced.get(spec.name) === id) continue;
      this.#weights.set(await v.data() as Float32Array, this.#offsets.get(spec.name)!);
      this.#synced.set(spec.name, id);
      changed.push(spec.name);
    }
    return changed;
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
   * workers were given every variable that changed since the last step.
   */
  run(chunks: GradChunk[], variables: Variables): Promise<ChunkResult[]> {
    const step = this.#queue.then(() => this.#run(chunks, variables));
    this.#queue = step.catch(() => {});
    return step;
  }

  async #run(chunks: GradChunk[], variables: Variables): Promise<ChunkResult[]> {
    if (this.#terminated) throw new Error("the data-parallel training workers were ended");
    await this.#ready;
    for (const name of await this.#writeChanged(variables)) for (const u of this.#unsent) u.add(name);
    const trained = this.#specs.filter((s) => variables.get(s.name)!.trainable);
    const trainable = trained.map((s) => s.name);
    const layout = paramOffsets(trained);
    const mine = this.#workers.map((_, i) => chunks.filter((_, j) => j % this.size === i));
    const answers = this.#workers.map((w, i) => {
      if (!mine[i].length) return undefined;
      const updates = this.#specs.map((s) => s.name).filter((n) => this.#unsent[i].has(n));
      this.#unsent[i].clear();
      const { layouts, replaced } = this.#pack(w, mine[i], layout.total);
      return this.#expect(
        w.request({ type: "step", updates, trainable, chunks: layouts, ...replaced }),
        "done",
      );
    });
    const done = await Promise.all(answers);
    return chunks.map((_, j) => {
      const i = j % this.size, k = Math.floor(j / this.size);
      const loss = (done[i] as Extract<FromWorker, { type: "done" }>).losses[k];
      const g = this.#workers[i].grads!;
      const grads = new Map<string, Float32Array>();
      for (const name of trainable) {
        const off = k * layout.total + layout.offsets.get(name)!;
        // A copy: the shared buffer is the next step's.
        grads.set(name, g.slice(off, off + variables.get(name)!.size));
      }
      return { loss, grads };
    });
  }

  /**
   * Writes `chunks` into worker `w`'s shared data buffer (grown when too small, as its gradient buffer, which
   * holds `gradFloats` per chunk) and returns where each array lies, with the buffers that were replaced.
   */
  #pack(
    w: PoolWorker,
    chunks: GradChunk[],
    gradFloats: number,
  ): { layouts: ChunkLayout[]; replaced: { data?: SharedArrayBuffer; grads?: SharedArrayBuffer } } {
    const arrays = chunks.flatMap((c) => [
      c.input,
      c.labels,
      ...(c.drops ?? []).flatMap((d) => [d.attn, d.mlp].filter((a) => a !== undefined)),
    ]);
    const need = arrays.reduce((sum, a) => sum + a.length, 0);
    const replaced: { data?: SharedArrayBuffer; grads?: SharedArrayBuffer } = {};
    if (!w.data || w.data.length < need) {
      w.data = new Float32Array(new SharedArrayBuffer(4 * need));
      replaced.data = w.data.buffer as SharedArrayBuffer;
    }
    if (!w.grads || w.grads.length < chunks.length * gradFloats) {
      w.grads = new Float32Array(new SharedArrayBuffer(4 * chunks.length * gradFloats));
      replaced.grads = w.grads.buffer as SharedArrayBuffer;
    }
    const data = w.data;
    let at = 0;
    const put = (a: Float32Array | Int32Array): [number, number] => {
      // Class indices are small integers: exact as floats.
      data.set(a, at);
      at += a.length;
      return [at - a.length, a.length];
    };
    const layouts = chunks.map((c): ChunkLayout => ({
      input: put(c.input),
      shape: c.shape,
      ...(c.split !== undefined ? { split: c.split } : {}),
      labels: put(c.labels),
      soft: c.labels instanceof Float32Array,
      weight: c.weight,
      labelSmoothing: c.labelSmoothing,
      ...(c.drops
        ? {
          drops: c.drops.map((d) => ({
            ...(d.attn ? { attn: put(d.attn) } : {}),
            ...(d.mlp ? { mlp: put(d.mlp) } : {}),
          })),
        }
        : {}),
    }));
    return { layouts, replaced };
  }

  /** Ends the workers; a later {@linkcode run} throws. */
  terminate(): void {
    this.#terminated = true;
    for (const w of this.#workers) void w.worker.terminate();
  }
}
