/**
 * `ViTModel`: a `VisionTransformer` whose parameters live on the tfjs backend as Variables, with host-side
 * entry points in timm's names and layouts (logits, loss and gradients), batch splitting to respect WebGPU's
 * buffer-binding limit, and no tensor left behind between calls.
 *
 * On the onnx engine `logits` runs on ONNX Runtime, over the graph {@linkcode vitOnnxModel} writes from the
 * weights, while gradients and training stay on the tfjs backend. A model created with `trainable: false`
 * there holds its weights in ONNX Runtime only (one copy per served model); a trainable one keeps its tfjs
 * Variables as the truth and rebuilds the ONNX Runtime session from them after they may have changed.
 *
 * @module
 */
import type { Scalar, Tensor, Tensor2D, Tensor4D, Variable } from "@tensorflow/tfjs";
import { type BackendInfo, ensureTrainingBackend, initBackend } from "../backend/backend.ts";
import { resolveConfig, type ResolvedViTConfig, type ViTConfig } from "./config.ts";
import type { DropPathScales } from "./block.ts";
import {
  checkStateDict,
  deviceShape,
  type HostTensor,
  type ParamSpec,
  paramSpecs,
  type StateDict,
  toDeviceLayout,
  toTimmLayout,
} from "./params.ts";
import type { VisionTransformer } from "./vision_transformer.ts";
import { openSession, type OrtSession } from "../onnx/ort.ts";
import { type OnnxWeights, vitOnnxModel } from "./onnx_graph.ts";
import {
  availableMemoryBytes,
  type DropPathDraws,
  type GradChunk,
  GradPool,
  workersThatFit,
} from "./grad_pool.ts";

export type { DropPathDraws, GradChunk } from "./grad_pool.ts";

/** Options of {@linkcode ViTModel.lossAndGrads}. */
export interface LossOptions {
  /** Label smoothing in [0, 1); 0 by default. Hard labels only (soft targets carry their own). */
  labelSmoothing?: number;
  /**
   * Stochastic depth (timm's `drop_path_rate`): block i's residual branches are dropped per sample with
   * probability `dropPathRates(depth, rate)[i]`, kept ones scaled by `1/keep_prob`. `uniform` supplies the
   * draws (in [0, 1)), in the order block, branch (attn, mlp), sample; blocks at rate 0 draw nothing.
   */
  dropPath?: { rate: number; uniform: () => number };
}

/**
 * Training targets: class indices (`Int32Array`, length n) or soft target distributions (`Float32Array`,
 * `[n, num_classes]` row-major, each row ≥ 0 summing to 1, as mixup/CutMix make them).
 */
export type Targets = Int32Array | Float32Array;

/** Options of {@linkcode createViT}. */
export interface CreateOptions {
  /**
   * The most images one device pass may hold. By default it is derived from the backend's buffer-binding
   * limit so that the largest activation of one pass fits in one binding.
   */
  maxChunk?: number;
  /**
   * Whether the parameters can be trained (tfjs `trainable`); true by default. On the onnx engine a model
   * created with false has no tfjs Variables at all: it answers `logits` only.
   */
  trainable?: boolean;
  /**
   * On the onnx engine: the blocks' linear weights as int8 with dynamic activation quantisation (opt-in:
   * faster and 4× smaller, not exact; see `VitOnnxOptions.weights` in onnx_graph.ts). `VIT_ONNX_WEIGHTS` by
   * default.
   */
  onnxWeights?: OnnxWeights;
  /**
   * Inference-only models on the onnx engine: how their session opens, given their graph (written on demand
   * from the weights). By default a session over that graph; the engine cache (lib/weights/engine.ts) passes
   * one that also saves the optimised model for later starts.
   */
  openOnnx?: (graph: () => Uint8Array) => Promise<OrtSession>;
  /**
   * Bytes of memory the data-parallel training workers may take half of (read when the first pool starts,
   * once); by default what is available then (`availableMemoryBytes`).
   */
  memoryBytes?: number;
  /**
   * The part (0–1] of that memory this model counts as its own; 1 by default. A server that runs several
   * fine-tuning sessions at once gives each a part, so that sessions starting together do not all count
   * the same free memory.
   */
  memoryShare?: number;
}

/** The onnx engine's weight storage: `VIT_ONNX_WEIGHTS` (float32 or int8), float32 when unset. */
export function onnxWeightsFromEnv(): OnnxWeights {
  const v = Deno.env.get("VIT_ONNX_WEIGHTS") || "float32";
  if (v !== "float32" && v !== "int8") {
    throw new Error(`VIT_ONNX_WEIGHTS: unknown value "${v}", expected float32 (the default) or int8`);
  }
  return v;
}

/** Images per ONNX Runtime run: bounds the activations of one run (a ViT-B/16 image needs ~5 MB). */
const ORT_CHUNK = 32;

/** Device-side gradients in timm names (device layouts); the caller disposes them. */
export interface DeviceGrads {
  loss: number;
  grads: Map<string, Tensor>;
}

let nextModelId = 0;

/** The model's tfjs parts (model_tfjs.ts), once {@linkcode loadTfjsParts} has loaded them. */
let parts: typeof import("./model_tfjs.ts") | undefined;
/** tfjs, once loaded; every function below that uses it runs on a model built after `loadTfjsParts`. */
let tf: typeof import("./model_tfjs.ts")["tf"];

/**
 * Loads tfjs and the model's tfjs modules, once. {@linkcode createViT} calls it for every model that runs on
 * tfjs; an inference-only model on the onnx engine never does, so a process that only classifies on ONNX
 * Runtime starts without tfjs.
 */
export async function loadTfjsParts(): Promise<void> {
  parts ??= await import("./model_tfjs.ts");
  tf = parts.tf;
}

/** Whether a model created with `options` on `backend` runs on ONNX Runtime only (no tfjs at all). */
function onnxOnly(backend: BackendInfo, options: CreateOptions): boolean {
  return backend.engine === "onnx" && options.trainable === false;
}

/** Bytes of the largest single activation one image produces in a forward or backward pass. */
export function bytesPerImage(c: ResolvedViTConfig): number {
  const T = c.tokens;
  const largest = Math.max(
    c.in_chans * c.img_size * c.img_size,
    T * c.mlp_hidden,
    c.num_heads * T * T,
    T * 3 * c.embed_dim,
  );
  return largest * 4;
}

/**
 * Bytes one image keeps alive between forward and backward: per block, roughly 14 token×dim tensors
 * (norms, qkv, residuals), 3 attention maps and 3 MLP-hidden tensors. An estimate, used only to split
 * training batches on memory-bounded backends.
 */
export function trainBytesPerImage(c: ResolvedViTConfig): number {
  const T = c.tokens;
  return 4 * c.depth * (14 * T * c.embed_dim + 3 * c.num_heads * T * T + 3 * T * c.mlp_hidden);
}

/**
 * The most images one device pass may hold so that no activation exceeds `maxBindingBytes` (at least 1,
 * at most `maxChunk` when given, and never above 1024 so host-side staging stays bounded).
 */
export function chunkSize(config: ResolvedViTConfig, maxBindingBytes: number, maxChunk?: number): number {
  const derived = Math.max(1, Math.floor(maxBindingBytes / bytesPerImage(config)));
  return Math.max(1, Math.min(maxChunk ?? Infinity, derived, 1024));
}

/**
 * Throws unless preprocessed images of shape `[C, H, W]` fit `config` (`what` names them in the message,
 * e.g. "training images").
 */
export function checkImageShape(
  shape: readonly number[],
  config: { in_chans?: number; img_size: number },
  what = "images",
): void {
  const c = config.in_chans ?? 3;
  if (shape.length !== 3 || shape[0] !== c || shape[1] !== config.img_size || shape[2] !== config.img_size) {
    throw new Error(
      `${what} are [${shape}], the model expects [${c}, ${config.img_size}, ${config.img_size}]`,
    );
  }
}

/**
 * Adds `more` into `into` tensor by tensor (same names), disposing `more` and the replaced sums: gradient
 * accumulation over chunks and over accumulation steps, in one place.
 */
export function accumulateGrads(into: Map<string, Tensor>, more: Map<string, Tensor>): void {
  for (const [name, g] of more) {
    const before = into.get(name);
    if (!before) throw new Error(`internal: no gradient "${name}" to accumulate into`);
    into.set(name, tf.add(before, g));
    before.dispose();
    g.dispose();
  }
}

/** `into[i] += more[i]`, rounded to float32 (one float32 addition per element). */
function addInto(into: Float32Array, more: Float32Array): void {
  for (let i = 0; i < into.length; i++) into[i] = Math.fround(into[i] + more[i]);
}

/** A timm ViT on the current tfjs backend. Create it with {@linkcode createViT}. */
export class ViTModel {
  readonly config: ResolvedViTConfig;
  readonly specs: readonly ParamSpec[];
  readonly backend: BackendInfo;
  /** The most images per device pass (see {@linkcode CreateOptions.maxChunk}). */
  readonly maxChunk: number;
  /** The most images per forward+backward pass: {@linkcode maxChunk}, lowered to fit the memory budget. */
  readonly trainChunk: number;
  readonly #net: VisionTransformer | undefined;
  readonly #vars = new Map<string, Variable>();
  readonly #timmNameOf = new Map<string, string>();
  #disposed = false;
  /** The ONNX Runtime session (onnx engine), opened on first use and again after the Variables may change. */
  #session: Promise<OrtSession> | undefined;
  /** Sessions of frozen-prefix graphs by split point (onnx engine; see `prefixOutputs`). */
  readonly #prefixSessions = new Map<number, Promise<OrtSession>>();
  /** How the first session of an inference-only onnx model opens (it holds the weights until then). */
  #opener: (() => Promise<OrtSession>) | undefined;
  /** How the onnx graph stores the blocks' weights. */
  readonly onnxWeights: OnnxWeights;
  /** Data-parallel training workers, started on the first step that uses them (see `#gradPool`). */
  #pool: GradPool | undefined;
  /** Bytes of the weights. */
  readonly #paramBytes: number;
  /** The memory the pool may take half of, read once before the first pool starts (see `#gradPool`). */
  #memoryAvailable: { bytes: number | undefined } | undefined;
  readonly #memoryBytes: number | undefined;
  readonly #memoryShare: number;
  #stepWorkers = 1;

  /**
   * `state` undefined: an inference-only onnx model whose session `opener` opens (an engine cache entry);
   * see {@linkcode openOnnxViT}.
   */
  constructor(
    config: ResolvedViTConfig,
    state: StateDict | undefined,
    backend: BackendInfo,
    options: CreateOptions = {},
    opener?: () => Promise<OrtSession>,
  ) {
    this.config = config;
    this.backend = backend;
    this.specs = paramSpecs(config);
    if (state) checkStateDict(this.specs as ParamSpec[], state);
    this.maxChunk = chunkSize(config, backend.maxBindingBytes, options.maxChunk);
    const paramBytes = 4 * this.specs.reduce((sum, s) => sum + s.shape.reduce((a, b) => a * b, 1), 0);
    this.#paramBytes = paramBytes;
    this.#memoryBytes = options.memoryBytes;
    this.#memoryShare = options.memoryShare ?? 1;
    if (!(this.#memoryShare > 0 && this.#memoryShare <= 1)) {
      throw new RangeError(`memoryShare: ${options.memoryShare}, expected a number in (0, 1]`);
    }
    // Weights, gradients and one transient copy of the largest of them stay resident during backward.
    const free = backend.memoryBudgetBytes - 3 * paramBytes;
    this.trainChunk = Math.max(1, Math.min(this.maxChunk, Math.floor(free / trainBytesPerImage(config))));
    const id = nextModelId++;
    this.onnxWeights = options.onnxWeights ?? onnxWeightsFromEnv();
    if (onnxOnly(backend, options)) {
      const weights = this.onnxWeights, open = options.openOnnx ?? ((graph) => openSession(graph()));
      this.#opener = opener ?? (() => open(() => vitOnnxModel(config, state!, { weights })));
      return;
    }
    if (!state) throw new Error("internal: a model without weights must be an inference-only onnx model");
    if (!parts) throw new Error("internal: a model on tfjs is built after loadTfjsParts (createViT does)");
    for (const spec of this.specs) {
      const host = state.get(spec.name)!;
      const varName = `vit${id}/${spec.name}`;
      const v = tf.tidy(() =>
        tf.variable(
          tf.tensor(toDeviceLayout(spec, host.data), deviceShape(spec), "float32"),
          options.trainable ?? true,
          varName,
        )
      );
      this.#vars.set(spec.name, v);
      this.#timmNameOf.set(varName, spec.name);
    }
    this.#net = new parts.VisionTransformer(config, (name) => {
      const v = this.#vars.get(name);
      if (!v) throw new Error(`internal: no parameter "${name}"`);
      return v;
    });
  }

  /** Whether this model answers `logits` on ONNX Runtime. */
  get onOnnx(): boolean {
    return this.backend.engine === "onnx";
  }

  #tfjsOnly(what: string): void {
    this.#check();
    if (!this.#net) {
      throw new Error(
        `${what} needs the model's tfjs Variables, and this model was created with trainable: false on the ` +
          `onnx engine (inference only); create it with trainable: true to train on tfjs ${this.backend.name}`,
      );
    }
  }

  /** The forward pass on the tfjs backend (absent on an inference-only onnx model). */
  get net(): VisionTransformer {
    this.#tfjsOnly("the tfjs forward pass");
    return this.#net!;
  }

  /**
   * The parameter variables by timm name (device layouts). Whoever takes them may change them, so on the
   * onnx engine the next `logits` call rebuilds its session from them.
   */
  get variables(): ReadonlyMap<string, Variable> {
    this.#tfjsOnly("model.variables");
    this.#stale();
    return this.#vars;
  }

  /** Marks the ONNX Runtime session out of date: the next `logits` opens one from the current Variables. */
  #stale(): void {
    if (!this.onOnnx || this.#opener) return;
    const old = this.#session;
    this.#session = undefined;
    old?.then((s) => s.release()).catch(() => {});
  }

  #ortSession(): Promise<OrtSession> {
    if (!this.#session) {
      const attempt = (async () => {
        const session = this.#opener ? await this.#opener() : await openSession(
          vitOnnxModel(this.config, await this.#readVariables(), { weights: this.onnxWeights }),
        );
        this.#opener = undefined;
        return session;
      })();
      // A failed open is not remembered: the next call tries again.
      attempt.catch(() => {
        if (this.#session === attempt) this.#session = undefined;
      });
      this.#session = attempt;
    }
    return this.#session;
  }

  #check(): void {
    if (this.#disposed) throw new Error("this ViT model was disposed");
  }

  #checkInput(input: Float32Array, shape: readonly number[]): void {
    const c = this.config;
    if (shape.length !== 4) throw new Error(`input shape must be [n, C, H, W], got [${shape}]`);
    const [n, ch, h, w] = shape;
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`input batch size must be a positive integer, got ${n}`);
    }
    if (ch !== c.in_chans || h !== c.img_size || w !== c.img_size) {
      throw new Error(
        `input shape [${shape}] does not match the model: expected [n, ${c.in_chans}, ${c.img_size}, ${c.img_size}]`,
      );
    }
    if (input.length !== n * ch * h * w) {
      throw new Error(`input holds ${input.length} values, shape [${shape}] needs ${n * ch * h * w}`);
    }
  }

  #chunks(n: number, size = this.maxChunk): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let start = 0; start < n; start += size) {
      out.push([start, Math.min(n, start + size)]);
    }
    return out;
  }

  #imageTensor(input: Float32Array, shape: readonly number[], start: number, end: number): Tensor4D {
    const per = shape[1] * shape[2] * shape[3];
    return tf.tensor4d(input.subarray(start * per, end * per), [end - start, shape[1], shape[2], shape[3]]);
  }

  /** Runs the tfjs forward pass on device tensors (no batch splitting); the caller owns the result. */
  forward(x: Tensor4D): Tensor2D {
    this.#check();
    return this.net.apply(x);
  }

  /**
   * Opens the ONNX Runtime session of an inference-only onnx model now (createViT does), so that a rejected
   * graph fails at load and the caller's state dict is no longer referenced; a no-op otherwise.
   */
  async ready(): Promise<void> {
    if (this.#opener) await this.#ortSession();
  }

  async #ortLogits(input: Float32Array, shape: readonly number[]): Promise<Float32Array> {
    const session = await this.#ortSession();
    this.#check();
    const k = this.config.num_classes, per = shape[1] * shape[2] * shape[3];
    const out = new Float32Array(shape[0] * k);
    for (const [start, end] of this.#chunks(shape[0], ORT_CHUNK)) {
      const x = input.subarray(start * per, end * per);
      out.set(await session.run(x, [end - start, shape[1], shape[2], shape[3]]), start * k);
    }
    return out;
  }

  /**
   * Resolves once `logits` runs at full speed: on the onnx engine, a session opened from the engine cache
   * first answers from weights packed ahead of time and then switches (lib/onnx/engine_cache.ts); this starts
   * that switch now and waits for it. A server calls it before saying ready. At once everywhere else.
   */
  async fullSpeed(): Promise<void> {
    if (!this.onOnnx || !this.#session) return;
    const session = await this.#session as OrtSession & { upgrade?: () => Promise<boolean> };
    await session.upgrade?.();
  }

  /** Logits `[n, num_classes]`, row-major, for preprocessed NCHW images (as timm's `model(x)`). */
  async logits(
    input: Float32Array,
    shape: readonly [number, number, number, number] | number[],
  ): Promise<Float32Array> {
    this.#check();
    this.#checkInput(input, shape);
    if (this.onOnnx) return await this.#ortLogits(input, shape);
    const out = new Float32Array(shape[0] * this.config.num_classes);
    for (const [start, end] of this.#chunks(shape[0])) {
      const logits = tf.tidy(() => this.net.apply(this.#imageTensor(input, shape, start, end)));
      try {
        out.set(await logits.data() as Float32Array, start * this.config.num_classes);
      } finally {
        logits.dispose();
      }
    }
    return out;
  }

  #checkLabels(labels: Targets, n: number): void {
    const k = this.config.num_classes;
    if (labels instanceof Float32Array) {
      if (labels.length !== n * k) {
        throw new Error(`soft targets hold ${labels.length} values, the batch needs ${n} × ${k}`);
      }
      for (let i = 0; i < n; i++) {
        let sum = 0, ok = true;
        for (let j = 0; j < k; j++) {
          const t = labels[i * k + j];
          ok &&= t >= 0;
          sum += t;
        }
        if (!ok || !(Math.abs(sum - 1) < 1e-4)) {
          throw new Error(
            `soft target row ${i} is not a distribution (entries ≥ 0 summing to 1; sum ${sum})`,
          );
        }
      }
      return;
    }
    if (labels.length !== n) {
      throw new Error(`labels holds ${labels.length} values, the batch has ${n} images`);
    }
    for (let i = 0; i < n; i++) {
      if (!Number.isInteger(labels[i]) || labels[i] < 0 || labels[i] >= k) {
        throw new Error(`label ${i} is ${labels[i]}, expected an integer in [0, ${k})`);
      }
    }
  }

  /** Every block's drop-path scales for `n` samples (host side: 0 or 1/keep per sample), or undefined. */
  #dropPathDraws(n: number, o: LossOptions["dropPath"]): DropPathDraws | undefined {
    if (!o || o.rate === 0) return undefined;
    return parts!.dropPathRates(this.config.depth, o.rate).map((rate) => {
      if (rate === 0) return {};
      const keep = 1 - rate, scale = Math.fround(1 / keep);
      const draw = () => Float32Array.from({ length: n }, () => (o.uniform() < keep ? scale : 0));
      const attn = draw();
      return { attn, mlp: draw() };
    });
  }

  /**
   * Mean loss and its gradients as device tensors in device layouts, keyed by timm name. Batches larger than
   * {@linkcode trainChunk} are split and their gradients summed with weights `chunk / n`, which gives exactly
   * the gradient of the mean over the whole batch. The caller disposes the returned tensors. `labels` may be
   * soft targets ({@linkcode Targets}); `options.dropPath` makes it a stochastic-depth training step.
   */
  async lossAndDeviceGrads(
    input: Float32Array,
    shape: readonly number[],
    labels: Targets,
    options: LossOptions = {},
  ): Promise<DeviceGrads> {
    this.#tfjsOnly("lossAndGrads");
    this.#checkInput(input, shape);
    const n = shape[0];
    this.#checkLabels(labels, n);
    const drops = this.#dropPathDraws(n, options.dropPath);
    const pool = this.#gradPool(n);
    if (pool) {
      // Data-parallel: the chunks run in the pool's workers and are summed here in chunk order, as below.
      this.#stale();
      const per = shape[1] * shape[2] * shape[3], k = this.config.num_classes;
      const chunks: GradChunk[] = this.#chunks(n, Math.min(this.trainChunk, Math.ceil(n / pool.size))).map((
        [start, end],
      ) => ({
        input: input.slice(start * per, end * per),
        shape: [end - start, shape[1], shape[2], shape[3]],
        labels: labels instanceof Float32Array ? labels.slice(start * k, end * k) : labels.slice(start, end),
        weight: (end - start) / n,
        labelSmoothing: options.labelSmoothing ?? 0,
        ...(drops ? { drops: sliceDraws(drops, start, end) } : {}),
      }));
      return this.#sumChunks(await pool.run(chunks, this.#vars));
    }
    return await this.#lossAndGrads(n, labels, options, (start, end) => {
      const m = end - start;
      const scale = (v?: Float32Array) => v ? tf.tensor3d(v.subarray(start, end), [m, 1, 1]) : undefined;
      const dp: DropPathScales[] | undefined = drops?.map((d) => ({
        attn: scale(d.attn),
        mlp: scale(d.mlp),
      }));
      return this.net.apply(this.#imageTensor(input, shape, start, end), dp);
    });
  }

  /**
   * Loss·weight and gradients of loss·weight of one self-contained chunk ({@linkcode GradChunk}), in one
   * pass: what a data-parallel training worker runs. Equals, bit for bit, that chunk's share of {@linkcode
   * lossAndDeviceGrads} on one isolate.
   */
  async chunkLossAndDeviceGrads(chunk: GradChunk): Promise<DeviceGrads> {
    this.#tfjsOnly("lossAndGrads");
    const m = chunk.shape[0];
    this.#checkLabels(chunk.labels, m);
    this.#stale();
    const split = chunk.split;
    if (split !== undefined) {
      const rows = split > this.config.depth ? 1 : this.config.tokens;
      if (chunk.input.length !== m * this.prefixSize(split)) {
        throw new Error(
          `prefix chunk holds ${chunk.input.length} values, ${m} images at split ${split} need more`,
        );
      }
      return await this.#chunkGrads(
        chunk.weight,
        chunk.labels,
        0,
        m,
        chunk.labelSmoothing,
        () => this.net.suffix(tf.tensor2d(chunk.input, [m * rows, this.config.embed_dim]), m, split),
      );
    }
    this.#checkInput(chunk.input, chunk.shape);
    return await this.#chunkGrads(chunk.weight, chunk.labels, 0, m, chunk.labelSmoothing, () => {
      const scale = (v?: Float32Array) => v ? tf.tensor3d(v, [m, 1, 1]) : undefined;
      const dp = chunk.drops?.map((d) => ({ attn: scale(d.attn), mlp: scale(d.mlp) }));
      return this.net.apply(this.#imageTensor(chunk.input, chunk.shape, 0, m), dp);
    });
  }

  /**
   * Isolates the last training step ran on: the data-parallel workers, or 1 (this one). A batch is cut into
   * chunks by it, so the last bits of every gradient depend on it (a checkpoint records it).
   */
  get stepWorkers(): number {
    return this.#stepWorkers;
  }

  /**
   * Bytes one of `s` workers holds for a step of `n` images: the weights as this isolate holds them (weights,
   * gradients, a transient copy), a gradient slot per chunk it runs in the shared buffer, its images (or
   * prefix outputs from `split`) and one chunk's activations.
   */
  #workerBytes(n: number, s: number, split?: number): number {
    const chunk = Math.min(this.trainChunk, Math.ceil(n / s));
    const chunksPerWorker = Math.ceil(Math.ceil(n / chunk) / s);
    const perImage = split === undefined
      ? this.config.in_chans * this.config.img_size ** 2
      : this.prefixSize(split);
    return (3 + chunksPerWorker) * this.#paramBytes + 4 * Math.ceil(n / s) * perImage +
      chunk * trainBytesPerImage(this.config);
  }

  /**
   * The data-parallel pool for a step of `n` images (from a frozen prefix's outputs at `split`), started on
   * first use: on tfjs-wasm, when
   * `GradPool.workersFor` gives more than one worker (`VIT_TRAIN_WORKERS`, default: the cores for steps big
   * enough, as many as fit in memory); else undefined (the step runs here).
   */
  #gradPool(n: number, split?: number): GradPool | undefined {
    this.#stepWorkers = 1;
    if (this.backend.name !== "wasm") return undefined;
    // Read once, before any worker exists: read later, a running pool would count itself.
    if (this.#memoryAvailable === undefined) {
      const bytes = this.#memoryBytes ?? availableMemoryBytes();
      this.#memoryAvailable = { bytes: bytes === undefined ? undefined : bytes * this.#memoryShare };
    }
    const fit = workersThatFit((s) => this.#workerBytes(n, s, split), this.#memoryAvailable.bytes);
    const size = GradPool.workersFor(this.config, n, undefined, split, fit);
    if (size < 2) return undefined;
    this.#stepWorkers = size;
    if (this.#pool?.size !== size) {
      this.#pool?.terminate();
      this.#pool = new GradPool(this.config, this.specs, this.#vars, size);
    }
    return this.#pool;
  }

  /**
   * Chunks' losses and gradients (host arrays from the pool, on wasm) summed in chunk order, as device
   * tensors. The sum is taken on the host, one float32 addition per element as tfjs-wasm's `Add` of
   * {@linkcode accumulateGrads} (the same bits), and uploaded once per parameter: one kernel-free pass on
   * this isolate, whose work is the serial part of a data-parallel step.
   */
  #sumChunks(parts: Array<{ loss: number; grads: Map<string, Float32Array> }>): DeviceGrads {
    let loss = 0;
    for (const part of parts) loss += part.loss;
    const grads = new Map<string, Tensor>();
    for (const name of parts[0].grads.keys()) {
      const sum = parts[0].grads.get(name)!;
      for (const part of parts.slice(1)) addInto(sum, part.grads.get(name)!);
      grads.set(name, tf.tensor(sum, this.#vars.get(name)!.shape, "float32"));
    }
    return { loss, grads };
  }

  /**
   * The split point of the frozen prefix (see `VisionTransformer.prefix`): the most stages whose parameters
   * are all frozen, or -1 when the patch embedding, class token or position embedding train. Depth + 1 means
   * everything but the head is frozen (`freeze: head-only`).
   */
  frozenSplit(): number {
    this.#check();
    const frozen = (prefix: string) =>
      [...this.#vars].every(([name, v]) => !name.startsWith(prefix) || !v.trainable);
    if (!["patch_embed.", "cls_token", "pos_embed"].every(frozen)) return -1;
    let split = 0;
    while (split < this.config.depth && frozen(`blocks.${split}.`)) split++;
    return split === this.config.depth && frozen("norm.") ? split + 1 : split;
  }

  /**
   * The ONNX Runtime session of the prefix graph at `split`, opened from the current weights on first use.
   * The prefix is frozen, so it is not reopened when the trainable part changes.
   */
  #prefixSession(split: number): Promise<OrtSession> {
    let session = this.#prefixSessions.get(split);
    if (!session) {
      session = (async () =>
        openSession(vitOnnxModel(this.config, await this.#readVariables(), { split })))();
      session.catch(() => this.#prefixSessions.delete(split));
      this.#prefixSessions.set(split, session);
    }
    return session;
  }

  /** Values one image's prefix output holds at `split` (token states, or pooled features past the blocks). */
  prefixSize(split: number): number {
    const c = this.config;
    return split > c.depth ? c.embed_dim : c.tokens * c.embed_dim;
  }

  /**
   * The frozen prefix's output for preprocessed NCHW images, `prefixSize(split)` values per image, computed
   * without gradients: on ONNX Runtime over the prefix graph on the onnx engine, else on tfjs in passes of
   * {@linkcode maxChunk}. Each image's row depends on that image only.
   */
  async prefixOutputs(input: Float32Array, shape: readonly number[], split: number): Promise<Float32Array> {
    this.#check();
    this.#checkInput(input, shape);
    const per = this.prefixSize(split);
    const out = new Float32Array(shape[0] * per);
    if (this.onOnnx) {
      const session = await this.#prefixSession(split);
      const pixels = shape[1] * shape[2] * shape[3];
      for (const [start, end] of this.#chunks(shape[0], ORT_CHUNK)) {
        const x = input.subarray(start * pixels, end * pixels);
        out.set(await session.run(x, [end - start, shape[1], shape[2], shape[3]]), start * per);
      }
      return out;
    }
    for (const [start, end] of this.#chunks(shape[0])) {
      const h = tf.tidy(() => this.net.prefix(this.#imageTensor(input, shape, start, end), split));
      try {
        out.set(await h.data() as Float32Array, start * per);
      } finally {
        h.dispose();
      }
    }
    return out;
  }

  /**
   * {@linkcode lossAndDeviceGrads} from the frozen prefix's outputs (`prefixOutputs` at `split`, `n` images):
   * forward and backward through the trainable suffix only. Every parameter before `split` must be frozen.
   */
  async lossAndDeviceGradsFromPrefix(
    prefix: Float32Array,
    n: number,
    split: number,
    labels: Targets,
    options: LossOptions = {},
  ): Promise<DeviceGrads> {
    this.#tfjsOnly("lossAndGrads");
    if (options.dropPath && options.dropPath.rate > 0) {
      throw new Error(
        "drop_path needs every block's forward: it does not combine with a frozen prefix's outputs",
      );
    }
    if (split < 0 || split > this.frozenSplit()) {
      throw new Error(`split ${split} reaches parameters that train (frozen prefix: ${this.frozenSplit()})`);
    }
    const per = this.prefixSize(split);
    if (prefix.length !== n * per) {
      throw new Error(`prefix holds ${prefix.length} values, ${n} images at split ${split} need ${n * per}`);
    }
    this.#checkLabels(labels, n);
    const pool = this.#gradPool(n, split);
    if (pool) {
      this.#stale();
      const k = this.config.num_classes;
      const chunks: GradChunk[] = this.#chunks(n, Math.min(this.trainChunk, Math.ceil(n / pool.size))).map((
        [start, end],
      ) => ({
        input: prefix.slice(start * per, end * per),
        shape: [end - start],
        split,
        labels: labels instanceof Float32Array ? labels.slice(start * k, end * k) : labels.slice(start, end),
        weight: (end - start) / n,
        labelSmoothing: options.labelSmoothing ?? 0,
      }));
      return this.#sumChunks(await pool.run(chunks, this.#vars));
    }
    const rows = split > this.config.depth ? 1 : this.config.tokens;
    return await this.#lossAndGrads(n, labels, options, (start, end) =>
      this.net.suffix(
        tf.tensor2d(prefix.subarray(start * per, end * per), [(end - start) * rows, this.config.embed_dim]),
        end - start,
        split,
      ));
  }

  /**
   * Loss and trainable gradients over `n` images (labels checked) in chunks; `logits(start, end)` runs one
   * chunk's forward.
   */
  async #lossAndGrads(
    n: number,
    labels: Targets,
    options: LossOptions,
    logits: (start: number, end: number) => Tensor2D,
  ): Promise<DeviceGrads> {
    // Gradients are taken to change the weights: logits on onnx must then see the new ones.
    this.#stale();
    let grads: Map<string, Tensor> | undefined;
    let loss = 0;
    try {
      for (const [start, end] of this.#chunks(n, this.trainChunk)) {
        const part = await this.#chunkGrads(
          (end - start) / n,
          labels,
          start,
          end,
          options.labelSmoothing ?? 0,
          () => logits(start, end),
        );
        loss += part.loss;
        if (!grads) grads = part.grads;
        else accumulateGrads(grads, part.grads);
      }
    } catch (e) {
      for (const g of grads?.values() ?? []) g.dispose();
      throw e;
    }
    return { loss, grads: grads! };
  }

  /**
   * Loss·weight and the trainable gradients of loss·weight for images `[start, end)` of `labels`' batch;
   * `logits` runs their forward.
   */
  async #chunkGrads(
    weight: number,
    labels: Targets,
    start: number,
    end: number,
    labelSmoothing: number,
    logits: () => Tensor2D,
  ): Promise<DeviceGrads> {
    const k = this.config.num_classes, m = end - start;
    const varList = [...this.#vars.values()].filter((v) => v.trainable);
    const step = tf.tidy(() => {
      const lossOf = labels instanceof Float32Array
        ? (l: Tensor2D) =>
          parts!.softTargetCrossEntropy(l, tf.tensor2d(labels.subarray(start * k, end * k), [m, k]))
        : (l: Tensor2D) =>
          parts!.crossEntropy(l, tf.tensor1d(labels.subarray(start, end), "int32"), labelSmoothing);
      return tf.variableGrads(() => tf.mul(lossOf(logits()), weight) as Scalar, varList);
    });
    const loss = (await step.value.data())[0];
    step.value.dispose();
    return {
      loss,
      grads: new Map(Object.entries(step.grads).map(([k, g]) => [this.#timmNameOf.get(k)!, g])),
    };
  }

  /**
   * Mean cross-entropy (with optional label smoothing) of a batch and the gradient of every trainable
   * parameter, in timm's names and layouts.
   */
  async lossAndGrads(
    input: Float32Array,
    shape: readonly [number, number, number, number] | number[],
    labels: Targets,
    options: LossOptions = {},
  ): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const { loss, grads } = await this.lossAndDeviceGrads(input, shape, labels, options);
    const out = new Map<string, Float32Array>();
    try {
      for (const spec of this.specs) {
        const g = grads.get(spec.name);
        if (g) out.set(spec.name, toTimmLayout(spec, await g.data() as Float32Array));
      }
    } finally {
      for (const g of grads.values()) g.dispose();
    }
    return { loss, grads: out };
  }

  /** The current weights as a state dict in timm's names and layouts. */
  async stateDict(): Promise<StateDict> {
    this.#tfjsOnly("stateDict");
    return await this.#readVariables();
  }

  async #readVariables(): Promise<StateDict> {
    const out: StateDict = new Map();
    for (const spec of this.specs) {
      const data = await this.#vars.get(spec.name)!.data() as Float32Array;
      out.set(spec.name, { shape: [...spec.shape], data: toTimmLayout(spec, data.slice()) } as HostTensor);
    }
    return out;
  }

  /** Frees every device tensor of the model. Further calls throw. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#pool?.terminate();
    this.#pool = undefined;
    for (const v of this.#vars.values()) v.dispose();
    this.#vars.clear();
    this.#opener = undefined;
    this.#session?.then((s) => s.release()).catch(() => {});
    this.#session = undefined;
    for (const p of this.#prefixSessions.values()) p.then((s) => s.release()).catch(() => {});
    this.#prefixSessions.clear();
  }
}

/** Every block's draws for images `[start, end)` of the batch they were drawn for. */
function sliceDraws(drops: DropPathDraws, start: number, end: number): DropPathDraws {
  return drops.map((d) => ({
    ...(d.attn ? { attn: d.attn.slice(start, end) } : {}),
    ...(d.mlp ? { mlp: d.mlp.slice(start, end) } : {}),
  }));
}

/**
 * Builds a timm ViT from its config (timm field names) and a state dict in timm's names and layouts, on the
 * backend chosen by {@linkcode initBackend}. A missing, unexpected or mis-shaped tensor is an error naming
 * it.
 */
export async function createViT(
  config: ViTConfig,
  stateDict: StateDict,
  options?: CreateOptions,
): Promise<ViTModel> {
  const backend = await initBackend();
  if (!onnxOnly(backend, options ?? {})) await loadTfjsParts();
  if (options?.trainable !== false) await ensureTrainingBackend(backend);
  const model = new ViTModel(resolveConfig(config), stateDict, backend, options);
  await model.ready();
  return model;
}

/**
 * An inference-only model on the onnx engine whose session `open` opens without any weights in hand (an
 * engine cache entry: lib/weights/engine.ts). Throws unless the engine is onnx.
 */
export async function openOnnxViT(
  config: ViTConfig,
  open: () => Promise<OrtSession>,
  options: CreateOptions = {},
): Promise<ViTModel> {
  const backend = await initBackend();
  if (backend.engine !== "onnx") throw new Error(`openOnnxViT needs the onnx engine, not ${backend.engine}`);
  const model = new ViTModel(
    resolveConfig(config),
    undefined,
    backend,
    { ...options, trainable: false },
    open,
  );
  await model.ready();
  return model;
}
