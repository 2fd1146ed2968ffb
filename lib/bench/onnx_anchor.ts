/**
 * The ONNX Runtime anchor: timm's `vit_base_patch16_224` exported to ONNX without parameters
 * (`../shared/anchors`) is rewritten so the project's weights are embedded as initializers, then run with
 * `onnxruntime-node` on the same CPU as the project's backends.
 *
 * The exported graph does not take every parameter as an input: the exporter noticed that timm's freshly
 * initialised weights were equal (every LayerNorm weight 1, most biases 0) and tied them, so e.g.
 * `blocks.7.norm1.weight` is `Identity(blocks.0.norm1.weight)`. Feeding different weights without undoing
 * that would silently run a different model, so {@linkcode embedWeights} unties every such alias as well.
 *
 * @module
 */
import type { StateDict } from "../vit/params.ts";
import { DataType, tensorProto } from "../onnx/graph.ts";
import { loadOrt, openSession, type OrtSession } from "../onnx/ort.ts";
import { decodeMessage, encodeMessage, type Field, fieldText, messageField } from "../onnx/protobuf.ts";

// Field numbers from onnx.proto.
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1, GRAPH_INITIALIZER = 5, GRAPH_INPUT = 11;
const NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_OP_TYPE = 4;
const VALUE_NAME = 1, VALUE_TYPE = 2;
const TYPE_TENSOR = 1, TENSOR_TYPE_SHAPE = 2, SHAPE_DIM = 1, DIM_VALUE = 1;
const TENSOR_NAME = 8;

/** What {@linkcode embedWeights} did. */
export interface EmbedResult {
  /** The rewritten ModelProto. */
  model: Uint8Array;
  /** Graph inputs turned into initializers. */
  fromInputs: number;
  /** `Identity` aliases of another parameter replaced by their own initializer. */
  untied: number;
  /** The graph inputs left (the image input). */
  inputs: string[];
}

function child(fields: Field[], no: number): Field | undefined {
  return fields.find((f) => f.no === no);
}

/** The static dims of a ValueInfoProto's tensor type (`-1` for a symbolic dim), or undefined when absent. */
function valueDims(info: Field[]): number[] | undefined {
  const type = child(info, VALUE_TYPE);
  const tensor = type && child(decodeMessage(type.bytes!), TYPE_TENSOR);
  const shape = tensor && child(decodeMessage(tensor.bytes!), TENSOR_TYPE_SHAPE);
  if (!shape) return undefined;
  return decodeMessage(shape.bytes!).filter((f) => f.no === SHAPE_DIM).map((d) => {
    const v = child(decodeMessage(d.bytes!), DIM_VALUE);
    return v ? Number(v.varint) : -1;
  });
}

/**
 * Rewrites an ONNX model whose parameters are graph inputs (or `Identity` aliases of other parameters) into
 * one with every tensor of `state` embedded as a float32 initializer. Throws, naming the tensor, when a graph
 * input's static shape disagrees with the state dict, or when a state-dict tensor is not used by the graph.
 */
export function embedWeights(onnx: Uint8Array, state: StateDict, source = "onnx model"): EmbedResult {
  const model = decodeMessage(onnx, source);
  const graphIndex = model.findIndex((f) => f.no === MODEL_GRAPH);
  if (graphIndex < 0) throw new Error(`${source}: no graph in the model`);
  const graph = decodeMessage(model[graphIndex].bytes!, `${source} graph`);
  const placed = new Set<string>();
  const newGraph: Field[] = [];
  const inputs: string[] = [];
  let fromInputs = 0, untied = 0;
  for (const f of graph) {
    if (f.no === GRAPH_INPUT) {
      const info = decodeMessage(f.bytes!, `${source} input`);
      const name = fieldText(child(info, VALUE_NAME)!);
      const tensor = state.get(name);
      if (!tensor) {
        newGraph.push(f);
        inputs.push(name);
        continue;
      }
      const dims = valueDims(info);
      if (
        dims && (dims.length !== tensor.shape.length || dims.some((d, i) => d >= 0 && d !== tensor.shape[i]))
      ) {
        throw new Error(`${source}: input "${name}" has shape [${dims}], the weights have [${tensor.shape}]`);
      }
      placed.add(name);
      fromInputs++;
      continue;
    }
    if (f.no === GRAPH_NODE) {
      const node = decodeMessage(f.bytes!, `${source} node`);
      const op = fieldText(child(node, NODE_OP_TYPE)!);
      const outs = node.filter((x) => x.no === NODE_OUTPUT).map(fieldText);
      const ins = node.filter((x) => x.no === NODE_INPUT).map(fieldText);
      if (
        op === "Identity" && outs.length === 1 && state.has(outs[0]) && ins.length === 1 && state.has(ins[0])
      ) {
        placed.add(outs[0]);
        untied++;
        continue;
      }
    }
    if (f.no === GRAPH_INITIALIZER) {
      const tensor = decodeMessage(f.bytes!, `${source} initializer`);
      const name = fieldText(child(tensor, TENSOR_NAME)!);
      if (state.has(name)) continue; // replaced by the state dict's value below
    }
    newGraph.push(f);
  }
  const unused = [...state.keys()].filter((k) => !placed.has(k));
  if (unused.length) {
    throw new Error(
      `${source}: ${unused.length} weight(s) are neither graph inputs nor parameter aliases: ` +
        unused.slice(0, 5).join(", "),
    );
  }
  for (const name of placed) {
    const t = state.get(name)!;
    newGraph.push(tensorProto(GRAPH_INITIALIZER, name, t.shape, DataType.FLOAT, t.data));
  }
  const newModel = model.slice();
  newModel[graphIndex] = messageField(MODEL_GRAPH, newGraph);
  return { model: encodeMessage(newModel), fromInputs, untied, inputs };
}

/** A running ONNX Runtime session for an image model: logits for a batch of NCHW images. */
export interface OrtAnchor extends OrtSession {
  /** `onnxruntime-node`'s version. */
  version: string;
}

/**
 * Opens `onnxruntime-node` (CPU execution provider) on an embedded model with `threads` intra-op threads and
 * otherwise ONNX Runtime's defaults (spinning threads included), as a user of the package runs it. When the
 * package cannot load, the error says why.
 */
export async function openOrtAnchor(model: Uint8Array, threads: number): Promise<OrtAnchor> {
  const loaded = await loadOrt();
  if ("error" in loaded) throw new Error(loaded.error);
  return { version: loaded.version, ...(await openSession(model, { threads, spinning: true })) };
}
