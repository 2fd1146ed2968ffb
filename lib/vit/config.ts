/**
 * The ViT configuration, in timm's field names (`VisionTransformer.__init__`), and its validation.
 *
 * @module
 */

/** A timm `VisionTransformer` configuration of the class-token, pre-norm family. */
export interface ViTConfig {
  img_size: number;
  patch_size: number;
  /** Input channels; 3 unless given. */
  in_chans?: number;
  embed_dim: number;
  depth: number;
  num_heads: number;
  /** Hidden width of the MLP as a multiple of `embed_dim`; 4 unless given. */
  mlp_ratio?: number;
  /** Whether the fused qkv projection has a bias; true unless given (timm's default). */
  qkv_bias?: boolean;
  num_classes: number;
  /** Only `"token"` pooling (the class token) is supported. */
  global_pool?: "token";
  /** Only true is supported. */
  class_token?: boolean;
}

/** A config with every optional field filled in, plus derived sizes. */
export interface ResolvedViTConfig extends Required<ViTConfig> {
  /** Patches per side. */
  grid: number;
  /** Tokens per image: patches plus the class token. */
  tokens: number;
  /** Width of one attention head. */
  head_dim: number;
  /** Width of the MLP hidden layer. */
  mlp_hidden: number;
}

function positiveInt(config: Record<string, unknown>, field: string): number {
  const v = config[field];
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new Error(`ViT config: "${field}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Validates a config and fills in timm's defaults; throws naming the bad field. */
export function resolveConfig(config: ViTConfig): ResolvedViTConfig {
  const c = config as unknown as Record<string, unknown>;
  const img_size = positiveInt(c, "img_size");
  const patch_size = positiveInt(c, "patch_size");
  const embed_dim = positiveInt(c, "embed_dim");
  const depth = positiveInt(c, "depth");
  const num_heads = positiveInt(c, "num_heads");
  const num_classes = positiveInt(c, "num_classes");
  const in_chans = config.in_chans === undefined ? 3 : positiveInt(c, "in_chans");
  const mlp_ratio = config.mlp_ratio ?? 4;
  if (typeof mlp_ratio !== "number" || !(mlp_ratio > 0)) {
    throw new Error(`ViT config: "mlp_ratio" must be a positive number, got ${JSON.stringify(mlp_ratio)}`);
  }
  const qkv_bias = config.qkv_bias ?? true;
  if (typeof qkv_bias !== "boolean") {
    throw new Error(`ViT config: "qkv_bias" must be a boolean, got ${JSON.stringify(qkv_bias)}`);
  }
  if ((config.global_pool ?? "token") !== "token") {
    throw new Error(
      `ViT config: only global_pool "token" is supported, got ${JSON.stringify(config.global_pool)}`,
    );
  }
  if ((config.class_token ?? true) !== true) {
    throw new Error(`ViT config: only class_token true is supported`);
  }
  if (img_size % patch_size !== 0) {
    throw new Error(`ViT config: img_size ${img_size} is not a multiple of patch_size ${patch_size}`);
  }
  if (embed_dim % num_heads !== 0) {
    throw new Error(`ViT config: embed_dim ${embed_dim} is not divisible by num_heads ${num_heads}`);
  }
  const grid = img_size / patch_size;
  const mlp_hidden = Math.floor(embed_dim * mlp_ratio);
  return {
    img_size,
    patch_size,
    in_chans,
    embed_dim,
    depth,
    num_heads,
    mlp_ratio,
    qkv_bias,
    num_classes,
    global_pool: "token",
    class_token: true,
    grid,
    tokens: grid * grid + 1,
    head_dim: embed_dim / num_heads,
    mlp_hidden,
  };
}

/** The plain timm fields of a resolved config (what is written to a manifest). */
export function timmConfig(c: ResolvedViTConfig): ViTConfig {
  return {
    img_size: c.img_size,
    patch_size: c.patch_size,
    in_chans: c.in_chans,
    embed_dim: c.embed_dim,
    depth: c.depth,
    num_heads: c.num_heads,
    mlp_ratio: c.mlp_ratio,
    qkv_bias: c.qkv_bias,
    num_classes: c.num_classes,
    global_pool: "token",
    class_token: true,
  };
}
