/**
 * Resampling `pos_embed` to another grid, as timm's `resample_abs_pos_embed`: the class token is kept, the
 * patch grid is resized with bicubic interpolation as PyTorch's `F.interpolate(mode="bicubic",
 * antialias=True, align_corners=False)` (Keys kernel with a = −0.5, widened when shrinking).
 *
 * @module
 */
import type { HostTensor } from "../vit/params.ts";

function cubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Row-normalised weights of a separable antialiased bicubic resize from `inSize` to `outSize`. */
function weights(inSize: number, outSize: number): Array<{ start: number; w: number[] }> {
  const scale = inSize / outSize;
  const support = 2 * Math.max(scale, 1);
  const invScale = 1 / Math.max(scale, 1);
  const out: Array<{ start: number; w: number[] }> = [];
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const start = Math.max(0, Math.floor(center - support + 0.5));
    const end = Math.min(inSize, Math.floor(center + support + 0.5));
    const w: number[] = [];
    for (let j = start; j < end; j++) w.push(cubic((j + 0.5 - center) * invScale));
    const total = w.reduce((a, b) => a + b, 0);
    out.push({ start, w: w.map((v) => v / total) });
  }
  return out;
}

/** `pos_embed` `[1, 1 + g², D]` → `[1, 1 + newGrid², D]`. */
export function resamplePosEmbed(posEmbed: HostTensor, newGrid: number): HostTensor {
  const [, T, D] = posEmbed.shape;
  const g = Math.round(Math.sqrt(T - 1));
  if (g === newGrid) return posEmbed;
  const src = posEmbed.data;
  const wy = weights(g, newGrid);
  // Resize rows (y) first into [newGrid, g, D], then columns (x).
  const tmp = new Float64Array(newGrid * g * D);
  for (let oy = 0; oy < newGrid; oy++) {
    const { start, w } = wy[oy];
    for (let k = 0; k < w.length; k++) {
      const iy = start + k;
      for (let x = 0; x < g; x++) {
        const s = 1 + iy * g + x, t = (oy * g + x) * D;
        for (let d = 0; d < D; d++) tmp[t + d] += w[k] * src[s * D + d];
      }
    }
  }
  const out = new Float32Array((1 + newGrid * newGrid) * D);
  out.set(src.subarray(0, D));
  for (let oy = 0; oy < newGrid; oy++) {
    for (let ox = 0; ox < newGrid; ox++) {
      const { start, w } = wy[ox];
      const t = (1 + oy * newGrid + ox) * D;
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let k = 0; k < w.length; k++) acc += w[k] * tmp[(oy * g + start + k) * D + d];
        out[t + d] = acc;
      }
    }
  }
  return { shape: [1, 1 + newGrid * newGrid, D], data: out };
}
