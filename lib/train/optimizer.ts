/**
 * SGD (timm's `sgd` = Nesterov momentum, `momentum` = plain momentum) and AdamW, with PyTorch's update
 * rules, running on the device: every update is one `tf.tidy` that assigns new values to the model's
 * variables and the optimizer's state variables, so nothing accumulates between steps. Parameters without
 * weight decay follow timm (`param_groups_weight_decay`): 1-D tensors (biases, norms) and
 * `pos_embed`/`cls_token`.
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

/** One optimizer over a model's trainable variables, keyed by timm name. */
export class Optimizer {
  readonly options: Required<OptimizerOptions>;
  /** Updates done so far (AdamW's bias correction uses it). */
  step = 0;
  readonly #params: Map<string, tf.Variable>;
  readonly #decay: Map<string, boolean>;
  readonly #slots = new Map<string, tf.Variable[]>();

  /**
   * @param params trainable variables by timm name (device layouts)
   * @param timmShapes the timm shape of each, to decide weight decay
   */
  constructor(
    params: ReadonlyMap<string, tf.Variable>,
    timmShapes: ReadonlyMap<string, readonly number[]>,
    options: OptimizerOptions,
  ) {
    this.options = { betas: [0.9, 0.999], eps: 1e-8, ...options };
    if (!["sgd", "momentum", "adamw"].includes(options.opt)) {
      throw new Error(`opt: unknown optimizer "${options.opt}", expected sgd, momentum or adamw`);
    }
    this.#params = new Map(params);
    this.#decay = new Map([...params.keys()].map((k) => [k, decays(k, timmShapes.get(k) ?? [])]));
    const count = options.opt === "adamw" ? 2 : 1;
    for (const [name, v] of this.#params) {
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
    this.step++;
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

  /** The optimizer state as host tensors (device layouts): `<name>.<slot>` → data, plus the step. */
  async state(): Promise<{ step: number; slots: Map<string, { shape: number[]; data: Float32Array }> }> {
    const slots = new Map<string, { shape: number[]; data: Float32Array }>();
    const slotNames = this.options.opt === "adamw" ? ["exp_avg", "exp_avg_sq"] : ["momentum_buffer"];
    for (const [name, vars] of this.#slots) {
      for (const [i, v] of vars.entries()) {
        slots.set(`${name}.${slotNames[i]}`, { shape: [...v.shape], data: (await v.data()) as Float32Array });
      }
    }
    return { step: this.step, slots };
  }

  /** Restores a state written by {@linkcode state}; every slot must be present with its shape. */
  load(step: number, slots: ReadonlyMap<string, { shape: number[]; data: Float32Array | Int32Array }>): void {
    const slotNames = this.options.opt === "adamw" ? ["exp_avg", "exp_avg_sq"] : ["momentum_buffer"];
    for (const [name, vars] of this.#slots) {
      for (const [i, v] of vars.entries()) {
        const key = `${name}.${slotNames[i]}`;
        const s = slots.get(key);
        if (!s) throw new Error(`optimizer state: tensor "${key}" is missing`);
        if (s.shape.join() !== v.shape.join()) {
          throw new Error(`optimizer state: "${key}" has shape [${s.shape}], expected [${v.shape}]`);
        }
        tf.tidy(() => v.assign(tf.tensor(Float32Array.from(s.data), v.shape, "float32")));
      }
    }
    this.step = step;
  }

  /** Frees the optimizer's state variables. */
  dispose(): void {
    for (const vars of this.#slots.values()) for (const v of vars) v.dispose();
    this.#slots.clear();
  }
}

/**
 * timm's `clip_grad` (mode norm): scales every gradient by `max / (‖g‖ + 1e-6)` when the global L2 norm
 * exceeds `max`. Returns the norm before clipping and the clipped gradients (new tensors; the inputs are
 * disposed when replaced).
 */
export async function clipGradNorm(
  grads: Map<string, tf.Tensor>,
  max: number,
): Promise<number> {
  const normT = tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))));
  const norm = (await normT.data())[0];
  normT.dispose();
  if (max > 0 && norm > max) {
    const coef = max / (norm + 1e-6);
    for (const [k, g] of grads) {
      grads.set(k, tf.mul(g, coef));
      g.dispose();
    }
  }
  return norm;
}
