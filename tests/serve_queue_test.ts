/**
 * The device queue, admission control and the dynamic batcher in isolation, and the guarantee they give
 * together: a running fine-tuning session delays a classification by about one training step, no more.
 */
import assert from "node:assert/strict";
import { Admission } from "../lib/serve/admission.ts";
import { Batcher } from "../lib/serve/batcher.ts";
import { DeviceQueue } from "../lib/serve/device_queue.ts";
import { ServiceError } from "../lib/serve/errors.ts";
import type { FineTuner } from "../lib/serve/finetune.ts";
import type { ViTModel } from "../lib/vit/model.ts";
import { startTestService, testImage, writeImageFolder } from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("device queue: inference before training, but training is not starved", async () => {
  const q = new DeviceQueue({ maxInferBurst: 3 });
  const order: string[] = [];
  const release = await q.acquire("train");
  const jobs = [
    q.run("train", () => Promise.resolve(void order.push("T1"))),
    ...Array.from({ length: 5 }, (_, i) => q.run("infer", () => Promise.resolve(void order.push(`I${i}`)))),
    q.run("train", () => Promise.resolve(void order.push("T2"))),
  ];
  await tick();
  assert.deepEqual(q.depth, { infer: 5, train: 2 });
  release();
  await Promise.all(jobs);
  // Inference first; after a burst of 3 a waiting training step gets its turn.
  assert.deepEqual(order, ["I0", "I1", "I2", "T1", "I3", "I4", "T2"]);
  assert.deepEqual(q.depth, { infer: 0, train: 0 });
  assert.equal(q.running, undefined);
});

Deno.test("device queue: training holds (bounded) for announced requests", async () => {
  const q = new DeviceQueue({ maxHoldMs: 10_000 });
  const done = q.expect();
  const t0 = performance.now();
  let trainedAt = 0;
  const train = q.run("train", () => Promise.resolve(void (trainedAt = performance.now() - t0)));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(trainedAt, 0, "training waited for the announced request");
  await q.run("infer", () => Promise.resolve());
  const doneAt = performance.now() - t0;
  done();
  await train;
  assert.ok(trainedAt >= doneAt, `trained at ${trainedAt} ms, before the request was done (${doneAt} ms)`);
  // A request that never comes holds training for at most maxHoldMs.
  const q2 = new DeviceQueue({ maxHoldMs: 300 });
  q2.expect();
  const t1 = performance.now();
  await q2.run("train", () => Promise.resolve());
  const held = performance.now() - t1;
  assert.ok(held >= 250 && held < 5000, `held ${held} ms`);
});

Deno.test("device queue: a failing job releases the device", async () => {
  const q = new DeviceQueue();
  await assert.rejects(q.run("infer", () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(await q.run("infer", () => Promise.resolve(7)), 7);
});

Deno.test("admission: 503 with Retry-After past the limit, released after", () => {
  const a = new Admission(4);
  a.admit(3);
  assert.throws(
    () => a.admit(2),
    (e) => e instanceof ServiceError && e.kind === "unavailable" && e.retryAfterS !== undefined,
  );
  a.admit(1);
  a.release(4);
  assert.equal(a.pending, 0);
  a.admit(4);
});

Deno.test("batcher: groups concurrent images up to maxBatch and answers each its own row", async () => {
  const sizes: number[] = [];
  const fake = {
    config: { in_chans: 1, img_size: 1, num_classes: 2 },
    logits(x: Float32Array, shape: number[]) {
      sizes.push(shape[0]);
      // Row i = [x_i, -x_i], so each caller can check it got its own row.
      return Promise.resolve(
        Float32Array.from({ length: shape[0] * 2 }, (_, j) => (j % 2 ? -1 : 1) * x[j >> 1]),
      );
    },
  } as unknown as ViTModel;
  const admission = new Admission(100);
  const q = new DeviceQueue();
  const b = new Batcher("fake", fake, q, admission, { maxBatch: 4, maxWaitMs: 20 });
  admission.admit(10);
  const out = await Promise.all(Array.from({ length: 10 }, (_, i) => b.classify([Float32Array.of(i)])));
  out.forEach(([row], i) => assert.deepEqual([...row], [i, -i]));
  assert.deepEqual(sizes, [4, 4, 2]);
  assert.equal(admission.pending, 0);
  // A lone image waits at most maxWait.
  admission.admit(1);
  const t0 = performance.now();
  await b.classify([Float32Array.of(1)]);
  assert.ok(performance.now() - t0 < 500);
  b.close();
});

Deno.test("serve: a fine-tuning session on the inference device cannot starve classification", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const STEP_MS = 150;
  let steps = 0;
  // A session whose steps run elsewhere (a worker) but hold the device (a GPU shared with inference).
  const slowTuner: FineTuner = async (spec, onProgress, signal) => {
    for (let step = 1; !signal.aborted; step++) {
      await new Promise((r) => setTimeout(r, STEP_MS));
      steps++;
      await onProgress({ step, steps: spec.steps, epoch: 0, loss: 1, lr: spec.lr, imgPerSec: 1 });
    }
    throw new DOMException("cancelled", "AbortError");
  };
  const s = await startTestService({ tuner: slowTuner, sharesDevice: () => true });
  try {
    await writeImageFolder(`${s.dataRoot}/d`, ["a", "b"], 2);
    const png = await testImage("png");
    const timeClassify = async () => {
      const t0 = performance.now();
      const r = await s.app.request("/v1/models/micro/classify", {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: png,
      });
      assert.equal(r.status, 200);
      await r.body?.cancel();
      return performance.now() - t0;
    };
    // Warm up (WebGPU compiles its shaders on first use), then the latency without training.
    await timeClassify();
    const idle: number[] = [];
    for (let i = 0; i < 4; i++) idle.push(await timeClassify());
    const res = await s.app.request("/v1/finetune", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` },
      body: JSON.stringify({ base_model: "micro", dataset: "d", steps: 100000 }),
    });
    const rec = await res.json();
    assert.equal(res.status, 202);
    while (steps < 2) await new Promise((r) => setTimeout(r, 20));
    const latencies: number[] = [];
    for (let i = 0; i < 8; i++) latencies.push(await timeClassify());
    const stepsDuring = steps;
    assert.ok(stepsDuring > 2, "the session kept training meanwhile");
    // Each request waits for at most the step in progress (plus its own inference), never for the session.
    const worst = Math.max(...latencies), idleWorst = Math.max(...idle);
    console.log(
      `classification latencies idle ${
        idle.map((l) => l.toFixed(0)).join(", ")
      } ms, during training (step ${STEP_MS} ms): ${latencies.map((l) => l.toFixed(0)).join(", ")} ms`,
    );
    assert.ok(
      worst < idleWorst + 3 * STEP_MS + 300,
      `worst classification latency ${worst.toFixed(0)} ms during training, ${idleWorst.toFixed(0)} ms idle`,
    );
    await s.app.request(`/v1/finetune/${rec.id}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${s.token}` },
    });
    await s.service.sessions.settle();
  } finally {
    await s.close();
  }
});
