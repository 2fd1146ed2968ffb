/**
 * SGD (timm's `sgd` = Nesterov momentum, `momentum` = plain momentum) and AdamW, with PyTorch's update
 * rules, and timm's gradient clipping. Parameters without weight decay follow timm
 * (`param_groups_weight_decay`): 1-D tensors (biases, norms) and `pos_embed`/`cls_token`.
 *
 * Two placements of the same arithmetic: on a GPU backend an update is one `tf.tidy` of tfjs ops that assigns
 * new values to the model's variables and the optimizer's state variables; on tfjs-wasm, whose tensors live
 * in this process's memory, it is one pass over the values in JS with the state in host arrays, each float32
 * operation of the tfjs version done in the same order and rounded to float32 (`Math.fround`), so the results
 * are the same bits (tests/optimizer_host_test.ts) without ~15 kernel dispatches per parameter. On a
 * data-parallel step this isolate's work is the serial part (the workers wait), so it is kept small.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/** timm's optimizer names supported here. */
export type OptimizerName = "sgd" | "momentum" | "adamw";

/** Hyper-parameters; `lr` is given per step. */
export interface OptimizerOptions {
  opt: OptimizerName;
  momentum: number;
  weightDecay: number;
  /** AdamW betas; (0.9, 0.999) by default. */
  betas?: [number, number];
  /** AdamW epsilon; 1e-8 by default. */
  eps?: number;
}

/** Whether timm would apply weight decay to a parameter (by timm name and timm shape). */
export function decays(name: string, timmShape: readonly number[]): boolean {
  if (timmShape.length <= 1 || name.endsWith(".bias")) return false;
  return name !== "pos_embed" && name !== "cls_token";
}

/**
 * Where updates run: `device` as tfjs ops, `host` as one pass in JS over values read from the tensors (the
 * same bits on tfjs-wasm; see the module doc).
 */
export type Placement = "device" | "host";

/** The placement for the current tfjs backend: host on wasm, device elsewhere. */
export function defaultPlacement(): Placement {
  // Only wasm's kernels are known to round exactly as the host pass does (its sums accumulate in float32;
  // tfjs's cpu backend sums in float64).
  return tf.getBackend() === "wasm" ? "host" : "device";
}

/** One optimizer over a model's trainable variables, keyed by timm name. */
export class Optimizer {
  readonly options: Required<OptimizerOptions>;
  readonly placement: Placement;
  /** Updates done so far (AdamW's bias correction uses it). */
  step = 0;
  readonly #params: Map<string, tf.Variable>;
  readonly #decay: Map<string, boolean>;
  /** The state per parameter (AdamW: exp_avg, exp_avg_sq; SGD: momentum_buffer): variables on the device. */
  readonly #slots = new Map<string, tf.Variable[]>();
  /** The same on the host. */
  readonly #hostSlots = new Map<string, Float32Array[]>();

  /**
   * @param params trainable variables by timm name (device layouts)
   * @param timmShapes the timm shape of each, to decide weight decay
   */
  constructor(
    params: ReadonlyMap<string, tf.Variable>,
    timmShapes: ReadonlyMap<string, readonly number[]>,
    options: OptimizerOptions,
    placement: Placement = defaultPlacement(),
  ) {
    this.options = { betas: [0.9, 0.999], eps: 1e-8, ...options };
    if (!["sgd", "momentum", "adamw"].includes(options.opt)) {
      throw new Error(`opt: unknown optimizer "${options.opt}", expected sgd, momentum or adamw`);
    }
    this.placement = placement;
    this.#params = new Map(params);
    this.#decay = new Map([...params.keys()].map((k) => [k, decays(k, timmShapes.get(k) ?? [])]));
    const count = options.opt === "adamw" ? 2 : 1;
    for (const [name, v] of this.#params) {
      if (placement === "host") {
        this.#hostSlots.set(name, Array.from({ length: count }, () => new Float32Array(v.size)));
        continue;
      }
      this.#slots.set(
        name,
        Array.from({ length: count }, () => tf.tidy(() => tf.variable(tf.zerosLike(v), false))),
      );
    }
  }

  /** The names of the parameters it updates. */
  get names(): string[] {
    return [...this.#params.keys()];
  }

  /** Names of the parameters without weight decay. */
  get noDecay(): string[] {
    return [...this.#decay].filter(([, d]) => !d).map(([k]) => k);
  }

  /**
   * Applies one update with learning rate `lr`. `grads` holds a device gradient for every parameter
   * (device layout), already scaled (accumulated and clipped); it is not disposed here.
   */
  apply(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    for (const name of this.#params.keys()) {
      if (!grads.has(name)) throw new Error(`optimizer: no gradient for parameter "${name}"`);
    }
    this.step++;
    if (this.placement === "host") return this.#applyHost(grads, lr);
    const { opt, momentum, weightDecay: wd, betas, eps } = this.options;
    const t = this.step;
    tf.tidy(() => {
      for (const [name, p] of this.#params) {
        const g0 = grads.get(name);
        if (!g0) throw new Error(`optimizer: no gradient for parameter "${name}"`);
        const decay = this.#decay.get(name) ? wd : 0;
        const slots = this.#slots.get(name)!;
        if (opt === "adamw") {
          const [m, v] = slots;
          const [b1, b2] = betas;
          const m1 = tf.add(tf.mul(m, b1), tf.mul(g0, 1 - b1));
          const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g0), 1 - b2));
          const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(1 - Math.pow(b2, t))), eps);
          const stepSize = lr / (1 - Math.pow(b1, t));
          const decayed = decay ? tf.mul(p, 1 - lr * decay) : p;
          p.assign(tf.sub(decayed, tf.mul(tf.div(m1, denom), stepSize)));
          m.assign(m1);
          v.assign(v1);
        } else {
          const [buf] = slots;
          const g = decay ? tf.add(g0, tf.mul(p, decay)) : g0;
          // PyTorch starts the buffer at the first gradient, which equals momentum·0 + g.
          const b1 = tf.add(tf.mul(buf, momentum), g);
          const direction = opt === "sgd" ? tf.add(g, tf.mul(b1, momentum)) : b1;
          p.assign(tf.sub(p, tf.mul(direction, lr)));
          buf.assign(b1);
        }
      }
    });
  }

  /** {@linkcode apply} on the host: the device version's float32 operations, in its order, per element. */
  #applyHost(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    const { opt, momentum, weightDecay: wd, betas, eps } = this.options;
    const t = this.step;
    const f = Math.fround;
    // Each scalar as the device version's scalar tensor holds it (float32).
    const [b1, b2] = betas;
    const k = opt === "adamw"
      ? [
        f(b1),
        f(1 - b1),
        f(b2),
        f(1 - b2),
        f(Math.sqrt(1 - Math.pow(b2, t))),
        f(eps),
        f(lr / (1 - Math.pow(b1, t))),
      ]
      : [f(momentum), f(lr)];
    for (const [name, p] of this.#params) {
      const g = grads.get(name)!.dataSync() as Float32Array;
      const values = p.dataSync() as Float32Array;
      const out = new Float32Array(values.length);
      const [s0, s1] = this.#hostSlots.get(name)!;
      const decay = this.#decay.get(name) ? wd : 0;
      if (opt === "adamw") {
        adamwPass(
          out,
          values,
          g,
          s0,
          s1,
          decay ? f(1 - lr * decay) : 1,
          k[0],
          k[1],
          k[2],
          k[3],
          k[4],
          k[5],
          k[6],
        );
      } else {
        sgdPass(out, values, g, s0, decay ? f(decay) : 0, k[0], k[1], opt === "sgd");
      }
      tf.tidy(() => p.assign(tf.tensor(out, p.shape, "float32")));
    }
  }

  /** The optimizer state as host tensors (device layouts): `<name>.<slot>` → data, plus the step. */
  async state(): Promise<{ step: number; slots: Map<string, { shape: number[]; data: Float32Array }> }> {
    const slots = new Map<string, { shape: number[]; data: Float32Array }>();
    const slotNames = this.options.opt === "adamw" ? ["exp_avg", "exp_avg_sq"] : ["momentum_buffer"];
    for (const [name, p] of this.#params) {
      const host = this.#hostSlots.get(name);
      const vars = this.#slots.get(name);
      for (const [i, slot] of slotNames.entries()) {
        const data = host ? host[i].slice() : (await vars![i].data()) as Float32Array;
        slots.set(`${name}.${slot}`, { shape: [...p.shape], data });
      }
    }
    return { step: this.step, slots };
  }

  /** Restores a state written by {@linkcode state}; every slot must be present with its shape. */
  load(step: number, slots: ReadonlyMap<string, { shape: number[]; data: Float32Array | Int32Array }>): void {
    const slotNames = this.options.opt === "adamw" ? ["exp_avg", "exp_avg_sq"] : ["momentum_buffer"];
    for (const [name, p] of this.#params) {
      for (const [i, slot] of slotNames.entries()) {
        const key = `${name}.${slot}`;
        const s = slots.get(key);
        if (!s) throw new Error(`optimizer state: tensor "${key}" is missing`);
        if (s.shape.join() !== p.shape.join()) {
          throw new Error(`optimizer state: "${key}" has shape [${s.shape}], expected [${p.shape}]`);
        }
        const host = this.#hostSlots.get(name);
        if (host) host[i].set(s.data);
        else {
          const v = this.#slots.get(name)![i];
          tf.tidy(() => v.assign(tf.tensor(Float32Array.from(s.data), v.shape, "float32")));
        }
      }
    }
    this.step = step;
  }

  /** Frees the optimizer's state variables. */
  dispose(): void {
    for (const vars of this.#slots.values()) for (const v of vars) v.dispose();
    this.#slots.clear();
    this.#hostSlots.clear();
  }
}

// The host passes, as functions of typed arrays only (V8 keeps such loops monomorphic and fast). Every line
// is one tfjs op of the device version, rounded to float32 as its kernel rounds.

/** AdamW on one parameter: `out` ← new values; `m`, `v` updated in place. `dk` = 1 − lr·decay (or 1). */
function adamwPass(
  out: Float32Array,
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  dk: number,
  b1: number,
  nb1: number,
  b2: number,
  nb2: number,
  c2: number,
  eps: number,
  stepSize: number,
): void {
  const f = Math.fround;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i];
    const m1 = f(f(m[i] * b1) + f(gi * nb1));
    const v1 = f(f(v[i] * b2) + f(f(gi * gi) * nb2));
    const denom = f(f(f(Math.sqrt(v1)) / c2) + eps);
    const decayed = dk === 1 ? p[i] : f(p[i] * dk);
    out[i] = f(decayed - f(f(m1 / denom) * stepSize));
    m[i] = m1;
    v[i] = v1;
  }
}

/** SGD (Nesterov when `nesterov`) on one parameter: `out` ← new values; `buf` updated in place. */
function sgdPass(
  out: Float32Array,
  p: Float32Array,
  g0: Float32Array,
  buf: Float32Array,
  wd: number,
  momentum: number,
  lr: number,
  nesterov: boolean,
): void {
  const f = Math.fround;
  for (let i = 0; i < p.length; i++) {
    const g = wd ? f(g0[i] + f(p[i] * wd)) : g0[i];
    const b1 = f(f(buf[i] * momentum) + g);
    const direction = nesterov ? f(g + f(b1 * momentum)) : b1;
    out[i] = f(p[i] - f(direction * lr));
    buf[i] = b1;
  }
}

/** Σ g², accumulated in float32 in index order as tfjs-wasm's `Sum` of `Square` does. */
function sumOfSquares(g: Float32Array): number {
  const f = Math.fround;
  let s = 0;
  for (let i = 0; i < g.length; i++) s = f(s + f(g[i] * g[i]));
  return s;
}

/**
 * timm's `clip_grad` (mode norm): scales every gradient by `max / (‖g‖ + 1e-6)` when the global L2 norm
 * exceeds `max`. Returns the norm before clipping and the clipped gradients (new tensors; the inputs are
 * disposed when replaced). The norm is taken on the host on tfjs-wasm (the same bits; see the module doc).
 */
export async function clipGradNorm(
  grads: Map<string, tf.Tensor>,
  max: number,
  placement: Placement = defaultPlacement(),
): Promise<number> {
  let norm: number;
  if (placement === "host") {
    // tfjs-wasm's Sum per gradient, then AddN over them in order (from 0: adding the first is exact).
    let total = 0;
    for (const g of grads.values()) total = Math.fround(total + sumOfSquares(g.dataSync() as Float32Array));
    norm = Math.fround(Math.sqrt(total));
  } else {
    const normT = tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))));
    norm = (await normT.data())[0];
    normT.dispose();
  }
  if (max > 0 && norm > max) {
    const coef = max / (norm + 1e-6);
    for (const [k, g] of grads) {
      grads.set(k, tf.mul(g, coef));
      g.dispose();
    }
  }
  return norm;
}
