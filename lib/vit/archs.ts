/**
 * timm architectures known by name: `vit_{tiny,small,base,large}_patch{16,32}_{224,384}`.
 *
 * @module
 */
import type { ViTConfig } from "./config.ts";

const WIDTHS: Record<string, { embed_dim: number; depth: number; num_heads: number }> = {
  tiny: { embed_dim: 192, depth: 12, num_heads: 3 },
  small: { embed_dim: 384, depth: 12, num_heads: 6 },
  base: { embed_dim: 768, depth: 12, num_heads: 12 },
  large: { embed_dim: 1024, depth: 24, num_heads: 16 },
};

const PATTERN = /^vit_(tiny|small|base|large)_patch(16|32)_(224|384)$/;

/** The names {@linkcode archConfig} knows. */
export const KNOWN_ARCHS: readonly string[] = Object.keys(WIDTHS).flatMap((w) =>
  ["16", "32"].flatMap((p) => ["224", "384"].map((s) => `vit_${w}_patch${p}_${s}`))
);

/** timm's config for a known architecture name (1000 ImageNet classes), or undefined. */
export function archConfig(name: string): ViTConfig | undefined {
  const m = PATTERN.exec(name.replace(/\.[a-z0-9_]+$/i, ""));
  if (!m) return undefined;
  return {
    img_size: Number(m[3]),
    patch_size: Number(m[2]),
    in_chans: 3,
    ...WIDTHS[m[1]],
    mlp_ratio: 4,
    qkv_bias: true,
    num_classes: 1000,
  };
}
