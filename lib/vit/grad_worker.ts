/**
 * A data-parallel training worker (see grad_pool.ts): a copy of the model on its own single-threaded
 * tfjs-wasm, answering each step with its chunks' losses and gradients.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { parentPort } from "node:worker_threads";
import { initWorkerBackend } from "../backend/backend.ts";
import type { FromWorker, ToWorker } from "./grad_pool.ts";
import { createViT, type ViTModel } from "./model.ts";
import type { HostTensor, StateDict } from "./params.ts";

const port = parentPort!;
let model: ViTModel | undefined;

async function handle(m: ToWorker): Promise<{ answer: FromWorker; transfer: ArrayBuffer[] }> {
  if (m.type === "init") {
    await initWorkerBackend(1);
    const state: StateDict = new Map(
      m.state.map(([name, shape, data]) => [name, { shape, data } as HostTensor]),
    );
    model = await createViT(m.config, state);
    return { answer: { type: "ready" }, transfer: [] };
  }
  if (!model) throw new Error("internal: a step before init");
  const vars = model.variables;
  for (const [name, data] of m.updates) {
    const v = vars.get(name)!;
    tf.tidy(() => v.assign(tf.tensor(data, v.shape, "float32")));
  }
  const trainable = new Set(m.trainable);
  // tfjs exposes `trainable` read-only in its types; gradients honour the field.
  for (const [name, v] of vars) (v as { trainable: boolean }).trainable = trainable.has(name);
  const results = [];
  const transfer: ArrayBuffer[] = [];
  for (const chunk of m.chunks) {
    const { loss, grads } = await model.chunkLossAndDeviceGrads(chunk);
    const out: Array<[string, Float32Array]> = [];
    try {
      for (const [name, g] of grads) {
        const data = await g.data() as Float32Array;
        out.push([name, data]);
        transfer.push(data.buffer as ArrayBuffer);
      }
    } finally {
      for (const g of grads.values()) g.dispose();
    }
    results.push({ loss, grads: out });
  }
  return { answer: { type: "done", results }, transfer };
}

let chain = Promise.resolve();
port.on("message", (m: ToWorker) => {
  chain = chain.then(async () => {
    try {
      const { answer, transfer } = await handle(m);
      port.postMessage(answer, transfer);
    } catch (e) {
      port.postMessage({ type: "error", message: (e as Error).message } satisfies FromWorker);
    }
  });
});
