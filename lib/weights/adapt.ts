/**
 * Adapting pretrained weights for fine-tuning, in one place (as timm's `checkpoint_filter_fn` and
 * `reset_classifier`): the patch embedding resampled to the target patch size, `pos_embed` resampled to the
 * target grid, a zero-initialised classifier head when the class count differs (the ViT paper's
 * fine-tuning recipe; also deterministic), and blocks added as identities when the target is deeper (growing
 * a trained network without changing what it computes).
 * `deno task convert`, `deno task train` and the service's fine-tuning sessions all go through it.
 *
 * @module
 */
import type { StateDict } from "../vit/params.ts";
import type { SourceInfo } from "./manifest.ts";
import { resamplePatchEmbed, resamplePosEmbed } from "./resample.ts";

/** The target of an adaptation: the fine-tuned model's geometry and class count. */
export interface AdaptTarget {
  img_size: number;
  patch_size: number;
  embed_dim: number;
  num_classes: number;
  /** Blocks of the target; a checkpoint with fewer gets the rest as identity blocks (see `fresh`). */
  depth?: number;
}

/** Options of {@linkcode adaptForFineTuning}. */
export interface AdaptOptions {
  /**
   * Freshly initialised weights of the target (`initStateDict`), where added blocks take their tensors from;
   * without it a deeper target is an error.
   */
  fresh?: StateDict;
}

/** What {@linkcode adaptForFineTuning} changed, in the manifest's `source` terms. */
export type Adaptation = Pick<
  SourceInfo,
  "patch_embed_resampled" | "pos_embed_resampled" | "head_reinitialized" | "blocks_added"
>;

/** Blocks in `state`: one more than the highest `blocks.<i>.` index. */
export function stateDepth(state: StateDict): number {
  let depth = 0;
  for (const name of state.keys()) {
    const m = /^blocks\.(\d+)\./.exec(name);
    if (m) depth = Math.max(depth, Number(m[1]) + 1);
  }
  return depth;
}

/**
 * The output projections of an added block: zero, so that the block adds nothing to the residual stream and
 * the grown network computes what the checkpoint did, while its other tensors (fresh, random) give them
 * gradients from the first step.
 */
const IDENTITY_ZEROED = /^blocks\.\d+\.(attn\.proj|mlp\.fc2)\.(weight|bias)$/;

/**
 * A copy of `state` fitted to `target` (the input is not modified): the patch embedding's kernels resampled
 * when their size is not `patch_size` (recorded as patch sizes, from → to), `pos_embed` resampled when its
 * grid is not `img_size / patch_size` (recorded as image sizes at the target patch size, from → to), the head
 * replaced by zeros when its class count differs or it is missing, and, when `target.depth` is above the
 * checkpoint's, blocks appended after the checkpoint's that are identities (their output projections zero,
 * the rest from `options.fresh`). Throws when `img_size` is not a multiple of `patch_size`, or the checkpoint
 * is deeper than the target.
 */
export function adaptForFineTuning(
  state: StateDict,
  target: AdaptTarget,
  options: AdaptOptions = {},
): { state: StateDict; changes: Adaptation } {
  const out: StateDict = new Map(state);
  const changes: Adaptation = {};
  const have = stateDepth(state);
  if (target.depth !== undefined && have !== target.depth) {
    if (have > target.depth) {
      throw new Error(
        `the checkpoint has ${have} blocks, the model ${target.depth}: blocks are never dropped`,
      );
    }
    if (!options.fresh) {
      throw new Error(
        `the checkpoint has ${have} blocks, the model ${target.depth}: no weights for the others`,
      );
    }
    for (const [name, t] of options.fresh) {
      const m = /^blocks\.(\d+)\./.exec(name);
      if (!m || Number(m[1]) < have) continue;
      out.set(
        name,
        IDENTITY_ZEROED.test(name) ? { shape: [...t.shape], data: new Float32Array(t.data.length) } : t,
      );
    }
    changes.blocks_added = { from: have, to: target.depth, init: "identity" };
  }
  const grid = target.img_size / target.patch_size;
  if (!Number.isInteger(grid)) {
    throw new Error(`img_size ${target.img_size} is not a multiple of patch_size ${target.patch_size}`);
  }
  const proj = state.get("patch_embed.proj.weight");
  if (proj && proj.shape[2] !== target.patch_size) {
    out.set("patch_embed.proj.weight", resamplePatchEmbed(proj, target.patch_size));
    changes.patch_embed_resampled = { from: proj.shape[2], to: target.patch_size };
  }
  const pos = state.get("pos_embed");
  if (pos) {
    const from = Math.round(Math.sqrt(pos.shape[1] - 1));
    if (from !== grid) {
      out.set("pos_embed", resamplePosEmbed(pos, grid));
      changes.pos_embed_resampled = { from: from * target.patch_size, to: target.img_size };
    }
  }
  const k = target.num_classes, dim = target.embed_dim;
  if (!Number.isInteger(k) || k < 1) throw new Error(`num_classes must be a positive integer, got ${k}`);
  const head = state.get("head.weight");
  if (!head || head.shape[0] !== k) {
    out.set("head.weight", { shape: [k, dim], data: new Float32Array(k * dim) });
    out.set("head.bias", { shape: [k], data: new Float32Array(k) });
    changes.head_reinitialized = { num_classes: k, init: "zeros" };
  }
  return { state: out, changes };
}
