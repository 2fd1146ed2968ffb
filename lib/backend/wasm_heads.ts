/**
 * Attention's head split for tfjs-wasm in one pass each way: the fused qkv projection `[b·T, 3·D]` to
 * `q·scale`, `k`, `v` as `[b, heads, T, head_dim]`, and its gradient back. The model composes the forward
 * from a `SplitV`, three reshapes, three `Transpose`s and a scalar multiply, and tfjs's gradient from three
 * more transposes, a multiply and a `Concat`: each a full pass and a new tensor, ~70 ms of a training step of
 * the shipped architecture (docs/benchmarks.md). Here each row's head slices are copied straight to their
 * places through views of tfjs-wasm's heap. The values are the same bytes, and `q·scale` (and `dq·scale`) is
 * rounded to float32 exactly as tfjs's multiply rounds it, so results are bit-identical to the composite;
 * checked in tests/kernels_wasm_fused_test.ts.
 *
 * tfjs has no such kernels: they are registered under their own names ({@linkcode SPLIT_HEADS_KERNEL},
 * {@linkcode MERGE_HEADS_KERNEL}) for backend wasm, and the model asks for them through
 * {@linkcode wasmSplitHeads}, which answers `undefined` where they are not installed on the current backend.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { NamedKernels } from "./named_kernels.ts";
import "@tensorflow/tfjs-backend-wasm";
import type { WasmHeapBackend } from "./wasm_slice.ts";

type Info = tf.TensorInfo;
const BACKEND = "wasm";
/** The names the kernels are registered under. */
export const SPLIT_HEADS_KERNEL = "VitSplitHeads", MERGE_HEADS_KERNEL = "VitMergeHeadsGrad";

interface HeadAttrs {
  batch: number;
  tokens: number;
  heads: number;
  scale: number;
}

type Args = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap };

/**
 * Copies between the row layout `[b·T, 3·D]` and the three head layouts `[b, H, T, hd]`: `toHeads` one way,
 * else back. The q part is multiplied by `scale` (float32) on the way.
 */
function permute(rows: Float32Array, parts: Float32Array[], a: HeadAttrs, toHeads: boolean): void {
  const { batch, tokens: T, heads: H } = a;
  const D = rows.length / (batch * T * 3), hd = D / H;
  const scale = Math.fround(a.scale);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * 3 * D;
      for (let p = 0; p < 3; p++) {
        const part = parts[p];
        for (let h = 0; h < H; h++) {
          const src = row + p * D + h * hd, dst = ((b * H + h) * T + t) * hd;
          if (toHeads) {
            if (p === 0) { for (let d = 0; d < hd; d++) part[dst + d] = rows[src + d] * scale; }
            else for (let d = 0; d < hd; d++) part[dst + d] = rows[src + d];
          } else if (p === 0) { for (let d = 0; d < hd; d++) rows[src + d] = part[dst + d] * scale; }
          else for (let d = 0; d < hd; d++) rows[src + d] = part[dst + d];
        }
      }
    }
  }
}

function splitHeads(args: Args): Info[] {
  const x = args.inputs.x as Info;
  const a = args.attrs as unknown as HeadAttrs;
  const backend = args.backend as unknown as WasmHeapBackend;
  const D = x.shape[1] / 3;
  const shape = [a.batch, a.heads, a.tokens, D / a.heads];
  const outs = [0, 1, 2].map(() => backend.makeOutput(shape, "float32"));
  // Views only after the allocations: one that grows the heap detaches views taken before it.
  permute(
    backend.typedArrayFromHeap(x) as Float32Array,
    outs.map((o) => backend.typedArrayFromHeap(o) as Float32Array),
    a,
    true,
  );
  return outs;
}

function mergeHeadsGrad(args: Args): Info {
  const { dq, dk, dv } = args.inputs as { dq: Info; dk: Info; dv: Info };
  const a = args.attrs as unknown as HeadAttrs;
  const backend = args.backend as unknown as WasmHeapBackend;
  const [, H, T, hd] = dq.shape;
  const out = backend.makeOutput([a.batch * T, 3 * H * hd], "float32");
  permute(
    backend.typedArrayFromHeap(out) as Float32Array,
    [dq, dk, dv].map((t) => backend.typedArrayFromHeap(t) as Float32Array),
    a,
    false,
  );
  return out;
}

/**
 * `q·scale`, `k`, `v` as `[batch, heads, tokens, head_dim]` from the fused qkv projection `[batch·tokens,
 * 3·D]` (timm's layout: q, k, v, each heads × head_dim), differentiable; `undefined` where the kernels are
 * not installed on the current backend or `qkv` is not float32.
 */
export function wasmSplitHeads(
  qkv: tf.Tensor2D,
  batch: number,
  tokens: number,
  heads: number,
  scale: number,
): [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D] | undefined {
  if (!wasmHeadsKernels.active() || qkv.dtype !== "float32") return undefined;
  const D = qkv.shape[1] / 3;
  if (qkv.shape[0] !== batch * tokens || !Number.isInteger(D) || D % heads !== 0) {
    throw new Error(
      `${SPLIT_HEADS_KERNEL}: qkv [${qkv.shape}] does not fit ${batch}×${tokens} tokens, ${heads} heads`,
    );
  }
  return tf.engine().runKernel(SPLIT_HEADS_KERNEL, { x: qkv }, {
    batch,
    tokens,
    heads,
    scale,
  }) as unknown as [
    tf.Tensor4D,
    tf.Tensor4D,
    tf.Tensor4D,
  ];
}

/** The split's gradient (tfjs's `customGrad` takes single-output functions only, so it is the kernel's). */
const splitHeadsGrad: tf.GradConfig = {
  kernelName: SPLIT_HEADS_KERNEL,
  gradFunc: (dys, _saved, attrs) => {
    const [dq, dk, dv] = dys as tf.Tensor[];
    return { x: () => tf.engine().runKernel(MERGE_HEADS_KERNEL, { dq, dk, dv }, attrs) as tf.Tensor };
  },
};

/** The attention head-split kernels on wasm, with their gradient; `active()` while they run. */
export const wasmHeadsKernels = new NamedKernels(
  BACKEND,
  [[SPLIT_HEADS_KERNEL, splitHeads], [MERGE_HEADS_KERNEL, mergeHeadsGrad]],
  [splitHeadsGrad],
);
