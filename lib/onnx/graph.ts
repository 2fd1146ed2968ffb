/**
 * A small ONNX graph writer: nodes, attributes, initializers and graph inputs/outputs as protobuf fields,
 * encoded into one `ModelProto` by {@linkcode GraphBuilder.encode}. Initializers reference the caller's
 * arrays until then, so a model's weights are copied once, into the model bytes.
 *
 * Field numbers are those of onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
 * ValueInfoProto, TypeProto, OperatorSetIdProto).
 *
 * @module
 */
import { bytesField, encodeMessage, type Field, messageField, varintField } from "./protobuf.ts";

/** ONNX `TensorProto.DataType` values used here. */
export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7 } as const;

/** An ONNX tensor element type (a {@linkcode DataType} value). */
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

/** An opset the model imports: `""` is the default ONNX domain. */
export interface Opset {
  domain: string;
  version: number;
}

/** An attribute value: a number is an INT unless given as `{ f }`; arrays are INTS. */
export type AttrValue = number | { f: number } | string | number[];

const ATTR = { name: 1, f: 2, i: 3, s: 4, ints: 8, type: 20 };
const ATTR_TYPE = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 };

function attribute(name: string, value: AttrValue): Field {
  const fields: Field[] = [bytesField(ATTR.name, name)];
  if (typeof value === "number") {
    fields.push(varintField(ATTR.i, value), varintField(ATTR.type, ATTR_TYPE.INT));
  } else if (typeof value === "string") {
    fields.push(bytesField(ATTR.s, value), varintField(ATTR.type, ATTR_TYPE.STRING));
  } else if (Array.isArray(value)) {
    // Unpacked, as onnx.proto (proto2) declares it; every protobuf reader accepts both forms.
    fields.push(...value.map((v) => varintField(ATTR.ints, v)), varintField(ATTR.type, ATTR_TYPE.INTS));
  } else {
    const bytes = new Uint8Array(new Float32Array([value.f]).buffer);
    fields.push({ no: ATTR.f, wire: 5, bytes }, varintField(ATTR.type, ATTR_TYPE.FLOAT));
  }
  return messageField(5, fields);
}

/** A `TensorProto` field with raw little-endian data (no copy: the bytes are referenced until encoding). */
export function tensorProto(
  no: number,
  name: string,
  dims: readonly number[],
  type: DataTypeCode,
  data: ArrayBufferView,
): Field {
  return messageField(no, [
    ...dims.map((d) => varintField(1, d)),
    varintField(2, type),
    bytesField(8, name),
    // ONNX raw_data is little-endian; so is every platform Deno runs on.
    bytesField(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength)),
  ]);
}

function valueInfo(no: number, name: string, type: DataTypeCode, dims: readonly (number | string)[]): Field {
  const shape = dims.map((d) =>
    messageField(1, [typeof d === "number" ? varintField(1, d) : bytesField(2, d)])
  );
  const tensorType = messageField(1, [varintField(1, type), messageField(2, shape)]);
  return messageField(no, [bytesField(1, name), messageField(2, [tensorType])]);
}

/** Builds one ONNX graph; every added value gets a unique name. */
export class GraphBuilder {
  readonly #nodes: Field[] = [];
  readonly #initializers: Field[] = [];
  readonly #inputs: Field[] = [];
  readonly #outputs: Field[] = [];
  readonly #consts = new Map<string, string>();
  #next = 0;

  constructor(readonly name: string) {}

  /** Declares a graph input; a string dim is symbolic (e.g. `"batch"`). */
  input(name: string, type: DataTypeCode, dims: readonly (number | string)[]): string {
    this.#inputs.push(valueInfo(11, name, type, dims));
    return name;
  }

  /** Declares a graph output. */
  output(name: string, type: DataTypeCode, dims: readonly (number | string)[]): void {
    this.#outputs.push(valueInfo(12, name, type, dims));
  }

  /** Adds an initializer (a weight); `data` is referenced, not copied, until {@linkcode encode}. */
  initializer(
    name: string,
    dims: readonly number[],
    data: ArrayBufferView,
    type: DataTypeCode = DataType.FLOAT,
  ): string {
    this.#initializers.push(tensorProto(5, name, dims, type, data));
    return name;
  }

  /** An int64 constant (shared between uses), e.g. a Reshape target. `dims` defaults to a 1-D tensor. */
  int64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `i64:${dims}:${values}`;
    let name = this.#consts.get(key);
    if (!name) {
      name = `const_${this.#consts.size}`;
      this.initializer(name, dims, new BigInt64Array(values.map(BigInt)), DataType.INT64);
      this.#consts.set(key, name);
    }
    return name;
  }

  /** A float32 scalar constant (shared between uses). */
  float(value: number): string {
    const key = `f32:${value}`;
    let name = this.#consts.get(key);
    if (!name) {
      name = `const_${this.#consts.size}`;
      this.initializer(name, [], new Float32Array([value]));
      this.#consts.set(key, name);
    }
    return name;
  }

  /**
   * Adds a node and returns its output names (`outputs` of them, 1 by default). An empty input name is an
   * omitted optional input.
   */
  nodeN(
    op: string,
    inputs: readonly string[],
    attrs: Record<string, AttrValue> = {},
    outputs = 1,
    domain = "",
  ): string[] {
    const id = this.#next++;
    const outs = Array.from({ length: outputs }, (_, i) => `${op}_${id}${outputs > 1 ? `_${i}` : ""}`);
    this.#nodes.push(messageField(1, [
      ...inputs.map((i) => bytesField(1, i)),
      ...outs.map((o) => bytesField(2, o)),
      bytesField(3, `${op}_${id}`),
      bytesField(4, op),
      ...Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      ...(domain ? [bytesField(7, domain)] : []),
    ]));
    return outs;
  }

  /** Adds a node with one output and returns its name. */
  node(op: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, domain = ""): string {
    return this.nodeN(op, inputs, attrs, 1, domain)[0];
  }

  /** Renames the output of the last node added (to give a graph output its public name). */
  renameLast(output: string): string {
    const last = this.#nodes.pop()!;
    const fields = last.fields!.map((f) => (f.no === 2 ? bytesField(2, output) : f));
    this.#nodes.push(messageField(1, fields));
    return output;
  }

  /** Encodes the `ModelProto`. */
  encode(opsets: readonly Opset[], irVersion: number, producer = "vit-deno"): Uint8Array {
    const graph = [
      ...this.#nodes,
      bytesField(2, this.name),
      ...this.#initializers,
      ...this.#inputs,
      ...this.#outputs,
    ];
    return encodeMessage([
      varintField(1, irVersion),
      bytesField(2, producer),
      messageField(7, graph),
      ...opsets.map((o) => messageField(8, [bytesField(1, o.domain), varintField(2, o.version)])),
    ]);
  }
}
