/**
 * int8 weights of the blocks' linear layers, the one home of the project's weight quantisation: the onnx
 * engine's int8 graph (`onnx_graph.ts`, `weights: "int8"`) takes them, `deno task convert --dtype int8`
 * stores them (lib/weights/shards.ts), and engines that compute in float32 get them back dequantised.
 *
 * The scheme is ONNX Runtime's dynamic quantisation of weights with its `reduce_range`: symmetric, one scale
 * per output channel (`scale = max|w| / 63`, `q = round(w / scale)`, value = q · scale), stored `[in, out]`,
 * transposed from timm's `[out, in]`, which is the layout `MatMulInteger` takes. 7 bits, not 8: on x86 CPUs
 * without VNNI (AVX2 only) ONNX Runtime multiplies uint8 activations by int8 weights with `vpmaddubsw`, whose
 * 16-bit pair sums saturate at full range (255 · 127 · 2 > 32767); ViT-Ti/16's logits were 14% off there.
 *
 * @module
 */
import { type HostTensor, MODULES } from "./params.ts";

/** One linear layer's int8 weights: `q` `[in, out]`, `scale` `[out]`. */
export interface Int8Linear {
  q: Int8Array;
  scale: Float32Array;
}

/** The weights stored as int8 in a model of `depth` blocks: every block's qkv, proj, fc1 and fc2 weight. */
export function int8WeightNames(depth: number): Set<string> {
  const names = new Set<string>();
  for (let i = 0; i < depth; i++) {
    const b = MODULES.block(i);
    for (const m of [b.qkv, b.proj, b.fc1, b.fc2]) names.add(`${m}.weight`);
  }
  return names;
}

/** The largest |q| stored: 7-bit weights (see the module doc). */
export const INT8_Q_MAX = 63;

/** int8 weights `[in, out]` (transposed from timm's `[out, in]`) and one scale per output channel. */
export function quantizeLinear(w: Float32Array, out: number, inDim: number): Int8Linear {
  const q = new Int8Array(out * inDim), scale = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let max = 0;
    for (let i = 0; i < inDim; i++) max = Math.max(max, Math.abs(w[o * inDim + i]));
    const s = max > 0 ? max / INT8_Q_MAX : 1;
    scale[o] = s;
    for (let i = 0; i < inDim; i++) q[i * out + o] = Math.round(w[o * inDim + i] / s);
  }
  return { q, scale };
}

/** The float32 weights `[out, in]` (timm's layout) that int8 weights stand for. */
export function dequantizeLinear({ q, scale }: Int8Linear): Float32Array {
  const out = scale.length, inDim = q.length / out;
  const w = new Float32Array(q.length);
  for (let i = 0; i < inDim; i++) {
    for (let o = 0; o < out; o++) w[o * inDim + i] = q[i * out + o] * scale[o];
  }
  return w;
}

/**
 * A state-dict tensor `[out, in]` held as int8: `int8` is what the int8 graph takes; `data`, the dequantised
 * float32 values, is computed on first read (only engines that compute in float32 read it).
 */
export function int8Tensor(shape: number[], int8: Int8Linear): HostTensor {
  let data: Float32Array | undefined;
  return {
    shape,
    int8,
    get data() {
      data ??= dequantizeLinear(int8);
      return data;
    },
  };
}

/** Bytes of an int8 entry of `shape` in a shard: the int8 values, then a float32 scale per output row. */
export function int8EntryBytes(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1) + 4 * shape[0];
}

/** An int8 entry's bytes as shards hold them (see {@linkcode int8EntryBytes}). */
export function encodeInt8Entry({ q, scale }: Int8Linear): Uint8Array {
  const raw = new Uint8Array(q.length + scale.byteLength);
  raw.set(new Uint8Array(q.buffer, q.byteOffset, q.length));
  raw.set(new Uint8Array(scale.buffer, scale.byteOffset, scale.byteLength), q.length);
  return raw;
}

/**
 * An int8 entry of `shape` read (copied) from the start of `bytes`, as {@linkcode encodeInt8Entry} wrote it.
 * Shards written before the 7-bit scheme (|q| up to 127) are brought into its range (q/2, scale·2), so they
 * cannot saturate ONNX Runtime's AVX2 kernel either.
 */
export function decodeInt8Entry(bytes: Uint8Array, shape: readonly number[]): Int8Linear {
  const count = shape.reduce((a, b) => a * b, 1);
  const q = new Int8Array(bytes.slice(0, count).buffer);
  const scale = new Float32Array(bytes.slice(count, int8EntryBytes(shape)).buffer);
  if (q.some((v) => v > INT8_Q_MAX || v < -INT8_Q_MAX)) {
    for (let i = 0; i < q.length; i++) {
      q[i] = Math.max(-INT8_Q_MAX, Math.min(INT8_Q_MAX, Math.round(q[i] / 2)));
    }
    for (let o = 0; o < scale.length; o++) scale[o] *= 2;
  }
  return { q, scale };
}
