import * as tf from "@tensorflow/tfjs";
import { Attention } from "./attention.ts";
import { Block, type DropPathScales } from "./block.ts";
import type { ResolvedViTConfig } from "./config.ts";
import { LayerNorm } from "./layer_norm.ts";
import { Linear } from "./linear.ts";
import { Mlp } from "./mlp.ts";
import { MODULES } from "./params.ts";
import { PatchEmbed } from "./patch_embed.ts";

/** Looks up a parameter variable by its timm name. */
export type ParamLookup = (timmName: string) => tf.Variable;

/**
 * timm's `VisionTransformer` forward pass, composed of the same named modules (patch_embed, cls_token,
 * pos_embed, blocks, norm, head), reading its parameters through `param`.
 */
export class VisionTransformer {
  readonly patchEmbed: PatchEmbed;
  readonly clsToken: tf.Variable;
  readonly posEmbed: tf.Variable;
  readonly blocks: Block[];
  readonly norm: LayerNorm;
  readonly head: Linear;

  constructor(readonly config: ResolvedViTConfig, param: ParamLookup) {
    const linear = (prefix: string, bias = true) =>
      new Linear(param(`${prefix}.weight`), bias ? param(`${prefix}.bias`) : undefined);
    const norm = (prefix: string) => new LayerNorm(param(`${prefix}.weight`), param(`${prefix}.bias`));
    const c = config, m = MODULES;
    this.patchEmbed = new PatchEmbed(linear(m.patchEmbed), c.patch_size);
    this.clsToken = param(m.clsToken);
    this.posEmbed = param(m.posEmbed);
    this.blocks = [];
    for (let i = 0; i < c.depth; i++) {
      const b = m.block(i);
      this.blocks.push(
        new Block(
          norm(b.norm1),
          new Attention(linear(b.qkv, c.qkv_bias), linear(b.proj), c.num_heads, c.embed_dim),
          norm(b.norm2),
          new Mlp(linear(b.fc1), linear(b.fc2)),
        ),
      );
    }
    this.norm = norm(m.norm);
    this.head = linear(m.head);
  }

  /** Token states `[b·T, D]`: patch embedding, class token and position embedding. */
  tokens(x: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => {
      const b = x.shape[0], D = this.config.embed_dim, T = this.config.tokens;
      const patches = this.patchEmbed.apply(x);
      const cls = tf.broadcastTo(this.clsToken, [b, 1, D]);
      const tokens = tf.add(tf.concat([cls, patches], 1), this.posEmbed);
      return tf.reshape(tokens, [b * T, D]) as tf.Tensor2D;
    });
  }

  /** Blocks `from`..`to − 1` on token states `[b·T, D]`; `dropPath` (one entry per block, all blocks). */
  blocksRange(
    h: tf.Tensor2D,
    b: number,
    from: number,
    to: number,
    dropPath?: readonly DropPathScales[],
  ): tf.Tensor2D {
    return tf.tidy(() => {
      for (let i = from; i < to; i++) h = this.blocks[i].apply(h, b, this.config.tokens, dropPath?.[i]);
      return h;
    });
  }

  /** Final-norm class-token features `[b, D]` from the token states after the last block. */
  pool(h: tf.Tensor2D, b: number): tf.Tensor2D {
    return tf.tidy(() => {
      const D = this.config.embed_dim, T = this.config.tokens;
      // Only the class token feeds the head, and LayerNorm is per token: normalising just that row is exact.
      const clsRows = tf.reshape(tf.slice(tf.reshape(h, [b, T, D]), [0, 0, 0], [b, 1, D]), [
        b,
        D,
      ]) as tf.Tensor2D;
      return this.norm.apply(clsRows);
    });
  }

  /**
   * Final-norm class-token features `[b, D]` for NCHW images `[b, C, H, W]` (timm's `forward_features` +
   * pool). `dropPath` (one entry per block) applies training-time stochastic depth.
   */
  features(x: tf.Tensor4D, dropPath?: readonly DropPathScales[]): tf.Tensor2D {
    return tf.tidy(() => {
      const b = x.shape[0];
      return this.pool(this.blocksRange(this.tokens(x), b, 0, this.blocks.length, dropPath), b);
    });
  }

  /**
   * The network up to split point `split`: token states `[b·T, D]` after `split` blocks for
   * `split` ≤ depth, the pooled features `[b, D]` for `split` = depth + 1 (everything but the head).
   */
  prefix(x: tf.Tensor4D, split: number): tf.Tensor2D {
    return tf.tidy(() => {
      const b = x.shape[0], depth = this.blocks.length;
      const h = this.blocksRange(this.tokens(x), b, 0, Math.min(split, depth));
      return split > depth ? this.pool(h, b) : h;
    });
  }

  /** Logits `[b, num_classes]` from the output of {@linkcode prefix} at the same `split`. */
  suffix(h: tf.Tensor2D, b: number, split: number): tf.Tensor2D {
    return tf.tidy(() => {
      const depth = this.blocks.length;
      const features = split > depth ? h : this.pool(this.blocksRange(h, b, split, depth), b);
      return this.head.apply(features);
    });
  }

  /** Logits `[b, num_classes]` for NCHW images `[b, C, H, W]` (with `dropPath`, a training forward). */
  apply(x: tf.Tensor4D, dropPath?: readonly DropPathScales[]): tf.Tensor2D {
    return tf.tidy(() => this.head.apply(this.features(x, dropPath)));
  }
}
