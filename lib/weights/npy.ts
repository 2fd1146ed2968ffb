/**
 * NumPy's `.npy` array format (header versions 1–3): float16/32/64 arrays, either byte order, C or Fortran
 * order, widened to row-major float32. Also the strided gather that turns any strided view (a Fortran array,
 * a non-contiguous torch tensor, a transposed layout) into a row-major copy.
 *
 * @module
 */
import { bf16ToF32, f16ToF32 } from "./dtype.ts";

/** A parsed `.npy` array. */
export interface NpyArray {
  /** NumPy's dtype string, e.g. `<f4`. */
  descr: string;
  shape: number[];
  fortranOrder: boolean;
  /** Row-major float32 values; null when the dtype is not a float (the shape and dtype are still given). */
  data: Float32Array | null;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** True when `bytes` starts with the `.npy` magic string. */
export function isNpy(bytes: Uint8Array): boolean {
  return bytes.length >= 6 && MAGIC.every((b, i) => bytes[i] === b);
}

/** Row-major (C-order) element strides of `shape`. */
export function rowMajorStrides(shape: number[]): number[] {
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = s;
    s *= shape[i];
  }
  return out;
}

/**
 * The lowest and highest element index a strided view reaches (`min > max` when it has no elements).
 * Callers check these against their storage before gathering.
 */
export function stridedBounds(
  shape: number[],
  stride: number[],
  offset: number,
): { min: number; max: number } {
  let min = offset, max = offset;
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 0) return { min: 1, max: 0 };
    const span = (shape[d] - 1) * stride[d];
    if (span < 0) min += span;
    else max += span;
  }
  return { min, max };
}

/**
 * Copies the strided view (`shape`, element `stride`s, element `offset`) of `src` into `dst` in row-major
 * order and returns `dst`. The caller checks the bounds ({@linkcode stridedBounds}).
 */
export function gatherStrided<T extends { [i: number]: number; length: number }>(
  src: ArrayLike<number>,
  dst: T,
  shape: number[],
  stride: number[],
  offset: number,
): T {
  const n = dst.length, rank = shape.length;
  if (n === 0) return dst;
  if (rank === 0) {
    dst[0] = src[offset];
    return dst;
  }
  const last = shape[rank - 1], lastStride = stride[rank - 1];
  const index = new Array<number>(rank).fill(0);
  let base = offset, o = 0;
  while (o < n) {
    for (let j = 0, s = base; j < last; j++, s += lastStride) dst[o++] = src[s];
    let d = rank - 2;
    for (; d >= 0; d--) {
      base += stride[d];
      if (++index[d] < shape[d]) break;
      base -= stride[d] * shape[d];
      index[d] = 0;
    }
    if (d < 0) break;
  }
  return dst;
}

/** A typed-array view of `bytes` when its offset is aligned, else an aligned copy (the one copy allowed). */
function aligned(
  bytes: Uint8Array,
  width: number,
): ArrayBuffer | { buffer: ArrayBufferLike; offset: number } {
  if (bytes.byteOffset % width === 0) return { buffer: bytes.buffer, offset: bytes.byteOffset };
  return bytes.slice().buffer;
}

function typed<T>(
  bytes: Uint8Array,
  width: number,
  make: (buf: ArrayBufferLike, offset: number, length: number) => T,
): T {
  const a = aligned(bytes, width);
  const length = bytes.length / width;
  return a instanceof ArrayBuffer ? make(a, 0, length) : make(a.buffer, a.offset, length);
}

/** Swaps the byte order of each `width`-byte element into a new buffer. */
function swapped(bytes: Uint8Array, width: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += width) {
    for (let j = 0; j < width; j++) out[i + j] = bytes[i + width - 1 - j];
  }
  return out;
}

/** The float dtypes {@linkcode floatsFromBytes} widens, in safetensors spelling. */
export type FloatDtype = "F32" | "F16" | "BF16" | "F64";

/**
 * Float values of raw little-endian `bytes` (a whole storage) as row-major float32, for the strided view
 * (`shape`, element `stride`, element `offset`): a view of `bytes` when they are float32, aligned and the
 * view is row-major; one new array otherwise. The caller checks the bounds.
 */
export function floatsFromBytes(
  bytes: Uint8Array,
  dtype: FloatDtype,
  shape: number[],
  stride: number[],
  offset: number,
): Float32Array {
  const count = shape.reduce((a, b) => a * b, 1);
  const contiguous = isRowMajor(shape, stride);
  const width = dtype === "F32" ? 4 : dtype === "F64" ? 8 : 2;
  const part = contiguous
    ? bytes.subarray(offset * width, (offset + count) * width)
    : bytes.subarray(0, bytes.length - (bytes.length % width));
  const from = contiguous ? 0 : offset;
  const rowMajor = contiguous ? rowMajorStrides(shape) : stride;
  switch (dtype) {
    case "F32": {
      const all = typed(part, 4, (b, o, n) => new Float32Array(b, o, n));
      return contiguous ? all : gatherStrided(all, new Float32Array(count), shape, stride, offset);
    }
    case "F16":
    case "BF16": {
      const all = typed(part, 2, (b, o, n) => new Uint16Array(b, o, n));
      const bits = contiguous ? all : gatherStrided(all, new Uint16Array(count), shape, rowMajor, from);
      return dtype === "F16" ? f16ToF32(bits) : bf16ToF32(bits);
    }
    case "F64": {
      const all = typed(part, 8, (b, o, n) => new Float64Array(b, o, n));
      return gatherStrided(all, new Float32Array(count), shape, rowMajor, from);
    }
  }
}

/** Whether `stride` is the row-major stride of `shape` (size-1 dimensions may have any stride). */
export function isRowMajor(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

function parseHeader(
  text: string,
  source: string,
): { descr: string; fortranOrder: boolean; shape: number[] } {
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new Error(
      `${source}: .npy header ${JSON.stringify(text.trim())} lacks a simple descr, fortran_order or shape ` +
        `(structured dtypes are not supported)`,
    );
  }
  const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
    const n = Number(s.replace(/L$/, ""));
    if (!Number.isInteger(n) || n < 0) throw new Error(`${source}: .npy shape (${shapeText}) is not valid`);
    return n;
  });
  return { descr, fortranOrder: fortran === "True", shape };
}

const FLOATS: Record<string, FloatDtype> = { f2: "F16", f4: "F32", f8: "F64" };

/**
 * Parses a `.npy` file. Float arrays (`f2`/`f4`/`f8`, either byte order, C or Fortran order) are widened to
 * row-major float32; other dtypes keep their shape and dtype with `data: null`. `source` names the array in
 * errors.
 */
export function parseNpy(bytes: Uint8Array, source = "npy"): NpyArray {
  if (!isNpy(bytes)) throw new Error(`${source}: not a .npy array (no \\x93NUMPY magic)`);
  if (bytes.length < 10) throw new Error(`${source}: .npy header is truncated`);
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number, headerStart: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new Error(`${source}: .npy header is truncated`);
    headerLen = view.getUint32(8, true);
    headerStart = 12;
  } else {
    throw new Error(`${source}: .npy format version ${major}.${bytes[7]} is not supported (1, 2 or 3 are)`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > bytes.length) throw new Error(`${source}: .npy header runs past the end; truncated?`);
  const text = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    bytes.subarray(headerStart, dataStart),
  );
  const { descr, fortranOrder, shape } = parseHeader(text, source);
  const m = /^([<>|=])([a-zA-Z])(\d+)$/.exec(descr);
  const dtype = m ? FLOATS[`${m[2]}${m[3]}`] : undefined;
  if (!m || !dtype) return { descr, shape, fortranOrder, data: null };
  const width = Number(m[3]);
  const count = shape.reduce((a, b) => a * b, 1);
  const need = count * width;
  if (bytes.length - dataStart < need) {
    throw new Error(
      `${source}: .npy data holds ${
        bytes.length - dataStart
      } bytes, shape [${shape}] ${descr} needs ${need}; ` +
        `truncated?`,
    );
  }
  let raw = bytes.subarray(dataStart, dataStart + need);
  if (m[1] === ">") raw = swapped(raw, width);
  // A Fortran array of shape s is the C array of reversed s; its strides are the reversed row-major ones.
  const stride = fortranOrder ? rowMajorStrides([...shape].reverse()).reverse() : rowMajorStrides(shape);
  return { descr, shape, fortranOrder, data: floatsFromBytes(raw, dtype, shape, stride, 0) };
}
