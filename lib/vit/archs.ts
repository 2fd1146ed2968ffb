/**
 * timm architectures known by name: `vit_{tiny,small,base,large}_patch{16,32}_{224,384}`, and the test
 * config `vit_micro_patch4_32` (as timm registers `test_vit`): the golden fixtures' micro model, which tests,
 * the bench and the load test build.
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

/** The fixtures' micro ViT (../shared/fixtures/vit/micro/config.json): 32 px, patch 4, dim 64, depth 2. */
export const MICRO_ARCH = "vit_micro_patch4_32";

const TEST_ARCHS: Record<string, ViTConfig> = {
  [MICRO_ARCH]: {
    img_size: 32,
    patch_size: 4,
    embed_dim: 64,
    depth: 2,
    num_heads: 4,
    num_classes: 10,
    qkv_bias: true,
  },
};

/** The names {@linkcode archConfig} knows. */
export const KNOWN_ARCHS: readonly string[] = [
  ...Object.keys(WIDTHS).flatMap((w) =>
    ["16", "32"].flatMap((p) => ["224", "384"].map((s) => `vit_${w}_patch${p}_${s}`))
  ),
  ...Object.keys(TEST_ARCHS),
];

/**
 * timm's config for a known architecture name (1000 ImageNet classes; the test config's 10), or
 * undefined.
 */
export function archConfig(name: string): ViTConfig | undefined {
  if (TEST_ARCHS[name]) return { ...TEST_ARCHS[name] };
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
