/**
 * Matrix products whose gradients never ask the backend for a transposed product.
 *
 * tfjs differentiates `C = A·B` with `dA = dC·Bᵀ` and `dB = Aᵀ·dC` as `transposeB` / `transposeA` matmuls,
 * and tfjs-wasm runs those on a slow path (measured on a [394, 3072]·[3072, 768] product: 52 ms plain, 700 ms
 * transposeB, 2150 ms transposeA; ViT-B/16 training was ~30× slower than its forward pass). An explicit
 * transpose followed by a plain product costs 80–125 ms there.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

function swapLast(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return tf.transpose(x, perm);
}

const plain = tf.customGrad((a, b, save) => {
  (save as tf.GradSaveFunc)([a as tf.Tensor, b as tf.Tensor]);
  return {
    value: tf.matMul(a as tf.Tensor, b as tf.Tensor),
    gradFunc: (dy, saved) => {
      const [x, y] = saved;
      // tidy: the transposed copies die here instead of living until the whole backward pass ends.
      return [
        tf.tidy(() => tf.matMul(dy as tf.Tensor, swapLast(y))),
        tf.tidy(() => tf.matMul(swapLast(x), dy as tf.Tensor)),
      ];
    },
  };
});

const transposedB = tf.customGrad((a, b, save) => {
  (save as tf.GradSaveFunc)([a as tf.Tensor, b as tf.Tensor]);
  return {
    value: tf.matMul(a as tf.Tensor, b as tf.Tensor, false, true),
    gradFunc: (dy, saved) => {
      const [x, y] = saved;
      // C = A·Bᵀ: dA = dC·B, dB = dCᵀ·A.
      return [tf.matMul(dy as tf.Tensor, y), tf.tidy(() => tf.matMul(swapLast(dy as tf.Tensor), x))];
    },
  };
});

/**
 * A weight gradient `xᵀ·dy` for `x` `[rows, in]` and `dy` `[rows, out]`. tfjs-wasm's XNNPACK product packs
 * its right operand afresh on every call, and inside a training step (cold caches) a product that packed
 * `dy` with `out > in` (fc1, qkv) took ~1.3–1.5× as long as the same multiply-adds packing `x`, so there it
 * is computed as `(dyᵀ·x)ᵀ`: the same dot products in the same order, bit-identical (docs/benchmarks.md,
 * tests/kernels_wasm_fused_test.ts). Elsewhere directly.
 */
export function weightGrad(xs: tf.Tensor2D, g: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() =>
    tf.getBackend() === "wasm" && g.shape[1] > xs.shape[1]
      ? tf.transpose(tf.matMul(tf.transpose(g), xs))
      : tf.matMul(tf.transpose(xs), g)
  );
}

const affine = tf.customGrad((x, w, b, save) => {
  (save as tf.GradSaveFunc)([x as tf.Tensor, w as tf.Tensor]);
  return {
    value: tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias: b as tf.Tensor }),
    gradFunc: (dy, saved) => {
      const [xs, ws] = saved;
      const g = dy as tf.Tensor2D;
      return [
        tf.tidy(() => tf.matMul(g, tf.transpose(ws))),
        weightGrad(xs as tf.Tensor2D, g),
        tf.sum(g, 0),
      ];
    },
  };
});

/** `a·b` (`a·bᵀ` when `transposeB`), batched over leading dimensions as `tf.matMul`. */
export function matMul<T extends tf.Tensor>(a: T, b: T, transposeB = false): T {
  return (transposeB ? transposedB(a, b) : plain(a, b)) as T;
}

/** `x·w + bias` for `x` `[rows, in]`, `w` `[in, out]`, `bias` `[out]` (bias optional). */
export function linear(x: tf.Tensor2D, w: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor2D {
  return (bias ? affine(x, w, bias) : plain(x, w)) as tf.Tensor2D;
}
