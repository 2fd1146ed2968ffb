/**
 * The ViT config of a state dict: what a known architecture name fixes, and everything else read off tensor
 * shapes. `num_heads` is the one field no shape reveals.
 *
 * @module
 */
import { archConfig } from "../vit/archs.ts";
import type { ViTConfig } from "../vit/config.ts";
import type { StateDict } from "../vit/params.ts";

function shapeOf(state: StateDict, name: string, rank: number, source: string): number[] {
  const t = state.get(name);
  if (!t) throw new Error(`${source}: tensor "${name}" is missing, so the ViT config cannot be inferred`);
  if (t.shape.length !== rank) {
    throw new Error(`${source}: tensor "${name}" has shape [${t.shape}], expected rank ${rank}`);
  }
  return t.shape;
}

/**
 * Infers the config from shapes. `arch` (a timm name) supplies `num_heads` and is checked against the shapes;
 * `numHeads` may be given instead. Throws naming the tensor or field when that is impossible.
 */
export function inferConfig(
  state: StateDict,
  options: { arch?: string; numHeads?: number; source?: string } = {},
): ViTConfig {
  const source = options.source ?? "checkpoint";
  const [D, C, p, p2] = shapeOf(state, "patch_embed.proj.weight", 4, source);
  if (p !== p2) throw new Error(`${source}: "patch_embed.proj.weight" has a non-square kernel [${p}, ${p2}]`);
  const [, T] = shapeOf(state, "pos_embed", 3, source);
  const grid = Math.round(Math.sqrt(T - 1));
  if (grid * grid !== T - 1) {
    throw new Error(`${source}: "pos_embed" has ${T} tokens; expected a square grid plus one class token`);
  }
  let depth = 0;
  while (state.has(`blocks.${depth}.norm1.weight`)) depth++;
  if (depth === 0) throw new Error(`${source}: no "blocks.0.norm1.weight": not a timm ViT state dict`);
  const [hidden] = shapeOf(state, "blocks.0.mlp.fc1.weight", 2, source);
  const [numClasses] = shapeOf(state, "head.weight", 2, source);
  const arch = options.arch ? archConfig(options.arch) : undefined;
  if (options.arch && !arch) throw new Error(`unknown architecture "${options.arch}"`);
  const numHeads = options.numHeads ?? arch?.num_heads;
  if (numHeads === undefined) {
    throw new Error(
      `${source}: num_heads cannot be read off tensor shapes; give the timm architecture name (--arch) ` +
        `or --num-heads`,
    );
  }
  const config: ViTConfig = {
    img_size: grid * p,
    patch_size: p,
    in_chans: C,
    embed_dim: D,
    depth,
    num_heads: numHeads,
    mlp_ratio: hidden / D,
    qkv_bias: state.has("blocks.0.attn.qkv.bias"),
    num_classes: numClasses,
  };
  if (arch) {
    for (const field of ["patch_size", "embed_dim", "depth"] as const) {
      if (arch[field] !== config[field]) {
        throw new Error(
          `${source}: the tensors say ${field} = ${config[field]}, but ${options.arch} has ${arch[field]}`,
        );
      }
    }
  }
  return config;
}

/** A timm architecture name found in a file name or checkpoint metadata, if any. */
export function archFromName(name: string | undefined): string | undefined {
  if (!name) return undefined;
  const m = /vit_(tiny|small|base|large)_patch(16|32)_(224|384)/.exec(name);
  return m ? m[0] : undefined;
}
