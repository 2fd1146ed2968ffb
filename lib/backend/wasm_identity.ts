/**
 * `Identity` and same-type `Cast` for tfjs-wasm that share their input's data instead of copying it,
 * registered in place of tfjs's own.
 *
 * tfjs-wasm 4.22's `Identity` and `Cast` allocate a new tensor and copy every value into it, even when the
 * type does not change. tfjs calls `Identity` for every tensor a gradient keeps for the backward pass (the
 * engine clones each saved tensor, `tf.customGrad`'s `save` included) and `Cast` to float32 for the gradient
 * of each such clone, so a training step copied a full activation per saved tensor: 364 `Identity` calls in a
 * step of the shipped architecture (docs/benchmarks.md). tfjs's tensors are immutable and tfjs-wasm counts
 * references to shared data (its `Reshape` already returns its input's data), so these kernels do the same:
 * one more reference, no copy. Strings, and casts that change the type, go to tfjs's kernels unchanged.
 * Same bytes, so bit-identical results; checked in tests/kernels_wasm_fused_test.ts.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { ReplacedKernels } from "./replaced_kernels.ts";
import "@tensorflow/tfjs-backend-wasm";

type Info = tf.TensorInfo;
const BACKEND = "wasm";

type Args = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap };

function share(x: Info, backend: tf.KernelBackend): Info {
  (backend as tf.KernelBackend & { incRef(id: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

function identity(args: Args): Info {
  const x = args.inputs.x as Info;
  if (x.dtype === "string") return wasmIdentityKernels.stock(tf.Identity)(args) as Info;
  return share(x, args.backend);
}

function cast(args: Args): Info {
  const x = args.inputs.x as Info;
  const { dtype } = args.attrs as unknown as { dtype: tf.DataType };
  if (x.dtype === "string" || dtype !== x.dtype) return wasmIdentityKernels.stock(tf.Cast)(args) as Info;
  return share(x, args.backend);
}

/** The sharing `Identity` and `Cast` for tfjs-wasm, in place of tfjs's. */
export const wasmIdentityKernels = new ReplacedKernels(BACKEND, [[tf.Identity, identity], [tf.Cast, cast]]);
