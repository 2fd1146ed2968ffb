/**
 * The ViT forward pass written as an ONNX graph, from the config and a state dict in timm's names and
 * layouts: what the onnx engine hands to ONNX Runtime. Weights become initializers under their timm names
 * and keep timm's layouts (linear layers are `Gemm` with `transB`, the patch embedding a strided `Conv`), so
 * building the model copies each weight once, into the model bytes. The batch dimension is symbolic.
 *
 * The graph uses the ops ONNX Runtime fuses on CPU: `LayerNormalization` (opset 17), GELU as timm's exact
 * erf form (fused into one `Gelu` kernel), `q·scale` before `q·kᵀ` (fused into the matmul).
 *
 * @module
 */
import { type AttrValue, DataType, GraphBuilder } from "../onnx/graph.ts";
import type { ResolvedViTConfig } from "./config.ts";
import { checkStateDict, MODULES, paramSpecs, type StateDict } from "./params.ts";
import { quantizeLinear } from "./int8.ts";

/** How the graph writes GELU: timm's erf formula in plain ops (default), or ONNX Runtime's contrib `Gelu`. */
export type GeluForm = "erf" | "contrib";

/** How the blocks' linear layers keep their weights: float32 (default) or int8 (dynamic quantisation). */
export type OnnxWeights = "float32" | "int8";

/** Options of {@linkcode vitOnnxModel}. */
export interface VitOnnxOptions {
  gelu?: GeluForm;
  /**
   * Write only the network up to this split point (as `VisionTransformer.prefix`): token rows `[b·T, D]`
   * after that many blocks, or the pooled features `[b, D]` for depth + 1. Output `prefix`; the frozen
   * prefix of a fine-tuning run (lib/train/frozen_cache.ts) runs on it.
   */
  split?: number;
  /**
   * `"int8"`: the blocks' qkv, proj, fc1 and fc2 weights are stored as int8 with one symmetric scale per
   * output channel, and their inputs quantised per call as ONNX Runtime's dynamic quantisation does
   * (`DynamicQuantizeLinear` → `MatMulInteger` → scale, which it fuses into `DynamicQuantizeMatMul`). The
   * patch embedding and the head stay float32. Smaller and faster, not exact: see docs/benchmarks.md.
   */
  weights?: OnnxWeights;
}

/** The sources that decide what {@linkcode vitOnnxModel} writes, relative to this module. */
const GRAPH_SOURCES = [
  "./onnx_graph.ts",
  "./int8.ts",
  "./params.ts",
  "./config.ts",
  "../onnx/graph.ts",
  "../onnx/protobuf.ts",
];

/**
 * What identifies the graph writer itself, for the engine cache's key (a saved, optimised graph is valid
 * only for the code that wrote it): the sources that write the graph, read next to this module, as one
 * string; undefined where they cannot be read (then nothing is cached). Any edit to them, comments
 * included, invalidates cached engines, which is safe, merely slower once.
 */
export async function onnxGraphSources(): Promise<string | undefined> {
  try {
    const texts = await Promise.all(
      GRAPH_SOURCES.map((s) => Deno.readTextFile(new URL(s, import.meta.url))),
    );
    return texts.join("\0");
  } catch {
    return undefined;
  }
}

/** The graph's input and output names. */
export const ONNX_INPUT = "pixel_values", ONNX_OUTPUT = "logits", ONNX_PREFIX_OUTPUT = "prefix";

/** The ONNX `ModelProto` of a ViT (opset 17, float32, input `pixel_values` [batch, C, H, W] → `logits`). */
export function vitOnnxModel(
  c: ResolvedViTConfig,
  state: StateDict,
  options: VitOnnxOptions = {},
): Uint8Array {
  checkStateDict(paramSpecs(c), state);
  const g = new GraphBuilder("vit");
  const D = c.embed_dim, T = c.tokens, H = c.num_heads;
  const w = (name: string) => {
    const t = state.get(name)!;
    return g.initializer(name, t.shape, t.data);
  };
  const linear = (x: string, prefix: string, bias = true) =>
    g.node("Gemm", bias ? [x, w(`${prefix}.weight`), w(`${prefix}.bias`)] : [x, w(`${prefix}.weight`)], {
      transB: 1,
    });
  // The blocks' linear layers, int8 when asked: y = (x_q − zp)·W_q · (x_scale · w_scale) + b.
  const blockLinear = (x: string, prefix: string, bias = true) => {
    if (options.weights !== "int8") return linear(x, prefix, bias);
    const t = state.get(`${prefix}.weight`)!;
    const [out, inDim] = t.shape;
    // int8 shards (convert --dtype int8) arrive quantised; float weights are quantised here, the same way.
    const { q, scale } = t.int8 ?? quantizeLinear(t.data, out, inDim);
    const wq = g.initializer(`${prefix}.weight_int8`, [inDim, out], q, DataType.INT8);
    const ws = g.initializer(`${prefix}.weight_scale`, [out], scale);
    const [xq, xs, xzp] = g.nodeN("DynamicQuantizeLinear", [x], {}, 3);
    const acc = g.node("Cast", [g.node("MatMulInteger", [xq, wq, xzp])], { to: DataType.FLOAT });
    const y = g.node("Mul", [acc, g.node("Mul", [xs, ws])]);
    return bias ? g.node("Add", [y, w(`${prefix}.bias`)]) : y;
  };
  const layerNorm = (x: string, prefix: string) =>
    g.node("LayerNormalization", [x, w(`${prefix}.weight`), w(`${prefix}.bias`)], {
      axis: -1,
      epsilon: { f: 1e-6 },
    } as Record<string, AttrValue>);
  const gelu = (x: string) => {
    if (options.gelu === "contrib") return g.node("Gelu", [x], {}, "com.microsoft");
    // timm / PyTorch: x · 0.5 · (1 + erf(x / √2)), in the order torch.onnx writes it.
    const e = g.node("Erf", [g.node("Div", [x, g.float(Math.SQRT2)])]);
    return g.node("Mul", [g.node("Mul", [x, g.node("Add", [e, g.float(1)])]), g.float(0.5)]);
  };

  const m = MODULES;
  const x = g.input(ONNX_INPUT, DataType.FLOAT, ["batch", c.in_chans, c.img_size, c.img_size]);
  // Patch embedding: a stride-p convolution, then [b, D, g, g] → [b, P, D].
  const conv = g.node("Conv", [x, w(`${m.patchEmbed}.weight`), w(`${m.patchEmbed}.bias`)], {
    kernel_shape: [c.patch_size, c.patch_size],
    strides: [c.patch_size, c.patch_size],
  });
  const patches = g.node("Transpose", [g.node("Reshape", [conv, g.int64([0, D, -1])])], { perm: [0, 2, 1] });
  // The class token broadcast to [b, 1, D].
  const batch = g.node("Shape", [x], { start: 0, end: 1 });
  const clsShape = g.node("Concat", [batch, g.int64([1, 1])], { axis: 0 });
  const cls = g.node("Expand", [w(m.clsToken), clsShape]);
  const tokens = g.node("Add", [g.node("Concat", [cls, patches], { axis: 1 }), w(m.posEmbed)]);
  // Blocks work on token rows [b·T, D], so every linear layer is one 2-D Gemm.
  let h = g.node("Reshape", [tokens, g.int64([-1, D])]);
  const headDim = c.head_dim;
  const scale = g.float(1 / Math.sqrt(headDim));
  const split = options.split ?? c.depth + 2;
  for (let i = 0; i < Math.min(c.depth, split); i++) {
    const b = m.block(i);
    const qkv = blockLinear(layerNorm(h, b.norm1), b.qkv, c.qkv_bias);
    // [b·T, 3D] → [b, T, 3H, hd] → [b, 3H, T, hd] → q, k, v [b, H, T, hd]
    const heads = g.node("Transpose", [g.node("Reshape", [qkv, g.int64([-1, T, 3 * H, headDim])])], {
      perm: [0, 2, 1, 3],
    });
    const [q, k, v] = g.nodeN("Split", [heads, g.int64([H, H, H])], { axis: 1 }, 3);
    const kT = g.node("Transpose", [k], { perm: [0, 1, 3, 2] });
    const scores = g.node("MatMul", [g.node("Mul", [q, scale]), kT]);
    const context = g.node("MatMul", [g.node("Softmax", [scores], { axis: -1 }), v]);
    const rows = g.node("Reshape", [
      g.node("Transpose", [context], { perm: [0, 2, 1, 3] }),
      g.int64([-1, D]),
    ]);
    h = g.node("Add", [h, blockLinear(rows, b.proj)]);
    const hidden = gelu(blockLinear(layerNorm(h, b.norm2), b.fc1));
    h = g.node("Add", [h, blockLinear(hidden, b.fc2)]);
  }
  if (split <= c.depth) {
    // h is the last node written: its output is the prefix.
    g.output(g.renameLast(ONNX_PREFIX_OUTPUT), DataType.FLOAT, ["rows", D]);
  } else {
    // Only the class token feeds the head, and LayerNorm is per token: normalising just that row is exact.
    const clsRow = g.node("Gather", [g.node("Reshape", [h, g.int64([-1, T, D])]), g.int64([0], [])], {
      axis: 1,
    });
    const features = layerNorm(clsRow, m.norm);
    if (split === c.depth + 1) g.output(g.renameLast(ONNX_PREFIX_OUTPUT), DataType.FLOAT, ["batch", D]);
    else {
      linear(features, m.head);
      g.output(g.renameLast(ONNX_OUTPUT), DataType.FLOAT, ["batch", c.num_classes]);
    }
  }
  const opsets = [{ domain: "", version: 17 }];
  if (options.gelu === "contrib") opsets.push({ domain: "com.microsoft", version: 1 });
  return g.encode(opsets, 8);
}
