/**
 * Checkpoint readers: every micro fixture format gives the same state dict and timm's logits; the train
 * checkpoint's metadata; the F16 tiny model; zip/pickle/npy edge cases; hostile and broken input; and a
 * full-size ViT-B/16 `.pth` round trip that must not copy the weights.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import { archConfig } from "../lib/vit/archs.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { createViT } from "../lib/vit/model.ts";
import { checkStateDict, paramSpecs, type StateDict } from "../lib/vit/params.ts";
import { parseCheckpoint, readCheckpoint } from "../lib/weights/checkpoint.ts";
import { f32ToF16 } from "../lib/weights/dtype.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { parseNpy } from "../lib/weights/npy.ts";
import { readNpzArrays } from "../lib/weights/npz.ts";
import { PickledTensor, PyGlobal, PyObject, toPlain, unpickle } from "../lib/weights/pickle.ts";
import { loadPthPickle } from "../lib/weights/pth.ts";
import { ZipArchive } from "../lib/weights/zip.ts";
import {
  encodePickle,
  encodePth,
  encodeZip,
  PthTensor,
  PyCall,
  PyFloat,
  PyInstance,
  stateDictToPth,
} from "./_pth_writer.ts";
import { assertClose, FIXTURES, golden, haveFixtures, TOL } from "./_fixtures.ts";

const MICRO = `${FIXTURES}/micro`;

function assertSameState(actual: StateDict, expected: StateDict, what: string, tol = 0): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: tensor names`);
  for (const [name, e] of expected) {
    const a = actual.get(name)!;
    assert.deepEqual(a.shape, e.shape, `${what}: shape of ${name}`);
    assert.equal(a.data.length, e.data.length, `${what}: length of ${name}`);
    let worst = 0;
    for (let i = 0; i < e.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - e.data[i]));
    assert.ok(worst <= tol, `${what}: ${name} differs by ${worst}`);
  }
}

async function microLogits(state: StateDict, goldenFile: string): Promise<void> {
  await initBackend();
  const g = await golden(goldenFile);
  const config = JSON.parse(await Deno.readTextFile(`${MICRO}/config.json`));
  const before = tf.memory().numTensors;
  const model = await createViT(config, state);
  try {
    const input = g.get("input")!;
    const logits = await model.logits(input.data as Float32Array, input.shape);
    assertClose(logits, g.get("logits")!.data, TOL.logits, `${goldenFile} logits`);
  } finally {
    model.dispose();
  }
  assert.equal(tf.memory().numTensors, before, "the model leaves no tensor behind");
}

Deno.test({
  name: "micro: .safetensors, .pth and .npz give identical state dicts",
  ignore: !haveFixtures,
  async fn() {
    const st = await readCheckpoint(`${MICRO}/micro.safetensors`);
    const pth = await readCheckpoint(`${MICRO}/micro.pth`);
    const npz = await readCheckpoint(`${MICRO}/micro.npz`);
    assert.deepEqual([st.format, pth.format, npz.format], ["safetensors", "pth", "npz"]);
    const config = JSON.parse(await Deno.readTextFile(`${MICRO}/config.json`));
    checkStateDict(paramSpecs(resolveConfig(config)), st.state, "micro.safetensors");
    // npz is the same numbers re-laid out, so exactly equal too.
    assertSameState(pth.state, st.state, "micro.pth");
    assertSameState(npz.state, st.state, "micro.npz");
    assert.equal(pth.meta.stateKey, "", "micro.pth is a bare state dict");
    assert.equal(npz.meta.npz?.keyPrefix, "", "micro.npz keys have no prefix");
    assert.deepEqual(npz.meta.npz?.unmapped, []);
  },
});

for (const file of ["micro.safetensors", "micro.pth", "micro.npz"]) {
  Deno.test({
    name: `micro: ${file} reproduces timm's logits`,
    ignore: !haveFixtures,
    async fn() {
      await microLogits((await readCheckpoint(`${MICRO}/${file}`)).state, "micro/golden.safetensors");
    },
  });
}

Deno.test({
  name: "micro train checkpoint: metadata, args as an inert record, and its weights give timm's logits",
  ignore: !haveFixtures,
  async fn() {
    const path = `${MICRO}/micro_train_checkpoint.pth.tar`;
    const ckpt = await readCheckpoint(path);
    assert.equal(ckpt.format, "pth");
    assert.equal(ckpt.meta.stateKey, "state_dict");
    assert.equal(ckpt.meta.epoch, 29);
    assert.equal(ckpt.meta.arch, "vit_micro");
    assert.equal(ckpt.meta.metric, 71.25);
    assert.equal(ckpt.meta.args?.lr, 0.03);
    assert.equal(ckpt.meta.args?.opt, "sgd");
    assert.deepEqual(
      ckpt.meta.keys,
      ["epoch", "arch", "state_dict", "optimizer", "version", "args", "metric"],
    );
    assert.ok(!("optimizer" in ckpt.meta.extra), "the optimizer state (tensors) is not metadata");
    assert.equal(ckpt.ema, undefined);
    const { root } = loadPthPickle(await Deno.readFile(path), path);
    const args = (root as Map<string, unknown>).get("args");
    assert.ok(args instanceof PyObject);
    assert.equal(args.__class__, "argparse.Namespace");
    assert.equal((args.state as Map<string, unknown>).get("batch_size"), 16);
    const momentum = ((root as Map<string, unknown>).get("optimizer") as Map<string, unknown>).get("state");
    assert.ok(
      ((momentum as Map<number, Map<string, unknown>>).get(0)!.get("momentum_buffer")) instanceof
        PickledTensor,
    );
    await microLogits(ckpt.state, "micro/golden_train_checkpoint.safetensors");
  },
});

Deno.test({
  name: "tiny F16 safetensors widens to float32 with vit_tiny_patch16_224's shapes",
  ignore: !haveFixtures,
  async fn() {
    const ckpt = await readCheckpoint(`${FIXTURES}/tiny/vit_tiny_patch16_224.f16.safetensors`);
    assert.equal(ckpt.format, "safetensors");
    checkStateDict(paramSpecs(resolveConfig(archConfig("vit_tiny_patch16_224")!)), ckpt.state, "tiny");
    for (const [name, t] of ckpt.state) {
      assert.ok(t.data instanceof Float32Array, name);
      assert.ok(t.data.every(Number.isFinite), `${name} is finite`);
    }
  },
});

Deno.test("writer round trip: strided, offset, shared, F16/BF16 storages, module. prefix, EMA, metadata", () => {
  const storage = Float32Array.from({ length: 24 }, (_, i) => i * 0.25 - 3);
  const half = f32ToF16(Float32Array.from([1, -2, 0.5, 65504, 1e-7, 3]));
  const bf16 = new Uint16Array(new Float32Array([1.5, -0.125, 256]).buffer.slice(0)).filter((_, i) =>
    i % 2 === 1
  );
  const base = new Map<string, PthTensor>([
    ["module.plain", new PthTensor([2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]))],
    // A transposed view [4, 6] of the storage seen as [6, 4].
    ["module.transposed", new PthTensor([4, 6], storage, { stride: [1, 4] })],
    // Rows 2..3 of the storage seen as [6, 4], sharing the storage above.
    ["module.offset", new PthTensor([2, 4], storage, { offset: 8 })],
    ["module.half", new PthTensor([2, 3], half, { dtype: "F16" })],
    ["module.bf16", new PthTensor([3], bf16, { dtype: "BF16" })],
  ]);
  const bytes = encodePth({
    epoch: 3,
    arch: "vit_test",
    state_dict: base,
    state_dict_ema: new Map([["module.plain", new PthTensor([2, 3], new Float32Array(6).fill(7))]]),
    args: new PyInstance("argparse.Namespace", { lr: new PyFloat(1), model: "vit_test" }),
    note: new PyInstance("some.module.Harmless", { x: [1, 2] }),
  }, { name: "roundtrip" });
  const ckpt = parseCheckpoint(bytes, "roundtrip.pth");
  assert.equal(ckpt.meta.strippedPrefix, "module.");
  assert.deepEqual([...ckpt.state.keys()], ["plain", "transposed", "offset", "half", "bf16"]);
  assert.deepEqual([...ckpt.state.get("plain")!.data], [1, 2, 3, 4, 5, 6]);
  const transposed = ckpt.state.get("transposed")!;
  assert.deepEqual(transposed.shape, [4, 6]);
  for (let r = 0; r < 4; r++) {
    for (let c = 0; c < 6; c++) assert.equal(transposed.data[r * 6 + c], storage[c * 4 + r]);
  }
  assert.deepEqual([...ckpt.state.get("offset")!.data], [...storage.subarray(8, 16)]);
  assert.deepEqual([...ckpt.state.get("half")!.data], [1, -2, 0.5, 65504, 1.1920928955078125e-7, 3]);
  assert.deepEqual([...ckpt.state.get("bf16")!.data], [1.5, -0.125, 256]);
  assert.deepEqual([...ckpt.ema!.get("plain")!.data], [7, 7, 7, 7, 7, 7]);
  assert.equal(ckpt.meta.emaKey, "state_dict_ema");
  assert.deepEqual(ckpt.meta.args, { lr: 1, model: "vit_test" });
  assert.deepEqual(ckpt.meta.extra.note, { __class__: "some.module.Harmless", x: [1, 2] });
  // The contiguous float32 tensor is a view of the archive, not a copy.
  assert.equal(ckpt.state.get("plain")!.data.buffer, bytes.buffer);
});

Deno.test("a state dict written as .pth reads back identically, stored, deflated and with ZIP64 fields", () => {
  const micro = { img_size: 16, patch_size: 8, embed_dim: 16, depth: 1, num_heads: 2, num_classes: 3 };
  const state = formulaStateDict(micro, 11);
  assertSameState(parseCheckpoint(stateDictToPth(state), "plain").state, state, "stored");
  assertSameState(
    parseCheckpoint(
      stateDictToPth(state, { zip64: true }),
      "zip64",
    ).state,
    state,
    "zip64",
  );
  // Re-zip every entry deflated: storages are then inflated copies, still identical.
  const zip = ZipArchive.open(stateDictToPth(state));
  const deflated = encodeZip(zip.entries.map((e) => ({ name: e.name, data: zip.read(e), deflate: true })));
  assert.ok(ZipArchive.open(deflated).entries.every((e) => e.method === 8));
  assertSameState(parseCheckpoint(deflated, "deflated").state, state, "deflated");
});

Deno.test({
  name: "npz: an opt/target/ key prefix and deflated arrays read the same",
  ignore: !haveFixtures,
  async fn() {
    const bytes = await Deno.readFile(`${MICRO}/micro.npz`);
    const zip = ZipArchive.open(bytes, "micro.npz");
    const prefixed = encodeZip(
      zip.entries.map((e) => ({ name: `opt/target/${e.name}`, data: zip.read(e), deflate: true })),
      { align: 1 },
    );
    const a = parseCheckpoint(bytes, "micro.npz"), b = parseCheckpoint(prefixed, "prefixed.npz");
    assert.equal(b.format, "npz");
    assert.equal(b.meta.npz?.keyPrefix, "opt/target/");
    assertSameState(b.state, a.state, "prefixed");
    assert.equal(readNpzArrays(prefixed).get("opt/target/cls")?.descr, "<f4");
  },
});

function npy(descr: string, shape: number[], payload: Uint8Array, fortran = false, version = 1): Uint8Array {
  const dict = `{'descr': '${descr}', 'fortran_order': ${fortran ? "True" : "False"}, 'shape': (${
    shape.map((s) => `${s},`).join(" ")
  }), }`;
  const lenBytes = version === 1 ? 2 : 4;
  const unpadded = 8 + lenBytes + dict.length + 1;
  const header = dict + " ".repeat((64 - (unpadded % 64)) % 64) + "\n";
  const out = new Uint8Array(8 + lenBytes + header.length + payload.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const v = new DataView(out.buffer);
  if (version === 1) v.setUint16(8, header.length, true);
  else v.setUint32(8, header.length, true);
  out.set(new TextEncoder().encode(header), 8 + lenBytes);
  out.set(payload, 8 + lenBytes + header.length);
  return out;
}

Deno.test(".npy: versions 1–3, f2/f4/f8, big-endian, Fortran order, non-float arrays", () => {
  const values = [1, 2, 3, 4, 5, 6]; // C order of [[1,2,3],[4,5,6]]
  const f4 = new Uint8Array(Float32Array.from(values).buffer);
  for (const version of [1, 2, 3]) {
    const a = parseNpy(npy("<f4", [2, 3], f4, false, version), `v${version}`);
    assert.deepEqual([a.shape, [...a.data!]], [[2, 3], values]);
  }
  assert.deepEqual([
    ...parseNpy(npy("<f2", [2, 3], new Uint8Array(f32ToF16(Float32Array.from(values)).buffer))).data!,
  ], values);
  assert.deepEqual(
    [...parseNpy(npy("<f8", [2, 3], new Uint8Array(Float64Array.from(values).buffer))).data!],
    values,
  );
  const be = new Uint8Array(24);
  values.forEach((x, i) => new DataView(be.buffer).setFloat32(i * 4, x, false));
  assert.deepEqual([...parseNpy(npy(">f4", [2, 3], be)).data!], values);
  // Fortran order stores columns first: 1,4,2,5,3,6.
  const fortran = parseNpy(
    npy("<f4", [2, 3], new Uint8Array(Float32Array.from([1, 4, 2, 5, 3, 6]).buffer), true),
  );
  assert.deepEqual([...fortran.data!], values);
  const ints = parseNpy(npy("<i8", [2], new Uint8Array(16)));
  assert.deepEqual([ints.descr, ints.shape, ints.data], ["<i8", [2], null]);
  assert.deepEqual(
    parseNpy(npy("<f4", [], new Uint8Array(Float32Array.from([9]).buffer))).data,
    Float32Array.from([9]),
  );
  assert.throws(() => parseNpy(npy("<f4", [2, 3], f4.subarray(0, 20)), "cut.npy"), /cut\.npy.*truncated/);
});

// Python's own pickles (`pickle.dumps(obj, protocol)`) of a dict with every basic type, an OrderedDict, a
// set, a frozenset, an argparse.Namespace and an object whose __reduce__ is os.system("touch
// /tmp/vit_pickle_pwned").
const PY_PICKLES: Record<number, string> = {
  0: "286470300a56696e740a70310a49370a73566e65670a70320a492d3330303030300a73566269670a70330a4c31313830" +
    "3539313632303731373431313330333432344c0a73566e65676269670a70340a4c2d3138343436373434303733373039" +
    "3535313632314c0a7356666c6f61740a70350a46312e350a73567374720a70360a5668e96c6c6f5c7530303061277127" +
    "0a70370a735662797465730a70380a635f636f646563730a656e636f64650a70390a28565c75303030300161620a7031" +
    "300a566c6174696e310a7031310a747031320a527031330a73566e6f6e650a7031340a4e7356740a7031350a4930310a" +
    "7356660a7031360a4930300a73566c6973740a7031370a286c7031380a49310a61286c7031390a49320a6149330a6161" +
    "73567475706c650a7032300a2849310a56610a7032310a747032320a7356656d7074790a7032330a287473566f640a70" +
    "32340a63636f6c6c656374696f6e730a4f726465726564446963740a7032350a2874527032360a6732310a49310a7356" +
    "620a7032370a49320a7373567365740a7032380a635f5f6275696c74696e5f5f0a7365740a7032390a28286c7033300a" +
    "49340a61747033310a527033320a735666730a7033330a635f5f6275696c74696e5f5f0a66726f7a656e7365740a7033" +
    "340a28286c7033350a49350a61747033360a527033370a73566e730a7033380a63636f70795f7265670a5f7265636f6e" +
    "7374727563746f720a7033390a286361726770617273650a4e616d6573706163650a7034300a635f5f6275696c74696e" +
    "5f5f0a6f626a6563740a7034310a4e747034320a527034330a28647034340a566c720a7034350a46302e350a73566e61" +
    "6d650a7034360a56780a7034370a736273566576696c0a7034380a63706f7369780a73797374656d0a7034390a285674" +
    "6f756368202f746d702f7669745f7069636b6c655f70776e65640a7035300a747035310a527035320a732e",
  2: "80027d7100285803000000696e7471014b0758030000006e656771024a206cfbff580300000062696771038a09000000" +
    "00000000004058060000006e656762696771048a09fbfffffffffffffffe5805000000666c6f61747105473ff8000000" +
    "00000058030000007374727106580a00000068c3a96c6c6f0a2771277107580500000062797465737108635f636f6465" +
    "63730a656e636f64650a7109580400000000016162710a58060000006c6174696e31710b86710c52710d58040000006e" +
    "6f6e65710e4e580100000074710f8858010000006671108958040000006c69737471115d7112284b015d7113284b024b" +
    "03656558050000007475706c6571144b0158010000006171158671165805000000656d70747971172958020000006f64" +
    "711863636f6c6c656374696f6e730a4f726465726564446963740a71192952711a2868154b01580100000062711b4b02" +
    "755803000000736574711c635f5f6275696c74696e5f5f0a7365740a711d5d711e4b046185711f527120580200000066" +
    "737121635f5f6275696c74696e5f5f0a66726f7a656e7365740a71225d71234b056185712452712558020000006e7371" +
    "266361726770617273650a4e616d6573706163650a7127298171287d71292858020000006c72712a473fe00000000000" +
    "0058040000006e616d65712b580100000078712c756258040000006576696c712d63706f7369780a73797374656d0a71" +
    "2e581b000000746f756368202f746d702f7669745f7069636b6c655f70776e6564712f857130527131752e",
  5: "80059573010000000000007d94288c03696e74944b078c036e6567944a206cfbff8c03626967948a0900000000000000" +
    "00408c066e6567626967948a09fbfffffffffffffffe8c05666c6f617494473ff80000000000008c03737472948c0a68" +
    "c3a96c6c6f0a277127948c05627974657394430400016162948c046e6f6e65944e8c017494888c016694898c046c6973" +
    "74945d94284b015d94284b024b0365658c057475706c65944b018c01619486948c05656d70747994298c026f64948c0b" +
    "636f6c6c656374696f6e73948c0b4f726465726564446963749493942952942868114b018c0162944b02758c03736574" +
    "948f94284b04908c02667394284b0591948c026e73948c086172677061727365948c094e616d65737061636594939429" +
    "81947d94288c026c7294473fe00000000000008c046e616d65948c01789475628c046576696c948c05706f736978948c" +
    "0673797374656d9493948c1b746f756368202f746d702f7669745f7069636b6c655f70776e65649485945294752e",
};

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g)!.map((h) => parseInt(h, 16)));
}

for (const [protocol, data] of Object.entries(PY_PICKLES)) {
  Deno.test(`unpickle: Python's protocol ${protocol} pickle of every basic type; os.system stays inert`, () => {
    const marker = "/tmp/vit_pickle_pwned";
    try {
      Deno.removeSync(marker);
    } catch {
      // absent, as it should be
    }
    const value = unpickle(hex(data), { source: `protocol ${protocol}` }) as Map<string, unknown>;
    assert.equal(value.get("int"), 7);
    assert.equal(value.get("neg"), -300000);
    assert.equal(value.get("big"), 2n ** 70n);
    assert.equal(value.get("negbig"), -(2n ** 64n) - 5n);
    assert.equal(value.get("float"), 1.5);
    assert.equal(value.get("str"), "héllo\n'q'");
    assert.deepEqual(value.get("bytes"), Uint8Array.from([0, 1, 97, 98]));
    assert.deepEqual([value.get("none"), value.get("t"), value.get("f")], [null, true, false]);
    assert.deepEqual(value.get("list"), [1, [2, 3]]);
    assert.deepEqual(value.get("tuple"), [1, "a"]);
    assert.deepEqual(value.get("empty"), []);
    assert.deepEqual(value.get("od"), new Map([["a", 1], ["b", 2]]));
    assert.deepEqual([value.get("set"), value.get("fs")], [[4], [5]]);
    const ns = value.get("ns");
    assert.ok(ns instanceof PyObject);
    assert.equal(ns.__class__, "argparse.Namespace");
    assert.deepEqual(toPlain(ns), { __class__: "argparse.Namespace", lr: 0.5, name: "x" });
    const evil = value.get("evil");
    assert.ok(evil instanceof PyObject, "a call of os.system is a record, not a call");
    assert.match(evil.__class__, /^(posix|os)\.system$/);
    assert.deepEqual(evil.args, ["touch /tmp/vit_pickle_pwned"]);
    assert.throws(() => Deno.statSync(marker), Deno.errors.NotFound, "nothing was executed");
  });
}

Deno.test("a .pth whose pickle calls os.system or an unknown class loads; the calls are inert records", () => {
  const bytes = encodePth({
    state_dict: new Map([["w", new PthTensor([2], Float32Array.from([1, 2]))]]),
    hook: new PyCall("os.system", ["touch /tmp/vit_pth_pwned"]),
    builtin: new PyCall("builtins.eval", ["__import__('os').system('touch /tmp/vit_pth_pwned')"]),
    thing: new PyCall("some.lib.Thing", [1, "two"]),
  });
  const ckpt = parseCheckpoint(bytes, "hostile.pth");
  assert.deepEqual([...ckpt.state.get("w")!.data], [1, 2]);
  assert.deepEqual(ckpt.meta.extra.hook, { __class__: "os.system", args: ["touch /tmp/vit_pth_pwned"] });
  assert.equal((ckpt.meta.extra.builtin as { __class__: string }).__class__, "builtins.eval");
  assert.deepEqual(ckpt.meta.extra.thing, { __class__: "some.lib.Thing", args: [1, "two"] });
  assert.throws(() => Deno.statSync("/tmp/vit_pth_pwned"), Deno.errors.NotFound);
  const global = unpickle(encodePickle(new PyCall("subprocess.Popen", [["rm", "-rf", "/"]])));
  assert.ok(
    global instanceof PyObject && global.kind === "reduce" && global.__class__ === "subprocess.Popen",
  );
  assert.ok(!(global instanceof PyGlobal));
});

Deno.test("broken input: truncated and corrupt archives, legacy torch files, pickled models, bad pickles", () => {
  const state = new Map([["w", { shape: [4], data: Float32Array.from([1, 2, 3, 4]) }]]);
  const good = stateDictToPth(state, { name: "ok" });
  assert.throws(() => parseCheckpoint(good.subarray(0, good.length - 10), "cut.pth"), /cut\.pth.*truncated/);
  assert.throws(() => parseCheckpoint(good.subarray(0, 100), "short.pth"), /short\.pth.*truncated/);

  const corrupt = good.slice();
  const data = ZipArchive.open(corrupt).read("ok/data/0");
  corrupt[data.byteOffset + 5] ^= 0xff;
  assert.throws(
    () => parseCheckpoint(corrupt, "bad.pth"),
    /bad\.pth: zip entry "ok\/data\/0": CRC-32 mismatch/,
  );

  // Pre-1.6 torch.save: a raw pickle stream starting with the legacy magic number; and the older tar format.
  const legacy = hex("80028a0a6cfc9c46f9206aa850192e");
  assert.throws(
    () => parseCheckpoint(legacy, "old.pth"),
    /old\.pth: a legacy PyTorch checkpoint.*[Rr]e-save/,
  );
  const tar = new Uint8Array(1024);
  tar.set(new TextEncoder().encode("ustar"), 257);
  assert.throws(() => parseCheckpoint(tar, "old.tar"), /old\.tar: a legacy PyTorch checkpoint/);

  const model = encodePth(
    new PyInstance("timm.models.vision_transformer.VisionTransformer", { training: false }),
  );
  assert.throws(() => parseCheckpoint(model, "model.pth"), /model\.pth.*VisionTransformer.*state_dict\(\)/);
  const noState = encodePth({ epoch: 1, weights: [1, 2] });
  assert.throws(
    () => parseCheckpoint(noState, "nostate.pth"),
    /nostate\.pth: no state dict found.*epoch, weights/,
  );

  assert.throws(() => unpickle(hex("80027d71"), { source: "cut.pkl" }), /cut\.pkl.*truncated/);
  assert.throws(() => unpickle(hex("80025d"), { source: "nostop.pkl" }), /nostop\.pkl.*truncated/);
  assert.throws(
    () => unpickle(hex("8002ff"), { source: "junk.pkl" }),
    /junk\.pkl: pickle opcode 0xff at byte 2/,
  );
  assert.throws(() => unpickle(hex("80026a0500000071"), { source: "memo.pkl" }), /memo key 5/);
  assert.throws(() => unpickle(hex("800282012e"), { source: "ext.pkl" }), /extension registry/);
  assert.throws(() => parseCheckpoint(new Uint8Array(4), "empty.bin"), /empty\.bin/);
});

Deno.test({
  name: "ViT-B/16 (344 MB) formula state dict as .pth: identical on read, no weight copied",
  async fn() {
    const state = formulaStateDict(archConfig("vit_base_patch16_224")!);
    let bytes: Uint8Array | undefined = stateDictToPth(state, { name: "vit_base" });
    const size = bytes.length;
    const path = await Deno.makeTempFile({ suffix: ".pth" });
    try {
      await Deno.writeFile(path, bytes);
      bytes = undefined;
      const rss0 = Deno.memoryUsage().rss;
      const t0 = performance.now();
      const ckpt = await readCheckpoint(path);
      const ms = performance.now() - t0;
      const grew = Deno.memoryUsage().rss - rss0;
      console.log(
        `ViT-B/16 .pth: ${(size / 2 ** 20).toFixed(0)} MiB read in ${ms.toFixed(0)} ms, ` +
          `RSS +${(grew / 2 ** 20).toFixed(0)} MiB`,
      );
      assert.ok(grew < 3 * size, `loading grew RSS by ${grew} bytes for a ${size}-byte file`);
      const buffers = new Set([...ckpt.state.values()].map((t) => t.data.buffer));
      assert.equal(buffers.size, 1, "every tensor is a view of the one archive buffer");
      assertSameState(ckpt.state, state, "ViT-B/16");
    } finally {
      await Deno.remove(path);
    }
  },
});
