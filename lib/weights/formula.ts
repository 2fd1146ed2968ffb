/**
 * The deterministic weight formula of the fixtures (`../shared/fixtures/vit/README.md`): every value of a
 * full-size ViT from its tensor name and flat index, so tests and benchmarks can rebuild the exact
 * float32 weights of timm's golden run without storing 344 MB.
 *
 * @module
 */
import { resolveConfig, type ViTConfig } from "../vit/config.ts";
import { paramSpecs, type StateDict } from "../vit/params.ts";

function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(text)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function isNormWeight(name: string): boolean {
  return name.endsWith("norm1.weight") || name.endsWith("norm2.weight") || name === "norm.weight";
}

/** The formula's values for one tensor. */
export function formulaTensor(name: string, count: number, salt = 0): Float32Array {
  const seed = (fnv1a32(name) ^ salt) >>> 0;
  const [center, amp] = isNormWeight(name) ? [1, 0.1] : [0, 0.05];
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let x = (Math.imul(i + 1, 0x9e3779b1) + seed) >>> 0;
    x = (x ^ (x >>> 16)) >>> 0;
    x = Math.imul(x, 0x85ebca6b) >>> 0;
    x = (x ^ (x >>> 13)) >>> 0;
    x = Math.imul(x, 0xc2b2ae35) >>> 0;
    x = (x ^ (x >>> 16)) >>> 0;
    const u = (x >>> 8) / 16777216;
    out[i] = center + (2 * u - 1) * amp;
  }
  return out;
}

/** The formula state dict for a ViT config, in timm names and shapes. */
export function formulaStateDict(config: ViTConfig, salt = 0): StateDict {
  const state: StateDict = new Map();
  for (const spec of paramSpecs(resolveConfig(config))) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    state.set(spec.name, { shape: spec.shape, data: formulaTensor(spec.name, count, salt) });
  }
  return state;
}
