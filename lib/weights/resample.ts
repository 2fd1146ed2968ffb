/**
 * Resampling weights to another geometry, with bicubic interpolation as PyTorch's
 * `F.interpolate(mode="bicubic", antialias=True, align_corners=False)` (Keys kernel with a = −0.5, widened
 * when shrinking):
 * - `pos_embed` to another grid, as timm's `resample_abs_pos_embed` (the class token is kept);
 * - the patch embedding's kernels to another patch size, as timm's `resample_patch_embed` (FlexiViT's
 *   pseudo-inverse resize: the new kernel sees a resized patch as the old one saw the original).
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

/** The 1-D resize `inSize` → `outSize` as a dense `[outSize][inSize]` matrix (the weights above). */
export function resizeMatrix(inSize: number, outSize: number): Float64Array[] {
  return weights(inSize, outSize).map(({ start, w }) => {
    const row = new Float64Array(inSize);
    w.forEach((v, k) => row[start + k] = v);
    return row;
  });
}

/** Solves `A X = B` for square `A` (n×n) and `B` (n×m) by Gaussian elimination with partial pivoting. */
function solve(a: Float64Array[], b: Float64Array[]): Float64Array[] {
  const n = a.length;
  const A = a.map((r) => Float64Array.from(r)), B = b.map((r) => Float64Array.from(r));
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(A[r][c]) > Math.abs(A[p][c])) p = r;
    if (Math.abs(A[p][c]) < 1e-12) throw new Error("resample: singular resize matrix");
    [A[c], A[p]] = [A[p], A[c]];
    [B[c], B[p]] = [B[p], B[c]];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = A[r][c] / A[c][c];
      if (f === 0) continue;
      for (let k = c; k < n; k++) A[r][k] -= f * A[c][k];
      for (let k = 0; k < B[r].length; k++) B[r][k] -= f * B[c][k];
    }
  }
  return B.map((row, r) => row.map((v) => v / A[r][r]));
}

function matmul(a: Float64Array[], b: Float64Array[]): Float64Array[] {
  return a.map((row) =>
    Float64Array.from({ length: b[0].length }, (_, j) => row.reduce((acc, v, k) => acc + v * b[k][j], 0))
  );
}

function transpose(a: Float64Array[]): Float64Array[] {
  return Array.from({ length: a[0].length }, (_, j) => Float64Array.from(a, (row) => row[j]));
}

/**
 * `pinv(Rᵀ)` for the 1-D resize `R` (`newSize` × `oldSize`), a `[newSize][oldSize]` matrix. The 2-D resize is
 * separable, so the 2-D pseudo-inverse is this one applied along both axes. R has full rank, so the normal
 * equations give the pseudo-inverse on whichever side is smaller.
 */
function pinvResizeT(oldSize: number, newSize: number): Float64Array[] {
  const r = resizeMatrix(oldSize, newSize), rt = transpose(r);
  // Rᵀ is oldSize × newSize: tall when shrinking (least squares), wide when growing (least norm).
  return newSize <= oldSize ? solve(matmul(r, rt), r) : transpose(solve(matmul(rt, r), rt));
}

/**
 * The patch embedding's kernels `[D, C, p, p]` → `[D, C, newPatch, newPatch]`, as timm's
 * `resample_patch_embed`: each kernel `w` becomes `pinv(Rᵀ) w`, where `R` resizes a `p × p` patch to
 * `newPatch × newPatch`, so that `⟨w', R x⟩ ≈ ⟨w, x⟩` (exact when `w` lies in the range of `Rᵀ`).
 *
 * @example Patch 8 → 4 (a 32 px model at patch 4 starts from a patch-8 one)
 * ```ts
 * const w4 = resamplePatchEmbed({ shape: [128, 3, 8, 8], data: new Float32Array(128 * 3 * 64) }, 4);
 * // w4.shape: [128, 3, 4, 4]
 * ```
 */
export function resamplePatchEmbed(weight: HostTensor, newPatch: number): HostTensor {
  const [D, C, p, q] = weight.shape;
  if (p !== q) throw new Error(`patch_embed.proj.weight: square kernels expected, got ${p}×${q}`);
  if (!Number.isInteger(newPatch) || newPatch < 1) {
    throw new Error(`patch size must be a positive integer, got ${newPatch}`);
  }
  if (p === newPatch) return weight;
  const P = pinvResizeT(p, newPatch), n = newPatch;
  const out = new Float32Array(D * C * n * n);
  const tmp = new Float64Array(n * p);
  for (let k = 0; k < D * C; k++) {
    const src = weight.data.subarray(k * p * p, (k + 1) * p * p);
    // tmp = P · K (n × p), then out = tmp · Pᵀ (n × n).
    for (let a = 0; a < n; a++) {
      for (let j = 0; j < p; j++) {
        let acc = 0;
        for (let i = 0; i < p; i++) acc += P[a][i] * src[i * p + j];
        tmp[a * p + j] = acc;
      }
    }
    for (let a = 0; a < n; a++) {
      for (let b = 0; b < n; b++) {
        let acc = 0;
        for (let j = 0; j < p; j++) acc += tmp[a * p + j] * P[b][j];
        out[k * n * n + a * n + b] = acc;
      }
    }
  }
  return { shape: [D, C, n, n], data: out };
}
