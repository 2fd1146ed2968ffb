/**
 * `.npz` checkpoints in Google's original `vision_transformer` naming (also with the `opt/target/` prefix of
 * its optimizer checkpoints, and big_vision's block numbering), mapped to timm's names and layouts: HWIO
 * patch kernels to OIHW, `[in, out]` dense kernels to `[out, in]`, and the per-head query/key/value kernels
 * fused into timm's `qkv`.
 *
 * @module
 */
import { type StateDict, transpose2d } from "../vit/params.ts";
import { gatherStrided, type NpyArray, parseNpy } from "./npy.ts";
import { ZipArchive } from "./zip.ts";

/** What an `.npz` checkpoint held besides the mapped weights. */
export interface NpzMeta {
  /** The prefix every key carried (`""`, `opt/target/`, `params/`). */
  keyPrefix: string;
  /**
   * `vision_transformer` (MlpBlock_3, LayerNorm_2) or `big_vision` (MlpBlock_0, LayerNorm_1) block naming.
   */
  naming: "vision_transformer" | "big_vision";
  /** Arrays that have no timm counterpart here, left out. */
  unmapped: string[];
  /** Arrays that are not floats, left out. */
  skipped: { name: string; dtype: string; shape: number[] }[];
}

/** Every array of an `.npz` archive by name (the `.npy` suffix removed). Deflated archives are read too. */
export function readNpzArrays(input: Uint8Array | ZipArchive, source = "npz"): Map<string, NpyArray> {
  const zip = input instanceof ZipArchive ? input : ZipArchive.open(input, source);
  const out = new Map<string, NpyArray>();
  for (const entry of zip.entries) {
    if (!entry.name.endsWith(".npy")) continue;
    const name = entry.name.slice(0, -4);
    out.set(name, parseNpy(zip.read(entry), `${source}: array "${name}"`));
  }
  if (out.size === 0) {
    throw new Error(`${source}: a zip archive with no .npy arrays, so not an .npz checkpoint`);
  }
  return out;
}

function count(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Maps Google-named arrays to a timm state dict. Throws, naming the array and the expected shape, when a
 * kernel has the wrong rank or the patch-embedding kernel (which locates the key prefix) is missing.
 */
export function googleToTimm(
  arrays: Map<string, NpyArray>,
  source = "npz",
): { state: StateDict; meta: NpzMeta } {
  const anchor = [...arrays.keys()].find((k) => k === "embedding/kernel" || k.endsWith("/embedding/kernel"));
  if (anchor === undefined) {
    throw new Error(
      `${source}: no "embedding/kernel" array, so not a Google ViT checkpoint (arrays: ` +
        `${[...arrays.keys()].slice(0, 8).join(", ")}${arrays.size > 8 ? ", …" : ""})`,
    );
  }
  const prefix = anchor.slice(0, -"embedding/kernel".length);
  const used = new Set<string>();
  const state: StateDict = new Map();
  const skipped: NpzMeta["skipped"] = [];
  const has = (key: string) => arrays.has(prefix + key);
  const get = (key: string, rank?: number): { shape: number[]; data: Float32Array } => {
    const a = arrays.get(prefix + key);
    if (!a) throw new Error(`${source}: missing array "${prefix + key}"`);
    used.add(prefix + key);
    if (!a.data) throw new Error(`${source}: array "${prefix + key}" has dtype ${a.descr}, expected a float`);
    if (rank !== undefined && a.shape.length !== rank) {
      throw new Error(`${source}: array "${prefix + key}" has shape [${a.shape}], expected rank ${rank}`);
    }
    return { shape: a.shape, data: a.data };
  };
  const copy = (key: string, name: string) => {
    if (has(key)) state.set(name, get(key));
  };
  /** Dense kernel [in, out] → timm Linear weight [out, in]. */
  const dense = (key: string, name: string) => {
    if (!has(`${key}/kernel`)) return;
    const k = get(`${key}/kernel`, 2);
    state.set(`${name}.weight`, {
      shape: [k.shape[1], k.shape[0]],
      data: transpose2d(k.data, k.shape[0], k.shape[1]),
    });
    copy(`${key}/bias`, `${name}.bias`);
  };

  // Patch embedding: HWIO [kh, kw, C, D] → OIHW [D, C, kh, kw].
  const patch = get("embedding/kernel", 4);
  const [kh, kw, C, D] = patch.shape;
  state.set("patch_embed.proj.weight", {
    shape: [D, C, kh, kw],
    data: gatherStrided(patch.data, new Float32Array(patch.data.length), [D, C, kh, kw], [
      1,
      D,
      kw * C * D,
      C * D,
    ], 0),
  });
  copy("embedding/bias", "patch_embed.proj.bias");
  copy("cls", "cls_token");
  copy(has("pos_embedding") ? "pos_embedding" : "Transformer/posembed_input/pos_embedding", "pos_embed");

  const bigVision = !has("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel") &&
    has("Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel");
  const [mha, mlp, ln2] = bigVision ? [0, 0, 1] : [1, 3, 2];
  for (let i = 0; has(`Transformer/encoderblock_${i}/LayerNorm_0/scale`); i++) {
    const src = `Transformer/encoderblock_${i}`, dst = `blocks.${i}`;
    copy(`${src}/LayerNorm_0/scale`, `${dst}.norm1.weight`);
    copy(`${src}/LayerNorm_0/bias`, `${dst}.norm1.bias`);
    copy(`${src}/LayerNorm_${ln2}/scale`, `${dst}.norm2.weight`);
    copy(`${src}/LayerNorm_${ln2}/bias`, `${dst}.norm2.bias`);
    const att = `${src}/MultiHeadDotProductAttention_${mha}`;
    // query/key/value kernels [D, heads, head_dim] are [in, out] once the heads are flattened; timm's
    // fused qkv weight is [q; k; v] rows of [out, in].
    const parts = ["query", "key", "value"].map((n) => get(`${att}/${n}/kernel`, 3));
    const dim = parts[0].shape[0], inner = parts[0].shape[1] * parts[0].shape[2];
    const qkv = new Float32Array(3 * inner * dim);
    parts.forEach((p, j) => {
      if (p.shape[0] !== dim || p.shape[1] * p.shape[2] !== inner) {
        throw new Error(
          `${source}: ${att} query/key/value kernels differ in shape ([${parts.map((q) => q.shape)}])`,
        );
      }
      qkv.set(transpose2d(p.data, dim, inner), j * inner * dim);
    });
    state.set(`${dst}.attn.qkv.weight`, { shape: [3 * inner, dim], data: qkv });
    if (has(`${att}/query/bias`)) {
      const biases = ["query", "key", "value"].map((n) => get(`${att}/${n}/bias`).data);
      const b = new Float32Array(biases.reduce((a, x) => a + x.length, 0));
      let at = 0;
      for (const x of biases) {
        b.set(x, at);
        at += x.length;
      }
      state.set(`${dst}.attn.qkv.bias`, { shape: [b.length], data: b });
    }
    // out kernel [heads, head_dim, D] is [in, out] with the heads flattened.
    const out = get(`${att}/out/kernel`, 3);
    const outIn = out.shape[0] * out.shape[1], outDim = out.shape[2];
    state.set(`${dst}.attn.proj.weight`, {
      shape: [outDim, outIn],
      data: transpose2d(out.data, outIn, outDim),
    });
    copy(`${att}/out/bias`, `${dst}.attn.proj.bias`);
    dense(`${src}/MlpBlock_${mlp}/Dense_0`, `${dst}.mlp.fc1`);
    dense(`${src}/MlpBlock_${mlp}/Dense_1`, `${dst}.mlp.fc2`);
  }
  copy("Transformer/encoder_norm/scale", "norm.weight");
  copy("Transformer/encoder_norm/bias", "norm.bias");
  dense("pre_logits", "pre_logits.fc");
  dense("head", "head");

  const unmapped: string[] = [];
  for (const [key, a] of arrays) {
    if (used.has(key)) continue;
    if (!a.data) skipped.push({ name: key, dtype: a.descr, shape: a.shape });
    else unmapped.push(key);
  }
  for (const [name, t] of state) {
    if (t.data.length !== count(t.shape)) {
      throw new Error(`${source}: "${name}" holds ${t.data.length} values for shape [${t.shape}]`);
    }
  }
  return {
    state,
    meta: { keyPrefix: prefix, naming: bigVision ? "big_vision" : "vision_transformer", unmapped, skipped },
  };
}

/** Reads a Google-named `.npz` checkpoint into a timm state dict. */
export function parseNpz(
  input: Uint8Array | ZipArchive,
  source = "npz",
): { state: StateDict; meta: NpzMeta } {
  return googleToTimm(readNpzArrays(input, source), source);
}
