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

  /**
   * Final-norm class-token features `[b, D]` for NCHW images `[b, C, H, W]` (timm's `forward_features` +
   * pool). `dropPath` (one entry per block) applies training-time stochastic depth.
   */
  features(x: tf.Tensor4D, dropPath?: readonly DropPathScales[]): tf.Tensor2D {
    return tf.tidy(() => {
      const b = x.shape[0], D = this.config.embed_dim, T = this.config.tokens;
      const patches = this.patchEmbed.apply(x);
      const cls = tf.broadcastTo(this.clsToken, [b, 1, D]);
      const tokens = tf.add(tf.concat([cls, patches], 1), this.posEmbed);
      let h = tf.reshape(tokens, [b * T, D]) as tf.Tensor2D;
      this.blocks.forEach((block, i) => h = block.apply(h, b, T, dropPath?.[i]));
      // Only the class token feeds the head, and LayerNorm is per token: normalising just that row is exact.
      const clsRows = tf.reshape(tf.slice(tf.reshape(h, [b, T, D]), [0, 0, 0], [b, 1, D]), [
        b,
        D,
      ]) as tf.Tensor2D;
      return this.norm.apply(clsRows);
    });
  }

  /** Logits `[b, num_classes]` for NCHW images `[b, C, H, W]` (with `dropPath`, a training forward). */
  apply(x: tf.Tensor4D, dropPath?: readonly DropPathScales[]): tf.Tensor2D {
    return tf.tidy(() => this.head.apply(this.features(x, dropPath)));
  }
}
