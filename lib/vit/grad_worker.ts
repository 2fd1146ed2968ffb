/**
 * A data-parallel training worker (see grad_pool.ts): a copy of the model on its own single-threaded
 * tfjs-wasm, answering each step with its chunks' losses, their gradients written to shared memory.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { parentPort } from "node:worker_threads";
import { initWorkerBackend } from "../backend/backend.ts";
import { type ChunkLayout, type FromWorker, paramOffsets, type ToWorker } from "./grad_pool.ts";
import { createViT, type ViTModel } from "./model.ts";
import { type HostTensor, type ParamSpec, paramSpecs, type StateDict, toTimmLayout } from "./params.ts";

const port = parentPort!;
let model: ViTModel | undefined;
let weights: Float32Array;
let offsets: Map<string, number>;
let specs: ParamSpec[];
let data: Float32Array | undefined;
let grads: Float32Array | undefined;

/** The chunk's arrays, copied out of the shared buffer (which the next step overwrites). */
function chunkOf(c: ChunkLayout) {
  const at = ([off, len]: [number, number]) => data!.slice(off, off + len);
  const labels = at(c.labels);
  return {
    input: at(c.input),
    shape: c.shape,
    ...(c.split !== undefined ? { split: c.split } : {}),
    labels: c.soft ? labels : Int32Array.from(labels),
    weight: c.weight,
    labelSmoothing: c.labelSmoothing,
    ...(c.drops
      ? {
        drops: c.drops.map((d) => ({
          ...(d.attn ? { attn: at(d.attn) } : {}),
          ...(d.mlp ? { mlp: at(d.mlp) } : {}),
        })),
      }
      : {}),
  };
}

async function handle(m: ToWorker): Promise<FromWorker> {
  if (m.type === "init") {
    await initWorkerBackend(1);
    weights = new Float32Array(m.weights);
    specs = paramSpecs(m.config);
    ({ offsets } = paramOffsets(specs));
    const state: StateDict = new Map(specs.map((spec) => {
      const off = offsets.get(spec.name)!;
      const values = weights.slice(off, off + spec.shape.reduce((a, b) => a * b, 1));
      return [spec.name, { shape: [...spec.shape], data: toTimmLayout(spec, values) } as HostTensor];
    }));
    model = await createViT(m.config, state);
    return { type: "ready" };
  }
  if (!model) throw new Error("internal: a step before init");
  if (m.data) data = new Float32Array(m.data);
  if (m.grads) grads = new Float32Array(m.grads);
  const vars = model.variables;
  for (const name of m.updates) {
    const v = vars.get(name)!;
    const off = offsets.get(name)!;
    tf.tidy(() => v.assign(tf.tensor(weights.subarray(off, off + v.size), v.shape, "float32")));
  }
  const trainable = new Set(m.trainable);
  // tfjs exposes `trainable` read-only in its types; gradients honour the field.
  for (const [name, v] of vars) (v as { trainable: boolean }).trainable = trainable.has(name);
  const out = paramOffsets(specs.filter((s) => trainable.has(s.name)));
  const losses: number[] = [];
  for (const [k, layout] of m.chunks.entries()) {
    const { loss, grads: g } = await model.chunkLossAndDeviceGrads(chunkOf(layout));
    try {
      for (const [name, t] of g) {
        grads!.set(await t.data() as Float32Array, k * out.total + out.offsets.get(name)!);
      }
    } finally {
      for (const t of g.values()) t.dispose();
    }
    losses.push(loss);
  }
  return { type: "done", losses };
}

let chain = Promise.resolve();
port.on("message", (m: ToWorker) => {
  chain = chain.then(async () => {
    let answer: FromWorker;
    try {
      answer = await handle(m);
    } catch (e) {
      answer = { type: "error", message: (e as Error).message };
    }
    port.postMessage(answer);
  });
});
