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
import type { ResolvedViTConfig } from "./config.ts";

/** A tensor on the host: row-major float32 data with its shape. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
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

/** Every parameter of the model, in timm's state-dict order. */
export function paramSpecs(c: ResolvedViTConfig): ParamSpec[] {
  const D = c.embed_dim, H = c.mlp_hidden;
  const specs: ParamSpec[] = [
    { name: "cls_token", shape: [1, 1, D], layout: "same" },
    { name: "pos_embed", shape: [1, c.tokens, D], layout: "same" },
    { name: "patch_embed.proj.weight", shape: [D, c.in_chans, c.patch_size, c.patch_size], layout: "conv" },
    { name: "patch_embed.proj.bias", shape: [D], layout: "same" },
  ];
  for (let i = 0; i < c.depth; i++) {
    const p = `blocks.${i}`;
    specs.push(
      { name: `${p}.norm1.weight`, shape: [D], layout: "same" },
      { name: `${p}.norm1.bias`, shape: [D], layout: "same" },
      { name: `${p}.attn.qkv.weight`, shape: [3 * D, D], layout: "linear" },
    );
    if (c.qkv_bias) specs.push({ name: `${p}.attn.qkv.bias`, shape: [3 * D], layout: "same" });
    specs.push(
      { name: `${p}.attn.proj.weight`, shape: [D, D], layout: "linear" },
      { name: `${p}.attn.proj.bias`, shape: [D], layout: "same" },
      { name: `${p}.norm2.weight`, shape: [D], layout: "same" },
      { name: `${p}.norm2.bias`, shape: [D], layout: "same" },
      { name: `${p}.mlp.fc1.weight`, shape: [H, D], layout: "linear" },
      { name: `${p}.mlp.fc1.bias`, shape: [H], layout: "same" },
      { name: `${p}.mlp.fc2.weight`, shape: [D, H], layout: "linear" },
      { name: `${p}.mlp.fc2.bias`, shape: [D], layout: "same" },
    );
  }
  specs.push(
    { name: "norm.weight", shape: [D], layout: "same" },
    { name: "norm.bias", shape: [D], layout: "same" },
    { name: "head.weight", shape: [c.num_classes, D], layout: "linear" },
    { name: "head.bias", shape: [c.num_classes], layout: "same" },
  );
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
 * error that names the first few. Shapes that differ only by size-1 dimensions are accepted (timm's `[D]` vs `[1, 1, D]` variants
 * do not occur here, but e.g. a `[1, D]` bias would be a clear error).
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
    if (t.data.length !== n) {
      problems.push(`tensor "${spec.name}" holds ${t.data.length} values, expected ${n}`);
    }
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
