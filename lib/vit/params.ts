/**
 * The one place that knows timm's parameter names and layouts, and how each maps to the layout the model
 * keeps on the device.
 *
 * On the device every linear weight is stored transposed, `[in, out]`, so that a layer is a plain
 * `matMul(x, w)` with no transpose in the hot path, and the patch-embedding convolution (stride = kernel) is
 * stored as a `[in_chans * patch * patch, embed_dim]` matrix applied to flattened patches.
 *
 * @module
 */
import type { Int8Linear } from "./int8.ts";
import type { ResolvedViTConfig } from "./config.ts";

/** A tensor on the host: row-major float32 data with its shape. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
  /** A linear weight stored as int8 (`int8.ts`): what the onnx engine's int8 graph takes, unwidened. */
  int8?: Int8Linear;
}

/** A state dict in timm's names and layouts. */
export type StateDict = Map<string, HostTensor>;

/** How a timm tensor is laid out on the device. */
export type Layout = "same" | "linear" | "conv";

/** One parameter: its timm name and shape, and its device layout. */
export interface ParamSpec {
  name: string;
  shape: number[];
  layout: Layout;
}

/**
 * timm's module names, spelled once: the model (`vision_transformer.ts`) reads its parameters by these and
 * {@linkcode paramSpecs} names the state dict by them (`<module>.weight`, `<module>.bias`).
 */
export const MODULES = {
  clsToken: "cls_token",
  posEmbed: "pos_embed",
  patchEmbed: "patch_embed.proj",
  norm: "norm",
  head: "head",
  /** The modules of block `i`. */
  block: (i: number) => ({
    norm1: `blocks.${i}.norm1`,
    qkv: `blocks.${i}.attn.qkv`,
    proj: `blocks.${i}.attn.proj`,
    norm2: `blocks.${i}.norm2`,
    fc1: `blocks.${i}.mlp.fc1`,
    fc2: `blocks.${i}.mlp.fc2`,
  }),
} as const;

/** Every parameter of the model, in timm's state-dict order. */
export function paramSpecs(c: ResolvedViTConfig): ParamSpec[] {
  const D = c.embed_dim, H = c.mlp_hidden, m = MODULES;
  const specs: ParamSpec[] = [];
  const add = (name: string, shape: number[], layout: Layout = "same") => specs.push({ name, shape, layout });
  const linear = (module: string, out: number, inp: number, bias = true) => {
    add(`${module}.weight`, [out, inp], "linear");
    if (bias) add(`${module}.bias`, [out]);
  };
  const norm = (module: string) => {
    add(`${module}.weight`, [D]);
    add(`${module}.bias`, [D]);
  };
  add(m.clsToken, [1, 1, D]);
  add(m.posEmbed, [1, c.tokens, D]);
  add(`${m.patchEmbed}.weight`, [D, c.in_chans, c.patch_size, c.patch_size], "conv");
  add(`${m.patchEmbed}.bias`, [D]);
  for (let i = 0; i < c.depth; i++) {
    const b = m.block(i);
    norm(b.norm1);
    linear(b.qkv, 3 * D, D, c.qkv_bias);
    linear(b.proj, D, D);
    norm(b.norm2);
    linear(b.fc1, H, D);
    linear(b.fc2, D, H);
  }
  norm(m.norm);
  linear(m.head, c.num_classes, D);
  return specs;
}

/** The device shape of a parameter. */
export function deviceShape(spec: ParamSpec): number[] {
  const s = spec.shape;
  switch (spec.layout) {
    case "same":
      return s;
    case "linear":
      return [s[1], s[0]];
    case "conv":
      return [s[1] * s[2] * s[3], s[0]];
  }
}

/** Transposes a row-major `[rows, cols]` matrix. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[base + c];
  }
  return out;
}

/** timm layout → device layout (a new array; the input is not modified). */
export function toDeviceLayout(spec: ParamSpec, data: Float32Array): Float32Array {
  const s = spec.shape;
  switch (spec.layout) {
    case "same":
      return data;
    case "linear":
      return transpose2d(data, s[0], s[1]);
    case "conv":
      // [D, C, p, p] is already [D, C*p*p] row-major; the flattened patch order (c, kh, kw) matches it.
      return transpose2d(data, s[0], s[1] * s[2] * s[3]);
  }
}

/** Device layout → timm layout. */
export function toTimmLayout(spec: ParamSpec, data: Float32Array): Float32Array {
  const d = deviceShape(spec);
  return spec.layout === "same" ? data : transpose2d(data, d[0], d[1]);
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

const SHOWN_PROBLEMS = 6;

/**
 * Checks a state dict against the specs: the missing, unexpected or mis-shaped tensors are counted in one
 * error that names the first few. Shapes that differ only by size-1 dimensions are accepted (timm's `[D]` vs
 * `[1, 1, D]` variants do not occur here, but e.g. a `[1, D]` bias would be a clear error).
 */
export function checkStateDict(specs: ParamSpec[], state: StateDict, source = "state dict"): void {
  const problems: string[] = [];
  const known = new Set(specs.map((s) => s.name));
  for (const spec of specs) {
    const t = state.get(spec.name);
    if (!t) {
      problems.push(`missing tensor "${spec.name}" (expected shape [${spec.shape}])`);
      continue;
    }
    if (!sameShape(t.shape, spec.shape)) {
      problems.push(`tensor "${spec.name}" has shape [${t.shape}], expected [${spec.shape}]`);
    }
    const n = spec.shape.reduce((a, b) => a * b, 1);
    // int8 tensors are counted without widening them.
    const held = t.int8 ? t.int8.q.length : t.data.length;
    if (held !== n) problems.push(`tensor "${spec.name}" holds ${held} values, expected ${n}`);
  }
  for (const name of state.keys()) {
    if (!known.has(name)) problems.push(`unexpected tensor "${name}" [${state.get(name)!.shape}]`);
  }
  if (problems.length) {
    // A whole other architecture mismatches hundreds of tensors: the first few say what is wrong.
    const shown = problems.slice(0, SHOWN_PROBLEMS);
    const more = problems.length - shown.length;
    throw new Error(
      `${source} does not match the ViT config (${problems.length} problem${
        problems.length > 1 ? "s" : ""
      }):` +
        `\n  ${shown.join("\n  ")}${more ? `\n  … and ${more} more` : ""}`,
    );
  }
}
