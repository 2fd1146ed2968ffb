/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header of
 * `{name: {dtype, shape, data_offsets: [begin, end]}}` (plus an optional `__metadata__`), then raw
 * little-endian data. Reads F32, F16 and BF16 (widened to float32) and the integer dtypes the fixtures use;
 * writes F32 and F16.
 *
 * @module
 */
import { bf16ToF32, f16ToF32, f32ToF16 } from "./dtype.ts";

/**
 * A tensor read from a safetensors file. Floats are widened to float32; I64 is read into an Int32 range
 * check.
 */
export interface SafeTensor {
  dtype: string;
  shape: number[];
  /** Float dtypes as Float32Array; integer dtypes as Int32Array (values out of int32 range are an error). */
  data: Float32Array | Int32Array;
}

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, F64: 8 };

function copyAligned(bytes: Uint8Array, begin: number, end: number): ArrayBuffer {
  return bytes.slice(begin, end).buffer;
}

/**
 * Parses a safetensors file. `source` names the file in error messages.
 * Every tensor's dtype, shape and byte range is checked against the buffer.
 */
export function parseSafetensors(bytes: Uint8Array, source = "safetensors"): Map<string, SafeTensor> {
  if (bytes.length < 8) {
    throw new Error(`${source}: ${bytes.length} bytes is too short for a safetensors file`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > bytes.length - 8) {
    throw new Error(`${source}: header length ${headerLen} exceeds the file size ${bytes.length}`);
  }
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new Error(`${source}: the header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + headerLen;
  const out = new Map<string, SafeTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets } = info;
    const width = BYTES[dtype];
    if (!width) throw new Error(`${source}: tensor "${name}" has unsupported dtype ${dtype}`);
    const count = shape.reduce((a, b) => a * b, 1);
    const [b0, b1] = data_offsets;
    if (b1 - b0 !== count * width) {
      throw new Error(
        `${source}: tensor "${name}" spans ${b1 - b0} bytes, shape [${shape}] ${dtype} needs ${
          count * width
        }`,
      );
    }
    if (dataStart + b1 > bytes.length) {
      throw new Error(
        `${source}: tensor "${name}" ends at byte ${
          dataStart + b1
        }, past the end of the file (${bytes.length}); truncated?`,
      );
    }
    const buf = copyAligned(bytes, dataStart + b0, dataStart + b1);
    let data: Float32Array | Int32Array;
    switch (dtype) {
      case "F32":
        data = new Float32Array(buf);
        break;
      case "F64":
        data = Float32Array.from(new Float64Array(buf));
        break;
      case "F16":
        data = f16ToF32(new Uint16Array(buf));
        break;
      case "BF16":
        data = bf16ToF32(new Uint16Array(buf));
        break;
      case "I32":
        data = new Int32Array(buf);
        break;
      case "U8":
        data = Int32Array.from(new Uint8Array(buf));
        break;
      case "I64": {
        const big = new BigInt64Array(buf);
        data = new Int32Array(big.length);
        for (let i = 0; i < big.length; i++) {
          if (big[i] > 2147483647n || big[i] < -2147483648n) {
            throw new Error(`${source}: tensor "${name}" value ${big[i]} does not fit in int32`);
          }
          data[i] = Number(big[i]);
        }
        break;
      }
      default:
        throw new Error(`${source}: tensor "${name}" has unsupported dtype ${dtype}`);
    }
    out.set(name, { dtype, shape, data });
  }
  return out;
}

/** Reads a safetensors file from disk. */
export async function readSafetensors(path: string): Promise<Map<string, SafeTensor>> {
  return parseSafetensors(await Deno.readFile(path), path);
}

/** Serialises float32 tensors as safetensors (`dtype` F32 or F16 for every tensor). */
export function encodeSafetensors(
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  dtype: "F32" | "F16" = "F32",
): Uint8Array {
  const header: Record<string, unknown> = {};
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const raw = dtype === "F32"
      ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
      : new Uint8Array(f32ToF16(t.data).buffer);
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + raw.length] };
    parts.push(raw);
    offset += raw.length;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
