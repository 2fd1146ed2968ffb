/**
 * The protobuf wire format, just enough to write and edit ONNX models: a message is read as a flat list of
 * fields that keep their raw bytes, so a message can be re-encoded with some fields changed and every other
 * field passed through untouched (unknown fields included). Embedded messages can also be given as fields
 * ({@linkcode messageField}) and are then written straight into the one output buffer, so a model with
 * hundreds of megabytes of weights is copied once, not once per nesting level.
 *
 * Hand-written rather than protobufjs: the bench and the engine need only the wire format of a handful of
 * ONNX messages, and writing a 344 MB model with one copy needs the size-first encoder below anyway.
 *
 * @module
 */

/** Protobuf wire types used by ONNX: varint, 64-bit, length-delimited, 32-bit. */
export type WireType = 0 | 1 | 2 | 5;

/** One field of a message as it appears on the wire. */
export interface Field {
  /** The field number. */
  no: number;
  wire: WireType;
  /** The value of a varint field (as bigint: int64 values do not fit a number). */
  varint?: bigint;
  /** The payload: the bytes of a length-delimited field, or the 4 / 8 raw bytes of a fixed field. */
  bytes?: Uint8Array;
  /** An embedded message not yet encoded (length-delimited fields made by {@linkcode messageField}). */
  fields?: readonly Field[];
}

function readVarint(buf: Uint8Array, at: number, what: string): [bigint, number] {
  let value = 0n, shift = 0n;
  for (let i = at; i < buf.length; i++) {
    const b = buf[i];
    value |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return [value, i + 1];
    shift += 7n;
    if (shift > 63n) throw new Error(`${what}: varint longer than 10 bytes at byte ${at}`);
  }
  throw new Error(`${what}: truncated varint at byte ${at}`);
}

/** Splits a message into its fields, in wire order. `what` names the message in errors. */
export function decodeMessage(buf: Uint8Array, what = "protobuf message"): Field[] {
  const fields: Field[] = [];
  let at = 0;
  while (at < buf.length) {
    const [key, next] = readVarint(buf, at, what);
    at = next;
    const no = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (no < 1) throw new Error(`${what}: field number ${no} at byte ${at} is invalid`);
    if (wire === 0) {
      const [v, after] = readVarint(buf, at, what);
      fields.push({ no, wire, varint: v });
      at = after;
    } else if (wire === 2) {
      const [len, after] = readVarint(buf, at, what);
      const end = after + Number(len);
      if (end > buf.length) {
        throw new Error(`${what}: field ${no} claims ${len} bytes, only ${buf.length - after} remain`);
      }
      fields.push({ no, wire, bytes: buf.subarray(after, end) });
      at = end;
    } else if (wire === 1 || wire === 5) {
      const size = wire === 1 ? 8 : 4;
      if (at + size > buf.length) throw new Error(`${what}: truncated fixed field ${no}`);
      fields.push({ no, wire, bytes: buf.subarray(at, at + size) });
      at += size;
    } else {
      throw new Error(`${what}: unsupported wire type ${wire} (field ${no}, byte ${at})`);
    }
  }
  return fields;
}

function varintBytes(value: bigint): number[] {
  // Negative int32/int64 values are encoded as their 64-bit two's complement.
  let v = BigInt.asUintN(64, value);
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

/** A varint field. */
export function varintField(no: number, value: number | bigint): Field {
  return { no, wire: 0, varint: BigInt(value) };
}

/** A length-delimited field (bytes, string, or embedded message). */
export function bytesField(no: number, value: Uint8Array | string): Field {
  return { no, wire: 2, bytes: typeof value === "string" ? new TextEncoder().encode(value) : value };
}

/** A length-delimited field holding an embedded message, encoded together with its parent. */
export function messageField(no: number, fields: readonly Field[]): Field {
  return { no, wire: 2, fields };
}

/** A packed repeated varint field (e.g. ONNX `TensorProto.dims`). */
export function packedVarints(no: number, values: readonly (number | bigint)[]): Field {
  return bytesField(no, new Uint8Array(values.flatMap((v) => varintBytes(BigInt(v)))));
}

function payloadSize(f: Field, sizes: Map<Field, number>): number {
  if (f.wire === 0) return 0;
  if (f.fields) {
    let n = 0;
    for (const c of f.fields) n += fieldSize(c, sizes);
    sizes.set(f, n);
    return n;
  }
  return f.bytes!.length;
}

function fieldSize(f: Field, sizes: Map<Field, number>): number {
  const key = varintBytes(BigInt((f.no << 3) | f.wire)).length;
  if (f.wire === 0) return key + varintBytes(f.varint ?? 0n).length;
  const n = payloadSize(f, sizes);
  return key + (f.wire === 2 ? varintBytes(BigInt(n)).length : 0) + n;
}

function writeFields(
  fields: readonly Field[],
  out: Uint8Array,
  at: number,
  sizes: Map<Field, number>,
): number {
  for (const f of fields) {
    const head = varintBytes(BigInt((f.no << 3) | f.wire));
    if (f.wire === 0) head.push(...varintBytes(f.varint ?? 0n));
    else if (f.wire === 2) head.push(...varintBytes(BigInt(f.fields ? sizes.get(f)! : f.bytes!.length)));
    out.set(head, at);
    at += head.length;
    if (f.fields) at = writeFields(f.fields, out, at, sizes);
    else if (f.wire !== 0) {
      out.set(f.bytes!, at);
      at += f.bytes!.length;
    }
  }
  return at;
}

/** Serialises fields back into a message, in the order given; embedded messages are written in place. */
export function encodeMessage(fields: readonly Field[]): Uint8Array {
  const sizes = new Map<Field, number>();
  let total = 0;
  for (const f of fields) total += fieldSize(f, sizes);
  const out = new Uint8Array(total);
  const end = writeFields(fields, out, 0, sizes);
  if (end !== total) throw new Error(`internal: protobuf encoder wrote ${end} bytes, sized ${total}`);
  return out;
}

/** The UTF-8 text of a length-delimited field. */
export function fieldText(f: Field): string {
  if (f.wire !== 2 || !f.bytes) throw new Error(`field ${f.no} is not length-delimited`);
  return new TextDecoder().decode(f.bytes);
}
