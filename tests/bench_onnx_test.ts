/**
 * The bench's pure helpers: the protobuf codec, the ONNX weight embedding (inputs and tied aliases become
 * initializers), the Markdown splice, and — when onnxruntime-node loads and the shared anchor and fixtures
 * exist — that the embedded ONNX anchor reproduces timm's golden ViT-B/16 logits (the anchor is honest).
 */
import assert from "node:assert/strict";
import { embedWeights } from "../lib/bench/onnx_anchor.ts";
import {
  bytesField,
  decodeMessage,
  encodeMessage,
  type Field,
  fieldText,
  packedVarints,
  varintField,
} from "../lib/onnx/protobuf.ts";
import { BEGIN, END, spliceGenerated } from "../lib/bench/report.ts";
import { median } from "../lib/bench/stats.ts";
import type { StateDict } from "../lib/vit/params.ts";
import { FIXTURES, present, relError, SHARED, TOL } from "./_fixtures.ts";

Deno.test("protobuf: fields survive a round trip, including 64-bit and negative varints", () => {
  const fields: Field[] = [
    varintField(1, 7),
    varintField(2, -1),
    varintField(3, 2n ** 40n + 3n),
    bytesField(4, "héllo"),
    packedVarints(5, [1, 300, 70000]),
    { no: 6, wire: 5, bytes: new Uint8Array([1, 2, 3, 4]) },
    { no: 7, wire: 1, bytes: new Uint8Array(8).fill(9) },
  ];
  const back = decodeMessage(encodeMessage(fields));
  assert.equal(back.length, fields.length);
  assert.equal(back[0].varint, 7n);
  assert.equal(BigInt.asIntN(64, back[1].varint!), -1n);
  assert.equal(back[2].varint, 2n ** 40n + 3n);
  assert.equal(fieldText(back[3]), "héllo");
  assert.deepEqual([...back[4].bytes!], [1, 0xac, 0x02, 0xf0, 0xa2, 0x04], "packed varints 1, 300, 70000");
  assert.deepEqual([...back[5].bytes!], [1, 2, 3, 4]);
  assert.deepEqual([...back[6].bytes!], new Array(8).fill(9));
  assert.deepEqual(encodeMessage(back), encodeMessage(fields));
});

Deno.test("protobuf: a truncated message is an error naming it", () => {
  const bytes = encodeMessage([bytesField(1, "abcdef")]);
  assert.throws(
    () => decodeMessage(bytes.subarray(0, 4), "model.onnx"),
    /model\.onnx: field 1 claims 6 bytes/,
  );
});

// A miniature ModelProto: graph inputs `x` (image) and `w` [2,3], an `Identity(w) -> w2` alias, a MatMul.
function valueInfo(name: string, dims: number[]): Field {
  const shape = encodeMessage(dims.map((d) => bytesField(1, encodeMessage([varintField(1, d)]))));
  const tensorType = encodeMessage([varintField(1, 1), bytesField(2, shape)]);
  return bytesField(
    11,
    encodeMessage([bytesField(1, name), bytesField(2, encodeMessage([bytesField(1, tensorType)]))]),
  );
}

function node(op: string, inputs: string[], outputs: string[]): Field {
  return bytesField(
    1,
    encodeMessage([
      ...inputs.map((i) => bytesField(1, i)),
      ...outputs.map((o) => bytesField(2, o)),
      bytesField(4, op),
    ]),
  );
}

function miniModel(wDims = [2, 3]): Uint8Array {
  const graph = encodeMessage([
    node("Identity", ["w"], ["w2"]),
    node("MatMul", ["x", "w2"], ["y"]),
    bytesField(2, "g"),
    valueInfo("x", [1, 2]),
    valueInfo("w", wDims),
    bytesField(12, encodeMessage([bytesField(1, "y")])),
  ]);
  return encodeMessage([
    varintField(1, 7),
    bytesField(7, graph),
    bytesField(8, encodeMessage([varintField(2, 14)])),
  ]);
}

const miniState: StateDict = new Map([
  ["w", { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }],
  ["w2", { shape: [2, 3], data: new Float32Array([6, 5, 4, 3, 2, 1]) }],
]);

Deno.test("embedWeights: parameter inputs and tied Identity aliases become float32 initializers", () => {
  const r = embedWeights(miniModel(), miniState, "mini.onnx");
  assert.equal(r.fromInputs, 1);
  assert.equal(r.untied, 1);
  assert.deepEqual(r.inputs, ["x"]);
  const model = decodeMessage(r.model);
  assert.deepEqual(model.map((f) => f.no), [1, 7, 8], "other model fields pass through in order");
  const graph = decodeMessage(model.find((f) => f.no === 7)!.bytes!);
  const ops = graph.filter((f) => f.no === 1).map((f) =>
    fieldText(decodeMessage(f.bytes!).find((x) => x.no === 4)!)
  );
  assert.deepEqual(ops, ["MatMul"], "the alias node is gone");
  assert.deepEqual(graph.filter((f) => f.no === 11).length, 1);
  const inits = graph.filter((f) => f.no === 5).map((f) => decodeMessage(f.bytes!));
  assert.equal(inits.length, 2);
  for (const t of inits) {
    const name = fieldText(t.find((x) => x.no === 8)!);
    assert.deepEqual(t.filter((x) => x.no === 1).map((x) => Number(x.varint)), [2, 3], `${name} dims`);
    assert.equal(t.find((x) => x.no === 2)!.varint, 1n, `${name} is FLOAT`);
    const raw = t.find((x) => x.no === 9)!.bytes!;
    const values = new Float32Array(raw.slice().buffer);
    assert.deepEqual([...values], [...miniState.get(name)!.data], `${name} raw_data`);
  }
});

Deno.test("embedWeights: a shape mismatch or an unused weight is an error naming the tensor", () => {
  assert.throws(
    () => embedWeights(miniModel([3, 2]), miniState, "mini.onnx"),
    /mini\.onnx: input "w" has shape \[3,2\]/,
  );
  const extra: StateDict = new Map([...miniState, ["head.bias", { shape: [1], data: new Float32Array(1) }]]);
  assert.throws(() => embedWeights(miniModel(), extra, "mini.onnx"), /head\.bias/);
});

Deno.test("report: the generated block is replaced, the text around it kept", () => {
  const first = spliceGenerated("# Benchmarks\n\nhand-written\n", "table 1");
  assert.match(first, /hand-written/);
  assert.ok(first.includes(`${BEGIN}\ntable 1\n${END}`));
  const second = spliceGenerated(first + "\nafter\n", "table 2");
  assert.ok(second.includes("table 2") && !second.includes("table 1"));
  assert.match(second, /hand-written[\s\S]*table 2[\s\S]*after/);
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
});

const ANCHOR = `${SHARED}/anchors/vit_base_patch16_224.noparams.onnx`;
const haveAnchor = present(ANCHOR, "ONNX anchor test") &&
  present(`${FIXTURES}/base/golden.safetensors`, "ONNX anchor test");

Deno.test({
  name: "ONNX anchor: onnxruntime-node with the formula weights embedded gives timm's golden ViT-B/16 logits",
  ignore: !haveAnchor,
  async fn() {
    const { openOrtAnchor } = await import("../lib/bench/onnx_anchor.ts");
    const { formulaStateDict } = await import("../lib/weights/formula.ts");
    const { archConfig } = await import("../lib/vit/archs.ts");
    const { readSafetensors } = await import("../lib/weights/safetensors.ts");
    const embedded = embedWeights(
      await Deno.readFile(ANCHOR),
      formulaStateDict(archConfig("vit_base_patch16_224")!),
      ANCHOR,
    );
    assert.deepEqual(embedded.inputs, ["pixel_values"]);
    assert.equal(embedded.fromInputs + embedded.untied, 152, "every ViT-B/16 parameter is embedded");
    const anchor = await openOrtAnchor(embedded.model, 2);
    try {
      const g = await readSafetensors(`${FIXTURES}/base/golden.safetensors`);
      const input = g.get("input")!;
      const logits = await anchor.run(input.data as Float32Array, input.shape);
      const err = relError(logits, g.get("logits")!.data);
      assert.ok(err <= TOL.logits, `ONNX anchor logits off by ${err}`);
    } finally {
      await anchor.release();
    }
  },
});
