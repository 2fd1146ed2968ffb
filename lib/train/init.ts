/**
 * Fresh weights for training from scratch, following timm's `VisionTransformer.init_weights` (mode ''):
 * truncated normal (std 0.02, cut at ±2σ) for linear weights and `pos_embed`, normal(1e-6) for `cls_token`,
 * zero biases, LayerNorm at (1, 0), and PyTorch's default uniform init for the patch-embedding
 * convolution. Deterministic: each tensor draws from a generator seeded by the run's seed and its name.
 *
 * @module
 */
import { resolveConfig, type ViTConfig } from "../vit/config.ts";
import { paramSpecs, type StateDict } from "../vit/params.ts";
import { hashString, mixSeed, normal, Rng } from "./rng.ts";

function truncNormal(rng: Rng, std: number): number {
  for (;;) {
    const z = normal(rng);
    if (z >= -2 && z <= 2) return z * std;
  }
}

/** A freshly initialised state dict (timm names and layouts) for `config`. */
export function initStateDict(config: ViTConfig, seed: number): StateDict {
  const c = resolveConfig(config);
  const state: StateDict = new Map();
  for (const spec of paramSpecs(c)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const rng = new Rng(mixSeed(seed, hashString(spec.name)));
    const name = spec.name;
    if (name === "cls_token") {
      for (let i = 0; i < n; i++) data[i] = normal(rng) * 1e-6;
    } else if (name === "pos_embed") {
      for (let i = 0; i < n; i++) data[i] = truncNormal(rng, 0.02);
    } else if (name === "patch_embed.proj.weight") {
      const bound = 1 / Math.sqrt(c.in_chans * c.patch_size * c.patch_size);
      for (let i = 0; i < n; i++) data[i] = (2 * rng.uniform() - 1) * bound;
    } else if (/norm[12]?\.weight$/.test(name)) {
      data.fill(1);
    } else if (spec.shape.length === 2) {
      for (let i = 0; i < n; i++) data[i] = truncNormal(rng, 0.02);
    }
    // Everything else (biases, norm biases) stays zero.
    state.set(name, { shape: [...spec.shape], data });
  }
  return state;
}
